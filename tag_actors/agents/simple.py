"""Agents that do not learn: uniform random actions, and the environment's scripted heuristic."""

from __future__ import annotations

import time

import numpy as np

from tag_actors.agents.base import Agent, AgentContext


class RandomAgent(Agent):
    """Uniform random actions from the agent's action space (its own seeded generator)."""

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.ctx.action_space.sample(self.rng, obs.shape[0])


class HeuristicAgent(Agent):
    """The environment's scripted policy for this agent's env agent (level 1 only).

    It reads the env-observation block of its observation (the first block of ``obs_layout``) and ignores any
    instruction from above.
    """

    def __init__(self, ctx: AgentContext):
        super().__init__(ctx)
        if ctx.level != 1:
            raise ValueError(
                f"agent {ctx.name!r}: the 'heuristic' agent type is only available at level 1 (it is level {ctx.level})"
            )
        from tag_actors.envs import heuristic_for

        self.policy = heuristic_for(ctx.env_info)
        self.env_obs_dim = ctx.obs_layout[0][1] if ctx.obs_layout else ctx.obs_dim

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.policy(obs[:, : self.env_obs_dim])


class SlowAgent(RandomAgent):
    """Random actions after a fixed delay per decision: a stand-in for an LLM or a far host (``delay_s``)."""

    def __init__(self, ctx: AgentContext):
        super().__init__(ctx)
        unknown = set(ctx.params) - {"delay_s"}
        if unknown:
            raise ValueError(f"agent {ctx.name!r} (slow): unknown parameter {sorted(unknown)[0]!r}; valid: delay_s")
        self.delay_s = float(ctx.params.get("delay_s", 0.05))

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        return super().act(obs, mask)
