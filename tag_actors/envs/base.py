"""Level 0: a real environment seen as a batch of ``num_envs`` copies with named agents.

Adapters (VMAS, PettingZoo parallel, Gymnasium) implement ``BatchedEnv``. ``Level0`` adds what every adapter
shares: a time limit, next-step auto-reset (an env copy that ended is reset on the following tick, so the final
observation of an episode reaches every level for bootstrapping), and per-copy episode returns.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from tag_actors.spaces import Box, Space


class BatchedEnv(ABC):
    """``num_envs`` copies of a multi-agent env; every array has ``num_envs`` as its leading dimension.

    Subclass it to bring your own environment (``env.kind = "my_pkg.envs:MyEnv"``): set ``agent_names`` and
    ``num_envs`` in ``__init__(self, num_envs, seed, **kwargs)``, implement the spaces, ``reset`` and ``step``,
    and run ``tag_actors.check_env(MyEnv)``. The episode time limit and auto-reset are not yours to do:
    ``Level0`` adds them (``step`` only resets the copies it is told to).
    """

    agent_names: list[str]
    """The env's agents, in the order level-1 agents take them (``env/0``, ``env/1``, ...)."""
    num_envs: int
    """Copies stepped together."""

    @abstractmethod
    def observation_space(self, agent: str) -> Box:
        """One agent's observation: a ``Box`` (flattened to float32 features)."""

    @abstractmethod
    def action_space(self, agent: str) -> Space:
        """One agent's action: ``Box``, ``Discrete`` or ``MultiDiscrete`` (batched layout ``(num_envs, ...)``)."""

    @abstractmethod
    def reset(self, seed: int) -> dict[str, np.ndarray]:
        """Reset every copy; observations ``(num_envs, obs_dim)`` float32 per agent."""

    @abstractmethod
    def step(
        self, actions: dict[str, np.ndarray], reset_mask: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Step the copies not in ``reset_mask`` and reset those in it.

        Returns (observations, rewards ``(num_envs,)`` float32 per agent, terminated, truncated) where rows of reset
        copies hold their initial observation, zero reward and False flags.
        """

    def env_info(self, agent: str) -> dict[str, Any]:
        """Plain data (msgpack-able) about one env agent, handed to the level-1 agent above it in the handshake
        (``AgentContext.env_info``): e.g. the scenario, for a scripted policy. Default: the agent's name."""
        return {"agent": agent}

    def render(self, index: int = 0) -> np.ndarray | None:
        """An RGB frame of copy ``index`` (for evaluation videos), or None."""
        return None

    def close(self) -> None:
        """Release what the env holds (viewers, subprocesses); a no-op unless an adapter overrides it."""
        return None


@dataclass
class Tick:
    """What level 0 reports after a tick (per agent dicts, flags per env copy)."""

    obs: dict[str, np.ndarray]
    rewards: dict[str, np.ndarray]
    terminated: np.ndarray
    truncated: np.ndarray
    first: np.ndarray
    """True where this row is the first observation of a new episode (reward meaningless, no window open)."""


class Level0:
    """Drives a BatchedEnv with a time limit and next-step auto-reset; counts real env steps."""

    def __init__(self, env: BatchedEnv, max_steps: int):
        self.env = env
        self.max_steps = max_steps
        n = env.num_envs
        self.episode_len = np.zeros(n, dtype=np.int64)
        self.pending_reset = np.zeros(n, dtype=bool)
        self.env_steps = 0
        self.step_seconds = 0.0
        """Wall time spent in ``step`` (the env's own share of a tick; see ``runlog.steady_tick_split``)."""
        self.episode_return = {a: np.zeros(n, dtype=np.float64) for a in env.agent_names}
        self.finished_episodes: list[dict[str, Any]] = []
        """Episodes that ended since the last ``pop_finished()``: {"env": i, "length": n, "return": {agent: r}}."""

    def reset(self, seed: int) -> Tick:
        """Reset every copy; the first Tick (``first`` all True, zero rewards)."""
        obs = self.env.reset(seed)
        n = self.env.num_envs
        self.episode_len[:] = 0
        self.pending_reset[:] = False
        zeros = {a: np.zeros(n, dtype=np.float32) for a in self.env.agent_names}
        for r in self.episode_return.values():
            r[:] = 0
        flags = np.zeros(n, dtype=bool)
        return Tick(obs, zeros, flags, flags.copy(), np.ones(n, dtype=bool))

    def step(self, actions: dict[str, np.ndarray]) -> Tick:
        """One tick: step the copies, reset those that ended last tick, apply the time limit."""
        started = time.perf_counter()
        first = self.pending_reset.copy()
        obs, rewards, terminated, truncated = self.env.step(actions, first)
        stepped = ~first
        self.env_steps += int(stepped.sum())
        self.episode_len[first] = 0
        self.episode_len[stepped] += 1
        truncated = truncated | ((self.episode_len >= self.max_steps) & stepped & ~terminated)
        terminated = terminated & stepped
        truncated = truncated & stepped
        for a, r in rewards.items():
            ret = self.episode_return[a]
            ret[first] = 0
            ret[stepped] += r[stepped]
        ended = terminated | truncated
        for i in np.flatnonzero(ended):
            self.finished_episodes.append(
                {
                    "env": int(i),
                    "length": int(self.episode_len[i]),
                    "return": {a: float(r[i]) for a, r in self.episode_return.items()},
                }
            )
        self.pending_reset = ended
        self.step_seconds += time.perf_counter() - started
        return Tick(obs, rewards, terminated, truncated, first)

    def pop_finished(self) -> list[dict[str, Any]]:
        """The episodes that ended since the last call."""
        out, self.finished_episodes = self.finished_episodes, []
        return out
