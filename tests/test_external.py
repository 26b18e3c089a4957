"""External processes (``[placement] external``): the launcher does not start them, prints where they bind and
connect, and the run waits for them; both reference agents (examples/) join a real 3-level run that way. One that
never comes is named when the start-up timeout runs out."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_conformance import ROOT, Procs, agent_cmd

CONFIG = (ROOT / "configs" / "balance_random.toml").read_text()


def write_config(tmp_path: Path, external: list[str], startup_timeout_s: int) -> Path:
    text = CONFIG.replace("total_env_steps = 20000", "total_env_steps = 3200").replace("num_envs = 64",
                                                                                       "num_envs = 16")
    text = text.replace("[run]\n", f"[run]\nstartup_timeout_s = {startup_timeout_s}\n")
    text += f"\n[placement]\nexternal = {external!r}\n".replace("'", '"')
    path = tmp_path / "external.toml"
    path.write_text(text)
    return path


def read_instructions(proc: subprocess.Popen, names: list[str], timeout_s: float = 60) -> dict[str, list[str]]:
    """The launcher's suggested command line for each external process (its ``e.g.`` line)."""
    found: dict[str, list[str]] = {}
    current = None
    deadline = time.monotonic() + timeout_s
    while len(found) < len(names) and time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"launcher ended before describing {names}"
        if line.startswith("external process "):
            current = line.split("'")[1]
        elif line.strip().startswith("e.g.") and current:
            found[current] = shlex.split(line.split("examples/foreign_agent.py", 1)[1])
    return found


@pytest.fixture
def procs():
    ps = Procs()
    yield ps
    ps.close()


@pytest.mark.slow
def test_both_reference_agents_join_a_real_run(launch, procs, tmp_path):
    """l1.0 is the plain-Python agent, l1.1 the Node.js one; everything else is ours; the run completes."""
    cfg = write_config(tmp_path, ["l1.0", "l1.1"], 120)
    run = launch.start(str(cfg), "--quiet", "--run-dir", str(tmp_path / "run"))
    args = read_instructions(run, ["l1.0", "l1.1"])
    assert "--bind" in args["l1.0"] and "--parent" in args["l1.0"] and args["l1.0"][args["l1.0"].index("--parent")
                                                                                   + 1] == "l2.0"
    python = procs.start([*agent_cmd("python"), *args["l1.0"]])
    node = procs.start([*agent_cmd("node"), *args["l1.1"]])
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err + out
    assert python.wait(30) == 0 and node.wait(30) == 0
    events = (tmp_path / "run" / "events")
    assert {p.stem for p in events.glob("*.jsonl")} >= {"env", "l2.0", "l2.1", "l3.0", "l1.2", "l1.3"}
    assert (tmp_path / "run" / "logs" / "l1.0.external.txt").read_text().startswith("external process 'l1.0'")


@pytest.mark.slow
def test_the_plain_python_agent_joins_over_tcp_with_curve(launch, procs, tmp_path):
    """As an outsider would: TCP, every link encrypted and authenticated, keys loaded with zmq.auth."""
    keys = tmp_path / "keys"
    subprocess.run([sys.executable, "-m", "tag_actors.keys", str(keys), "a"], check=True, cwd=ROOT,
                   capture_output=True)
    cfg = write_config(tmp_path, ["l1.0"], 120)
    text = cfg.read_text().replace("[run]\n", '[run]\ntransport = "tcp"\n')
    cfg.write_text(text + f'hosts = {{ a = "127.0.0.1" }}\ncurve = true\nkeys_dir = "{keys}"\n')
    run = launch.start(str(cfg), "--quiet", "--run-dir", str(tmp_path / "run"))
    args = read_instructions(run, ["l1.0"])["l1.0"]
    assert "--curve-keys" in args and args[args.index("--bind") + 1].startswith("tcp://127.0.0.1:")
    agent = procs.start([*agent_cmd("python"), *args])
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err + out
    assert agent.wait(30) == 0


def test_an_external_process_that_never_comes_is_named(launch, tmp_path):
    cfg = write_config(tmp_path, ["l1.0"], 10)
    result = launch.run(str(cfg), "--quiet", "--run-dir", str(tmp_path / "run"), timeout=120)
    assert result.returncode == 1
    assert "external process 'l1.0' (level 1) is not started by the launcher" in result.stdout
    assert "bind    ipc://" in result.stdout and "connect ipc://" in result.stdout
    assert "external process 'l1.0' did not join within run.startup_timeout_s = 10s" in result.stderr, result.stderr


def test_an_unknown_external_process_is_a_config_error(launch, tmp_path):
    cfg = write_config(tmp_path, ["l9.0"], 4)
    result = launch.run(str(cfg), "--quiet", "--run-dir", str(tmp_path / "run"), timeout=60)
    assert result.returncode == 2 and "placement.external: no process 'l9.0'" in result.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-m", "slow or not slow"]))
