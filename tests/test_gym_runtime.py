"""PPO solves CartPole through the same runtime (LevelEnv in-process, and as actors for a short stretch)."""

from __future__ import annotations

import numpy as np
import pytest

from tag_actors.runlog import read_events


def returns(run_dir, name="l1.0"):
    return [r for e in read_events(run_dir, name) if e["type"] == "episodes" for r in e["returns"]]


@pytest.mark.slow
@pytest.mark.timeout(360)  # learning: minutes on a loaded machine
def test_ppo_learns_cartpole_through_the_runtime(launch, tmp_path):
    r = launch.run("configs/cartpole.toml", "--serial", "--quiet", "--run-dir", str(tmp_path / "run"), timeout=110)
    assert r.returncode == 0, r.stderr
    rets = returns(tmp_path / "run")
    assert np.mean(rets[:20]) < 60
    assert np.mean(rets[-20:]) > 150, (np.mean(rets[:20]), np.mean(rets[-20:]))


@pytest.mark.slow
def test_cartpole_as_actors_matches_serial(launch, tmp_path):
    args = ["configs/cartpole.toml", "--quiet", "--set", "run.total_env_steps=3000"]
    assert launch.run(*args, "--serial", "--run-dir", str(tmp_path / "a")).returncode == 0
    r = launch.run(*args, "--run-dir", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert returns(tmp_path / "a") == returns(tmp_path / "b") and len(returns(tmp_path / "a")) > 20
