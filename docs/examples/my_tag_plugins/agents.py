"""LinearPG: a linear Gaussian policy trained by a one-step policy gradient. A tag_actors ``Agent``.

Small on purpose: it shows the whole contract (``Params``, ``act``, ``observe``, ``ready``/``update``,
checkpoints) without a deep-learning library. Each decision window is treated as a one-step episode: the
advantage of an action is its window's reward minus the batch mean, which is enough for tasks whose reward
follows the action at once (like ``Beacons``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tag_actors.agents import Agent, AgentContext, parse_params
from tag_actors.spaces import Box


class LinearPGParams(BaseModel):
    """Settings of ``LinearPG`` (the level's ``params`` table)."""

    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)

    lr: float = Field(0.05, gt=0)
    """Step size of the gradient ascent."""
    std: float = Field(0.3, gt=0)
    """Exploration noise (standard deviation of the Gaussian)."""
    batch: int = Field(8, ge=1)
    """Decisions per env copy between two updates."""


class LinearPG(Agent):
    """``action = obs @ W + b + std * noise`` (clipped to the box); one gradient step per batch."""

    Params = LinearPGParams

    def __init__(self, ctx: AgentContext):
        super().__init__(ctx)
        if not isinstance(ctx.action_space, Box):
            raise ValueError(f"agent {ctx.name!r} (LinearPG): needs a Box action space, got {ctx.action_space}")
        self.cfg = parse_params(LinearPGParams, ctx.params, f"agent {ctx.name!r} (LinearPG): params")
        self.space = ctx.action_space
        d = self.space.flat_dim
        self.W = np.zeros((ctx.obs_dim, d))
        self.b = np.zeros(d)
        self.open_obs = np.zeros((ctx.num_envs, ctx.obs_dim))
        self.open_noise = np.zeros((ctx.num_envs, d))
        self.open = np.zeros(ctx.num_envs, dtype=bool)
        self.batch: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.count = 0
        self.updates = 0

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        noise = self.rng.standard_normal((obs.shape[0], self.space.flat_dim))
        action = obs @ self.W + self.b + self.cfg.std * noise
        self.open_obs[mask], self.open_noise[mask], self.open[mask] = obs[mask], noise[mask], True
        return np.clip(action, self.space.low, self.space.high).astype(np.float32).reshape(
            obs.shape[0], *self.space.shape)

    def observe(self, reward, terminated, truncated, next_obs, ticks, mask) -> None:
        rows = np.asarray(mask, dtype=bool) & self.open
        if rows.any():
            self.batch.append((self.open_obs[rows], self.open_noise[rows], np.asarray(reward, float)[rows]))
            self.count += int(rows.sum())
            self.open[rows] = False

    def ready(self) -> bool:
        return self.count >= self.cfg.batch * self.ctx.num_envs

    def update(self) -> dict[str, float]:
        obs, noise, reward = (np.concatenate(x) for x in zip(*self.batch, strict=True))
        self.batch, self.count = [], 0
        adv = (reward - reward.mean()) / (reward.std() + 1e-8)
        # grad of log N(a; mean, std) w.r.t. mean is noise / std
        grad = (adv[:, None] * noise / self.cfg.std)
        self.W += self.cfg.lr * obs.T @ grad / len(adv)
        self.b += self.cfg.lr * grad.mean(0)
        self.updates += 1
        return {"updates": float(self.updates), "mean_reward": float(reward.mean()), "transitions": float(len(adv))}

    def state_dict(self) -> dict[str, Any]:
        return {"W": self.W.copy(), "b": self.b.copy(), "updates": self.updates, **super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.W, self.b, self.updates = np.asarray(state["W"]), np.asarray(state["b"]), int(state["updates"])
        self.open[:] = False
        self.batch, self.count = [], 0


class Crashing(LinearPG):
    """Raises at its first decision: what a bug in a user's agent looks like to the runtime (tests use it)."""

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise RuntimeError("Crashing agent: deliberate failure in act()")
