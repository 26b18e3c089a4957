"""Beacons: each agent moves on a line and is rewarded for standing on its own beacon. A ``BatchedEnv``."""

from __future__ import annotations

from typing import Any

import numpy as np

from tag_actors.envs import BatchedEnv
from tag_actors.spaces import Box, Space


class Beacons(BatchedEnv):
    """``n_agents`` points on [-1, 1]; observation ``[position, beacon]``; action a velocity in [-1, 1]
    (``speed`` per step); reward ``-|position - beacon|`` after the move. Beacons and positions are drawn
    anew for every episode; episodes end by the time limit only."""

    def __init__(self, num_envs: int, seed: int, n_agents: int = 2, speed: float = 0.2):
        self.num_envs, self.speed = num_envs, speed
        self.agent_names = [f"walker_{i}" for i in range(n_agents)]
        self.rng = np.random.default_rng(seed)
        self.pos = np.zeros((num_envs, n_agents))
        self.beacon = np.zeros((num_envs, n_agents))

    def observation_space(self, agent: str) -> Box:
        return Box((2,), -1.0, 1.0)

    def action_space(self, agent: str) -> Space:
        return Box((1,), -1.0, 1.0)

    def env_info(self, agent: str) -> dict[str, Any]:
        return {"kind": "beacons", "agent": agent}

    def _new_episodes(self, rows: np.ndarray) -> None:
        n = int(rows.sum())
        self.pos[rows] = self.rng.uniform(-1, 1, (n, len(self.agent_names)))
        self.beacon[rows] = self.rng.uniform(-1, 1, (n, len(self.agent_names)))

    def _obs(self) -> dict[str, np.ndarray]:
        return {a: np.stack([self.pos[:, i], self.beacon[:, i]], axis=1).astype(np.float32)
                for i, a in enumerate(self.agent_names)}

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        self.rng = np.random.default_rng(seed)
        self._new_episodes(np.ones(self.num_envs, dtype=bool))
        return self._obs()

    def step(self, actions: dict[str, np.ndarray], reset_mask: np.ndarray):
        velocity = np.stack([np.asarray(actions[a], dtype=np.float64).reshape(self.num_envs)
                             for a in self.agent_names], axis=1)
        self.pos = np.clip(self.pos + self.speed * np.clip(velocity, -1, 1), -1, 1)
        self._new_episodes(reset_mask)
        distance = np.abs(self.pos - self.beacon)
        rewards = {a: np.where(reset_mask, 0.0, -distance[:, i]).astype(np.float32)
                   for i, a in enumerate(self.agent_names)}
        flags = np.zeros(self.num_envs, dtype=bool)
        return self._obs(), rewards, flags, flags.copy()
