"""Check a user's agent or environment class before a run, the way Gymnasium's ``check_env`` does.

``check_env(MyEnv)`` and ``check_agent(MyAgent)`` build the class, drive it through the calls the runtime makes,
in the runtime's order, and raise ``CheckError`` with a message that says what to fix at the first thing that
would break a run (a wrong shape or dtype, a missing agent, a value that cannot cross the wire, a checkpoint that
does not round-trip). They return a short report of what they exercised.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tag_actors.agents import Agent, AgentContext, agent_class, params_schema, parse_params
from tag_actors.envs import BatchedEnv, env_class, plain
from tag_actors.runlog import load_checkpoint, save_checkpoint
from tag_actors.spaces import Box, Discrete, MultiDiscrete, Space

__all__ = ["CheckError", "check_agent", "check_env"]


class CheckError(AssertionError):
    """What is wrong with the checked class, and how to fix it."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise CheckError(message)


def _array(x: Any, shape: tuple[int, ...], dtype: Any, what: str, fix: str) -> np.ndarray:
    _require(isinstance(x, np.ndarray), f"{what} is a {type(x).__name__}, not a numpy array; {fix}")
    _require(x.shape == shape, f"{what} has shape {x.shape}, expected {shape}; {fix}")
    _require(np.issubdtype(x.dtype, dtype), f"{what} has dtype {x.dtype}, expected {getattr(dtype, '__name__', dtype)}; {fix}")
    return x


def _in_space(space: Space, actions: np.ndarray, what: str) -> None:
    if isinstance(space, Box):
        _require(bool(np.all(np.isfinite(actions))), f"{what} has non-finite values")
        if space.bounded:
            _require(bool(np.all((actions >= space.low) & (actions <= space.high))),
                     f"{what} leaves [{space.low}, {space.high}]: clip actions into the Box")
    else:
        nvec = np.array([space.n] if isinstance(space, Discrete) else space.nvec)
        _require(bool(np.all((actions >= 0) & (actions < nvec))), f"{what} holds indices outside {space}")


def check_env(env: type[BatchedEnv] | str | BatchedEnv, num_envs: int = 3, seed: int = 0, steps: int = 5,
              **kwargs: Any) -> dict[str, Any]:
    """Check a ``BatchedEnv`` (a class, an ``env.kind`` such as ``"my_pkg.envs:MyEnv"``, or an instance).

    A class is built as ``cls(num_envs=num_envs, seed=seed, **kwargs)``, as ``make_env`` does. Checked: agent
    names, spaces, ``reset`` and ``step`` outputs (keys, shapes, dtypes, finite values), reset rows (initial
    observation, zero reward, no flags), reproducibility of ``reset(seed)``, and that ``env_info`` is plain data.
    """
    if isinstance(env, str):
        env = env_class(env)
    if isinstance(env, type):
        _require(issubclass(env, BatchedEnv), f"{env.__name__} must subclass tag_actors.envs.BatchedEnv")
        try:
            env = env(num_envs=num_envs, seed=seed, **kwargs)
        except TypeError as e:
            raise CheckError(f"{env.__name__}(num_envs=..., seed=..., **env.kwargs) failed: {e}; the constructor "
                             "must take num_envs and seed as keywords") from e
    name = type(env).__name__
    _require(isinstance(getattr(env, "num_envs", None), int) and env.num_envs >= 1,
             f"{name}.num_envs must be set to a positive int in __init__")
    n = env.num_envs
    names = getattr(env, "agent_names", None)
    _require(isinstance(names, list) and len(names) > 0 and all(isinstance(a, str) for a in names),
             f"{name}.agent_names must be a non-empty list of str, got {names!r}")
    _require(len(set(names)) == len(names), f"{name}.agent_names has duplicates: {names}")
    obs_spaces, act_spaces = {}, {}
    for a in names:
        obs_spaces[a] = env.observation_space(a)
        _require(isinstance(obs_spaces[a], Box), f"{name}.observation_space({a!r}) must be a tag_actors.spaces.Box, "
                 f"got {obs_spaces[a]!r}")
        act_spaces[a] = env.action_space(a)
        _require(isinstance(act_spaces[a], Box | Discrete | MultiDiscrete),
                 f"{name}.action_space({a!r}) must be a Box, Discrete or MultiDiscrete, got {act_spaces[a]!r}")
        try:
            import msgpack

            msgpack.packb(plain(env.env_info(a)))
        except Exception as e:  # noqa: BLE001 — any failure means the handshake cannot carry it
            raise CheckError(f"{name}.env_info({a!r}) must return plain data (dict of str, numbers, lists): {e}") from e

    def check_obs(obs: Any, when: str) -> dict[str, np.ndarray]:
        _require(isinstance(obs, dict) and set(obs) == set(names),
                 f"{name}.{when} must return a dict with one observation per agent {names}, got "
                 f"{sorted(obs) if isinstance(obs, dict) else type(obs).__name__}")
        for a in names:
            o = _array(obs[a], (n, obs_spaces[a].flat_dim), np.floating, f"{when} observation of {a!r}",
                       "return (num_envs, obs_dim) float32 rows")
            _require(bool(np.all(np.isfinite(o))), f"{when} observation of {a!r} has non-finite values")
        return obs

    first = check_obs(env.reset(seed), "reset(seed)")
    again = check_obs(env.reset(seed), "reset(seed)")
    _require(all(np.array_equal(first[a], again[a]) for a in names),
             f"{name}.reset(seed) twice with the same seed gave different observations: seed your RNG in reset")
    rng = np.random.default_rng(seed)
    for t in range(steps):
        actions = {a: act_spaces[a].sample(rng, n) for a in names}
        reset_mask = np.zeros(n, dtype=bool)
        if t == steps - 1:
            reset_mask[0] = True
        out = env.step(actions, reset_mask)
        _require(isinstance(out, tuple) and len(out) == 4,
                 f"{name}.step must return (obs, rewards, terminated, truncated), got {type(out).__name__}")
        obs, rewards, terminated, truncated = out
        check_obs(obs, "step")
        _require(isinstance(rewards, dict) and set(rewards) == set(names),
                 f"{name}.step rewards must be a dict with one (num_envs,) array per agent {names}")
        for a in names:
            r = _array(rewards[a], (n,), np.floating, f"step reward of {a!r}", "return (num_envs,) float32")
            _require(bool(np.all(np.isfinite(r))), f"step reward of {a!r} has non-finite values")
        for flag, arr in (("terminated", terminated), ("truncated", truncated)):
            _array(arr, (n,), np.bool_, f"step {flag}", "return one bool per env copy")
        if reset_mask.any():
            _require(all(float(rewards[a][0]) == 0.0 for a in names),
                     "a copy in reset_mask must get zero reward (it was reset, not stepped)")
            _require(not terminated[0] and not truncated[0], "a copy in reset_mask must get False flags")
    env.close()
    return {"agents": names, "num_envs": n, "steps": steps}




