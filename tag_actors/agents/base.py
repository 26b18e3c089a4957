"""The agent interface: what every policy (random, heuristic, PPO, MAPPO, LLM) implements.

An agent knows nothing of sockets or of the hierarchy around it. The runtime (``tag_actors.node.AgentNode``)
feeds it batched numpy arrays, in-process or as an actor, with the same calls in the same order:

    act(obs, mask)                 at a decision tick; rows where ``mask`` is False are ignored
    observe(reward, terminated, truncated, next_obs, mask)
                                   closes the decision window of the masked envs: ``reward`` is the sum over the
                                   ticks the action was held (semi-MDP), ``ticks`` how many ticks that was,
                                   ``next_obs`` the observation that follows (the final one on an episode end)
    ready() / update()             the runtime calls update() whenever ready() says a batch is complete
    finished_updates()             stats of updates that ran in the background and have finished since
    save(path) / load(path)        checkpoints

All arrays carry ``num_envs`` as their leading dimension. Observations are flat float32 feature vectors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tag_actors.spaces import Space


@dataclass
class AgentContext:
    """Everything an agent may need to build itself."""

    name: str
    level: int
    obs_dim: int
    action_space: Space
    num_envs: int
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    """The ``[levels.agent]`` table of the config (algorithm settings)."""
    env_info: dict[str, Any] = field(default_factory=dict)
    """What the level-0 environment says about itself (scenario, env agent name); level 1 only."""
    obs_layout: list[tuple[str, int]] = field(default_factory=list)
    """The named blocks of the observation, in order: one per child message, then the parent's instruction."""
    learn_in_background: bool = False
    """Learners may update on a copy in a second thread and keep acting meanwhile (not reproducible)."""
    device: str = "cpu"
    """The level's ``device`` spec ('cpu', 'auto', 'cuda[:N]'); learners resolve it with tag_actors.devices."""


class Agent(ABC):
    """Base class; subclasses register themselves in ``tag_actors.agents.AGENT_TYPES``."""

    def __init__(self, ctx: AgentContext):
        self.ctx = ctx
        self.rng = np.random.default_rng(ctx.seed)

    @abstractmethod
    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Actions for the batch ``(num_envs, ...)`` in ``ctx.action_space``'s batched layout."""

    def observe(
        self,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        next_obs: np.ndarray,
        ticks: np.ndarray,
        mask: np.ndarray,
    ) -> None:
        """Feedback for the decision windows that closed in the masked envs. Non-learners ignore it."""

    def ready(self) -> bool:
        """True when the agent holds a full batch and wants ``update()`` called."""
        return False

    def update(self) -> dict[str, float] | None:
        """One learning step on the collected batch; returns scalar stats for logs and metrics, or None when the
        step runs in the background (its stats come from ``finished_updates``)."""
        return {}

    def finished_updates(self) -> list[dict[str, float]]:
        """Stats of background updates that finished since the last call (their new weights now act)."""
        return []

    def freeze(self, deterministic: bool) -> None:
        """Act from now on without learning (evaluation); ``deterministic``: take the most likely action where
        the policy is stochastic. Non-learners have nothing to freeze."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume; numpy arrays and plain values (torch agents may hold tensors)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]

    def close(self) -> None:
        """Release external resources (HTTP sessions, threads)."""
