"""Agents that do not learn: uniform random actions, and the environment's scripted heuristic."""

from __future__ import annotations

import time

import numpy as np

from tag_actors.agents.base import Agent, AgentContext, parse_params
from tag_actors.agents.settings import SlowSettings


class RandomAgent(Agent):
    """Uniform random actions from the agent's action space (its own seeded generator)."""

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """A uniform sample for every row."""
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
        self.env_obs_dim = ctx.layout.children[0][1]

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The scripted action of every row, from its env-observation block."""
        return self.policy(obs[:, : self.env_obs_dim])


class SlowAgent(RandomAgent):
    """Random actions after a fixed delay per decision: a stand-in for an LLM or a far host (``delay_s``)."""

    Params = SlowSettings

    def __init__(self, ctx: AgentContext):
        super().__init__(ctx)
        self.delay_s = parse_params(SlowSettings, ctx.params, f"agent {ctx.name!r} (slow): params").delay_s

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Random actions, ``delay_s`` late."""
        time.sleep(self.delay_s)
        return super().act(obs, mask)
