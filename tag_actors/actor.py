"""One process of a run: the env or one agent, fed over the wire. ``python -m tag_actors.actor RUN_DIR NAME``.

The launcher writes ``RUN_DIR/config.json`` (the resolved config) and ``RUN_DIR/plan.json`` (endpoints, metrics
ports) and starts one of these per process. Every message it sends or checks is built by
``tag_actors.protocol`` (PROTOCOL.md is the spec). The loop of an agent is one lockstep tick (PROTOCOL.md §9.2):

    children's UP ─▶ node.on_children ─▶ UP to parent ─▶ parent's DOWN ─▶ node.on_instruction ─▶ DOWN to children

A run ends with explicit, acknowledged messages (§11): the env marks its last UP with ``stop``; the marker travels
to the top, which answers STOP; every agent checkpoints, passes STOP down, and acknowledges (BYE) once its whole
subtree has. SIGTERM/SIGINT checkpoint and exit at once, with 128 + the signal's number (as a shell reports a
process a signal ended), so that the launcher can tell an agent someone stopped from one that finished.

This module is the process around the loop (handshakes, restarts, stopping, the entry point); the two tick loops
are in ``tag_actors.loops`` and the ends of the link to the parent (``Inbox``, ``Outbox``) in ``tag_actors.mailbox``.

For its supervisor each process keeps ``logs/<name>.state.json`` (its phase, and what it waits for once a wait
passes half a second) and, when it fails, ``logs/<name>.failure.json`` (see ``write_failure``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tag_actors import config as config_mod
from tag_actors import protocol
from tag_actors.hosts import CURVE_FIX, CurveRefused, alert, fingerprints, where
from tag_actors.protocol import (
    HandshakeError,
    Hello,
    Kind,
    Message,
    VersionMismatch,
    Welcome,
    check_hello,
    check_welcome,
)
from tag_actors.runlog import write_episodes_csv, write_state
from tag_actors.spaces import Space
from tag_actors.supervisor import RESTARTS_ENV
from tag_actors.topology import ENV, Plan, build_plan, host_of, remove_socket_dir
from tag_actors.transport import ChildLink, Hub, Link, LinkTimeout, ParentLink, PeerLost

log = logging.getLogger("tag_actors.actor")
STOP_ACK_TIMEOUT_S = 60.0
PEER_LOST_EXIT = 3


class Shutdown(BaseException):
    """Raised by the SIGTERM/SIGINT handler; unwinds to the process's clean exit path."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_closing = False
"""True while checkpoints and logs are being closed: a stop signal then waits for the close instead of
interrupting it (it would leave no end record, and a traceback from wherever it landed)."""
_deferred: list[int] = []


def _raise_shutdown(signum: int, _frame: Any) -> None:
    if _closing:
        _deferred.append(signum)
        return
    for sig in (signal.SIGTERM, signal.SIGINT):  # one stop is enough: a second signal must not cut the first
        signal.signal(sig, signal.SIG_IGN)
    raise Shutdown(signum)


@contextmanager
def closing() -> Iterator[None]:
    """Checkpoint and close without being interrupted by SIGTERM/SIGINT (they are noted, and end the process
    once the close is done)."""
    global _closing
    _closing = True
    try:
        yield
    finally:
        _closing = False
    if _deferred:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        raise Shutdown(_deferred[0])


def pin_cpus(policy: str, is_env: bool, env_on_this_host: bool) -> set[int] | None:
    """Apply ``run.cpu_affinity`` to this process; returns the CPUs it may now use (None: left as it was). On a
    host without the env there is nothing to keep apart, so its agents keep every CPU."""
    if policy != "env_apart" or not env_on_this_host or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None  # nothing to set apart
    mine = {cpus[0]} if is_env else set(cpus[1:])
    os.sched_setaffinity(0, mine)
    return mine


