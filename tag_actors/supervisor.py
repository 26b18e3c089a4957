"""Supervising the processes of a run: notice the first fault, name the process that caused it, stop the rest.

The launcher wires a run and hands its children to ``Supervisor``. Faults it notices, every 0.1 s:

- a process **exits** with an error or a signal: the cause is the process that crashed, was signalled or killed,
  not the neighbours that only saw it vanish (they exit with ``PEER_LOST_EXIT`` and name the peer they lost);
- a process is **stopped** (SIGSTOP, state ``T``): it cannot answer heartbeats, so its neighbours would soon report
  it lost; it is named at once, as stopped;
- the run **stalls**: no tick completes for ``run.stall_timeout_s`` while every process is up. Each process keeps
  ``logs/<name>.state.json`` saying whom it waits for (written when a wait passes half a second, see
  ``Hub.on_wait``), so the chain env → l1.0 → l2.0 is followed to the process that waits for nobody (busy, or
  frozen), or to a cycle (a deadlock), and that is named;
- a handshake **times out**: a process still starting (importing, loading) that others waited for is named as
  late, not the neighbour whose patience ran out first.

Every report gives the exit code or signal and the last lines of the named process's log (``procs``). Erlang/OTP's
supervisors are the model: the supervisor alone decides what a fault means; workers only report what they saw.

What a fault leads to is the named process's level's policy (``restart_policy``: ``lN.restart``, else
``run.restart``). ``"never"`` stops the run. ``"always"`` restarts **that process alone** (Erlang's
``one_for_one``), within ``RestartBudget`` (``run.max_restarts`` per ``run.restart_window_s``; a process's own
backoff from its second restart in the window): whatever is left of it is killed (a stopped or stalled process cannot checkpoint),
and ``spawn(name) -> Child`` starts it again. The new process resumes from its latest checkpoint and rejoins its
neighbours with a new handshake; they held their links open for it (PROTOCOL.md §16). Lockstep across a restart:

- the tick in flight is sent again to the rejoined process (a child re-sends the UP its parent must answer); the
  ticks a restarted subtree did not live reach its parent as placeholders;
- the restarted agent's episodes in flight are cut (not in episodes.csv, not learned from: its learner starts
  collecting afresh), and so are its parent's when placeholders stood in; nobody else's;
- the env's counters continue: a restarted env takes the run's tick from its parents' HELLOs (its checkpoint is
  older) and starts new episodes in every copy (its simulator state is gone).

The Ray backend does not restart one process (a Ray actor may come back on another node, with endpoints its
neighbours do not know): its launcher loop restarts the whole run from its checkpoints (``on_fault`` says so).
``spawn`` is the seam for other backends: it returns anything with ``.name``, ``.log_path`` and a Popen-like
``.proc`` (``poll``, ``returncode``, ``pid``, ``send_signal``, ``kill``, ``wait``). The launcher's
(``launch.Spawner``) hands the name to a warm spare that has already imported torch and the run's code.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tag_actors.procs import describe_exit, log_tail, process_state
from tag_actors.runlog import file_name, read_state

PEER_LOST_EXIT = 3
"""An actor that exits because a peer vanished: a symptom, not the cause."""
GRACE_S = 10.0
"""How long a process may take to checkpoint and exit after SIGTERM before it is killed."""
STOPPED_AFTER_S = 1.0
"""A process seen stopped (state T) this long is a fault (a shorter stop may be a debugger stepping)."""
POLL_S = 0.1
RESTARTS_ENV = "TAG_ACTORS_RESTARTS"
"""Set by the launcher in a process it restarts: how many times it has (the process then resumes from its
checkpoint, rejoins its neighbours and counts tag_process_restarts_total)."""


class PopenLike(Protocol):
    """What the supervisor needs of a process: ``subprocess.Popen``, or an adapter for another backend's worker
    (a Ray actor) that answers the same calls."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


class ChildProcess(Protocol):
    name: str
    proc: PopenLike
    log_path: Path


Spawn = Callable[[str], ChildProcess]
"""``spawn(name) -> Child``: start process ``name`` again (the launcher's, or another backend's). The new process
resumes from its checkpoint and rejoins its neighbours (PROTOCOL.md "Restarts")."""


