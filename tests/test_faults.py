"""Faults, as a hostile tester makes them: the right process is named (killed, signalled, stopped, stalled,
late), nothing is lost on any stop, checkpoints load safely and agree on --resume, and a flood of strangers costs
the wire nothing unbounded. Every run goes through the ``launch`` fixture (nothing is left behind)."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import zmq
from conftest import descendants_alive, env_steps, wait_for

from tag_actors.runlog import write_state
from tag_actors.supervisor import blame_exits, wait_chain
from tag_actors.transport import PROBE_EVERY_S, Hub
from tag_actors.wire import Kind, Message, decode, encode

SMALL = ["--set", "env.num_envs=8", "--set", "env.max_steps=20", "--set", "run.metrics=false",
         "--set", "run.log_every_s=0.2"]
FOREVER = ["--set", "run.total_env_steps=100000000"]


def start_ticking(launch, run_dir: Path, *extra: str) -> subprocess.Popen:
    proc = launch.start("configs/balance_random.toml", "--quiet", "--run-dir", str(run_dir), *SMALL, *FOREVER,
                        *extra)
    wait_for(lambda: env_steps(run_dir) > 300, 90, "the run to make progress")
    return proc


# --- blame ------------------------------------------------------------------------------------------------------


def test_sigterm_of_one_agent_names_that_agent(launch, tmp_path):
    """Not the env, which only exits because it lost a peer."""
    run_dir = tmp_path / "run"
    proc = start_ticking(launch, run_dir)
    os.kill(descendants_alive(run_dir)["l2.0"], signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "process 'l2.0' failed (stopped by SIGTERM, not sent by the launcher)" in err, err
    assert "process 'env' failed" not in err
    assert "Traceback" not in err, err


def test_stopped_agent_is_named_as_stopped_and_the_run_ends(launch, tmp_path):
    """SIGSTOP: named within seconds as stopped (not the env after the heartbeat timeout), and the stop that
    follows wakes it so that it exits without being killed after the grace period."""
    run_dir = tmp_path / "run"
    proc = start_ticking(launch, run_dir, "--set", "run.peer_timeout_s=30")
    os.kill(descendants_alive(run_dir)["l2.0"], signal.SIGSTOP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "process 'l2.0' failed (stopped (SIGSTOP" in err, err
    assert "did not stop within" not in err, err
    assert not descendants_alive(run_dir)


def test_stall_names_who_waits_for_whom(launch, tmp_path):
    """A top agent that takes a minute per decision holds up a lockstep run: the watchdog names it, with the
    chain of waits that leads to it."""
    run_dir = tmp_path / "run"
    r = launch.run("configs/balance_random.toml", "--quiet", "--run-dir", str(run_dir), *SMALL, *FOREVER,
                   "--set", "l3.agent=slow", "--set", "l3.params.delay_s=600",
                   "--set", "run.stall_timeout_s=3", timeout=120)
    assert r.returncode == 1
    assert "process 'l3.0' failed (stalled: no tick for 3s" in r.stderr, r.stderr
    assert "waits for DOWN from l2." in r.stderr and "l3.0 waits for nobody" in r.stderr, r.stderr
    assert not descendants_alive(run_dir)


def test_late_child_is_named_late_not_its_neighbour(tmp_path):
    """Two processes gave up waiting for l1.1's handshake; l1.1 is still starting: it is the one named."""
    children = [_FakeChild(tmp_path, "env", 1), _FakeChild(tmp_path, "l2.0", 1), _FakeChild(tmp_path, "l1.1", None)]
    for name in ("env", "l2.0"):
        (tmp_path / "logs" / f"{name}.failure.json").write_text(json.dumps(
            {"name": name, "kind": "timeout", "time": time.time(), "message": f"{name!r} waited 3s for l1.1",
             "waited_for": ["l1.1"]}))
    write_state(tmp_path, "l1.1", "starting")
    blame = blame_exits(tmp_path, children, {})
    assert blame.name == "l1.1" and blame.how.startswith("late: still in its starting phase"), blame


def test_timeout_for_an_outsider_names_the_first_to_give_up_not_a_bystander(tmp_path):
    """l2.0 timed out waiting for an external l1.0; l1.1 only lost l2.0: l2.0 is named, with its message."""
    children = [_FakeChild(tmp_path, "l1.1", 3), _FakeChild(tmp_path, "l2.0", 1)]
    now = time.time()
    (tmp_path / "logs" / "l2.0.failure.json").write_text(json.dumps(
        {"name": "l2.0", "kind": "timeout", "time": now, "message": "LinkTimeout: 'l2.0' waited 10s for WELCOME",
         "waited_for": ["l1.0"]}))
    (tmp_path / "logs" / "l1.1.failure.json").write_text(json.dumps(
        {"name": "l1.1", "kind": "peer_lost", "time": now + 0.1, "message": "peer 'l2.0' disconnected",
         "peer": "l2.0"}))
    blame = blame_exits(tmp_path, children, {})
    assert blame.name == "l2.0" and "waited 10s for WELCOME" in blame.how, blame