class Actor:
    """What the env and agent processes share: config, plan, hub, metrics."""

    def __init__(self, run_dir: Path, name: str, security: Any = None):
        """``security``: the CURVE keys the Ray backend's driver made for this run and handed over (None: from
        placement.keys_dir when placement.curve)."""
        self.run_dir = run_dir
        self.name = name
        raw = json.loads((run_dir / "config.json").read_text())
        self.cfg = config_mod.from_dict(raw["config"], raw.get("source", str(run_dir / "config.json")))
        self.plan: Plan = build_plan(self.cfg)
        wiring = json.loads((run_dir / "plan.json").read_text())
        self.plan.endpoints = wiring["endpoints"]
        self.restarts = int(os.environ.get(RESTARTS_ENV) or 0)
        """How many times the supervisor restarted this process (0: its first start)."""
        self.resume = bool(wiring.get("resume")) or self.restarts > 0
        self.level = self.plan.level_of(name)
        pinned = pin_cpus(self.cfg.run.cpu_affinity, name == ENV, ENV in wiring.get("processes", [ENV]))
        if pinned is not None:
            log.info("pinned to CPUs %s (run.cpu_affinity = %r)", sorted(pinned), self.cfg.run.cpu_affinity)
        self.metrics = None
        if self.cfg.run.metrics:
            from tag_actors.metrics import ProcessMetrics
            from tag_actors.run_metrics import process_links

            self.metrics = ProcessMetrics(wiring.get("run_id", self.cfg.run.name), "env" if name == ENV else "agent",
                                          name, self.level, wiring.get("hosts", {}).get(name, wiring.get("host", "local")),
                                          config=self.cfg.run.name)
            self.metrics.declare_links(*process_links(self.plan, name))
            if self.restarts:  # this process was started again after a fault (run.restart = 'always')
                self.metrics.restart(self.restarts)
            elif wiring.get("restarts"):  # the whole run was restarted (the Ray backend)
                self.metrics.restart(wiring["restarts"])
            self.metrics.serve(wiring["metrics_ports"][name],
                               wiring.get("metrics_addrs", {}).get(name, wiring.get("metrics_addr", "127.0.0.1")))
            self.metrics.set_up()
        run = self.cfg.run
        if security is None and self.cfg.placement.curve:
            from tag_actors.keys import security_for

            security = security_for(self.cfg, self.plan, wiring["host"], Path(wiring.get("cwd", ".")))
        self.host = wiring.get("host", "local")
        self.fp = fingerprints(self.cfg, security.allowed_clients if security else [])
        """What the handshake compares with every peer (PROTOCOL.md §8.6): hosts with other configs or keys."""
        self.refusals: dict[str, int] = {}
        """Failed CURVE handshakes by link (this process's name on it), while its handshake lasts."""
        self.hub = Hub(name, max_message_bytes=run.max_message_bytes, peer_timeout_s=run.peer_timeout_s,
                       security=security,
                       on_bad_frame=self._on_bad_frame,
                       on_received=self.metrics.frame_received if self.metrics else None,
                       on_wait=self._on_wait, on_refused=self._on_refused)
        self.hub.rejoinable = rejoinable_peers(self.cfg, self.plan, name)
        self.hub.on_peer_lost = self.rejoin if self.hub.rejoinable else None
        self.offers: dict[ParentLink, tuple[Space, Space, dict[str, Any]]] = {}
        """What this process offered each parent in its WELCOME: offered again to a parent that rejoins."""
        self.parent_ticks: dict[ParentLink, int] = {}
        """The tick each parent said it expects next, when it greeted this (restarted) process mid-run."""
        self.greeting: Hello | None = None
        """The HELLO this process sends its children: sent again to a child that was restarted."""
        self.clock = 0
        """The run's tick this process is at (for its state file)."""
        self.phase = "handshake"
        write_state(run_dir, name, self.phase)

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        write_state(self.run_dir, self.name, phase, tick=self.clock)

    def _on_wait(self, what: str | None, peers: list[str]) -> None:
        """A wait passed half a second (or ended): tell the supervisor whom this process waits for."""
        if what is None:
            write_state(self.run_dir, self.name, self.phase, tick=self.clock)
        else:
            write_state(self.run_dir, self.name, "waiting", during=self.phase, what=what, tick=self.clock,
                        waits_for=sorted({self.plan.process_of(p) for p in peers}), peers=peers,
                        since=round(time.time() - 0.5, 3))

    def _on_refused(self, link: Link, kind: str) -> None:
        """A CURVE handshake failed on ``link``. The end that dials (a parent) fails at once: its peer is the
        one process at that address. The end that listens (a child) tells its launcher at once and keeps
        waiting: anyone may connect to it, and a stranger with a wrong key must not stop a run."""
        if link.established:
            return
        count = self.refusals[link.me] = self.refusals.get(link.me, 0) + 1
        if isinstance(link, ChildLink):
            peer = where(self.cfg, self.plan, self.plan.process_of(link.peer), self.name)
            if kind == "auth":
                raise CurveRefused(f"{peer} refused the CURVE key of host {self.host!r}: {CURVE_FIX}")
            if count >= 2:  # one closed handshake may be the network; two in a row are the keys
                raise CurveRefused(f"the CURVE handshake with {peer} failed {count} times (it closed the "
                                   f"connection: it could not open what {self.name!r} encrypted to the public key "
                                   f"this host holds for it): {CURVE_FIX}")
        elif count == 1:
            how = ("presented a CURVE key that is not among the run's public keys here" if kind == "auth" else
                   f"encrypted to another public key than host {self.host!r}'s own")
            parent = self.plan.process_of(link.peer)
            alert(self.run_dir, self.name, f"a peer dialling {link.endpoint.split('://')[-1]} (its parent "
                  f"{parent} on {host_of(self.cfg, self.plan, parent)}?) {how}: {CURVE_FIX}")

    def _on_bad_frame(self, peer: str, reason: str) -> None:
        if self.metrics:
            self.metrics.bad_frame(peer, reason)

    def send(self, link: Link, msg: Message) -> None:
        nbytes = link.send(msg)
        if self.metrics:
            self.metrics.frame_sent(link.peer, nbytes)

    def welcome_parents(self, offers: list[tuple[ParentLink, Space, Space, dict[str, Any]]]) -> None:
        """The child's side of the handshake (PROTOCOL.md §8), on every link this process serves at once (the env
        serves one per env agent): each parent's HELLO is answered with WELCOME, or with a REJECT that says why
        (another version, schema, batch, space, period or mode), and then a better HELLO is awaited until the
        start-up timeout. A refused peer hears the reason at connect time, never a silence; a missing parent
        does not hold up the others' handshakes. ``offers``: (link, message space, instruction space, info)."""
        timeout = self.cfg.run.startup_timeout_s
        started = time.monotonic()
        deadline = started + timeout
        pending = {link: offer for link, *offer in offers}
        reported = False
        self.offers.update(pending)
        while pending:
            if not reported and time.monotonic() - started >= 0.5:  # for the supervisor: whom this waits for
                reported = True
                self._on_wait("HELLO", sorted(link.peer for link in pending))
            for link in list(pending):
                while link in pending and self.hub.pending(link):
                    if self._answer_hello(link, *pending[link]):
                        del pending[link]
            remaining = deadline - time.monotonic()
            if pending and remaining <= 0:
                names = ", ".join(f"{link.peer!r} (to {link.me!r})" for link in pending)
                refused = sum(self.refusals.get(link.me, 0) for link in pending)
                hint = (f"; meanwhile {refused} CURVE handshake(s) on its address failed: {CURVE_FIX}"
                        if refused else "")
                raise LinkTimeout(f"{self.name!r} waited {timeout:.0f}s for an acceptable HELLO from {names}"
                                  f"{hint}", [link.peer for link in pending])
            if pending:
                self.hub.wait(list(pending), min(remaining, 1.0))

    def _answer_hello(self, link: ParentLink, message_space: Space, instruction: Space, info: dict[str, Any],
                      msg: Message | None = None) -> bool:
        """Read one message of a link in its handshake (or take ``msg``); True once it is welcomed."""
        me, num_envs = link.me, self.cfg.env.num_envs
        parent = self.plan.parent[me]
        period, mode = self.plan.node(parent).period, self.cfg.level_mode(self.plan.level_of(parent))
        try:
            msg = self.hub.try_recv(link) if msg is None else msg
            if msg is None or msg.kind != Kind.HELLO:
                return False
            hello = Hello.from_message(msg)
            check_hello(hello, me, num_envs, instruction, period, mode, self.fp)
        except VersionMismatch as e:
            log.error("rejected the HELLO of %r: %s", link.peer, e)
            link.send(protocol.reject_message(me, e, version=e.version))
            return False
        except HandshakeError as e:
            log.error("rejected the HELLO of %r: %s", link.peer, e)
            link.send(protocol.reject_message(me, e))
            return False
        welcome = Welcome(me, num_envs, message_space, instruction, info, fp=self.fp)
        link.send(welcome.to_message())
        link.agreed = {Kind.DOWN: protocol.down_arrays(instruction, num_envs)}
        link.caps = protocol.agreed_caps(hello, welcome)
        link.established = True
        if hello.tick is not None:
            self.parent_ticks[link] = hello.tick
        return True

    def greet_children(self, children: list[ChildLink], hello: Hello, sends: Any) -> list[Welcome]:
        """The parent's side of the handshake (§8): HELLO to every child, then check each answer. A WELCOME this
        parent cannot accept is answered with REJECT before this process gives up (§8.2)."""
        for link in children:
            hello.child = link.peer
            link.send(hello.to_message())
        by_peer = {link.peer: link for link in children}
        try:
            answers = self.hub.recv_from_all(children, (Kind.WELCOME, Kind.REJECT), self.cfg.run.startup_timeout_s,
                                             "WELCOME (is the child process up?)")
        except VersionMismatch as e:
            by_peer[e.peer].send(protocol.reject_message(self.name, e, version=e.version))
            raise
        self.greeting = hello
        return [self._accept_welcome(link, answers[link], hello, sends) for link in children]

    def _accept_welcome(self, link: ChildLink, msg: Message, hello: Hello, sends: Any) -> Welcome:
        if msg.kind == Kind.REJECT:
            raise HandshakeError(f"child {link.peer!r} rejected {self.name!r}: {msg.meta.get('reason')}")
        try:
            welcome = Welcome.from_message(msg)
            check_welcome(welcome, self.name, link.peer, self.cfg.env.num_envs, sends, self.fp)
        except HandshakeError as e:
            link.send(protocol.reject_message(self.name, e))
            raise
        hello.child = link.peer
        link.agreed = {Kind.UP: protocol.up_arrays(welcome.message_space, self.cfg.env.num_envs)}
        link.caps = protocol.agreed_caps(hello, welcome)
        link.established = True
        return welcome

    # --- restarts (PROTOCOL.md "Restarts") ----------------------------------------------------------------------

    def rejoin(self, lost: PeerLost) -> bool:
        """A neighbour vanished (or came back with a new HELLO). If the supervisor restarts it, wait for it to
        rejoin with a new handshake, within run.startup_timeout_s, then let the tick loop resynchronise the link
        (``on_rejoined``); otherwise, or if it does not come back in time, fail as before, naming it."""
        link = lost.link
        if link is None or lost.peer not in self.hub.rejoinable or self.phase != "running":
            raise lost
        log.warning("%s; waiting for it to rejoin (restarted by the supervisor)", lost)
        started = time.monotonic()
        if isinstance(link, ParentLink):
            self._rejoin_parent(link, lost.hello)
        else:
            self._rejoin_child(link)
        log.info("%r rejoined %r after %.2fs", link.peer, link.me, time.monotonic() - started)
        self.on_rejoined(link)
        return True

    def _rejoin_parent(self, link: ParentLink, hello: Message | None) -> None:
        """The child's side: the restarted parent connects again and sends HELLO; answer as at start-up."""
        link.forget_peer()
        timeout = self.cfg.run.startup_timeout_s
        deadline = time.monotonic() + timeout
        offer = self.offers[link]
        if hello is not None and self._answer_hello(link, *offer, msg=hello):
            return
        while True:
            while self.hub.pending(link):
                if self._answer_hello(link, *offer):
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PeerLost(link.peer, f"was lost by {link.me!r} and did not rejoin within {timeout:.0f}s "
                               "(run.startup_timeout_s)")
            self._on_wait("HELLO (a restarted parent rejoining)", [link.peer])
            self.hub.wait([link], min(remaining, 1.0))

    def _rejoin_child(self, link: ChildLink) -> None:
        """The parent's side: a fresh socket to the restarted child, HELLO (with this process's tick), WELCOME."""
        self.hub.reconnect_child(link)
        hello = self.greeting
        hello.child, hello.tick = link.peer, self.clock
        link.send(hello.to_message())
        timeout = self.cfg.run.startup_timeout_s
        try:
            msg = self.hub.recv(link, (Kind.WELCOME, Kind.REJECT), timeout, "WELCOME (a restarted child rejoining)")
        except LinkTimeout:
            raise PeerLost(link.peer, f"was lost by {link.me!r} and did not rejoin within {timeout:.0f}s "
                           "(run.startup_timeout_s)") from None
        finally:
            hello.tick = None
        sends = self.cfg.instruction_space(self.level) if self.level >= 2 else None
        self._accept_welcome(link, msg, hello, sends)

    def on_rejoined(self, link: Link) -> None:
        """Resynchronise the tick loop with a peer that rejoined (each process kind knows its own books)."""

    def stop_children(self, links: list[ChildLink]) -> None:
        """Pass STOP down and wait until every child's subtree has acknowledged (§11)."""
        self.hub.on_peer_lost = None  # a process lost now is not waited for: the run is ending
        for link in links:
            link.send(protocol.stop_message())
        for link in self.hub.recv_from_all(links, (Kind.BYE,), STOP_ACK_TIMEOUT_S, "BYE"):
            link.established = False  # its process may exit now; that is no longer a lost peer


