"""Level-0 adapters on real envs (VMAS, PettingZoo mpe2, Gymnasium): spaces, Level0 auto-reset, determinism,
heuristics and error messages. Small batches so the file runs in well under a minute on 2 cores."""

from __future__ import annotations

import importlib
import subprocess
import sys

import msgpack
import numpy as np
import pytest

import tag_actors.envs as envs
from tag_actors.envs import EnvError, Level0, heuristic_for, make_env
from tag_actors.spaces import Box, Discrete

BALANCE = ("vmas", "balance", {"n_agents": 4})
SPREAD_PZ = ("pettingzoo", "mpe2.simple_spread_v3", {"N": 4})

# (kind, scenario, kwargs, obs_dim, action space, index of the velocity block that is 0 right after a reset)
CASES = [
    ("vmas", "balance", {"n_agents": 4}, 16, Box((2,), -1.0, 1.0), slice(2, 4)),
    ("vmas", "balance", {"n_agents": 4, "continuous_actions": False}, 16, Discrete(9), slice(2, 4)),
    ("vmas", "simple_spread", {"n_agents": 4}, 18, Box((2,), -1.0, 1.0), slice(2, 4)),
    ("vmas", "navigation", {"n_agents": 2}, 18, Box((2,), -1.0, 1.0), slice(2, 4)),
    ("pettingzoo", "mpe2.simple_spread_v3", {"N": 4}, 24, Discrete(5), slice(0, 2)),
    (
        "pettingzoo",
        "mpe2.simple_spread_v3",
        {"N": 4, "continuous_actions": True},
        24,
        Box((5,), 0.0, 1.0),
        slice(0, 2),
    ),
    ("gymnasium", "CartPole-v1", {}, 4, Discrete(2), None),
    ("gymnasium", "Pendulum-v1", {}, 3, Box((1,), -2.0, 2.0), None),
]
IDS = [f"{c[0]}-{c[1]}-{'d' if isinstance(c[4], Discrete) else 'c'}" for c in CASES]


