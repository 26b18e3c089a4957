"""``python -m tag_actors.launch CONFIG --host NAME --check``: before a run spread over hosts, confirm in seconds
that every link to another host connects, that the CURVE keys match and that the hosts' configs agree.

Run it on every host at about the same time (as the run itself). For each link between this host and another,
the end that listens in a run listens here too, and the end that dials dials: the two exchange a HELLO and a
WELCOME carrying the fingerprints of PROTOCOL.md §8.6 (with ``purpose`` = ``check``, so a real run refuses a
check and a check refuses a real run). No env is built and no agent loaded; nothing is written.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tag_actors.config import Config, ConfigError
from tag_actors.hosts import CURVE_FAILURES, CURVE_FIX, fingerprints, where
from tag_actors.protocol import (
    HandshakeError,
    Hello,
    Kind,
    Welcome,
    check_fp,
    reject_message,
)
from tag_actors.spaces import Box
from tag_actors.topology import Plan, assign_endpoints, build_plan, host_address, host_of
from tag_actors.transport import ChildLink, EndpointInUse, Hub, Link, ParentLink, Security

CHECK_TIMEOUT_S = 30.0


@dataclass
class LinkCheck:
    """One link between this host and another, as this host sees it."""

    child: str
    parent: str
    link: Link
    hub: Hub
    outcome: str = ""
    """'' while open; 'ok' or the reason it failed."""
    sent: bool = False
    """(the dialling end) its HELLO is out."""
    refused: int = 0
    """CURVE handshakes of this link that failed."""


@dataclass
class Preflight:
    cfg: Config
    plan: Plan
    host: str
    security: Security | None
    out: TextIO = field(default_factory=lambda: sys.stdout)
    checks: list[LinkCheck] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fp = fingerprints(self.cfg, self.security.allowed_clients if self.security else [], "check")

    def open(self) -> None:
        """A hub per local process with a link to another host; its listening ends bound, dialling ends
        connected."""
        hubs: dict[str, Hub] = {}

        def hub(name: str) -> Hub:
            if name not in hubs:
                hubs[name] = Hub(name, security=self.security, on_refused=self._refused)
            return hubs[name]

        for child, parent in self.plan.parent.items():
            if parent is None:
                continue
            served_by = self.plan.process_of(child)
            hosts = (host_of(self.cfg, self.plan, served_by), host_of(self.cfg, self.plan, parent))
            if hosts[0] == hosts[1] or self.host not in hosts:
                continue
            endpoint = self.plan.endpoints[child]
            if hosts[0] == self.host:
                h = hub(served_by)
                try:
                    link: Link = h.serve_parent(endpoint, parent, me=child)
                except EndpointInUse as e:
                    raise ConfigError(f"--check: {e}") from None
            else:
                h = hub(parent)
                link = h.connect_child(endpoint, child)
            self.checks.append(LinkCheck(child, parent, link, h))

    def _refused(self, link: Link, kind: str) -> None:
        check = next(c for c in self.checks if c.link is link)
        if check.outcome:
            return
        check.refused += 1
        if isinstance(link, ChildLink) and kind == "closed" and check.refused < 2:
            return  # one closed handshake may be the network; the next decides
        check.outcome = f"CURVE handshake failed: {CURVE_FAILURES[kind]}; {CURVE_FIX}"

    def run(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        for c in self.checks:
            if isinstance(c.link, ChildLink):
                c.link.send(Hello(c.parent, c.child, self.cfg.env.num_envs, None, fp=self.fp).to_message())
                c.sent = True
        while any(not c.outcome for c in self.checks) and time.monotonic() < deadline:
            for c in self.checks:
                if not c.outcome:
                    ready = c.hub.wait([c.link], 0.02)
                    if ready:
                        self._answer(c)
        for c in self.checks:
            if not c.outcome:
                other = c.child if isinstance(c.link, ChildLink) else c.parent
                c.outcome = (f"no answer from {other} within {timeout_s:.0f} s: is `--check` running on "
                             "that host, is the address right, and can this host reach it (a firewall)?")
        time.sleep(1.0)  # let the last WELCOMEs leave before the sockets close
        ok = True
        for c in self.checks:
            me, peer = ((c.parent, self.plan.process_of(c.child)) if isinstance(c.link, ChildLink)
                        else (self.plan.process_of(c.child), c.parent))
            good = c.outcome == "ok"
            ok &= good
            verdict = "ok: reachable, keys match, configs agree" if good else f"FAILED: {c.outcome}"
            print(f"  {me} <-> {where(self.cfg, self.plan, peer, me)}: {verdict}", file=self.out, flush=True)
        return ok

    def _answer(self, c: LinkCheck) -> None:
        msg = c.hub.try_recv(c.link)
        if msg is None:
            return
        try:
            if isinstance(c.link, ParentLink):
                if msg.kind != Kind.HELLO:
                    return
                hello = Hello.from_message(msg)
                check_fp(hello.fp, self.fp, "HELLO", hello.parent, c.child)
                if hello.fp is None:
                    raise HandshakeError(f"{hello.parent!r} sent no fingerprints (an older tag_actors?)", "fp")
                c.link.send(Welcome(c.child, self.cfg.env.num_envs, Box((1,)), Box((1,)), fp=self.fp).to_message())
                c.outcome = "ok"
            elif msg.kind == Kind.REJECT:
                c.outcome = f"refused: {msg.meta.get('reason')}"
            elif msg.kind == Kind.WELCOME:
                welcome = Welcome.from_message(msg)
                check_fp(welcome.fp, self.fp, "WELCOME", c.child, c.parent)
                if welcome.fp is None:
                    raise HandshakeError(f"{c.child!r} sent no fingerprints (an older tag_actors?)", "fp")
                c.outcome = "ok"
        except HandshakeError as e:
            c.outcome = f"refused: {e}"
            c.link.send(reject_message(c.child if isinstance(c.link, ParentLink) else c.parent, e))

    def close(self) -> None:
        for hub in {id(c.hub): c.hub for c in self.checks}.values():
            hub.close()


def preflight(cfg: Config, host: str | None, timeout_s: float = CHECK_TIMEOUT_S, base: Path | None = None,
              out: TextIO | None = None) -> int:
    """0 when every link between this host and the others checks out; 1 otherwise (each link is reported)."""
    from tag_actors.launch import check_port_free, local_processes

    out = out or sys.stdout
    if not cfg.multi_host:
        raise ConfigError(f"--check: {cfg.source} places the run on one host: nothing to check between hosts")
    if cfg.run.transport != "tcp" or not cfg.run.base_port:
        raise ConfigError(f"--check: {cfg.source}: a run over hosts needs run.transport = 'tcp' and a fixed "
                          "run.base_port")
    plan = build_plan(cfg)
    host, mine = local_processes(cfg, plan, host)
    links = [c for c, p in plan.parent.items() if p is not None]
    assign_endpoints(plan, cfg, [cfg.run.base_port + i for i in range(len(links))])
    for i, child in enumerate(links):
        if plan.process_of(child) in mine:
            check_port_free(cfg.run.base_port + i, host_address(cfg, host),
                            f"{cfg.source}: run.base_port (link of {child!r})")
    security = None
    if cfg.placement.curve:
        from tag_actors.keys import security_for

        security = security_for(cfg, plan, host, base or Path.cwd())
    check = Preflight(cfg, plan, host, security, out)
    print(f"checking the links of host {host!r} ({host_address(cfg, host)}) with the other hosts, up to "
          f"{timeout_s:.0f} s ...", file=out, flush=True)
    started = time.monotonic()
    try:
        check.open()
        ok = check.run(timeout_s)
    finally:
        check.close()
    print(f"{'all links ok' if ok else 'some links FAILED'} ({time.monotonic() - started:.1f} s)", file=out,
          flush=True)
    return 0 if ok else 1