def rejoinable_peers(cfg: config_mod.Config, plan: Plan, name: str) -> set[str]:
    """The peers on this process's links that the supervisor restarts after a fault (their level's restart
    policy is 'always'), so that this process waits for them to rejoin instead of exiting. None on several
    hosts or with external processes: the launcher restarts only what it started itself."""
    from tag_actors.run_metrics import process_links
    from tag_actors.supervisor import restart_policy

    if cfg.multi_host or cfg.placement.external:
        return set()
    peers, _served = process_links(plan, name)
    return {p for p in peers
            if restart_policy(cfg, plan.level_of(plan.process_of(p))) == "always"}


def write_failure(run_dir: Path, name: str, kind: str, message: str, **fields: Any) -> None:
    """Tell the launcher why this process is about to exit, before its sockets close and its neighbours notice:
    the launcher then names the cause (a crash, a signal), not the neighbours that only saw it vanish.

    kind: 'crash' (an exception), 'signal' (SIGTERM/SIGINT), 'peer_lost' (``peer``: the process that vanished),
    'timeout' (``waited_for``: the processes that did not answer in time)."""
    from tag_actors.runlog import file_name

    path = run_dir / "logs" / f"{file_name(name)}.failure.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "kind": kind, "time": time.time(), "message": message, **fields}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[-1:] == ["--spare"]:  # a warm spare for restarts (tag_actors.spare): preload, then become one
        from tag_actors.spare import become

        return become(Path(argv[0]))
    parser = argparse.ArgumentParser(description="run one process of a tag_actors run (started by the launcher)")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name")
    args = parser.parse_args(argv)
    return run_process(args.run_dir, args.name)


