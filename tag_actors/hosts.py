"""A run spread over hosts (``--host``): what one host knows of the others, said in the words of the config.

Every host computes the same plan from the same config, so each can tell where a peer process runs and which
address its link dials (``where``); fingerprints of the config and of the CURVE keys travel in the handshake
(PROTOCOL.md §8.6) so that hosts started with different configs or keys refuse each other by name. The launcher
uses ``HandshakeWatch`` to say, while it waits, whom it waits for on which host and address, and to pass on at
once what its processes report about refused CURVE handshakes (``alert``).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tag_actors.config import Config
from tag_actors.runlog import file_name, read_state
from tag_actors.topology import Plan, host_address, host_of

FINGERPRINT_IGNORES = (("placement", "keys_dir"), ("run", "loggers"))
"""Config keys a host may set for itself: where its keys lie, where its scalars go."""
WAIT_LINE_EVERY_S = 5.0
"""How often the launcher repeats a waiting line (a handshake waits up to run.startup_timeout_s)."""
CURVE_FIX = ("the two hosts hold different CURVE keys. Make keys once, on one host (python -m tag_actors.keys "
             "KEYS_DIR HOST ...), and copy every *.key to every host and NAME.key_secret to host NAME only; then "
             "start the run again on every host (python -m tag_actors.launch CONFIG --host NAME --check tells in "
             "seconds)")

CURVE_FAILURES = {"auth": "the listening end does not know the dialling end's public key",
                  "crypto": "the dialling end encrypted to another public key than the listening end's",
                  "closed": "the listening end closed the handshake (it holds another key pair than the one the "
                            "dialling end knows it by)"}
"""What each kind of failed CURVE handshake (``Hub.on_refused``) means."""


class CurveRefused(RuntimeError):
    """A CURVE handshake with a peer on another host failed: the hosts hold different keys."""


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def config_fingerprint(cfg: Config) -> str:
    """16 hex digits over the resolved config, less what each host may set for itself."""
    data = cfg.to_dict()
    for section, key in FINGERPRINT_IGNORES:
        data[section].pop(key, None)
    return _digest(data)


def keys_fingerprint(public_keys: list[bytes]) -> str:
    """16 hex digits over the run's public keys ('' when the links are not encrypted)."""
    return _digest(sorted(k.decode() for k in public_keys)) if public_keys else ""


def fingerprints(cfg: Config, public_keys: list[bytes], purpose: str = "run") -> dict[str, str]:
    """The ``fp`` of HELLO and WELCOME (PROTOCOL.md §8.6); ``purpose`` 'run' or 'check' (``--check``): a run
    and a check refuse each other, so a check never joins a running run."""
    return {"config": config_fingerprint(cfg), "keys": keys_fingerprint(public_keys), "purpose": purpose}


def link_between(plan: Plan, process: str, peer: str) -> tuple[str, str] | None:
    """(the address host:port, 'listens' or 'dials') of a link between ``process`` and its neighbour ``peer``,
    from the peer's side: a child listens on the link's address, its parent dials it. None: no such link."""
    for child, endpoint in plan.endpoints.items():
        if {plan.process_of(child), plan.parent.get(child)} == {process, peer}:
            return endpoint.split("://", 1)[-1], "dials" if plan.parent.get(child) == peer else "listens"
    return None


def where(cfg: Config, plan: Plan, peer: str, process: str | None = None) -> str:
    """The peer, its host and the address of its link with ``process``: 'l1.0 on sim (10.77.13.1:47004)' for a
    peer that listens there, 'l2.0 on planner (10.77.13.2), which dials 10.77.13.1:47004' for one that dials."""
    host = host_of(cfg, plan, peer)
    link = link_between(plan, process, peer) if process else None
    if link is None:
        return f"{peer} on {host} ({host_address(cfg, host)})"
    address, role = link
    if role == "listens":
        return f"{peer} on {host} ({address})"
    return f"{peer} on {host} ({host_address(cfg, host)}), which dials {address}"


def remote_places(cfg: Config, plan: Plan, mine: list[str]) -> dict[str, str]:
    """Process -> 'on host planner (10.77.13.2)' for every process of the run that another host runs."""
    return {n: f"on host {host_of(cfg, plan, n)!r} ({host_address(cfg, host_of(cfg, plan, n))})"
            for n in plan.processes() if n not in mine}


def alert(run_dir: Path, name: str, text: str) -> None:
    """A process tells its launcher something that cannot wait for its exit (a refused CURVE handshake)."""
    path = run_dir / "logs" / f"{file_name(name)}.alerts.jsonl"
    with path.open("a") as f:
        f.write(json.dumps({"time": time.time(), "text": text}) + "\n")


@dataclass
class HandshakeWatch:
    """The launcher's view of its processes while they wait for peers on other hosts: a line every
    ``WAIT_LINE_EVERY_S`` per awaited peer, and every alert at once. A waiting line reads
    ``l1.0 waiting for l2.0 on planner (10.77.13.2), which dials 10.77.13.1:47004, 35/120 s``."""

    run_dir: Path
    cfg: Config
    plan: Plan
    mine: list[str]
    out: TextIO = field(default_factory=lambda: sys.stderr)
    _shown: dict[str, float] = field(default_factory=dict)
    _alert_offsets: dict[str, int] = field(default_factory=dict)
    _next_poll: float = 0.0
    done: bool = False
    """Every process here is past its handshake: nothing more to watch."""

    def poll(self) -> None:
        """At most every half second, and only until every process here has finished its handshakes."""
        now = time.time()
        if self.done or now < self._next_poll:
            return
        self._next_poll = now + 0.5
        self._alerts()
        waiting: dict[str, list[tuple[str, float]]] = {}  # awaited peer of another host -> (process here, since)
        states = {name: read_state(self.run_dir, name) for name in self.mine}
        self.done = all(st and "handshake" not in (st.get("phase"), st.get("during")) and st.get("phase") != "starting"
                        for st in states.values())
        for name, state in states.items():
            if not state or state.get("phase") != "waiting" or state.get("during") != "handshake":
                continue
            for peer in state.get("waits_for", []):
                if peer not in self.mine:
                    waiting.setdefault(peer, []).append((name, now - state.get("since", now)))
        for peer, waiters in waiting.items():
            waited = max(w for _, w in waiters)
            if waited < 2.0 or now - self._shown.get(peer, 0.0) < WAIT_LINE_EVERY_S:
                continue
            self._shown[peer] = now
            names = [n for n, _ in waiters]
            links = [where(self.cfg, self.plan, peer, n) for n in names]
            shown = links[0] if len(links) == 1 else f"{links[0]} (and {len(links) - 1} more of its links)"
            print(f"tag_actors: {', '.join(names)} waiting for {shown}, "
                  f"{waited:.0f}/{self.cfg.run.startup_timeout_s:.0f} s", file=self.out, flush=True)

    def _alerts(self) -> None:
        for name in self.mine:
            path = self.run_dir / "logs" / f"{file_name(name)}.alerts.jsonl"
            try:
                with path.open() as f:
                    f.seek(self._alert_offsets.get(name, 0))
                    lines = f.readlines()
                    self._alert_offsets[name] = f.tell()
            except OSError:
                continue
            for line in lines:
                if line.endswith("\n"):
                    print(f"tag_actors: {name}: {json.loads(line)['text']}", file=self.out, flush=True)