def random_actions(env, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {a: env.action_space(a).sample(rng, env.num_envs) for a in env.agent_names}


def rollout(kind, scenario, kwargs, seed, steps, n=3, max_steps=50):
    env = make_env(kind, scenario, n, seed, kwargs)
    lv = Level0(env, max_steps)
    ticks = [lv.reset(seed)]
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        ticks.append(lv.step(random_actions(env, rng)))
    return ticks


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_spaces_shapes_dtypes(case):
    kind, scenario, kwargs, obs_dim, act_space, _ = case
    n = 3
    env = make_env(kind, scenario, n, 0, kwargs)
    assert env.num_envs == n and env.agent_names
    obs = env.reset(0)
    assert set(obs) == set(env.agent_names)
    for a in env.agent_names:
        assert env.observation_space(a).shape == (obs_dim,)
        assert env.action_space(a) == act_space
        assert obs[a].shape == (n, obs_dim) and obs[a].dtype == np.float32
    acts = random_actions(env, np.random.default_rng(0))
    for a in env.agent_names:
        assert acts[a].dtype == (np.float32 if isinstance(act_space, Box) else np.int64)
    obs, rew, term, trunc = env.step(acts, np.zeros(n, dtype=bool))
    for a in env.agent_names:
        assert obs[a].shape == (n, obs_dim) and obs[a].dtype == np.float32
        assert rew[a].shape == (n,) and rew[a].dtype == np.float32
    assert term.shape == trunc.shape == (n,) and term.dtype == trunc.dtype == np.bool_
    info = env.env_info(env.agent_names[0])
    assert msgpack.unpackb(msgpack.packb(info)) == info  # crosses the wire as plain data
    assert info["kind"] == kind and info["scenario"] == scenario and info["agent"] == env.agent_names[0]
    env.close()


@pytest.mark.parametrize("case", CASES[:1] + CASES[4:5] + CASES[6:7], ids=[IDS[0], IDS[4], IDS[6]])
def test_level0_next_step_autoreset_invariants(case):
    """Copies end at different times; each ended copy restarts on the next tick with first=True, reward 0."""
    kind, scenario, kwargs, _, _, vel = case
    n, limit = 8, 10
    if kind == "pettingzoo":
        kwargs = {**kwargs, "max_cycles": 7}  # the env's own truncation; Level0's limit sits above it
    env = make_env(kind, scenario, n, 1, kwargs)
    lv = Level0(env, max_steps=limit)
    prev_ended = np.zeros(n, dtype=bool)
    tick = lv.reset(1)
    assert tick.first.all()
    rng = np.random.default_rng(1)
    saw_end = saw_partial = False
    for _ in range(80):
        before = lv.env_steps
        tick = lv.step(random_actions(env, rng))
        np.testing.assert_array_equal(tick.first, prev_ended)
        assert lv.env_steps - before == int((~tick.first).sum())
        assert not (tick.terminated & tick.first).any() and not (tick.truncated & tick.first).any()
        for a in env.agent_names:
            assert (tick.rewards[a][tick.first] == 0).all()
            if vel is not None:  # the row holds a fresh initial observation: bodies at rest
                assert (tick.obs[a][tick.first][:, vel] == 0).all()
        if kind == "gymnasium":
            assert (np.abs(tick.obs["agent_0"][tick.first]) <= 0.05).all()
        assert (lv.episode_len <= limit).all()
        prev_ended = tick.terminated | tick.truncated
        saw_end |= prev_ended.any()
        saw_partial |= prev_ended.any() and not prev_ended.all()
    assert saw_end
    if kind == "gymnasium":  # CartPole copies fall at different times
        assert saw_partial, "no copy ended alone: the per-row reset path was not exercised"
    for ep in lv.pop_finished():
        assert 1 <= ep["length"] <= limit and set(ep["return"]) == set(env.agent_names)


@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[6]], ids=[IDS[0], IDS[4], IDS[6]])
def test_adapter_partial_reset_rows(case):
    """Rows in reset_mask get a fresh initial observation, zero reward and no flags; the others keep going."""
    kind, scenario, kwargs, _, _, vel = case
    env = make_env(kind, scenario, 4, 2, kwargs)
    env.reset(2)
    rng = np.random.default_rng(2)
    for _ in range(3):
        obs, _, _, _ = env.step(random_actions(env, rng), np.zeros(4, dtype=bool))
    mask = np.array([True, False, True, False])
    obs2, rew, term, trunc = env.step(random_actions(env, rng), mask)
    assert not (term[mask] | trunc[mask]).any()
    for a in env.agent_names:
        assert (rew[a][mask] == 0).all()
        if vel is not None:
            assert (obs2[a][mask][:, vel] == 0).all() and (obs2[a][~mask][:, vel] != 0).any()
        else:
            assert (np.abs(obs2[a][mask]) <= 0.05).all()
        assert not np.array_equal(obs2[a][~mask], obs[a][~mask])


def test_level0_time_limit_gives_truncated():
    env = make_env(*BALANCE[:2], 4, 0, BALANCE[2])
    lv = Level0(env, max_steps=3)
    lv.reset(0)
    zeros = {a: np.zeros((4, 2), dtype=np.float32) for a in env.agent_names}  # nobody moves: nothing falls
    for _ in range(2):
        t = lv.step(zeros)
        assert not (t.terminated | t.truncated).any()
    t = lv.step(zeros)
    assert t.truncated.all() and not t.terminated.any()
    assert lv.env_steps == 12
    t = lv.step(zeros)
    assert t.first.all() and lv.env_steps == 12
    assert all((r == 0).all() for r in t.rewards.values())
    assert not (t.truncated | t.terminated).any()
    t = lv.step(zeros)
    assert not t.first.any() and lv.env_steps == 16 and (lv.episode_len == 1).all()
    eps = lv.pop_finished()
    assert [e["length"] for e in eps] == [3] * 4


def test_pettingzoo_own_truncation_maps_to_truncated():
    env = make_env(*SPREAD_PZ[:2], 2, 0, {**SPREAD_PZ[2], "max_cycles": 2})
    obs = env.reset(0)
    acts = {a: np.zeros(2, dtype=np.int64) for a in env.agent_names}
    _, _, term, trunc = env.step(acts, np.zeros(2, dtype=bool))
    assert not (term | trunc).any()
    _, _, term, trunc = env.step(acts, np.zeros(2, dtype=bool))
    assert trunc.all() and not term.any()
    with pytest.raises(EnvError, match="without a reset"):
        env.step(acts, np.zeros(2, dtype=bool))
    obs, rew, term, trunc = env.step(acts, np.ones(2, dtype=bool))
    assert all((obs[a][:, :2] == 0).all() for a in env.agent_names)


