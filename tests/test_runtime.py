"""The actor runtime end to end: real processes, real sockets, real VMAS. Every run is bounded in time and every
process it starts is reaped (the ``launch`` fixture kills the launcher's whole session)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import descendants_alive, env_steps, wait_for

from tag_actors.runlog import read_events, steady_tick_split

SMALL = ["--set", "env.num_envs=8", "--set", "env.max_steps=20", "--set", "run.metrics=false"]


def write_config(path: Path, levels: list[str], n_agents: int = 4, extra_run: str = "") -> Path:
    path.write_text(f"""
[run]
name = "t"
seed = 3
total_env_steps = 1600
metrics = false
{extra_run}

[env]
kind = "vmas"
scenario = "balance"
num_envs = 8
n_agents = {n_agents}
max_steps = 20
kwargs = {{ n_agents = {n_agents} }}
""" + "\n".join(levels))
    return path


def level(agent: str = "random", fan_in: int = 1, every: int = 1, instruction: str = "", params: str = "") -> str:
    text = f'[[levels]]\nagent = "{agent}"\nfan_in = {fan_in}\nevery = {every}\n'
    if instruction:
        text += f"instruction = {instruction}\n"
    if params:
        text += f"[levels.params]\n{params}\n"
    return text


BOX = '{ type = "box", dim = 2 }'
GOALS = '{ type = "discrete", n = 3 }'
PPO = "rollout_len = 4\nhidden_sizes = [16]\nupdate_epochs = 1"

DEPTHS = {
    1: [level("random")],
    2: [level("ppo", params=PPO), level("ppo", fan_in=4, every=2, instruction=GOALS, params=PPO)],
    3: [level("ppo", params=PPO), level("ppo", fan_in=2, every=2, instruction=BOX, params=PPO),
        level("ppo", fan_in=2, every=2, instruction=GOALS, params=PPO)],
    5: [level("random"), level("random", fan_in=2, instruction=BOX), level("random", fan_in=2, every=2, instruction=BOX),
        level("random", fan_in=1, instruction=GOALS), level("random", fan_in=1, every=3, instruction=BOX)],
}


def summary(run_dir: Path) -> dict[str, dict]:
    """Per process: its episode returns (in order) and its end record."""
    out: dict[str, dict] = {}
    for e in read_events(run_dir):
        rec = out.setdefault(e["name"], {"returns": [], "end": None})
        if e["type"] == "episodes":
            rec["returns"].append(e["returns"])
        elif e["type"] == "end":
            rec["end"] = e
    return out


@pytest.mark.parametrize("depth", [pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow), 3,
                                   pytest.param(5, marks=pytest.mark.slow)])
def test_lockstep_actors_match_in_process(launch, tmp_path, depth):
    """The same seed gives the same rewards and actions in-process and as actors, at every depth."""
    cfg = write_config(tmp_path / "c.toml", DEPTHS[depth])
    serial, actors = tmp_path / "serial", tmp_path / "actors"
    r1 = launch.run(str(cfg), "--serial", "--quiet", "--run-dir", str(serial))
    assert r1.returncode == 0, r1.stderr
    r2 = launch.run(str(cfg), "--quiet", "--run-dir", str(actors))
    assert r2.returncode == 0, r2.stderr + r2.stdout
    a, b = summary(serial), summary(actors)
    assert set(a) == set(b) and len(a) == 1 + sum(1 for name in a if name.startswith("l"))
    top = f"l{depth}.0"
    assert top in a
    for name in a:
        assert a[name]["returns"] == b[name]["returns"], f"{name}: episode returns differ"
        assert a[name]["returns"], f"{name}: no finished episode"
        assert b[name]["end"]["reason"] == "completed"
        if name != "env":
            assert a[name]["end"]["action_digest"] == b[name]["end"]["action_digest"], f"{name}: actions differ"
            assert a[name]["end"]["updates"] == b[name]["end"]["updates"]
    if depth in (2, 3):
        assert b["l1.0"]["end"]["updates"] > 0  # PPO learned along the way, identically
    for name in a:
        if name != "env":
            assert (actors / "checkpoints" / f"{name}.pt").exists()
    assert (actors / "episodes.csv").read_text().count("\n") > 10
    assert not descendants_alive(actors)


@pytest.mark.slow
@pytest.mark.parametrize("serial", [True, False])
def test_status_records_split_each_tick(launch, tmp_path, serial):
    """The env's status records carry its own step time, so a bench can tell the env's share of a tick from the
    agents' (computed in-process, or awaited over the wire)."""
    run_dir = tmp_path / "run"
    r = launch.run("configs/balance_random.toml", "--quiet", "--run-dir", str(run_dir), *SMALL,
                   "--set", "run.total_env_steps=4000", "--set", "run.log_every_s=0.05", *(["--serial"] * serial))
    assert r.returncode == 0, r.stderr
    tick_ms, env_ms = steady_tick_split(run_dir)
    assert 0 < env_ms < tick_ms


