"""VMAS adapter: one vectorized VMAS env on CPU serves all ``num_envs`` copies.

VMAS keeps its random state in one list shared by every ``Environment`` of the process (``vmas_random_state``).
Two envs in one process (a training and an evaluation env, or two tests) would then draw from the same stream and
lose seeded determinism. Each adapter therefore swaps its own state into that list around every VMAS call: the
swap moves three references, so it costs nothing measurable.
"""

from __future__ import annotations

import importlib
import inspect
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from difflib import get_close_matches
from typing import Any

import numpy as np
import torch
import vmas
from vmas.simulator.environment import Environment

from tag_actors.envs import EnvError, plain, space_from_gym
from tag_actors.envs.base import BatchedEnv
from tag_actors.spaces import Box, Space

_threads_set = False


def vmas_scenarios() -> dict[str, str]:
    """Scenario name -> importable module (``balance`` -> ``vmas.scenarios.balance``), from the vmas package files.

    ``vmas.make_env`` finds a scenario by file name anywhere under ``vmas/scenarios`` (``simple_spread`` is
    ``mpe/simple_spread.py``); the first file found wins, as in ``vmas.scenarios.load``.
    """
    root = os.path.dirname(importlib.import_module("vmas.scenarios").__file__)  # vmas.scenarios is a list
    found: dict[str, str] = {}
    for dirpath, _, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for f in sorted(filenames):
            if f.endswith(".py") and f != "__init__.py" and f[:-3] not in found:
                parts = [] if rel == "." else rel.split(os.sep)
                found[f[:-3]] = ".".join(["vmas", "scenarios", *parts, f[:-3]])
    return found