def run_process(run_dir: Path, name: str, security: Any = None) -> int:
    """One process of a run, to its end; returns its exit code. The Ray backend calls this in the main thread of
    a Ray actor's worker (with the run's CURVE keys in ``security``); ``main`` for a process the launcher starts."""
    args = argparse.Namespace(run_dir=run_dir, name=name)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.name} %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _raise_shutdown)
    signal.signal(signal.SIGINT, _raise_shutdown)
    launcher = os.getppid()
    (args.run_dir / "logs").mkdir(parents=True, exist_ok=True)
    write_state(args.run_dir, args.name, "starting")
    actor: Actor | None = None
    stopped_cleanly = False
    profiler = None
    if os.environ.get("TAG_ACTORS_PROFILE"):  # developer aid: cProfile each process into logs/<name>.prof
        import cProfile

        # "cpu": this thread's CPU time, which preemption on a busy machine does not inflate; otherwise wall time
        cpu = os.environ["TAG_ACTORS_PROFILE"] == "cpu"
        profiler = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
        profiler.enable()
    try:
        from tag_actors.loops import AgentActor, EnvActor  # they build on Actor, defined here

        actor = (EnvActor if args.name == ENV else AgentActor)(args.run_dir, args.name, security)
        reason = actor.run()
        log.info("finished: %s", reason)
        stopped_cleanly = True
        return 0
    except Shutdown as e:
        log.info("stopped by %s; checkpoint and logs saved", e)
        stopped_cleanly = True
        write_failure(args.run_dir, args.name, "signal", f"stopped by {e}", signal=str(e))
        return 128 + e.signum
    except PeerLost as e:
        print(f"tag_actors: {args.name}: {e}", file=sys.stderr)
        peer = actor.plan.process_of(e.peer) if actor is not None else e.peer
        write_failure(args.run_dir, args.name, "peer_lost", str(e), peer=peer)
        return PEER_LOST_EXIT
    except CurveRefused as e:  # a fault of the setup, not of the code: the reason, without a traceback
        print(f"tag_actors: {args.name}: {e}", file=sys.stderr)
        write_failure(args.run_dir, args.name, "crash", f"{type(e).__name__}: {e}")
        return 1
    except LinkTimeout as e:
        print(f"tag_actors: {args.name}: {e}", file=sys.stderr)
        waited = sorted({actor.plan.process_of(p) for p in e.peers}) if actor is not None else e.peers
        write_failure(args.run_dir, args.name, "timeout", f"{type(e).__name__}: {e}", waited_for=waited)
        return 1
    except Exception as e:  # noqa: BLE001 — the launcher shows this traceback with the process name
        traceback.print_exc()
        print(f"tag_actors: {args.name} failed: {type(e).__name__}: {e}", file=sys.stderr)
        write_failure(args.run_dir, args.name, "crash", f"{type(e).__name__}: {e}")
        return 1
    finally:
        # Closing is not interruptible: a second SIGTERM/Ctrl-C here would skip removing the sockets and print a
        # traceback for an ordinary stop.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if profiler is not None:
            from tag_actors.runlog import file_name

            profiler.disable()
            profiler.dump_stats(args.run_dir / "logs" / f"{file_name(args.name)}.prof")
        if actor is not None:
            actor.hub.close()
            remove_socket_dir(actor.plan.endpoints)  # the last process out removes it, even if the launcher died
            if actor.metrics is not None and stopped_cleanly:  # Prometheus sees tag_up 0: gone on purpose
                actor.metrics.set_down(deliver_s=5.0)
        if os.getppid() != launcher:  # the launcher died: whoever leaves last writes the episodes it would have
            write_episodes_csv(args.run_dir)
        sys.stdout.flush()
        sys.stderr.flush()


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
