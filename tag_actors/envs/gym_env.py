"""Gymnasium single-agent adapter: ``num_envs`` copies of ``gymnasium.make(scenario, **kwargs)`` in a loop.

One agent, ``agent_0``. Copy i is seeded with ``seed + i`` (and its action space too, for reproducible sampling);
later resets continue the copy's own generator. A plain loop rather than ``gymnasium.vector``: deterministic,
no autoreset semantics of its own to reconcile with Level0's next-step reset, and cheap for small batches.
"""

from __future__ import annotations

from collections.abc import Callable
from difflib import get_close_matches
from typing import Any

import gymnasium
import numpy as np

from tag_actors.envs import EnvError, plain, space_from_gym
from tag_actors.envs.base import BatchedEnv
from tag_actors.spaces import Box, Discrete, Space

AGENT = "agent_0"


class GymEnv(BatchedEnv):
    """``num_envs`` copies of a Gymnasium env, seen as a one-agent env."""

    def __init__(self, scenario: str, num_envs: int, seed: int, kwargs: dict[str, Any]):
        self.scenario = scenario
        self.num_envs = num_envs
        self.kwargs = kwargs
        self.agent_names = [AGENT]
        if ":" not in scenario and scenario not in gymnasium.registry:  # 'module:Env-v0' imports module first
            close = get_close_matches(scenario, list(gymnasium.registry), n=5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise EnvError(
                f"gymnasium has no env id {scenario!r}{hint} (ids come from gymnasium.registry, e.g. 'CartPole-v1', "
                "'Pendulum-v1'; third-party ids need their package imported)"
            )
        try:
            self._envs = [gymnasium.make(scenario, **kwargs) for _ in range(num_envs)]
        except gymnasium.error.DependencyNotInstalled as e:
            raise EnvError(f"gymnasium env {scenario!r} needs a package that is not installed: {e}") from e
        except (TypeError, ValueError, gymnasium.error.Error) as e:
            raise EnvError(
                f"gymnasium env {scenario!r} rejected kwargs {kwargs}: {type(e).__name__}: {e}"
            ) from e
        env0 = self._envs[0]
        obs = space_from_gym(env0.observation_space, f"gymnasium {scenario} observation")
        if not isinstance(obs, Box):
            raise EnvError(
                f"gymnasium env {scenario!r}: observations must be a Box, got {env0.observation_space}"
            )
        self._obs_space = Box((obs.flat_dim,), obs.low, obs.high)
        self._gym_act = env0.action_space
        self._act_space = space_from_gym(env0.action_space, f"gymnasium {scenario} action")
        if not isinstance(self._act_space, Box | Discrete):
            raise EnvError(
                f"gymnasium env {scenario!r}: actions must be Box or Discrete, got {env0.action_space}"
            )
        for i, env in enumerate(self._envs):
            env.action_space.seed(seed + i)

    def observation_space(self, agent: str) -> Box:
        return self._obs_space

    def action_space(self, agent: str) -> Space:
        return self._act_space

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        out = np.zeros((self.num_envs, self._obs_space.flat_dim), dtype=np.float32)
        for i, env in enumerate(self._envs):
            out[i] = np.asarray(env.reset(seed=seed + i)[0], dtype=np.float32).ravel()
        return {AGENT: out}

    def _action(self, a: np.ndarray) -> Any:
        if isinstance(self._act_space, Discrete):
            return int(a)
        g = self._gym_act
        return np.clip(np.asarray(a, dtype=g.dtype).reshape(g.shape), g.low, g.high)

    def step(
        self, actions: dict[str, np.ndarray], reset_mask: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
        if AGENT not in actions:
            raise EnvError(f"gymnasium {self.scenario}: no action for agent {AGENT!r}")
        acts = actions[AGENT]
        obs = np.zeros((self.num_envs, self._obs_space.flat_dim), dtype=np.float32)
        rew = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        for i, env in enumerate(self._envs):
            if reset_mask[i]:
                o = env.reset()[0]
            else:
                o, r, term, trunc, _ = env.step(self._action(acts[i]))
                rew[i], terminated[i], truncated[i] = r, term, trunc
            obs[i] = np.asarray(o, dtype=np.float32).ravel()
        return {AGENT: obs}, {AGENT: rew}, terminated, truncated

    def env_info(self, agent: str) -> dict[str, Any]:
        """Plain facts about the env agent (gymnasium envs have no heuristic here; kept for symmetry)."""
        return {
            "kind": "gymnasium",
            "scenario": self.scenario,
            "agent": AGENT,
            "agent_index": 0,
            "agents": [AGENT],
            "n_agents": 1,
            "continuous": isinstance(self._act_space, Box),
            "u_range": self._act_space.high if isinstance(self._act_space, Box) else None,
            "obs_dim": self._obs_space.flat_dim,
            "action_space": self._act_space.to_dict(),
            "kwargs": plain(self.kwargs),
        }

    def heuristic(self, agent: str) -> Callable[[np.ndarray], np.ndarray] | None:
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