def _unknown_scenario(scenario: str) -> EnvError:
    names = sorted(vmas_scenarios())
    close = get_close_matches(scenario, names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return EnvError(
        f"vmas has no scenario {scenario!r}{hint}; scenarios are the files under vmas/scenarios: {', '.join(names)}"
    )


class VmasEnv(BatchedEnv):
    """VMAS scenario ``scenario`` with ``num_envs`` vectorized copies on CPU.

    Scenario kwargs pass through, except ``continuous_actions`` (default True), ``clamp_actions`` (default True:
    VMAS asserts on out-of-range continuous actions otherwise, and a learner's Gaussian samples go out of range)
    and ``multidiscrete_actions`` (default False), which are VMAS ``make_env`` options.
    """

    def __init__(self, scenario: str, num_envs: int, seed: int, kwargs: dict[str, Any], device: str = "cpu"):
        global _threads_set
        if not _threads_set:  # a VMAS step on CPU is many tiny ops: extra threads only add contention
            torch.set_num_threads(1)
            _threads_set = True
        if scenario.endswith(".py"):
            scenario = scenario[:-3]
        if scenario not in vmas_scenarios():
            raise _unknown_scenario(scenario)
        if "max_steps" in kwargs:
            raise EnvError(
                f"vmas scenario {scenario!r}: do not pass kwarg 'max_steps' to the env; the episode time limit is "
                "applied by Level0 (the run's max_steps setting)"
            )
        for bad in ("dict_spaces", "device", "num_envs", "seed", "wrapper"):
            if bad in kwargs:
                raise EnvError(
                    f"vmas scenario {scenario!r}: kwarg {bad!r} is set by tag_actors and cannot be passed"
                )
        self.scenario = scenario
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.continuous = bool(kwargs.pop("continuous_actions", True))
        self.multidiscrete = bool(kwargs.pop("multidiscrete_actions", False))
        clamp = bool(kwargs.pop("clamp_actions", True))
        self.kwargs = kwargs
        options: dict[str, Any] = {}
        self._split_done = "terminated_truncated" in inspect.signature(vmas.make_env).parameters
        if self._split_done:
            options["terminated_truncated"] = True
        saved = list(Environment.vmas_random_state)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self._env = vmas.make_env(
                    scenario,
                    num_envs=num_envs,
                    device=device,
                    continuous_actions=self.continuous,
                    multidiscrete_actions=self.multidiscrete,
                    clamp_actions=clamp,
                    seed=seed,
                    **options,
                    **kwargs,
                )
        except (TypeError, ValueError, AssertionError, KeyError) as e:
            raise EnvError(
                f"vmas scenario {scenario!r} rejected kwargs {kwargs}: {type(e).__name__}: {e}"
            ) from e
        finally:
            self._rng_state = list(Environment.vmas_random_state)
            Environment.vmas_random_state[:] = saved
        for w in caught:
            if "passed but not used by the scenario" in str(w.message):
                unused = sorted(set(kwargs) & set(str(w.message).split("'")))
                raise EnvError(
                    f"vmas scenario {scenario!r} does not take kwarg(s) {', '.join(map(repr, unused)) or kwargs}: "
                    f"{w.message}"
                )
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self._agents = list(self._env.agents)
        self.agent_names = [a.name for a in self._agents]
        self._obs_spaces: dict[str, Box] = {}
        self._act_spaces: dict[str, Space] = {}
        for i, name in enumerate(self.agent_names):
            obs_space = space_from_gym(
                self._env.observation_space[i], f"vmas {scenario} agent {name} observation"
            )
            if not isinstance(obs_space, Box):
                raise EnvError(
                    f"vmas scenario {scenario!r}: agent {name} observations are not a Box ({obs_space})"
                )
            self._obs_spaces[name] = Box((obs_space.flat_dim,), obs_space.low, obs_space.high)
            self._act_spaces[name] = space_from_gym(
                self._env.action_space[i], f"vmas {scenario} agent {name} action"
            )

    @contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Run a VMAS call on this env's own random state (see the module docstring)."""
        shared = Environment.vmas_random_state
        saved = list(shared)
        shared[:] = self._rng_state
        try:
            yield
        finally:
            self._rng_state = list(shared)
            shared[:] = saved

    def observation_space(self, agent: str) -> Box:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> Space:
        return self._act_spaces[agent]

    def _obs_numpy(self, obs: list[Any]) -> dict[str, np.ndarray]:
        out = {}
        for name, o in zip(self.agent_names, obs, strict=True):
            if not isinstance(o, torch.Tensor):
                raise EnvError(
                    f"vmas scenario {self.scenario!r}: agent {name} observation is a {type(o).__name__}, "
                    "only flat tensor observations are supported"
                )
            out[name] = o.detach().reshape(self.num_envs, -1).to(torch.float32).cpu().numpy()
        return out

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        with self._own_rng():
            obs = self._env.reset(seed=seed)
        return self._obs_numpy(obs)

    def _action_tensor(self, name: str, a: np.ndarray) -> torch.Tensor:
        # Always a copy: actions from the wire are read-only views of the received frame, and VMAS may write
        # into the tensor it is given (torch warns about exactly that for non-writable arrays).
        if isinstance(self._act_spaces[name], Box):
            return torch.from_numpy(np.array(a, dtype=np.float32)).to(self.device)
        t = torch.from_numpy(np.array(a, dtype=np.int64)).to(self.device)
        return t.unsqueeze(-1) if t.dim() == 1 else t

    def step(
        self, actions: dict[str, np.ndarray], reset_mask: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
        try:
            acts = [self._action_tensor(n, actions[n]) for n in self.agent_names]
        except KeyError as e:
            raise EnvError(f"vmas {self.scenario}: no action for agent {e.args[0]!r}") from e
        with self._own_rng():
            out = self._env.step(acts)
        if self._split_done:
            obs_t, rews_t, term_t, trunc_t, _ = out
            terminated, truncated = term_t.cpu().numpy(), trunc_t.cpu().numpy()
        else:
            obs_t, rews_t, done_t, _ = out
            terminated, truncated = done_t.cpu().numpy(), np.zeros(self.num_envs, dtype=bool)
        obs = self._obs_numpy(obs_t)
        rewards = {n: r.to(torch.float32).cpu().numpy() for n, r in zip(self.agent_names, rews_t, strict=True)}
        idx = np.flatnonzero(reset_mask)
        if idx.size:
            with self._own_rng():
                if idx.size == self.num_envs:  # one vectorized reset instead of num_envs reset_at calls
                    fresh = self._env.reset()
                else:
                    for i in idx:
                        self._env.reset_at(int(i), return_observations=False)
                    fresh = self._env.get_from_scenario(
                        get_observations=True, get_rewards=False, get_infos=False, get_dones=False
                    )[0]
            for name, o in self._obs_numpy(fresh).items():
                obs[name][idx] = o[idx]
            for r in rewards.values():
                r[idx] = 0.0
            terminated = terminated.astype(bool, copy=True)
            truncated = truncated.astype(bool, copy=True)
            terminated[idx] = False
            truncated[idx] = False
        return obs, rewards, terminated.astype(bool, copy=False), truncated.astype(bool, copy=False)

    def env_info(self, agent: str) -> dict[str, Any]:
        """What ``heuristic_for`` needs to rebuild this agent's scripted policy in another process."""
        i = self.agent_names.index(agent)
        a = self._agents[i]
        info: dict[str, Any] = {
            "kind": "vmas",
            "scenario": self.scenario,
            "agent": agent,
            "agent_index": i,
            "agents": list(self.agent_names),
            "n_agents": len(self.agent_names),
            "continuous": self.continuous,
            "multidiscrete": self.multidiscrete,
            "u_range": float(a.action.u_range_tensor.max()),
            "obs_dim": self._obs_spaces[agent].flat_dim,
            "action_space": self._act_spaces[agent].to_dict(),
            "kwargs": plain(self.kwargs),
        }
        if not self.continuous:
            info["discrete_nvec"] = [int(n) for n in a.discrete_action_nvec]
        return info

    def heuristic(self, agent: str) -> Callable[[np.ndarray], np.ndarray] | None:
        from tag_actors.envs import heuristic_for

        try:
            return heuristic_for(self.env_info(agent))
        except EnvError:
            return None

    def render(self, index: int = 0) -> np.ndarray | None:
        try:
            frame = self._env.render(mode="rgb_array", env_index=index)
        except ImportError:  # pyglet or a display is missing
            return None
        return None if frame is None else np.asarray(frame)

    def close(self) -> None:
        viewer = getattr(self._env, "viewer", None)
        if viewer is not None:
            viewer.close()
