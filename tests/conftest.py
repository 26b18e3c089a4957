"""Shared fixtures: zmq sockets that are always closed with linger 0, and launcher runs whose processes are
always reaped (the pyzmq test-suite way: nothing a test starts outlives it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from tag_actors.launch import actor_pids

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def zctx():
    """A zmq context whose sockets are closed with linger 0 at teardown."""
    ctx = zmq.Context()
    sockets: list[zmq.Socket] = []
    orig = ctx.socket

    def tracked(kind: int) -> zmq.Socket:
        s = orig(kind)
        s.linger = 0
        sockets.append(s)
        return s

    ctx.socket = tracked  # type: ignore[method-assign]
    yield ctx
    for s in sockets:
        s.close(linger=0)
    ctx.term()


class Launch:
    """Runs ``python -m tag_actors.launch`` as a subprocess; kills its whole session at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "tag_actors.launch", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True,
                                env=dict(os.environ, **(env or {})))
        self.procs.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = self.start(*args)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            out, err = proc.communicate()
            raise AssertionError(f"launch {args} hung for {timeout}s\nstdout:\n{out}\nstderr:\n{err}") from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def kill(self, proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                self.kill(p)
                p.wait()


@pytest.fixture
def launch():
    lc = Launch()
    yield lc
    lc.close()


def descendants_alive(run_dir: Path) -> dict[str, int]:
    """name -> pid of the actor processes of that run still alive."""
    return actor_pids(run_dir)