def child_state(child: Any) -> str:
    """A child's process state: asked of its handle where it has its own way (a Ray actor on another node),
    else read from this machine's /proc."""
    own = getattr(child.proc, "state", None)
    return own() if callable(own) else process_state(child.proc.pid)


def read_failure(run_dir: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "logs" / f"{file_name(name)}.failure.json").read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Blame:
    """The process named as the cause of a fault, how it failed, and what else the supervisor saw."""

    name: str
    how: str
    notes: list[str] = field(default_factory=list)

    def message(self, log_path: Path | None, action: str = "stopping the run") -> str:
        lines = [f"tag_actors: process {self.name!r} failed ({self.how}); {action}."]
        lines += [f"  {n}" for n in self.notes]
        if log_path is not None:
            lines.append(f"--- last lines of {log_path} ---\n{log_tail(log_path, 25)}\n---")
        return "\n".join(lines)


def _short(returncode: int | None) -> tuple[str, str]:
    """('killed by SIGKILL', its hint) from ``describe_exit``."""
    text = describe_exit(returncode)
    how, _, hint = text.partition(" (")
    return how, hint.rstrip(")")


def blame_exits(run_dir: Path, children: list[ChildProcess], stopped: dict[str, float],
                remote: dict[str, str] | None = None) -> Blame:
    """Name the cause among the processes that exited (or were found stopped).

    Evidence, in order of time: a process's own record (a crash or a signal: written before its sockets close,
    so before its neighbours notice), a stop seen in /proc, and the records of neighbours naming a peer they
    lost (the cause for a process killed outright, which leaves no record). Processes whose only record is a
    lost peer are symptoms. A handshake timeout names the awaited process if it is still starting (late).
    ``remote``: process -> 'on host NAME (ADDRESS)' for the processes other hosts run (``--host``): a lost or
    silent one of those is named with its host, not a neighbour here."""
    remote = remote or {}
    by_name = {c.name: c for c in children}
    records = {c.name: read_failure(run_dir, c.name) for c in children}
    causes: dict[str, tuple[float, str]] = {}  # name -> (time of the evidence, how)
    notes: list[str] = []
    for c in children:
        rc, rec = c.proc.returncode, records[c.name]
        kind = rec["kind"] if rec else None
        if kind == "crash":
            causes[c.name] = (rec["time"], f"{_short(rc)[0]}: {rec['message']}" if rc is not None else
                              rec["message"])
        elif kind == "signal":
            causes[c.name] = (rec["time"], f"stopped by {rec.get('signal', 'a signal')}, not sent by the launcher")
        elif rc is not None and rc != 0 and kind is None:
            how, hint = _short(rc)
            causes[c.name] = (float("inf"), how)
            if hint:
                notes.append(f"{c.name!r} {how}: {hint}")
    for name, since in stopped.items():
        causes[name] = (since, "stopped (SIGSTOP or a debugger: process state T)")
    lost_at: dict[str, float] = {}
    for rec in records.values():
        if rec and rec["kind"] == "peer_lost":
            peer = rec.get("peer", "")
            lost_at[peer] = min(lost_at.get(peer, float("inf")), rec["time"])
    for peer, when in lost_at.items():
        if peer in causes:
            causes[peer] = (min(causes[peer][0], when), causes[peer][1])
        elif peer in by_name and by_name[peer].proc.poll() is None:
            causes[peer] = (when, "stopped answering its peers (frozen or cut off) while still running")
        elif peer in remote:
            causes[peer] = (when, f"lost {remote[peer]}: that host, its launcher or the network to it went away")
    timeouts = {n: r for n, r in records.items() if r and r["kind"] == "timeout"}
    for name, rec in sorted(timeouts.items(), key=lambda nr: nr[1]["time"]):
        notes.append(f"{name!r}: {rec['message']}")
        for peer in rec.get("waited_for", []):
            if peer in remote:
                causes.setdefault(peer, (rec["time"], f"never answered {remote[peer]} within "
                                                      "run.startup_timeout_s: is its launcher started there "
                                                      "(--host), and can this host reach that address?"))
                continue
            state = read_state(run_dir, peer)
            if peer in by_name and by_name[peer].proc.poll() is None and (
                    state is None or state.get("phase") in ("starting", "handshake")
                    or state.get("during") == "handshake"):
                phase = state.get("during", state["phase"]) if state else "not started"
                causes.setdefault(peer, (rec["time"], f"late: still in its {phase} phase when {name!r} gave up "
                                                      "waiting for it (run.startup_timeout_s)"))
    if causes:
        name = min(causes, key=lambda n: causes[n][0])
        return Blame(name, causes[name][1], notes)
    if timeouts:  # nobody to call late (an external process, or one that exited): the first to give up
        name, rec = min(timeouts.items(), key=lambda nr: nr[1]["time"])
        return Blame(name, f"timed out: {rec['message']}", notes)
    failed = [c for c in children if c.proc.returncode not in (None, 0)]
    first = failed[0] if failed else children[0]
    return Blame(first.name, describe_exit(first.proc.returncode), notes)