@pytest.mark.parametrize(
    "case",
    [BALANCE, ("vmas", "simple_spread", {"n_agents": 4}), SPREAD_PZ, ("gymnasium", "CartPole-v1", {})],
    ids=lambda c: f"{c[0]}-{c[1]}",
)
def test_seeded_determinism(case):
    kind, scenario, kwargs = case
    n = 4
    a_env, b_env = make_env(kind, scenario, n, 7, kwargs), make_env(kind, scenario, n, 7, kwargs)
    a_lv, b_lv = Level0(a_env, 5), Level0(b_env, 5)  # short episodes: resets draw random numbers too
    ta, tb = a_lv.reset(7), b_lv.reset(7)
    rng = np.random.default_rng(0)
    for _ in range(12):  # interleaved: one env's draws must not disturb the other's (VMAS shares its rng)
        np.testing.assert_array_equal(ta.obs[a_env.agent_names[0]], tb.obs[b_env.agent_names[0]])
        acts = random_actions(a_env, rng)
        ta, tb = a_lv.step(acts), b_lv.step(acts)
        for a in a_env.agent_names:
            np.testing.assert_array_equal(ta.obs[a], tb.obs[a])
            np.testing.assert_array_equal(ta.rewards[a], tb.rewards[a])
    other = make_env(kind, scenario, n, 8, kwargs).reset(8)
    assert not np.array_equal(other[a_env.agent_names[0]], a_env.reset(7)[a_env.agent_names[0]])


def mean_return(kind, scenario, kwargs, policy: str, n: int, max_steps: int, episodes: int) -> float:
    env = make_env(kind, scenario, n, 3, kwargs)
    lv = Level0(env, max_steps)
    tick = lv.reset(3)
    rng = np.random.default_rng(3)
    pols = {a: heuristic_for(env.env_info(a)) for a in env.agent_names} if policy == "heuristic" else None
    while len(lv.finished_episodes) < n * episodes:
        if pols:
            acts = {a: pols[a](tick.obs[a]) for a in env.agent_names}
        else:
            acts = random_actions(env, rng)
        tick = lv.step(acts)
    return float(np.mean([np.mean(list(e["return"].values())) for e in lv.pop_finished()]))


@pytest.mark.slow
def test_balance_heuristic_beats_random():
    # the scripted policy drops the package in some episodes (returns range from -12 to +45): average 32
    h = mean_return(*BALANCE, "heuristic", n=32, max_steps=100, episodes=1)
    r = mean_return(*BALANCE, "random", n=32, max_steps=100, episodes=1)
    assert h > 5 and h > r + 10, (h, r)


def test_balance_heuristic_discrete_actions():
    kwargs = {**BALANCE[2], "continuous_actions": False}
    h = mean_return("vmas", "balance", kwargs, "heuristic", n=32, max_steps=100, episodes=1)
    assert h > 5, h


@pytest.mark.slow
@pytest.mark.parametrize("continuous", [False, True])
def test_spread_heuristic_beats_random_mpe(continuous):
    kwargs = {**SPREAD_PZ[2], "continuous_actions": continuous}
    h = mean_return("pettingzoo", SPREAD_PZ[1], kwargs, "heuristic", n=4, max_steps=100, episodes=3)
    r = mean_return("pettingzoo", SPREAD_PZ[1], kwargs, "random", n=4, max_steps=100, episodes=3)
    assert h > r + 5, (h, r)


@pytest.mark.slow
@pytest.mark.parametrize("continuous", [False, True])
def test_spread_heuristic_beats_random_vmas(continuous):
    kwargs = {"n_agents": 4, "continuous_actions": continuous}
    h = mean_return("vmas", "simple_spread", kwargs, "heuristic", n=4, max_steps=50, episodes=1)
    r = mean_return("vmas", "simple_spread", kwargs, "random", n=4, max_steps=50, episodes=1)
    assert h > r + 100, (h, r)


def test_heuristic_rebuilt_from_wire_info_and_env_hook():
    env = make_env(*BALANCE[:2], 2, 0, BALANCE[2])
    info = msgpack.unpackb(msgpack.packb(env.env_info("agent_1")))
    obs = env.reset(0)["agent_1"]
    act = heuristic_for(info)(obs)
    assert act.shape == (2, 2) and act.dtype == np.float32
    np.testing.assert_array_equal(act, env.heuristic("agent_1")(obs))
    assert make_env("gymnasium", "CartPole-v1", 1, 0, {}).heuristic("agent_0") is None