@pytest.mark.slow
def test_timescales_hold_instructions(launch, tmp_path):
    """Level 2 acts every 2 ticks and level 3 every 4: they decide about half and a quarter as often."""
    cfg = write_config(tmp_path / "c.toml", DEPTHS[3])
    r = launch.run(str(cfg), "--quiet", "--run-dir", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    ends = {n: s["end"] for n, s in summary(tmp_path / "run").items()}
    d1, d2, d3 = ends["l1.0"]["decisions"], ends["l2.0"]["decisions"], ends["l3.0"]["decisions"]
    assert 0.9 * ends["l1.0"]["ticks"] <= d1 < ends["l1.0"]["ticks"]  # all but the ticks where every copy ended
    assert 0.4 < d2 / d1 < 0.7 and 0.2 < d3 / d1 < 0.45, (d1, d2, d3)


@pytest.mark.parametrize(("sig", "serial"), [(signal.SIGINT, False),
                                             pytest.param(signal.SIGTERM, False, marks=pytest.mark.slow),
                                             pytest.param(signal.SIGINT, True, marks=pytest.mark.slow),
                                             pytest.param(signal.SIGTERM, True, marks=pytest.mark.slow)])
def test_interrupt_stops_everything_and_saves(launch, tmp_path, sig, serial):
    run_dir = tmp_path / "run"
    proc = launch.start("configs/balance_random.toml", "--quiet", "--run-dir", str(run_dir), *SMALL,
                        "--set", "run.total_env_steps=100000000", "--set", "run.log_every_s=0.2",
                        *(["--serial"] * serial))
    wait_for(lambda: env_steps(run_dir) > 500, 60, "the run to make progress")
    if not serial:
        assert len(descendants_alive(run_dir)) == 8
    started = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 15
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not descendants_alive(run_dir)
    ends = {n: s["end"] for n, s in summary(run_dir).items()}
    assert set(ends) == {"env", "l1.0", "l1.1", "l1.2", "l1.3", "l2.0", "l2.1", "l3.0"}
    assert all(e is not None and e["reason"] == "interrupted" for e in ends.values()), ends
    assert len(list((run_dir / "checkpoints").glob("*.pt"))) == 8  # 7 agents and the env's counters
    assert (run_dir / "episodes.csv").read_text().count("\n") > 1  # the summary is written on the way out


@pytest.mark.slow
def test_cpu_affinity_sets_the_env_apart(launch, tmp_path):
    """run.cpu_affinity = 'env_apart': the env (every thread of it) runs on the first allowed CPU, agents on the
    others; with a single CPU nothing is pinned."""
    run_dir = tmp_path / "run"
    proc = launch.start("configs/balance_random.toml", "--quiet", "--run-dir", str(run_dir), *SMALL,
                        "--set", "run.total_env_steps=100000000", "--set", "run.log_every_s=0.2",
                        "--set", "run.cpu_affinity=env_apart")
    try:
        wait_for(lambda: env_steps(run_dir) > 200, 60, "the run to make progress")
        cpus = sorted(os.sched_getaffinity(0))
        pids = descendants_alive(run_dir)
        assert len(pids) == 8
        for name, pid in pids.items():
            expected = set(cpus) if len(cpus) < 2 else {cpus[0]} if name == "env" else set(cpus[1:])
            for thread in os.listdir(f"/proc/{pid}/task"):
                assert os.sched_getaffinity(int(thread)) == expected, (name, thread)
    finally:
        launch.kill(proc)
        proc.wait()


def test_killed_agent_ends_the_run_naming_it(launch, tmp_path):
    run_dir = tmp_path / "run"
    proc = launch.start("configs/balance_random.toml", "--quiet", "--run-dir", str(run_dir), *SMALL,
                        "--set", "run.total_env_steps=100000000", "--set", "run.log_every_s=0.2")
    wait_for(lambda: env_steps(run_dir) > 500, 60, "the run to make progress")
    os.kill(descendants_alive(run_dir)["l2.1"], signal.SIGKILL)
    started = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 15
    assert proc.returncode == 1
    assert "process 'l2.1' failed (killed by SIGKILL)" in err, err
    assert not descendants_alive(run_dir)


def test_params_typo_is_refused_at_load_not_in_a_process(launch, tmp_path):
    """What used to crash l3.0 after every process had started is now a config error; a crashing agent is
    tested with a plug-in that raises (tests/test_plugins.py)."""
    r = launch.run("configs/balance_random.toml", "--quiet", "--run-dir", str(tmp_path / "run"), *SMALL,
                   "--set", "l3.agent=ppo", "--set", "l3.params.learning_rate=0.1", timeout=60)
    assert r.returncode == 2
    assert "l3.params.learning_rate: unknown parameter" in r.stderr and "Traceback" not in r.stderr
    assert not descendants_alive(tmp_path / "run")


def test_unknown_scenario_names_it(launch, tmp_path):
    r = launch.run("configs/balance_random.toml", "--quiet", "--run-dir", str(tmp_path / "run"), *SMALL,
                   "--set", "env.scenario=no_such_scenario", timeout=60)
    assert r.returncode == 1
    assert "process 'env' failed" in r.stderr and "no_such_scenario" in r.stderr


def test_env_library_missing_is_a_clear_error(launch, tmp_path):
    r = launch.run("configs/balance_random.toml", "--quiet", "--run-dir", str(tmp_path / "run"), *SMALL,
                   "--set", "env.kind=pettingzoo", "--set", "env.scenario=not_installed_pkg.some_env_v0",
                   "--set", "env.kwargs={}", timeout=60)
    assert r.returncode == 1
    assert "not_installed_pkg" in r.stderr


def test_metrics_port_in_use_is_named(launch, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.listen()
        r = launch.run("configs/balance_random.toml", "--quiet", "--run-dir", str(tmp_path / "run"),
                       "--set", "run.metrics=true", "--set", f"run.metrics_base_port={port}", timeout=30)
    assert r.returncode == 2
    assert f"port {port}" in r.stderr and "metrics" in r.stderr


@pytest.mark.slow
def test_tcp_transport_runs(launch, tmp_path):
    run_dir = tmp_path / "run"
    r = launch.run("configs/balance_random.toml", "--quiet", "--run-dir", str(run_dir), *SMALL,
                   "--set", "run.transport=tcp", "--set", "run.total_env_steps=800")
    assert r.returncode == 0, r.stderr
    plan = json.loads((run_dir / "plan.json").read_text())
    assert all(e.startswith("tcp://127.0.0.1:") for e in plan["endpoints"].values())
    assert summary(run_dir)["l3.0"]["end"]["reason"] == "completed"


@pytest.mark.slow
@pytest.mark.parametrize("serial", [False, True])
def test_resume_continues_counters_and_parameters(launch, tmp_path, serial):
    cfg = write_config(tmp_path / "c.toml", DEPTHS[2])
    run_dir = tmp_path / "run"
    mode = ["--serial"] if serial else []
    r = launch.run(str(cfg), "--quiet", "--run-dir", str(run_dir), *mode)
    assert r.returncode == 0, r.stderr
    first = {n: s["end"] for n, s in summary(run_dir).items()}
    r = launch.run("--resume", str(run_dir), "--quiet", "--set", "run.total_env_steps=3200", *mode)
    assert r.returncode == 0, r.stderr
    resumed = {e["name"]: e for e in read_events(run_dir) if e["type"] == "resumed"}
    for name in ("l1.0", "l2.0"):
        assert resumed[name]["updates"] == first[name]["updates"] > 0
        assert resumed[name]["ticks"] == first[name]["ticks"]
    assert resumed["env"]["env_steps"] == first["env"]["env_steps"]
    last = [e for e in read_events(run_dir, "env") if e["type"] == "end"][-1]
    assert last["env_steps"] >= 3200
    l1_end = [e for e in read_events(run_dir, "l1.0") if e["type"] == "end"][-1]
    assert l1_end["updates"] > first["l1.0"]["updates"]