def env_completed(run_dir: Path) -> bool:
    """Whether the env has ended its run (its budget done): a fault now needs no restart, nobody would rejoin."""
    path = run_dir / "events" / "env.jsonl"
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return False
    return '"type":"end"' in tail.replace(" ", "") and '"reason":"completed"' in tail.replace(" ", "")


def wait_chain(run_dir: Path, names: list[str], start: str) -> tuple[list[str], str, list[str]]:
    """Follow who waits for whom from ``start``: (the chain of names, the one at its end, lines describing each
    step). The end is a process that waits for nobody, or the first one seen twice (a cycle: a deadlock)."""
    states = {n: read_state(run_dir, n) for n in names}
    now = time.time()
    chain, lines = [start], []
    current = start
    while True:
        st = states.get(current)
        if st is None:
            lines.append(f"{current} has written no state (it may never have started)")
            return chain, current, lines
        waits = [w for w in st.get("waits_for", []) if w in states] if st["phase"] == "waiting" else []
        if not waits:
            lines.append(f"{current} waits for nobody: {st['phase']} at tick {st.get('tick', '?')} "
                         f"(its last word {now - st['time']:.1f}s ago)")
            return chain, current, lines
        lines.append(f"{current} waits for {st['what']} from {', '.join(waits)} since {now - st['since']:.1f}s "
                     f"(tick {st.get('tick', '?')}, {st.get('during', '')})")
        nxt = waits[0]
        if nxt in chain:
            chain.append(nxt)
            lines.append(f"deadlock: {' -> '.join(chain)}")
            return chain, nxt, lines
        chain.append(nxt)
        current = nxt


@dataclass
class StallWatch:
    """No tick for ``timeout_s``: the env's event log (a status record every ``run.log_every_s`` while it ticks)
    has not grown, and the env is in its tick loop (not starting, not stopping)."""

    run_dir: Path
    timeout_s: float
    size: int = -1
    since: float = field(default_factory=time.monotonic)

    def stalled_for(self) -> float:
        if self.timeout_s <= 0:
            return 0.0
        state = read_state(self.run_dir, "env")
        try:
            size = (self.run_dir / "events" / "env.jsonl").stat().st_size
        except OSError:
            size = -1
        now = time.monotonic()
        ticking = state is not None and (state["phase"] == "running" or state.get("during") == "running")
        if size != self.size or not ticking:
            self.size, self.since = size, now
            return 0.0
        return now - self.since