def test_wait_chain_finds_a_deadlock(tmp_path):
    (tmp_path / "logs").mkdir()
    now = time.time()
    write_state(tmp_path, "env", "waiting", what="DOWN", waits_for=["l1.0"], since=now, during="running")
    write_state(tmp_path, "l1.0", "waiting", what="UP", waits_for=["env"], since=now, during="running")
    chain, culprit, lines = wait_chain(tmp_path, ["env", "l1.0"], "env")
    assert chain == ["env", "l1.0", "env"] and culprit == "env"
    assert lines[-1] == "deadlock: env -> l1.0 -> env"


class _Exited:
    """What the supervisor reads of a process: its return code (None: running)."""

    def __init__(self, returncode: int | None):
        self.returncode, self.pid = returncode, 0

    def poll(self) -> int | None:
        return self.returncode


class _FakeChild:
    """A finished (or running) child as the supervisor sees it."""

    def __init__(self, run_dir: Path, name: str, returncode: int | None):
        (run_dir / "logs").mkdir(exist_ok=True)
        self.name, self.log_path = name, run_dir / "logs" / f"{name}.log"
        self.proc = _Exited(returncode)


# --- nothing lost on any stop ----------------------------------------------------------------------------------


def test_double_interrupt_still_writes_episodes(launch, tmp_path):
    run_dir = tmp_path / "run"
    proc = start_ticking(launch, run_dir)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted again" in err
    rows = list(csv.reader((run_dir / "episodes.csv").open()))
    assert len(rows) > 1 and rows[0][0] == "name"


@pytest.mark.parametrize("serial", [False, True])
def test_interrupt_stops_a_launcher_started_with_sigint_ignored(launch, tmp_path, serial):
    """A background job of a script inherits SIGINT ignored (Python then installs no Ctrl-C handler): ``kill -INT``
    must still stop the run cleanly, as Ctrl-C does (failed this way in a CI run started with ``&``)."""
    run_dir = tmp_path / "run"
    ignoring = ("sh", "-c", 'trap "" INT; exec "$0" "$@"')
    proc = launch.start("configs/balance_random.toml", "--quiet", "--run-dir", str(run_dir), *SMALL, *FOREVER,
                        *(["--serial"] * serial), prefix=ignoring)
    wait_for(lambda: env_steps(run_dir) > 300, 90, "the run to make progress")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err, err
    assert len(list(csv.reader((run_dir / "episodes.csv").open()))) > 1


def test_launcher_killed_leaves_episodes_and_no_traceback(launch, tmp_path):
    """kill -9 of the launcher: its children stop (parent-death signal), and the last one out writes
    episodes.csv; no process prints a traceback on the way."""
    run_dir = tmp_path / "run"
    proc = start_ticking(launch, run_dir)
    proc.kill()
    proc.wait()
    wait_for(lambda: not descendants_alive(run_dir), 30, "the actors to exit")
    rows = list(csv.reader((run_dir / "episodes.csv").open()))
    assert len(rows) > 1
    for log in (run_dir / "logs").glob("*.log"):
        assert "Traceback" not in log.read_text(), log


def test_sigterm_stop_prints_no_traceback_and_checkpoints_load_weights_only(launch, tmp_path):
    import torch

    run_dir = tmp_path / "run"
    proc = start_ticking(launch, run_dir, "--set", "l1.agent=ppo",
                         "--set", "l1.params.rollout_len=4", "--set", "l1.params.hidden_sizes=[8]")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    for log in (run_dir / "logs").glob("*.log"):
        assert "Traceback" not in log.read_text(), log
    names = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt"))
    assert names == ["env", "l1.0", "l1.1", "l1.2", "l1.3", "l2.0", "l2.1", "l3.0"]
    for name in names:  # ppo at level 1, random above, the env's counters
        state = torch.load(run_dir / "checkpoints" / f"{name}.pt", weights_only=True)
        assert state["ticks"] > 0


