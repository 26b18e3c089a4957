"""Learning agents and the experiments around them: every config loads, MAPPO's shapes and what its actor and
critic see, a short hierarchical PPO run on VMAS balance beats random, and evaluate works on a saved run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_benchmark

from tag_actors import config as config_mod
from tag_actors.agents import agent_class
from tag_actors.agents.base import AgentContext
from tag_actors.agents.mappo import MAPPOAgent
from tag_actors.spaces import Box, MultiDiscrete

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.toml"))


def balance_config(levels: list[dict], **run) -> config_mod.Config:
    raw = {
        "run": {"name": "test", "seed": 0, "metrics": False, "checkpoint_every_s": 0.0, **run},
        "env": {"kind": "vmas", "scenario": "balance", "num_envs": 32, "n_agents": 4, "max_steps": 100,
                "kwargs": {"n_agents": 4}},
        "levels": levels,
    }
    return config_mod.from_dict(raw, "<test>")


def learning_bench():
    return load_benchmark("learning")


def env_returns(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return learning_bench().env_episodes(run_dir / "episodes.csv")


# -- configs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_loads(path):
    cfg = config_mod.load(path)
    assert cfg.levels
    for lv in cfg.levels:
        agent_class(lv.agent)  # the agent type imports


def test_the_paper_configs_are_there():
    names = {p.stem for p in CONFIGS}
    for stem in ("balance", "balance_2ppo", "balance_ippo", "balance_mappo", "balance_cppo", "balance_mappo_ppo",
                 "balance_3ppo_comm", "balance_heuristic", "spread", "spread_ippo", "spread_mappo", "vspread",
                 "vspread_mappo", "vspread_ippo", "vspread_heuristic"):
        assert stem in names
    main = config_mod.load(ROOT / "configs" / "balance.toml")
    assert [lv.agent for lv in main.levels] == ["ppo"] * 3
    assert main.run.metrics and main.run.checkpoint_every_s == 30


# -- MAPPO -----------------------------------------------------------------------------------------------------


def mappo(space, k=4, block=6, instruction=3, num_envs=8, **params) -> MAPPOAgent:
    layout = [(f"env/{i}", block) for i in range(k)] + ([("instruction", instruction)] if instruction else [])
    ctx = AgentContext(name="m", level=1, obs_dim=k * block + instruction, action_space=space, num_envs=num_envs,
                       seed=0, params={"rollout_len": 4, **params}, obs_layout=layout)
    return MAPPOAgent(ctx)


@pytest.mark.parametrize("space", [Box((4, 2), -1.0, 1.0), MultiDiscrete((5, 5, 5, 5))], ids=["box", "discrete"])
def test_mappo_shapes_masks_and_update(space):
    agent = mappo(space)
    rng = np.random.default_rng(0)
    updates = 0
    for _ in range(12):
        obs = rng.standard_normal((8, 27)).astype(np.float32)
        mask = rng.random(8) < 0.7
        action = agent.act(obs, mask)
        assert action.shape == (8, *space.shape)
        assert action.dtype == (np.float32 if isinstance(space, Box) else np.int64)
        if isinstance(space, Box):
            assert np.all(np.abs(action) <= 1.0)
            assert np.all(action[~mask] == 0)
        else:
            assert action.min() >= 0 and action.max() < 5
        close = rng.random(8) < 0.8
        agent.observe(rng.standard_normal(8).astype(np.float32), np.zeros(8, bool), np.zeros(8, bool), obs,
                      np.ones(8, np.int64), close)
        if agent.ready():
            before = [p.detach().clone() for p in agent.net.parameters()]
            stats = agent.update()
            updates += 1
            assert np.isfinite(stats["policy_loss"]) and np.isfinite(stats["value_loss"])
            assert any(not torch.equal(a, b) for a, b in zip(before, agent.net.parameters(), strict=True))
    assert updates >= 1


def test_mappo_actor_is_shared_and_decentralized_critic_centralized():
    agent = mappo(Box((4, 2), -1.0, 1.0), num_envs=1)
    obs = np.random.default_rng(1).standard_normal((1, 27)).astype(np.float32)
    with torch.no_grad():
        x = torch.from_numpy(agent._expand(obs))  # (k rows, obs + one-hot)
        head = agent.net.actor(x)
        value = agent._value(x, agent.net)
        # Child 0's action depends on its own block (and the instruction), not on child 1's block.
        y = x.clone()
        y[:, 6:12] += 5.0  # child 1's block
        head2 = agent.net.actor(y)
        assert torch.allclose(head[0], head2[0]) and not torch.allclose(head[1], head2[1])
        # One set of parameters: the same block in another slot gives the same action for that child.
        z = x.clone()
        z[:, 0:6] = x[:, 6:12]
        z[:, -4:] = x[[1, 1, 1, 1], -4:]  # every row: the one-hot of child 1
        assert torch.allclose(agent.net.actor(z)[0], head[1])
        # The critic sees everything and gives every child of a row the same value.
        assert torch.allclose(value, value[0].expand_as(value))
        assert not torch.allclose(agent._value(y, agent.net), value)
    assert agent._critic_dim() == 27


def test_mappo_rejects_unequal_children():
    ctx = AgentContext(name="m", level=1, obs_dim=10, action_space=Box((2, 2), -1.0, 1.0), num_envs=2, seed=0,
                       obs_layout=[("a", 4), ("b", 6)])
    with pytest.raises(ValueError, match="equal observation sizes"):
        MAPPOAgent(ctx)


def test_mappo_checkpoint_round_trip():
    a = mappo(MultiDiscrete((5, 5, 5, 5)))
    b = mappo(MultiDiscrete((5, 5, 5, 5)), seed_offset=3)
    b.load_state_dict(a.state_dict())
    obs = np.ones((8, 27), dtype=np.float32)
    np.testing.assert_array_equal(a.act(obs, np.ones(8, bool)), b.act(obs, np.ones(8, bool)))


# -- learning and evaluation -----------------------------------------------------------------------------------

PPO_FAST = {"lr": 1e-3, "rollout_len": 16, "gae_lambda": 0.9, "update_epochs": 4, "num_minibatches": 4}


@pytest.mark.slow
@pytest.mark.timeout(360)  # learning: minutes on a loaded machine
def test_two_level_ppo_hierarchy_learns_balance(tmp_path):
    """4 level-1 PPO agents under one top PPO agent, serial, 30k env steps: the late episodes beat random
    (about -5.7 per agent) and the early ones clearly (measured: -5.0 -> +16 and -4.5 -> +22 for seeds 0 and 1)."""
    from tag_actors.launch import write_summary
    from tag_actors.serial import run_serial

    cfg = balance_config(
        [{"agent": "ppo", "params": PPO_FAST},
         {"agent": "ppo", "fan_in": 4, "every": 2, "instruction": {"type": "box", "dim": 2},
          "params": {**PPO_FAST, "rollout_len": 8}}],
        total_env_steps=30_000)
    run_serial(cfg, tmp_path)
    write_summary(tmp_path)
    steps, returns = env_returns(tmp_path)
    early, late = returns[steps <= 10_000].mean(), returns[steps > 20_000].mean()
    assert late > 0.0 and late > early + 5.0, (early, late)


@pytest.mark.slow
def test_evaluate_a_saved_run(tmp_path):
    from tag_actors.evaluate import evaluate, main
    from tag_actors.launch import main as launch

    run_dir = tmp_path / "run"
    config = tmp_path / "tiny.toml"
    config.write_text((ROOT / "configs" / "balance_2ppo.toml").read_text())
    code = launch([str(config), "--serial", "--quiet", "--run-dir", str(run_dir), "--set", "run.total_env_steps=600",
                   "--set", "env.num_envs=4", "--set", "run.metrics=false"])
    assert code == 0 and (run_dir / "checkpoints" / "l1.0.pt").exists()
    assert main([str(run_dir), "--episodes", "2", "--seed", "7"]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["episodes"] == 2 and set(result["levels"]) == {"0", "1", "2"}
    for level in result["levels"].values():
        assert np.isfinite(level["mean_return"]) and np.isfinite(level["ci95"])
    # balance: every env agent gets the same reward, so level 1 (one env agent each) equals level 0 and the top
    # agent (four children) gets four times it.
    lv = result["levels"]
    assert lv["1"]["mean_return"] == pytest.approx(lv["0"]["mean_return"], rel=1e-4, abs=1e-4)
    assert lv["2"]["mean_return"] == pytest.approx(4 * lv["0"]["mean_return"], rel=1e-4, abs=1e-4)
    # Same seed, same numbers; deterministic mode runs too.
    again = evaluate(run_dir, episodes=2, seed=7)
    assert again["levels"]["0"]["mean_return"] == pytest.approx(lv["0"]["mean_return"])
    det = evaluate(run_dir, episodes=2, seed=7, deterministic=True)
    assert det["deterministic"] and np.isfinite(det["levels"]["0"]["mean_return"])
    # The instruction ablation: the top agent's instructions replaced; its own file, the normal eval.json kept.
    assert main([str(run_dir), "--episodes", "2", "--seed", "7", "--instructions", "random"]) == 0
    ablated = json.loads((run_dir / "eval_instructions_random.json").read_text())
    assert ablated["instructions"] == "random" and json.loads((run_dir / "eval.json").read_text())["seed"] == 7
    assert ablated["levels"]["0"]["mean_return"] != pytest.approx(lv["0"]["mean_return"])
    zeros = [evaluate(run_dir, episodes=2, seed=7, instructions="zeros")["levels"] for _ in range(2)]
    assert zeros[0] == zeros[1]


def test_learning_final_return_stops_at_the_horizon() -> None:
    """Runs cut at different lengths are compared over a common horizon: later episodes must not count."""
    final_return = learning_bench().final_return
    steps = np.array([100, 950, 1000, 1500])
    returns = np.array([1.0, 2.0, 4.0, 100.0])
    assert final_return(steps, returns, 1000) == 3.0
    assert np.isnan(final_return(steps, returns, 10_000))
