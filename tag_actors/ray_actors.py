"""What runs on the Ray nodes (``TagProcess``: one process of a run; ``NodeControl``: signals and process states
on a node) and how the launcher's supervisor sees them (``RayProc``, a Popen-like handle). ``ray_backend`` places,
wires and starts them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError

from tag_actors.procs import process_state
from tag_actors.runlog import file_name

TOKEN_FILE = ".ray_run_token"
"""The driver's token in the run folder: an actor that reads it sees the same folder."""
STATE_EVERY_S = 1.0
"""How often a remote process's state (running, stopped) is asked of its node."""


@ray.remote(num_cpus=0, max_restarts=0)
class TagProcess:
    """One process of a run as a Ray actor: reports where it is, reserves its ports, then runs its loop."""

    def __init__(self, run_dir: str, name: str, cwd: str):
        for key, value in (("PYTHONUNBUFFERED", "1"), ("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1")):
            os.environ[key] = value  # before torch loads: one thread per process, as the local launcher sets
        self.run_dir, self.name = Path(run_dir), name
        self.held: list[socket.socket] = []
        with contextlib.suppress(OSError):  # the driver's folder, for relative paths in the config
            os.chdir(cwd)
        import tag_actors.loops  # noqa: F401  (its imports, torch among them, load while the others are placed)

    def where(self) -> dict[str, Any]:
        return {"node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
                "pid": os.getpid(), "hostname": socket.gethostname()}

    def prepare(self, token: str, n_ports: int) -> dict[str, Any]:
        """Whether this node sees the run folder (the driver's token in it), and ``n_ports`` ports free on this
        node's IP. Each port stays held by a bound, non-listening socket with SO_REUSEADDR until the loop ends:
        the loop's own sockets (ZeroMQ and the metrics server set SO_REUSEADDR too) can still bind it, while no
        other process's bind or connect can take it in between (Ray's workers open ports all the time)."""
        try:
            sees = (self.run_dir / TOKEN_FILE).read_text() == token
        except OSError:
            sees = False
        ip = ray.util.get_node_ip_address()
        self.release_ports()
        for _ in range(n_ports):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, 0))
            self.held.append(s)
        return {"sees_run_dir": sees, "ports": [s.getsockname()[1] for s in self.held]}

    def release_ports(self) -> None:
        for s in self.held:
            s.close()
        self.held = []

    def run(self, security: Any) -> int:
        """The process's loop to its end (``tag_actors.actor.run_process``); its exit code. Output goes to
        logs/NAME.log in the run folder, as for a process the local launcher starts."""
        from tag_actors.actor import run_process

        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(logs / f"{file_name(self.name)}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return run_process(self.run_dir, self.name, security)
        finally:
            self.release_ports()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


@ray.remote(num_cpus=0, max_restarts=0)
class NodeControl:
    """Signals and process states on one node, for the driver's supervisor."""

    def signal(self, pid: int, signum: int) -> bool:
        try:
            os.kill(pid, signum)
            return True
        except ProcessLookupError:
            return False

    def state(self, pid: int) -> str:
        return process_state(pid)


def node_names() -> dict[str, str]:
    """node id -> 'node 1a2b3c4d (IP, resources a, b)' for every node Ray knows, alive or not."""
    out = {}
    for n in ray.nodes():
        custom = sorted(k for k in n.get("Resources", {}) if k not in ("CPU", "GPU", "memory", "object_store_memory")
                        and not k.startswith("node:") and not k.startswith("accelerator_type"))
        extra = f", resources {', '.join(custom)}" if custom else ""
        out[n["NodeID"]] = f"node {n['NodeID'][:8]} ({n['NodeManagerAddress']}{extra})"
    return out


def node_alive(node_id: str) -> bool:
    return any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes())


class RayProc:
    """A Ray actor seen as a ``subprocess.Popen``, for the supervisor: the exit code is the ``run`` call's result,
    and a worker or node Ray lost reads as killed by SIGKILL (its failure record names the node)."""

    def __init__(self, backend: Any, name: str, handle: Any, ref: Any, where: dict[str, Any],
                 control: Any, local: bool):
        self.backend, self.name, self.handle, self.ref = backend, name, handle, ref
        self.node_id, self.pid, self.control, self.local = where["node_id"], where["pid"], control, local
        self.returncode: int | None = None
        self.killed = False
        self.lost: str | None = None
        """Why Ray lost the actor (node gone, worker died), when it did."""
        self._state, self._state_ref, self._state_at = "", None, 0.0

    def poll(self) -> int | None:
        if self.returncode is None:
            ready, _ = ray.wait([self.ref], timeout=0)
            if ready:
                self._finish()
        return self.returncode

    def _finish(self) -> None:
        try:
            self.returncode = int(ray.get(self.ref))
        except RayActorError as e:
            self.returncode = -signal.SIGKILL
            if not self.killed:  # lost, not killed by the supervisor
                self.lost = self.backend.describe_loss(self.name, self.node_id, e)
        with contextlib.suppress(Exception):
            ray.kill(self.handle, no_restart=True)  # its loop has ended: let its worker go

    def wait(self, timeout: float | None = None) -> int:
        try:
            ray.wait([self.ref], timeout=timeout)
        finally:
            if self.poll() is None:
                import subprocess

                raise subprocess.TimeoutExpired(f"ray actor {self.name}", timeout or 0)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, signum: int) -> None:
        if self.returncode is not None:
            return
        if self.local:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)
        else:
            self.control.signal.remote(self.pid, int(signum))

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.killed = True
        with contextlib.suppress(Exception):
            ray.kill(self.handle, no_restart=True)

    def state(self) -> str:
        """The process state letter (R, S, T, ...), read from /proc on this machine, or asked of its node at most
        once a second (the supervisor polls ten times a second)."""
        if self.local:
            return process_state(self.pid)
        if self._state_ref is not None:
            ready, _ = ray.wait([self._state_ref], timeout=0)
            if ready:
                with contextlib.suppress(Exception):
                    self._state = ray.get(self._state_ref)
                self._state_ref = None
        if self._state_ref is None and time.monotonic() - self._state_at >= STATE_EVERY_S:
            self._state_ref, self._state_at = self.control.state.remote(self.pid), time.monotonic()
        return self._state


@dataclass
class RayChild:
    """What the supervisor needs of a child (name, proc, log_path), for a Ray actor."""

    name: str
    proc: RayProc
    log_path: Path
