"""PettingZoo parallel adapter: ``num_envs`` independent copies stepped in a Python loop (no native batching).

``scenario`` is a module path whose ``parallel_env(**kwargs)`` builds the env (``mpe2.simple_spread_v3``). Copy i is
seeded with ``seed + i``; later resets of a copy continue its own generator, so a run is deterministic.
A copy ends when all its agents are done (terminated or truncated at the same step); agents that leave at
different times are not supported: there is no row to put a departed agent's data in.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from difflib import get_close_matches
from typing import Any

import numpy as np

from tag_actors.envs import EnvError, plain, space_from_gym
from tag_actors.envs.base import BatchedEnv
from tag_actors.spaces import Box, Discrete, Space


def _import_scenario(scenario: str) -> Any:
    try:
        return importlib.import_module(scenario)
    except ImportError as e:
        package = scenario.partition(".")[0]
        hint = ""
        try:
            pkg = importlib.import_module(package)
        except ImportError:
            hint = f"; package {package!r} is not installed (pip install {package})"
        else:
            names = [f"{package}.{m.name}" for m in pkgutil.iter_modules(getattr(pkg, "__path__", []))]
            envs = sorted(n for n in names if n.rsplit("_v", 1)[-1].isdigit())
            close = get_close_matches(scenario, envs, n=3)
            if close:
                hint = f"; did you mean {', '.join(close)}?"
            if envs:
                hint += f" ({package} provides: {', '.join(envs)})"
        raise EnvError(
            f"pettingzoo scenario {scenario!r} could not be imported ({e}); a scenario is a module path with a "
            f"parallel_env() function, e.g. 'mpe2.simple_spread_v3'{hint}"
        ) from e


class PettingZooEnv(BatchedEnv):
    """``num_envs`` copies of a PettingZoo parallel env with a fixed set of agents."""

    def __init__(self, scenario: str, num_envs: int, seed: int, kwargs: dict[str, Any]):
        module = _import_scenario(scenario)
        if not hasattr(module, "parallel_env"):
            raise EnvError(f"pettingzoo scenario module {scenario!r} has no parallel_env() function")
        self.scenario = scenario
        self.num_envs = num_envs
        self.kwargs = kwargs
        try:
            self._envs = [module.parallel_env(**kwargs) for _ in range(num_envs)]
        except (TypeError, ValueError, AssertionError) as e:
            raise EnvError(
                f"pettingzoo scenario {scenario!r} rejected kwargs {kwargs}: {type(e).__name__}: {e}"
            ) from e
        env0 = self._envs[0]
        self.agent_names = list(env0.possible_agents)
        self._gym_act = {a: env0.action_space(a) for a in self.agent_names}
        self._obs_spaces: dict[str, Box] = {}
        self._act_spaces: dict[str, Space] = {}
        for a in self.agent_names:
            o = space_from_gym(env0.observation_space(a), f"pettingzoo {scenario} agent {a} observation")
            if not isinstance(o, Box):
                raise EnvError(
                    f"pettingzoo scenario {scenario!r}: agent {a} observations are not a Box ({o})"
                )
            self._obs_spaces[a] = Box((o.flat_dim,), o.low, o.high)
            self._act_spaces[a] = space_from_gym(self._gym_act[a], f"pettingzoo {scenario} agent {a} action")
        self._ended = np.zeros(num_envs, dtype=bool)

    def observation_space(self, agent: str) -> Box:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> Space:
        return self._act_spaces[agent]

    def _put_obs(self, out: dict[str, np.ndarray], i: int, obs: dict[str, Any]) -> None:
        for a in self.agent_names:
            out[a][i] = np.asarray(obs[a], dtype=np.float32).ravel()

    def _empty_obs(self) -> dict[str, np.ndarray]:
        return {
            a: np.zeros((self.num_envs, s.flat_dim), dtype=np.float32) for a, s in self._obs_spaces.items()
        }

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        out = self._empty_obs()
        for i, env in enumerate(self._envs):
            obs, _ = env.reset(seed=seed + i)
            self._put_obs(out, i, obs)
        self._ended[:] = False
        return out

    def _action(self, agent: str, a: np.ndarray) -> Any:
        space = self._act_spaces[agent]
        if isinstance(space, Discrete):
            return int(a)
        if isinstance(space, Box):
            g = self._gym_act[agent]
            return np.clip(np.asarray(a, dtype=g.dtype).reshape(g.shape), g.low, g.high)
        return np.asarray(a, dtype=np.int64)

    def step(
        self, actions: dict[str, np.ndarray], reset_mask: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
        missing = [a for a in self.agent_names if a not in actions]
        if missing:
            raise EnvError(f"pettingzoo {self.scenario}: no action for agent(s) {missing}")
        obs_out = self._empty_obs()
        rewards = {a: np.zeros(self.num_envs, dtype=np.float32) for a in self.agent_names}
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        for i, env in enumerate(self._envs):
            if reset_mask[i]:
                obs, _ = env.reset()
                self._put_obs(obs_out, i, obs)
                self._ended[i] = False
                continue
            if self._ended[i]:
                raise EnvError(f"pettingzoo {self.scenario}: copy {i} ended and was stepped without a reset")
            obs, rew, term, trunc, _ = env.step({a: self._action(a, actions[a][i]) for a in self.agent_names})
            self._put_obs(obs_out, i, obs)
            done = [bool(term.get(a, False)) or bool(trunc.get(a, False)) for a in self.agent_names]
            if any(done) and not all(done):
                left = [a for a, d in zip(self.agent_names, done, strict=True) if d]
                raise EnvError(
                    f"pettingzoo {self.scenario}: agents {left} ended before the others in copy {i}; agents that "
                    "leave at different times are not supported (all agents of a copy must end together)"
                )
            for a in self.agent_names:
                rewards[a][i] = rew[a]
            if all(done):
                self._ended[i] = True
                terminated[i] = any(bool(term.get(a, False)) for a in self.agent_names)
                truncated[i] = not terminated[i]
        return obs_out, rewards, terminated, truncated

    def env_info(self, agent: str) -> dict[str, Any]:
        """What ``heuristic_for`` needs to rebuild this agent's scripted policy in another process."""
        space = self._act_spaces[agent]
        return {
            "kind": "pettingzoo",
            "scenario": self.scenario,
            "agent": agent,
            "agent_index": self.agent_names.index(agent),
            "agents": list(self.agent_names),
            "n_agents": len(self.agent_names),
            "continuous": isinstance(space, Box),
            "u_range": space.high if isinstance(space, Box) else None,
            "obs_dim": self._obs_spaces[agent].flat_dim,
            "action_space": space.to_dict(),
            "kwargs": plain(self.kwargs),
        }

    def heuristic(self, agent: str) -> Callable[[np.ndarray], np.ndarray] | None:
        from tag_actors.envs import heuristic_for

        try:
            return heuristic_for(self.env_info(agent))
        except EnvError:
            return None

    def render(self, index: int = 0) -> np.ndarray | None:
        """Copy ``index``'s frame; built with ``render_mode='rgb_array'`` in kwargs (evaluate --video sets it)."""
        if self.kwargs.get("render_mode") != "rgb_array":
            return None
        frame = self._envs[index].render()
        return None if frame is None else np.asarray(frame)

    def close(self) -> None:
        for env in self._envs:
            env.close()