def check_agent(agent: type[Agent] | str, action_space: Space | None = None, obs_dim: int = 6, num_envs: int = 4,
                params: dict[str, Any] | None = None, level: int = 1, decisions: int = 64,
                seed: int = 0) -> dict[str, Any]:
    """Check an ``Agent`` class (or an ``agent`` name such as ``"my_pkg.my_module:MyAgent"``).

    Builds it for ``action_space`` (default: a ``Box((2,), -1, 1)``) and drives it as the runtime does for
    ``decisions`` decision ticks: ``act`` on every row and on a partial mask, ``observe`` with semi-MDP ticks and
    episode ends, ``update`` whenever ``ready``; then a checkpoint round trip (as a run writes and resumes it).
    Checked: the ``Params`` schema accepts ``params``, action shapes, dtypes and bounds, update stats are
    scalars, the state dict loads back.
    """
    cls = agent_class(agent) if isinstance(agent, str) else agent
    _require(isinstance(cls, type) and issubclass(cls, Agent), f"{cls!r} must subclass tag_actors.agents.Agent")
    name = cls.__name__
    space = action_space or Box((2,), -1.0, 1.0)
    params = dict(params or {})
    schema = params_schema(agent) if isinstance(agent, str) else cls.Params
    parse_params(schema, params, f"{name}.Params")
    layout = [("child0", obs_dim - 1), ("instruction", 1)] if obs_dim > 1 else [("child0", obs_dim)]
    ctx = AgentContext(name=f"check.{name}", level=level, obs_dim=obs_dim, action_space=space, num_envs=num_envs,
                       seed=seed, params=params, env_info={"agent": "check"}, obs_layout=layout)
    instance = cls(ctx)
    rng = np.random.default_rng(seed)
    expected = space.zeros(num_envs)
    updates, stats_seen = 0, 0
    for t in range(decisions):
        obs = rng.standard_normal((num_envs, obs_dim)).astype(np.float32)
        mask = np.ones(num_envs, dtype=bool) if t % 3 else rng.random(num_envs) < 0.5
        mask[0] = True
        actions = instance.act(obs, mask)
        what = f"{name}.act(obs {obs.shape}, mask)"
        _require(isinstance(actions, np.ndarray), f"{what} returned {type(actions).__name__}, not a numpy array")
        _require(actions.shape == expected.shape,
                 f"{what} returned shape {actions.shape}; expected {expected.shape} (num_envs rows in the action "
                 f"space's batched layout, every row even where mask is False)")
        _require(actions.dtype.kind == expected.dtype.kind,
                 f"{what} returned dtype {actions.dtype}; expected {expected.dtype} like space.zeros(num_envs)")
        _in_space(space, actions[mask], what)
        ended = rng.random(num_envs) < 0.1
        instance.observe(rng.standard_normal(num_envs).astype(np.float32), ended & (rng.random(num_envs) < 0.5),
                         ended, rng.standard_normal((num_envs, obs_dim)).astype(np.float32),
                         rng.integers(1, 4, num_envs), mask)
        if instance.ready():
            stats = instance.update()
            updates += 1
            for batch in ([stats] if stats is not None else []) + list(instance.finished_updates()):
                _require(isinstance(batch, dict) and all(isinstance(v, int | float) for v in batch.values()),
                         f"{name}.update() must return a dict of str -> float (or None in the background), "
                         f"got {batch!r}")
                stats_seen += 1
    state = instance.state_dict()
    _require(isinstance(state, dict), f"{name}.state_dict() must return a dict, got {type(state).__name__}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            save_checkpoint(Path(tmp) / "agent.pt", state)
            state = load_checkpoint(Path(tmp) / "agent.pt")
        except Exception as e:  # noqa: BLE001 — whatever fails here fails a checkpoint in a run
            raise CheckError(f"{name}.state_dict() cannot be written and read back as a checkpoint: {e}; keep to "
                             "tensors, numpy arrays and plain values") from e
    fresh = cls(ctx)
    fresh.load_state_dict(state)
    obs = rng.standard_normal((num_envs, obs_dim)).astype(np.float32)
    fresh.act(obs, np.ones(num_envs, dtype=bool))
    instance.close()
    fresh.close()
    return {"agent": name, "decisions": decisions, "updates": updates, "update_stats": stats_seen}
