"""Per-level observation selection (``l1.observe``): config errors name the key and the file, the selected columns
are the ones asked for (PPO and MAPPO nodes alike), the message sent up keeps the full observation, and the
goal-hidden balance configs run."""

from __future__ import annotations

import numpy as np
import pytest

from tag_actors import config as config_mod
from tag_actors.node import AgentNode, NodeSpec, Report
from tag_actors.obs_select import OBS_LAYOUTS, ObservationSelectionError, block_columns, select_columns
from tag_actors.spaces import Box

BALANCE_DIM = sum(size for _, size in OBS_LAYOUTS["balance"])
NO_GOAL = ["pos", "vel", "package_rel", "line_rel", "package_vel", "line_vel", "line_ang_vel", "line_rot"]


def balance_raw(levels: list[dict]) -> dict:
    return {"run": {"name": "t", "metrics": False},
            "env": {"kind": "vmas", "scenario": "balance", "num_envs": 4, "n_agents": 4, "kwargs": {"n_agents": 4}},
            "levels": levels}


def test_balance_layout_matches_the_scenario():
    from tag_actors.envs import make_env

    env = make_env("vmas", "balance", num_envs=2, seed=0, kwargs={"n_agents": 4})
    assert env.observation_space(env.agent_names[0]).flat_dim == BALANCE_DIM == 16
    obs = env.reset(seed=0)[env.agent_names[0]]
    goal = select_columns(["package_goal"], "balance", BALANCE_DIM)
    assert goal == [8, 9]  # vmas balance reads its package-goal offset at observation[:, 8:10] too
    assert obs[:, goal].shape == (2, 2)


def test_names_and_ranges_select_columns_in_order():
    assert select_columns(["vel", "0:2"], "balance", None) == [2, 3, 0, 1]
    assert select_columns(NO_GOAL, "balance", None) == [c for c in range(16) if c not in (8, 9)]
    assert select_columns(["3:5"], "some_other_scenario", 6) == [3, 4]
    assert block_columns([0, 2], [3, 3]) == [0, 2, 3, 5]


@pytest.mark.parametrize("entries, says", [
    (["goal"], "unknown part 'goal'"),
    (["8:8"], "is empty"),
    (["10:17"], "ends past the observation's 16 features"),
    (["pos", "0:1"], "a second time"),
    (["x"], "a part of 'balance'"),
])
def test_bad_selections_are_refused(entries, says):
    with pytest.raises(ObservationSelectionError, match=says):
        select_columns(entries, "balance", None)


def test_config_error_names_key_and_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[env]\nscenario = "balance"\nn_agents = 4\nkwargs = { n_agents = 4 }\n'
                    '[[levels]]\nagent = "ppo"\nobserve = ["pos", "goal_pos"]\n')
    with pytest.raises(config_mod.ConfigError) as err:
        config_mod.load(path)
    assert str(path) in str(err.value) and "l1.observe" in str(err.value) and "'goal_pos'" in str(err.value)
    assert "package_goal" in str(err.value)  # the names allowed are listed


def test_config_refuses_observe_above_level_one():
    raw = balance_raw([{"agent": "ppo"}, {"agent": "ppo", "fan_in": 4, "instruction": {"type": "box", "dim": 2},
                                          "observe": ["pos"]}])
    with pytest.raises(config_mod.ConfigError, match=r"<t>: l2\.observe: only level 1"):
        config_mod.from_dict(raw, "<t>")


def test_config_refuses_a_non_list():
    with pytest.raises(config_mod.ConfigError, match=r"l1\.observe"):
        config_mod.from_dict(balance_raw([{"agent": "ppo", "observe": "pos"}]), "<t>")


def node(agent: str, children: int, observe: list[str]) -> AgentNode:
    spec = NodeSpec(name="l1.0", level=1, children=[f"env/{i}" for i in range(children)], period=1,
                    agent_type=agent, params={"rollout_len": 4}, observe=observe, scenario="balance")
    return AgentNode(spec, 3, [BALANCE_DIM] * children, [Box((2,), -1.0, 1.0)] * children, Box((2,), -1.0, 1.0))


@pytest.mark.parametrize("agent, children", [("ppo", 1), ("mappo", 2)])
def test_node_observes_only_the_selection_and_sends_everything_up(agent, children):
    n = node(agent, children, NO_GOAL)
    assert n.obs_dim == children * 14 + 2
    full = [np.tile(np.arange(16, dtype=np.float32) + 100 * c, (3, 1)) for c in range(children)]
    flags = np.zeros(3, dtype=bool)
    report = n.on_children([Report(m, np.zeros(3, np.float32), flags, flags, flags) for m in full])
    assert report.message.shape == (3, 16 * children)  # the managers still see the goal
    obs = n.observation(np.full((3, 2), 0.5, dtype=np.float32))
    expected = np.concatenate([f[:, [c for c in range(16) if c not in (8, 9)]] for f in full] +
                              [np.full((3, 2), 0.5, np.float32)], axis=1)
    np.testing.assert_array_equal(obs, expected)
    actions = n.on_instruction(np.zeros((3, 2), dtype=np.float32))
    assert len(actions) == children and actions[0].shape == (3, 2)


LOCAL_CONFIGS = ["balance_local.toml", "balance_local_ippo.toml", "balance_local_mappo.toml",
                 "balance_local_mappo_ppo.toml", "balance_local_2mappo_ppo.toml", "navigation_local.toml",
                 "navigation_local_mappo.toml", "navigation_local_ippo.toml", "navigation_local_mappo_ppo.toml",
                 "navigation_local_3ppo.toml", "navigation_local_2mappo_ppo.toml"]


@pytest.mark.parametrize("name", LOCAL_CONFIGS)
def test_goal_hidden_configs_run(launch, tmp_path, name):
    """A few hundred env steps of each goal-hidden config, in process (level 1 without the goal features)."""
    cfg = config_mod.load(f"configs/{name}")
    assert cfg.levels[0].observe == (NO_GOAL if name.startswith("balance") else ["0:4"])
    run_dir = tmp_path / "run"
    done = launch.run(f"configs/{name}", "--serial", "--quiet", "--run-dir", str(run_dir), "--set",
                      "run.total_env_steps=400", "--set", "env.num_envs=8", "--set", "run.metrics=false",
                      timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run_dir / "episodes.csv").exists()
