"""Async mode: a slow top agent (100 ms a decision) does not hold the levels below; no deadlock; staleness is
measured and exported. No assertion on a timing: only on who ticked while whom was busy."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import descendants_alive

from tag_actors.node import AgentNode, NodeSpec, Report
from tag_actors.runlog import read_events
from tag_actors.spaces import Box

SLOW_TOP = ["--set", "l3.agent=slow", "--set", "l3.params.delay_s=0.1", "--set", "env.num_envs=8",
            "--set", "env.max_steps=50"]


def ends(run_dir: Path) -> dict[str, dict]:
    return {e["name"]: e for e in read_events(run_dir) if e["type"] == "end"}


@pytest.mark.slow
def test_slow_top_does_not_hold_lower_levels(launch, tmp_path):
    run_dir = tmp_path / "run"
    r = launch.run("configs/balance_random.toml", "--quiet", "--run-dir", str(run_dir), *SLOW_TOP,
                   "--set", "run.mode=async", "--set", "run.total_env_steps=4000", timeout=120)
    assert r.returncode == 0, r.stderr
    e = ends(run_dir)
    assert all(x["reason"] == "completed" for x in e.values())
    ticks, top = e["env"]["ticks"], e["l3.0"]["decisions"]
    assert e["env"]["env_steps"] >= 4000  # the whole budget was run, not cut short
    # every tick the top took 100 ms; lower levels went on meanwhile, so the top decided on a fraction of ticks
    assert top < ticks / 2, (top, ticks)
    assert e["l1.0"]["decisions"] >= 0.9 * ticks - 10
    stale = next(x for x in read_events(run_dir, "l2.0") if x["type"] == "staleness")
    assert stale["ticks_mean"] > 1  # instructions were used while the top was still thinking
    assert not descendants_alive(run_dir)


@pytest.mark.slow
def test_lockstep_with_slow_top_moves_at_its_pace(launch, tmp_path):
    """The same slow top in lockstep: every tick where the top decides waits for it."""
    run_dir = tmp_path / "run"
    r = launch.run("configs/balance_random.toml", "--quiet", "--run-dir", str(run_dir), *SLOW_TOP,
                   "--set", "run.total_env_steps=400", timeout=120)
    assert r.returncode == 0, r.stderr
    e = ends(run_dir)
    assert e["l3.0"]["decisions"] >= e["env"]["ticks"] / 4 - 2  # it decided at every one of its ticks


@pytest.mark.slow
def test_env_does_not_wait_for_an_async_level_one(launch, tmp_path):
    """levels[0].mode = 'async': the env steps on the actions it holds; a slow level 1 decides on a fraction of
    the env's ticks (catching up on the newest report), and the run still ends cleanly."""
    run_dir = tmp_path / "run"
    r = launch.run("configs/balance_random.toml", "--quiet", "--run-dir", str(run_dir), "--set", "env.num_envs=8",
                   "--set", "l1.agent=slow", "--set", "l1.params.delay_s=0.05", "--set",
                   "run.mode=async", "--set", "l1.mode=async", "--set", "run.total_env_steps=4000",
                   timeout=120)
    assert r.returncode == 0, r.stderr
    e = ends(run_dir)
    assert all(x["reason"] == "completed" for x in e.values())
    ticks = e["env"]["ticks"]
    assert e["env"]["env_steps"] >= 4000  # the whole budget was run, not cut short
    assert all(e[f"l1.{i}"]["decisions"] < ticks / 2 for i in range(4)), (ticks, e["l1.0"])
    assert not descendants_alive(run_dir)


def test_observe_held_appends_the_held_action():
    """With observe_held the node sees the action it holds, i.e. what an async level below is applying now."""
    spec = NodeSpec(name="l1.0", level=1, children=["env/0"], period=1, agent_type="random", params={},
                    observe_held=True)
    node = AgentNode(spec, 3, [5], [Box((2,), -1.0, 1.0)], None)
    assert node.obs_dim == 5 + 2
    obs = np.arange(15, dtype=np.float32).reshape(3, 5)
    flags = np.zeros(3, dtype=bool)
    node.on_children([Report(obs, np.zeros(3, np.float32), flags, flags, np.ones(3, dtype=bool))])
    np.testing.assert_array_equal(node.observation(None), np.concatenate([obs, np.zeros((3, 2))], axis=1))
    (action,) = node.on_instruction(None)
    np.testing.assert_array_equal(node.observation(None)[:, 5:], action)


def test_staleness_is_exported(launch, tmp_path):
    run_dir = tmp_path / "run"
    proc = launch.start("configs/balance_random.toml", "--quiet", "--run-dir", str(run_dir), *SLOW_TOP,
                        "--set", "run.mode=async", "--set", "run.metrics=true",
                        "--set", "run.total_env_steps=100000000")
    deadline = time.monotonic() + 60
    body = ""
    while time.monotonic() < deadline:
        try:
            port = json.loads((run_dir / "plan.json").read_text())["metrics_ports"]["l2.0"]
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except (OSError, KeyError, ValueError):
            body = ""
        if any(line.startswith("tag_instruction_staleness_ticks_count") and not line.rstrip().endswith(" 0.0")
               for line in body.splitlines()):
            break
        time.sleep(0.5)
    launch.kill(proc)
    proc.wait()
    assert "tag_instruction_staleness_seconds_bucket" in body
    count = next(float(x.split()[-1]) for x in body.splitlines()
                 if x.startswith("tag_instruction_staleness_ticks_count"))
    assert count > 0


@pytest.mark.slow
def test_async_ppo_learns_in_background_and_counts_every_update(launch, tmp_path):
    """run.learner = 'auto' in an async run: every PPO agent trains in its learner thread; the run completes and
    each agent's updates (the last one included, finished before its final checkpoint) are counted and logged."""
    run_dir = tmp_path / "run"
    r = launch.run("configs/balance.toml", "--quiet", "--run-dir", str(run_dir), "--set", "run.mode=async",
                   "--set", "env.num_envs=16", "--set", "run.total_env_steps=6400", "--set", "run.metrics=false",
                   "--set", "l1.params.rollout_len=8", "--set", "l2.params.rollout_len=4",
                   "--set", "l3.params.rollout_len=2", timeout=180)
    assert r.returncode == 0, r.stderr
    e = ends(run_dir)
    for name in ("l1.0", "l1.3", "l2.1", "l3.0"):
        assert e[name]["reason"] == "completed"
        logged = [x for x in read_events(run_dir, name) if x["type"] == "update"]
        assert e[name]["updates"] >= 3, (name, e[name])
        assert len(logged) >= e[name]["updates"] - 1  # all but possibly the one harvested by the final checkpoint
        assert all(x["transitions"] >= 16 for x in logged)