def test_no_heuristic_is_a_clear_error():
    env = make_env("gymnasium", "CartPole-v1", 1, 0, {})
    with pytest.raises(EnvError, match="no heuristic policy for gymnasium scenario 'CartPole-v1'"):
        heuristic_for(env.env_info("agent_0"))
    info = make_env("vmas", "simple_spread", 1, 0, {"n_agents": 2}).env_info("agent_0")
    with pytest.raises(EnvError, match="ships no HeuristicPolicy"):
        heuristic_for({**info, "scenario": "dispersion"})
    nav = make_env("vmas", "navigation", 1, 0, {"n_agents": 2}).env_info("agent_0")
    try:
        importlib.import_module("cvxpylayers")
    except ImportError:
        with pytest.raises(EnvError, match="needs a package"):
            heuristic_for(nav)
    else:
        assert callable(heuristic_for(nav))


def test_import_is_cheap_and_spread_heuristic_needs_no_torch():
    code = (
        "import sys, numpy as np\n"
        "import tag_actors.envs as e\n"
        "bad = [m for m in ('torch', 'vmas', 'pettingzoo', 'mpe2', 'gymnasium') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "info = {'kind': 'pettingzoo', 'scenario': 'mpe2.simple_spread_v3', 'agent': 'agent_2', 'n_agents': 4,\n"
        "        'continuous': False, 'kwargs': {'N': 4}}\n"
        "a = e.heuristic_for(info)(np.zeros((3, 24), np.float32))\n"
        "assert a.shape == (3,) and a.dtype == np.int64\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_kind_lists_known():
    with pytest.raises(EnvError, match="unknown env kind 'atari': expected one of gymnasium, pettingzoo, vmas, or a BatchedEnv class"):
        make_env("atari", "pong", 1, 0, {})


@pytest.mark.parametrize("kind", ["vmas", "pettingzoo", "gymnasium"])
def test_missing_library(kind, monkeypatch):
    monkeypatch.setitem(sys.modules, kind, None)  # makes `import kind` raise ImportError
    with pytest.raises(EnvError, match=f"env kind '{kind}' needs the '{kind}' package: pip install {kind}"):
        make_env(kind, "x", 1, 0, {})


def test_missing_scenario_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpe2", None)
    monkeypatch.delitem(sys.modules, "mpe2.simple_spread_v3", raising=False)
    with pytest.raises(EnvError, match=r"package 'mpe2' is not installed \(pip install mpe2\)"):
        make_env(*SPREAD_PZ[:2], 1, 0, {})


def test_missing_library_via_import_module(monkeypatch):
    real = importlib.import_module

    def fake(name, *args):
        if name == "vmas":
            raise ModuleNotFoundError("No module named 'vmas'")
        return real(name, *args)

    monkeypatch.setattr(envs.importlib, "import_module", fake)
    with pytest.raises(EnvError, match="pip install vmas"):
        make_env(*BALANCE[:2], 1, 0, BALANCE[2])


@pytest.mark.parametrize(
    "kind, scenario, kwargs, pattern",
    [
        ("vmas", "balanse", {}, r"vmas has no scenario 'balanse' \(did you mean balance.*navigation"),
        ("vmas", "balance", {"n_agent": 4}, r"vmas scenario 'balance' does not take kwarg\(s\) 'n_agent'"),
        ("vmas", "balance", {"max_steps": 100}, "kwarg 'max_steps'.*Level0"),
        ("pettingzoo", "mpe2.simple_spred_v3", {}, r"did you mean mpe2.simple_spread_v3.*mpe2 provides"),
        ("pettingzoo", "mpe2.simple_spread_v3", {"n": 4}, "'mpe2.simple_spread_v3' rejected kwargs.*'n'"),
        ("gymnasium", "CartPol-v1", {}, "gymnasium has no env id 'CartPol-v1'; did you mean CartPole-v1"),
        ("gymnasium", "CartPole-v1", {"foo": 1}, "'CartPole-v1' rejected kwargs.*'foo'"),
    ],
)
def test_bad_scenario_or_kwargs(kind, scenario, kwargs, pattern):
    with pytest.raises(EnvError, match=pattern):
        make_env(kind, scenario, 1, 0, kwargs)


def test_caller_kwargs_untouched():
    kwargs = {"n_agents": 4, "continuous_actions": False}
    make_env("vmas", "balance", 1, 0, kwargs)
    assert kwargs == {"n_agents": 4, "continuous_actions": False}
