"""PPOAgent: config validation, per-env semi-MDP GAE, action spaces, checkpoints, and tiny real learning runs.

The harness below drives the agent with gymnasium envs the way the runtime does: ``act`` at decision ticks (mask =
rows that need a decision), every env steps each tick with its held action, ``observe`` when a decision window
closes (reward summed over the window, ``ticks`` its length; an episode end closes it early), and after an
episode ends the env is reset and the next ``act`` sees the reset observation (``observe`` is never called for
the first observation of an episode).
"""

from __future__ import annotations

import io
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from tag_actors.agents.base import AgentContext, parse_params
from tag_actors.agents.ppo import PPOAgent, PPOSettings, compute_gae
from tag_actors.spaces import Box, Discrete, MultiDiscrete


def make_agent(space, obs_dim=4, num_envs=8, seed=0, **params) -> PPOAgent:
    ctx = AgentContext(
        name="test", level=1, obs_dim=obs_dim, action_space=space, num_envs=num_envs, seed=seed, params=params
    )
    return PPOAgent(ctx)


def drive(agent: PPOAgent, env_id: str, total_steps: int, seed: int = 0, periods=None, on_update=None):
    """Run ``agent`` on ``num_envs`` copies of a gymnasium env for ``total_steps`` env steps; returns episode returns.

    ``periods[i]`` is how many ticks env row i holds each action (semi-MDP when > 1); default 1 for all rows.
    """
    n = agent.B
    envs = [gym.make(env_id) for _ in range(n)]
    obs = np.stack([env.reset(seed=seed * 1000 + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    periods = np.ones(n, dtype=np.int64) if periods is None else np.asarray(periods, dtype=np.int64)
    need = np.ones(n, dtype=bool)  # rows whose previous decision window has closed
    held = agent.ctx.action_space.zeros(n)
    held_ticks = np.zeros(n, dtype=np.int64)
    window_reward = np.zeros(n)
    episode_return, returns = np.zeros(n), []
    for _ in range(total_steps // n):
        actions = agent.act(obs, need)
        held[need] = actions[need]
        held_ticks[need], window_reward[need] = 0, 0.0
        steps = [env.step(held[i]) for i, env in enumerate(envs)]
        next_obs = np.stack([s[0] for s in steps]).astype(np.float32)
        reward = np.array([s[1] for s in steps], dtype=np.float64)
        terminated = np.array([s[2] for s in steps])
        truncated = np.array([s[3] for s in steps])
        window_reward += reward
        held_ticks += 1
        episode_return += reward
        done = terminated | truncated
        need = done | (held_ticks >= periods)
        agent.observe(window_reward.astype(np.float32), terminated, truncated, next_obs, held_ticks, need)
        for i in np.flatnonzero(done):
            returns.append(episode_return[i])
            episode_return[i] = 0.0
            next_obs[i] = envs[i].reset()[0]
        obs = next_obs
        if agent.ready():
            stats = agent.update()
            if on_update is not None:
                on_update(agent, stats)
    return returns


# ----------------------------------------------------------------------------------------------------------------
# Config


def test_unknown_param_names_key_and_lists_valid_ones():
    with pytest.raises(ValueError, match="'learning_rate'") as err:
        make_agent(Discrete(2), learning_rate=1e-3)
    assert "allowed: lr" in str(err.value) and "lr" in str(err.value) and "gae_lambda" in str(err.value)
    assert "'test'" in str(err.value)  # the agent's name


@pytest.mark.parametrize(
    "key,value",
    [
        ("lr", "fast"),
        ("update_epochs", 2.5),
        ("update_epochs", True),
        ("clip_vloss", 1),
        ("hidden_sizes", [64, "a"]),
        ("hidden_sizes", 64),
        ("activation", "gelu"),
        ("lr_schedule", "cosine"),
        ("action_dist", "beta"),
        ("target_kl", "x"),
        ("gamma", 1.5),
        ("rollout_len", 0),
    ],
)
def test_bad_param_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"params.{key}"):
        parse_params(PPOSettings, {key: value}, "ppo: params")


def test_param_conversions():
    cfg = parse_params(PPOSettings, {"lr": 1, "hidden_sizes": [32], "target_kl": 0.02}, "ppo: params")
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.hidden_sizes == [32] and cfg.target_kl == 0.02
    assert parse_params(PPOSettings, {}, "ppo: params").target_kl is None
    with pytest.raises(ValueError, match="unknown parameter 'lrr' .allowed: lr, lr_schedule"):
        parse_params(PPOSettings, {"lrr": 1e-4}, "ppo: params")


# ----------------------------------------------------------------------------------------------------------------
# GAE over ragged, semi-MDP, per-env sequences


def test_gae_hand_computed_with_ticks_truncation_and_termination():
    # gamma = lam = 0.5. Rows in arrival order; env 0 has 3 transitions, env 1 has 2, interleaved.
    env = np.array([0, 1, 0, 0, 1])
    reward = np.array([1.0, 1.0, 2.0, 0.0, -1.0])
    value = np.array([0.5, 0.0, 1.0, 0.25, 1.0])
    next_value = np.array([1.0, 1.0, 2.0, 4.0, 2.0])
    ticks = np.array([2, 1, 1, 1, 3])
    terminated = np.array([False, False, False, True, False])
    truncated = np.array([False, False, True, False, False])
    adv, ret = compute_gae(reward, value, next_value, ticks, terminated, truncated, env, 0.5, 0.5)
    # env 0, last (terminated): delta = 0 - 0.25 (no bootstrap)                    -> A = -0.25
    # env 0, middle (truncated): delta = 2 + 0.5 * 2 - 1 = 2; chain cut at done    -> A = 2
    # env 0, first (2 ticks, d = 0.25): delta = 1 + 0.25 * 1 - 0.5 = 0.75;   A = 0.75 + 0.25 * 0.5 * 2 = 1
    # env 1, last (3 ticks, d = 0.125): delta = -1 + 0.125 * 2 - 1 = -1.75; tail -> A = -1.75
    # env 1, first (d = 0.5): delta = 1 + 0.5 * 1 - 0 = 1.5;            A = 1.5 + 0.5 * 0.5 * -1.75 = 1.0625
    np.testing.assert_allclose(adv, [1.0, 1.0625, 2.0, -0.25, -1.75])
    np.testing.assert_allclose(ret, adv + value)


def test_gae_interleaving_does_not_matter_and_matches_cleanrl_for_one_tick():
    rng = np.random.default_rng(0)
    n, gamma, lam = 40, 0.9, 0.8
    r, v, nv = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    term, trunc = rng.random(n) < 0.1, rng.random(n) < 0.1
    ones = np.ones(n, dtype=np.int64)
    # CleanRL's single-env recursion, with next values taken from next_obs (bootstrap on truncation).
    expected, last = np.zeros(n), 0.0
    for t in reversed(range(n)):
        delta = r[t] + gamma * (1 - term[t]) * nv[t] - v[t]
        last = delta + gamma * lam * (1 - (term[t] | trunc[t])) * last
        expected[t] = last
    adv, _ = compute_gae(r, v, nv, ones, term, trunc, np.zeros(n, dtype=np.int64), gamma, lam)
    np.testing.assert_allclose(adv, expected)
    # Interleave that sequence (env 3) with another env's (env 1): env 3's advantages are unchanged.
    other = compute_gae(r[::-1], v, nv, ones, trunc, term, np.zeros(n, dtype=np.int64), gamma, lam)[0]
    ids = np.array([3, 1] * n)
    cat = lambda a, b: np.stack([a, b], axis=1).reshape(-1)  # noqa: E731
    both, _ = compute_gae(
        cat(r, r[::-1]),
        cat(v, v),
        cat(nv, nv),
        cat(ones, ones),
        cat(term, trunc),
        cat(trunc, term),
        ids,
        gamma,
        lam,
    )
    np.testing.assert_allclose(both[0::2], expected)
    np.testing.assert_allclose(both[1::2], other)


def test_semi_mdp_masks_and_open_transitions_survive_update():
    """Rows decide every 1, 2 or 3 ticks (masks not all True, ticks > 1); transitions open at an update survive it."""
    agent = make_agent(Discrete(2), rollout_len=16, update_epochs=2, num_minibatches=2)
    seen = []

    def check(agent, stats):
        assert all(math.isfinite(stats[k]) for k in ("policy_loss", "value_loss", "entropy", "approx_kl"))
        assert stats["transitions"] >= 16 * 8 and agent.num_closed == 0
        seen.append((stats["updates"], int(agent.open.sum())))

    drive(agent, "CartPole-v1", 3000, periods=[1, 2, 3, 1, 2, 3, 1, 2], on_update=check)
    assert len(seen) >= 3 and [u for u, _ in seen] == list(range(1, len(seen) + 1))
    assert any(
        open_rows > 0 for _, open_rows in seen
    )  # some decisions spanned an update, and were closed later


def test_observe_closes_only_masked_open_rows():
    agent = make_agent(Discrete(3), num_envs=4)
    obs = np.zeros((4, 4), dtype=np.float32)
    mask = np.array([True, False, True, False])
    actions = agent.act(obs, mask)
    assert actions.shape == (4,) and actions.dtype == np.int64
    z = np.zeros(4, dtype=bool)
    agent.observe(
        np.ones(4, np.float32), z, z, obs, np.ones(4, np.int64), np.array([True, True, False, False])
    )
    assert agent.num_closed == 1 and agent.open.tolist() == [False, False, True, False]


# ----------------------------------------------------------------------------------------------------------------
# Action spaces


@pytest.mark.parametrize(
    "space,params",
    [
        (Box((2, 3), -1.0, 1.0), {"action_dist": "gaussian", "init_log_std": 1.0}),
        (Box((2, 3), 0.0, 2.0), {"action_dist": "tanh", "init_log_std": 1.0}),
        (Box((2,)), {}),
        (MultiDiscrete((3, 4)), {}),
    ],
)
def test_action_spaces_shapes_bounds_and_update(space, params):
    agent = make_agent(space, obs_dim=5, num_envs=6, rollout_len=4, **params)
    rng = np.random.default_rng(1)
    mask = np.ones(6, dtype=bool)
    while not agent.ready():
        obs = rng.normal(size=(6, 5)).astype(np.float32)
        actions = agent.act(obs, mask)
        assert actions.shape == (6, *space.shape)
        if isinstance(space, Box):
            assert actions.dtype == np.float32
            if space.bounded:
                assert actions.min() >= space.low and actions.max() <= space.high
        else:
            assert (
                actions.dtype == np.int64 and (actions >= 0).all() and (actions < np.array(space.nvec)).all()
            )
        z = np.zeros(6, dtype=bool)
        agent.observe(rng.normal(size=6).astype(np.float32), z, z, obs, np.ones(6, np.int64), mask)
    stats = agent.update()
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance", "lr",
                "grad_norm", "update_seconds", "updates"):  # fmt: skip
        assert isinstance(stats[key], float) and math.isfinite(stats[key]), key


def test_linear_lr_schedule():
    agent = make_agent(Discrete(2), num_envs=2, rollout_len=2, lr=1e-3, lr_schedule="linear", total_updates=4)
    obs, mask, z = np.zeros((2, 4), np.float32), np.ones(2, bool), np.zeros(2, bool)
    lrs = []
    for _ in range(4):
        for _ in range(2):
            agent.act(obs, mask)
            agent.observe(np.ones(2, np.float32), z, z, obs, np.ones(2, np.int64), mask)
        lrs.append(agent.update()["lr"])
    np.testing.assert_allclose(lrs, [1e-3, 0.75e-3, 0.5e-3, 0.25e-3])


# ----------------------------------------------------------------------------------------------------------------
# Determinism and checkpoints


def test_same_context_same_actions():
    a, b = make_agent(Box((2,), -1.0, 1.0)), make_agent(Box((2,), -1.0, 1.0))
    obs = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    for _ in range(3):
        np.testing.assert_array_equal(a.act(obs, np.ones(8, bool)), b.act(obs, np.ones(8, bool)))
    c = make_agent(Box((2,), -1.0, 1.0), seed=1)
    assert not np.array_equal(c.act(obs, np.ones(8, bool)), a.act(obs, np.ones(8, bool)))


def test_state_dict_round_trip_resumes_identically():
    params = dict(rollout_len=8, update_epochs=2, num_minibatches=2)
    agent = make_agent(Discrete(2), **params)
    drive(agent, "CartPole-v1", 8 * 8 * 3)  # three updates; the harness updates right after an observe
    assert agent.updates == 3 and agent.num_closed == 0 and not agent.open.any()

    buf = io.BytesIO()
    torch.save(agent.state_dict(), buf)
    buf.seek(0)
    resumed = make_agent(
        Discrete(2), seed=123, **params
    )  # a different seed: everything must come from the file
    resumed.load_state_dict(torch.load(buf))  # weights_only=True by default: tensors and plain values only
    for (name, p), q in zip(agent.net.state_dict().items(), resumed.net.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert resumed.updates == 3

    obs = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    mask = np.ones(8, dtype=bool)
    np.testing.assert_array_equal(agent.act(obs, mask), resumed.act(obs, mask))
    # Both continue identically through the next update (optimizer state, normalizers, RNG all restored).
    z = np.zeros(8, dtype=bool)
    for k in range(8):
        if k:
            np.testing.assert_array_equal(agent.act(obs, mask), resumed.act(obs, mask))
        for ag in (agent, resumed):
            ag.observe(np.full(8, k, np.float32), z, z, obs * 0.5, np.ones(8, np.int64), mask)
    sa, sb = agent.update(), resumed.update()
    assert sa["updates"] == sb["updates"] == 4.0 and sa["policy_loss"] == sb["policy_loss"]
    for p, q in zip(agent.net.parameters(), resumed.net.parameters(), strict=True):
        assert torch.equal(p, q)


# ----------------------------------------------------------------------------------------------------------------
# Tiny real learning runs


@pytest.mark.slow
@pytest.mark.timeout(360)  # learning: minutes on a loaded machine
def test_cartpole_learns():
    agent = make_agent(
        Discrete(2),
        rollout_len=32,
        update_epochs=8,
        num_minibatches=4,
        lr=2.5e-3,
        norm_obs=False,
        norm_reward=False,
    )
    returns = drive(agent, "CartPole-v1", 40_000, seed=0)
    assert np.mean(returns[:20]) < 50
    assert np.mean(returns[-20:]) > 150, returns[-20:]


@pytest.mark.slow
@pytest.mark.timeout(360)  # learning: minutes on a loaded machine
def test_pendulum_improves():
    agent = make_agent(
        Box((1,), -2.0, 2.0), obs_dim=3, num_envs=16, rollout_len=64, update_epochs=10, num_minibatches=8,
        lr=1e-3, gamma=0.9,
    )  # fmt: skip
    returns = drive(agent, "Pendulum-v1", 60_000, seed=0)
    start, end = np.mean(returns[:16]), np.mean(returns[-32:])
    assert end > -800 and end > start + 300, (start, end)


# ----------------------------------------------------------------------------------------------------------------
# Background learning (async runs)


def test_background_update_acts_on_old_weights_until_the_learner_finishes():
    ctx = AgentContext(name="bg", level=1, obs_dim=4, action_space=Discrete(2), num_envs=8, seed=0,
                       params={"rollout_len": 4, "update_epochs": 50}, learn_in_background=True)
    agent = PPOAgent(ctx)
    obs = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    for _ in range(4):
        agent.act(obs)
        agent.observe(np.ones(8, np.float32), np.zeros(8, bool), np.zeros(8, bool), obs, np.ones(8, np.int64))
    assert agent.ready()
    acting = agent._acting_net()
    before = [p.detach().clone() for p in acting.parameters()]
    assert agent.update() is None  # handed to the learner thread
    assert agent.learner.busy and not agent.ready()  # one update at a time
    agent.act(obs)  # acting goes on meanwhile
    agent.learner.collect(wait=True)
    stats = agent.finished_updates()
    assert len(stats) == 1 and stats[0]["transitions"] == 32 and np.isfinite(stats[0]["policy_loss"])
    acting = agent._acting_net()  # now refreshed with the learner's weights
    assert any(not torch.equal(a, b) for a, b in zip(before, acting.parameters(), strict=True))
    for a, b in zip(acting.parameters(), agent.net.parameters(), strict=True):
        assert torch.equal(a, b) and a is not b
    assert agent.finished_updates() == []


@pytest.mark.slow
@pytest.mark.timeout(360)  # learning: minutes on a loaded machine
def test_cartpole_learns_with_a_background_learner():
    ctx = AgentContext(name="bg", level=1, obs_dim=4, action_space=Discrete(2), num_envs=8, seed=0,
                       params=dict(rollout_len=32, update_epochs=8, num_minibatches=4, lr=2.5e-3, norm_obs=False,
                                   norm_reward=False), learn_in_background=True)
    agent = PPOAgent(ctx)
    returns = drive(agent, "CartPole-v1", 40_000, seed=0)
    agent.close()
    assert agent.updates >= 10
    assert np.mean(returns[-20:]) > 150, returns[-20:]


def test_mappo_reads_the_held_block_as_each_childs_held_action_not_as_a_child():
    """With observe_held the node's observation ends with its held action (one slice per child); the shared
    actor of child i sees [its block, the instruction, its own held slice, one-hot(i)]."""
    from tag_actors.agents.base import ObsLayout
    from tag_actors.agents.mappo import ChildView, MAPPOAgent
    from tag_actors.spaces import Box

    blocks = [("l1.0", 3), ("l1.1", 3), ("instruction", 2), ("held", 4)]
    assert ObsLayout.from_blocks(blocks) == ObsLayout([("l1.0", 3), ("l1.1", 3)], instruction=2, held=4)
    ctx = AgentContext(name="l2.0", level=2, obs_dim=12, action_space=Box((2, 2), -1.0, 1.0), num_envs=3, seed=0,
                       params={"rollout_len": 2}, obs_layout=blocks)
    agent = MAPPOAgent(ctx)
    assert (agent.k, agent.block_dim, agent.instruction_dim, agent.held_dim) == (2, 3, 2, 2)
    obs = np.arange(3 * 12, dtype=np.float32).reshape(3, 12)
    assert agent.act(obs, np.ones(3, bool)).shape == (3, 2, 2)
    view = ChildView(2, 3, 2, 2)
    row = torch.tensor(np.concatenate([obs[0], [0.0, 1.0]])[None], dtype=torch.float32)  # child 1 of env 0
    np.testing.assert_array_equal(view(row).numpy()[0], np.concatenate([obs[0, 3:6], obs[0, 6:8], obs[0, 10:12],
                                                                       [0.0, 1.0]]))
