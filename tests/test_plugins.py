"""Bring your own agent and env: plug-ins resolved in every runtime, entry points, check_agent / check_env, and
a level as a PettingZoo ParallelEnv. The plug-ins live outside the package, in docs/examples/my_tag_plugins."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import tag_actors
from tag_actors.agents import Agent, agent_class, resolve
from tag_actors.checks import CheckError
from tag_actors.config import load
from tag_actors.envs import BatchedEnv, make_env
from tag_actors.spaces import Box, Discrete, MultiDiscrete

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
PLUGIN_ENV = {"PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
BEACONS = str(EXAMPLES / "beacons.toml")


@pytest.fixture(autouse=True)
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def test_check_env_and_check_agent_pass_for_the_examples_and_builtins():
    assert tag_actors.check_env("my_tag_plugins.envs:Beacons", n_agents=3)["agents"] == [
        "walker_0", "walker_1", "walker_2"]
    assert tag_actors.check_env(make_env("vmas", "balance", 2, 0, {"n_agents": 4}))["num_envs"] == 2
    assert tag_actors.check_agent("my_tag_plugins.agents:LinearPG")["update_stats"] > 0
    assert tag_actors.check_agent("ppo", params={"rollout_len": 4}, action_space=Discrete(3))["updates"] > 0
    assert tag_actors.check_agent("random", action_space=MultiDiscrete((3, 3)))["updates"] == 0


class Float64Env(BatchedEnv):
    """Observations in float64 and rewards of the wrong shape: what check_env must catch."""

    def __init__(self, num_envs: int, seed: int, bad: str = "dtype"):
        self.num_envs, self.agent_names, self.bad = num_envs, ["a"], bad

    def observation_space(self, agent):
        return Box((2,))

    def action_space(self, agent):
        return Discrete(2)

    def reset(self, seed):
        dtype = np.float64 if self.bad == "dtype" else np.float32
        return {"a": np.zeros((self.num_envs, 2), dtype)}

    def step(self, actions, reset_mask):
        n = self.num_envs
        return self.reset(0), {"a": np.zeros((n, 1), np.float32)}, np.zeros(n, bool), np.zeros(n, bool)


class WrongShapeAgent(Agent):
    def act(self, obs, mask):
        return np.zeros((obs.shape[0], 3), np.float32)


def test_checks_say_what_to_fix():
    with pytest.raises(CheckError, match="observation of 'a' has dtype float64, expected floating|expected"):
        tag_actors.check_env(Float64Env)
    with pytest.raises(CheckError, match=r"step reward of 'a' has shape \(3, 1\), expected \(3,\)"):
        tag_actors.check_env(Float64Env, bad="reward")
    with pytest.raises(CheckError, match=r"returned shape \(4, 3\); expected \(4, 2\)"):
        tag_actors.check_agent(WrongShapeAgent)
    with pytest.raises(ValueError, match="unknown parameter 'lrr'"):
        tag_actors.check_agent("my_tag_plugins.agents:LinearPG", params={"lrr": 1})


def test_entry_points_name_installed_agents_and_envs(tmp_path, monkeypatch):
    dist = tmp_path / "my_tag_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-tag-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[tag_actors.agents]\nlinear_pg = my_tag_plugins.agents:LinearPG\n\n"
                                           "[tag_actors.envs]\nbeacons = my_tag_plugins.envs:Beacons\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve("linear_pg") == "my_tag_plugins.agents:LinearPG"
    assert agent_class("linear_pg").__name__ == "LinearPG"
    cfg = load(BEACONS, ["env.kind=beacons", "l1.agent=linear_pg", "l1.params.lr=0.2"])
    assert make_env(cfg.env.kind, "", 2, 0, cfg.env.kwargs).agent_names[0] == "walker_0"
    with pytest.raises(Exception, match="l1.params.lrr: unknown parameter 'lrr' .allowed: lr, std, batch"):
        load(BEACONS, ["env.kind=beacons", "l1.agent=linear_pg", "l1.params.lrr=0.2"])


def returns(run_dir: Path, level: str) -> list[float]:
    with (run_dir / "episodes.csv").open() as f:
        return [float(r["episode_return"]) for r in csv.DictReader(f) if r["level"] == level]


def test_custom_agent_and_env_train_in_a_hierarchy_as_actors(launch, tmp_path):
    """LinearPG walkers (level 1) under PPO managers, on the Beacons env, both from outside the package: as
    actor processes they learn (the walkers' returns rise), and the seeded lockstep run matches --serial."""
    common = ["--quiet", "--set", "run.total_env_steps=12000"]
    actors = launch.run(BEACONS, "--run-dir", str(tmp_path / "actors"), *common, env=PLUGIN_ENV, timeout=120)
    assert actors.returncode == 0, actors.stderr
    serial = launch.run(BEACONS, "--serial", "--run-dir", str(tmp_path / "serial"), *common, env=PLUGIN_ENV,
                        timeout=120)
    assert serial.returncode == 0, serial.stderr
    env_returns = returns(tmp_path / "actors", "0")
    fifth = len(env_returns) // 5
    first, last = np.mean(env_returns[:fifth]), np.mean(env_returns[-fifth:])
    assert last > first + 1.0, (first, last)  # random walkers stay near -7 per episode
    assert env_returns == returns(tmp_path / "serial", "0")
    end = [json.loads(line) for line in (tmp_path / "actors" / "events" / "l1.0.jsonl").read_text().splitlines()
           if '"type":"end"' in line.replace(" ", "")]
    assert end and end[-1]["updates"] > 10


def test_a_crashing_plugin_agent_is_reported_with_its_traceback(launch, tmp_path):
    r = launch.run(BEACONS, "--quiet", "--run-dir", str(tmp_path / "run"), "--set",
                   "l1.agent=my_tag_plugins.agents:Crashing", env=PLUGIN_ENV, timeout=60)
    assert r.returncode == 1
    assert "process 'l1.0' failed" in r.stderr or "failed" in r.stderr
    assert "Traceback" in r.stderr and "deliberate failure in act()" in r.stderr


def test_a_plugin_module_missing_from_the_path_is_refused_at_load(launch, tmp_path):
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    r = launch.run(BEACONS, "--run-dir", str(tmp_path / "run"), env=env, timeout=30)
    assert r.returncode == 2
    assert "env.kind" in r.stderr and "cannot import module 'my_tag_plugins" in r.stderr and "PYTHONPATH" in r.stderr


# ------------------------------------------------------------------------------------------------ PettingZoo


@pytest.mark.parametrize("config,level", [("configs/balance.toml", 3), ("configs/balance.toml", 1), (BEACONS, 2)])
def test_a_level_passes_pettingzoos_parallel_api_test(config, level):
    from pettingzoo.test import parallel_api_test

    cfg = load(ROOT / config if not Path(config).is_absolute() else config, ["env.max_steps=20"])
    env = tag_actors.level_as_parallel_env(cfg, level=level)
    parallel_api_test(env, num_cycles=60)
    env.close()


def test_train_the_top_level_through_the_parallel_env_with_outside_code():
    """A plain loop over the ParallelEnv API trains level 2 of the Beacons hierarchy with a linear Gaussian policy
    and REINFORCE written here, while the LinearPG walkers below act and learn in the same process."""
    env = tag_actors.level_as_parallel_env(load(BEACONS), level=2)
    rng = np.random.default_rng(0)
    agent = env.possible_agents[0]
    obs_dim = env.observation_space(agent).shape[0]
    act_shape = env.action_space(agent).shape
    weights = np.zeros((obs_dim, int(np.prod(act_shape))))
    start = weights.copy()
    episodes, episode_returns = 0, []
    obs, _ = env.reset(seed=1)
    while episodes < 12:
        trajectory, total = [], 0.0
        while env.agents:
            noise = {a: rng.standard_normal(weights.shape[1]) * 0.3 for a in env.agents}
            actions = {a: np.clip(obs[a] @ weights + noise[a], -1, 1).reshape(act_shape) for a in env.agents}
            next_obs, rewards, terms, truncs, infos = env.step(actions)
            trajectory += [(obs[a], noise[a], rewards[a]) for a in rewards]
            total += sum(rewards.values())
            obs = next_obs
        rewards_ = np.array([r for _, _, r in trajectory])
        adv = (rewards_ - rewards_.mean()) / (rewards_.std() + 1e-8)
        weights += 0.01 * sum(o[:, None] * (n / 0.3)[None] * a for (o, n, _), a in zip(trajectory, adv, strict=True))
        episode_returns.append(total)
        episodes += 1
        obs, _ = env.reset()
    assert not np.allclose(weights, start)
    assert all(np.isfinite(episode_returns))
    walkers = [n for n in env.lower_nodes if n.spec.level == 1]
    assert walkers and all(n.agent.updates > 0 for n in walkers)  # the level below learned meanwhile
    env.close()


def test_plugins_resolve_in_a_fresh_process_the_way_actors_do(tmp_path):
    import subprocess

    code = ("from tag_actors.agents import agent_class; from tag_actors.envs import env_class; "
            "print(agent_class('my_tag_plugins.agents:LinearPG').__name__, env_class('my_tag_plugins.envs:Beacons')"
            ".__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **PLUGIN_ENV), capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.split() == ["LinearPG", "Beacons"], out.stderr