@dataclass
class Supervisor:
    """Watches the children of a run until they all end or a fault is found (then stops them all)."""

    run_dir: Path
    children: list[Any]
    stall_timeout_s: float = 0.0
    on_poll: Callable[[], None] | None = None
    """Called every poll (the launcher's progress lines)."""
    on_failure: Callable[[str, str], None] | None = None
    """Told (name, how) of the fault found (the launcher's run-state metrics)."""
    remote: dict[str, str] = field(default_factory=dict)
    """The processes other hosts run, with their host (see ``blame_exits``)."""
    spawn: Spawn | None = None
    """Restarts one process (one_for_one); None: every fault stops the run."""
    restartable: Callable[[str], bool] = lambda name: False
    """Whether a fault of process ``name`` is met with a restart (its level's restart policy is 'always')."""
    budget: RestartBudget | None = None
    on_fault: Callable[[Blame], str] | None = None
    """For a fault not restarted here: says what it leads to (the Ray backend restarts the whole run)."""
    on_restart: Callable[[str, int], None] | None = None
    """Told (name, its restarts so far) after each restart (the launcher's metrics)."""
    stopped_since: dict[str, float] = field(default_factory=dict)
    blame: Blame | None = None
    """The fault that ended ``run`` (None: every child finished)."""
    restarts: list[tuple[float, str, str]] = field(default_factory=list)
    """(wall time the fault was seen, process, how) of every restart."""

    def __post_init__(self) -> None:
        self.stall = StallWatch(self.run_dir, self.stall_timeout_s)

    def run(self) -> int:
        """0 when every child finished; 1 after a fault that is not restarted (reported on stderr, every child
        stopped). A restartable fault restarts that process alone while the others wait for it (``restart``)."""
        while True:
            blame = self.check()
            if blame is not None and not self.restart(blame):
                self.blame = blame
                if self.on_failure is not None:
                    self.on_failure(blame.name, blame.how)
                terminate(self.children)
                return 1
            if blame is None and all(c.proc.poll() is not None for c in self.children):
                return 0
            if self.on_poll:
                self.on_poll()
            time.sleep(POLL_S)

    def restart(self, blame: Blame) -> bool:
        """Erlang's one_for_one: kill what is left of the named process (stopped or stalled), start it again
        through ``spawn`` after the budget's backoff, and let its neighbours (which hold their links open for it)
        greet it. False, after reporting why, when the fault is not restarted: the policy says 'never', the budget
        is spent, or another process failed too (a neighbour that gave up waiting: the run is beyond repair)."""
        culprit = next((c for c in self.children if c.name == blame.name), None)
        others = [c for c in self.children if c is not culprit and c.proc.poll() not in (None, 0)]
        action = "stopping the run"
        delay = None
        if culprit is None or self.spawn is None or self.budget is None or not self.restartable(blame.name):
            pass
        elif others:
            action = f"stopping the run ({', '.join(repr(c.name) for c in others)} failed too)"
        elif env_completed(self.run_dir):
            action = "not restarted: the run has completed its budget and is stopping"
        elif (delay := self.budget.next_delay(blame.name)) is None:
            action = (f"stopping the run: {self.budget.max_restarts} restarts within {self.budget.window_s:.0f}s "
                      "already (run.max_restarts, run.restart_window_s)")
        if delay is None:
            self.report(blame, self.on_fault(blame) if self.on_fault else action)
            return False
        seen = time.time()
        self.report(blame, f"restarting it alone from its checkpoint{f' in {delay:.1f}s' if delay else ''} "
                    f"(restart {self.budget.total + 1}; {len(self.budget.times) + 1} of {self.budget.max_restarts} "
                    f"within {self.budget.window_s:.0f}s); the others wait for it to rejoin")
        if culprit.proc.poll() is None:  # stopped or stalled: it cannot checkpoint; its last checkpoint it is
            with contextlib.suppress(ProcessLookupError):
                culprit.proc.kill()
        culprit.proc.wait()
        time.sleep(delay)
        self.budget.spend(blame.name)
        (self.run_dir / "logs" / f"{file_name(blame.name)}.failure.json").unlink(missing_ok=True)
        self.children[self.children.index(culprit)] = self.spawn(blame.name)
        self.stopped_since.pop(blame.name, None)
        self.stall = StallWatch(self.run_dir, self.stall_timeout_s)
        self.restarts.append((seen, blame.name, blame.how))
        if self.on_restart is not None:
            self.on_restart(blame.name, sum(1 for _, n, _ in self.restarts if n == blame.name))
        return True

    def check(self) -> Blame | None:
        """A fault seen now, named; None while all is well."""
        now = time.monotonic()
        exited = [c for c in self.children if c.proc.poll() not in (None, 0)]
        if exited:
            if not (len(exited) == 1 and exited[0].proc.returncode < 0 and self.restartable(exited[0].name)):
                self._settle()  # a process killed outright under a restart policy is the cause: no settling
            return blame_exits(self.run_dir, self.children, self._stopped_now(), self.remote)
        stopped = self._stopped_now()
        if any(now - since >= STOPPED_AFTER_S for since in self.stopped_since.values()):
            return blame_exits(self.run_dir, self.children, stopped, self.remote)
        stalled = self.stall.stalled_for()
        if stalled >= self.stall_timeout_s > 0:
            names = [c.name for c in self.children]
            _, culprit, lines = wait_chain(self.run_dir, names, "env")
            state = child_state(next(c for c in self.children if c.name == culprit))
            frozen = " (process state T: stopped)" if state in ("T", "t") else ""
            return Blame(culprit, f"stalled: no tick for {stalled:.0f}s (run.stall_timeout_s){frozen}",
                         ["who waits for whom:", *lines])
        return None

    def _stopped_now(self) -> dict[str, float]:
        """Children in state T (stopped), with the wall time they were first seen so."""
        for c in self.children:
            stopped = c.proc.poll() is None and child_state(c) in ("T", "t")
            if stopped:
                self.stopped_since.setdefault(c.name, time.monotonic())
            else:
                self.stopped_since.pop(c.name, None)
        mono_to_wall = time.time() - time.monotonic()
        return {n: since + mono_to_wall for n, since in self.stopped_since.items()}

    def _settle(self, timeout_s: float = 2.0) -> None:
        """After a first exit, give the cause's record a moment to land (a crashed process writes it before it
        closes its sockets; its neighbours may exit first)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records = [read_failure(self.run_dir, c.name) for c in self.children]
            if any(r and r["kind"] in ("crash", "signal") for r in records) or all(
                    c.proc.poll() is not None for c in self.children):
                return
            time.sleep(0.05)

    def report(self, blame: Blame, action: str) -> None:
        root = next((c for c in self.children if c.name == blame.name), None)
        print("\n" + blame.message(root.log_path if root else None, action), file=sys.stderr)
        for c in self.children:
            if c is not root and c.proc.returncode not in (None, 0):
                print(f"tag_actors: process {c.name!r} also exited ({describe_exit(c.proc.returncode)}): "
                      f"{log_tail(c.log_path, 1)}", file=sys.stderr)


def terminate(children: list[Any], hurry: Callable[[], bool] = lambda: False) -> None:
    """SIGTERM every child still running (SIGCONT too, so a stopped one can act on it), then wait up to
    ``GRACE_S`` for their checkpoints; kill whoever is left, or everyone at once as soon as ``hurry()``."""
    for c in children:
        if c.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it has just exited
                c.proc.send_signal(signal.SIGTERM)
                c.proc.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + GRACE_S
    while any(c.proc.poll() is None for c in children):
        late = time.monotonic() >= deadline
        if late or hurry():
            for c in children:
                if c.proc.poll() is None:
                    if late:
                        print(f"tag_actors: {c.name!r} did not stop within {GRACE_S:.0f}s; killing it",
                              file=sys.stderr)
                    with contextlib.suppress(ProcessLookupError):  # it has just exited
                        c.proc.kill()
            for c in children:
                c.proc.wait()
            return
        time.sleep(0.05)


def restart_policy(cfg: Any, level: int) -> str:
    """'never' or 'always' for a process of ``level`` (0: the env): lN.restart, else run.restart."""
    if level >= 1 and cfg.levels[level - 1].restart:
        return cfg.levels[level - 1].restart
    return cfg.run.restart


@dataclass
class RestartBudget:
    """Erlang's restart intensity: at most ``max_restarts`` within ``window_s``, all processes together. The
    backoff is per process: its first restart in the window is immediate (a single crash costs no wait), each
    further one of the same process waits ``backoff_s``, doubled for every earlier one still in the window (at
    most 30 s), so a process that keeps crashing does not spin while faults of different processes (a chaos
    schedule, a flaky host) each come back at once."""

    max_restarts: int
    window_s: float
    backoff_s: float
    times: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    total: int = 0

    def next_delay(self, name: str = "", now: float | None = None) -> float | None:
        """Seconds to wait before restarting ``name`` now; None when the budget is spent."""
        now = time.monotonic() if now is None else now
        kept = [(t, n) for t, n in zip(self.times, self.names, strict=True) if now - t < self.window_s]
        self.times, self.names = [t for t, _ in kept], [n for _, n in kept]
        if len(self.times) >= self.max_restarts:
            return None
        earlier = self.names.count(name)
        if not earlier or not self.backoff_s:
            return 0.0
        return min(30.0, self.backoff_s * 2 ** (earlier - 1))

    def spend(self, name: str = "", now: float | None = None) -> int:
        self.times.append(time.monotonic() if now is None else now)
        self.names.append(name)
        self.total += 1
        return self.total