def test_resume_refuses_checkpoints_far_apart(launch, tmp_path):
    from tag_actors.runlog import save_checkpoint

    run_dir = tmp_path / "run"
    r = launch.run("configs/balance_random.toml", "--quiet", "--run-dir", str(run_dir), *SMALL,
                   "--set", "run.total_env_steps=800", "--set", "run.checkpoint_every_s=0")
    assert r.returncode == 0, r.stderr
    path = run_dir / "checkpoints" / "l2.0.pt"
    from tag_actors.runlog import load_checkpoint

    state = load_checkpoint(path)
    state["ticks"] -= 50
    save_checkpoint(path, state, ticks=state["ticks"])
    r = launch.run("--resume", str(run_dir), "--quiet", "--set", "run.total_env_steps=1600")
    assert r.returncode == 2
    assert "checkpoints disagree by 50 ticks" in r.stderr and "l2.0 at tick" in r.stderr, r.stderr


# --- bounded under abuse ---------------------------------------------------------------------------------------


def _link_pair(zctx, free_port, hub: Hub):
    """A hub's ParentLink on tcp, with a plain DEALER as its parent (to count what it receives)."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    link = hub.serve_parent(endpoint, "par", me="kid")
    parent = zctx.socket(zmq.DEALER)
    parent.identity = b"par"
    parent.connect(endpoint)
    parent.send_multipart(encode(Message(Kind.PING, "par")))
    wait_for(lambda: hub.pending(link), 5, "the parent's first message")
    hub.try_recv(link)
    link.established = True
    return endpoint, link, parent


def test_strangers_coming_and_going_cause_no_ping_storm(zctx, free_port):
    hub = Hub("kid", peer_timeout_s=5.0)
    try:
        endpoint, link, parent = _link_pair(zctx, free_port, hub)
        started = time.monotonic()
        for i in range(60):  # strangers that speak ZMTP, connect, and leave
            s = zctx.socket(zmq.DEALER)
            s.identity = f"stranger{i}".encode()
            s.connect(endpoint)
            time.sleep(0.01)
            s.close(linger=0)
            hub.wait([link], 0.01)
            hub.check_peers([link])
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            hub.wait([link], 0.05)
            hub.check_peers([link])
        elapsed = time.monotonic() - started
        pings = 0
        while parent.poll(0):
            if decode(parent.recv_multipart()).kind == Kind.PING:
                pings += 1
        assert pings <= elapsed / PROBE_EVERY_S + 2, (pings, elapsed)
    finally:
        hub.close()


def test_garbage_on_a_raw_tcp_connection_is_counted_as_protocol(zctx, free_port):
    hub = Hub("kid", peer_timeout_s=5.0)
    try:
        endpoint, link, _ = _link_pair(zctx, free_port, hub)
        host, port = endpoint[len("tcp://"):].rsplit(":", 1)
        for payload in (b"GET / HTTP/1.0\r\n\r\n", b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00NULL" + b"\x00" * 40):
            with socket.create_connection((host, int(port))) as s:
                s.sendall(payload)
                time.sleep(0.1)
        wait_for(lambda: (hub.wait([link], 0.05), hub.check_peers([link]),
                          sum(n for (_, reason), n in hub.bad_frames.items() if reason == "protocol") >= 2)[-1],
                 10, "two protocol failures counted")
        assert not any(reason == "auth" for _, reason in hub.bad_frames), hub.bad_frames
    finally:
        hub.close()


# --- restart (the restarts themselves: tests/test_restart.py) ---------------------------------------------------


def test_restart_policy_never_is_the_default_and_levels_override(tmp_path):
    from tag_actors import config as config_mod
    from tag_actors.supervisor import restart_policy

    cfg = config_mod.load(Path("configs/balance_random.toml"), ["l2.restart=always"])
    assert [restart_policy(cfg, lv) for lv in (0, 1, 2, 3)] == ["never", "never", "always", "never"]
    with pytest.raises(config_mod.ConfigError, match="l1.restart: input should be '', 'never' or 'always'"):
        config_mod.load(Path("configs/balance_random.toml"), ["l1.restart=sometimes"])


def test_checkpoints_hold_numpy_arrays_but_never_code(tmp_path):
    """Plug-in agents may keep numpy arrays: they round trip; a checkpoint naming any other global (code) is
    refused on load, in torch's format or the legacy one written without torch."""
    import pickle

    import numpy as np

    from tag_actors.runlog import _TORCH_MAGIC, load_checkpoint, save_checkpoint

    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "ticks": 7, "name": b"x"}
    save_checkpoint(tmp_path / "a.pt", state, ticks=7)
    back = load_checkpoint(tmp_path / "a.pt")
    assert np.array_equal(back["w"], state["w"]) and back["ticks"] == 7 and back["name"] == b"x"
    with (tmp_path / "evil.pt").open("wb") as f:
        for record in (_TORCH_MAGIC, 1001, {}):
            pickle.dump(record, f, protocol=2)
        f.write(b"cos\nsystem\n(S'true'\ntR.")  # os.system('true') if anything ran it
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        load_checkpoint(tmp_path / "evil.pt")
