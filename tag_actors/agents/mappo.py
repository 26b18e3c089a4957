"""MAPPO for one TAG node that serves k children: a decentralized actor shared by the children, a centralized
critic over the node's whole observation (Yu et al., "The Surprising Effectiveness of PPO in Cooperative
Multi-Agent Games", 2022).

The node's observation is ``[block of child 0, ..., block of child k-1, instruction (if it has a parent), held
action (with observe_held)]`` (``ctx.layout``) and its action is one action per child: the stacked space ``Box (k, d)`` or
``MultiDiscrete (k × n)`` built by ``tag_actors.node.stacked_space``.

How it reuses ``PPOAgent`` unchanged: every (env row, child) pair is one row of an inner PPO learner with
``num_envs * k`` rows. Row ``b * k + i`` observes ``[whole node observation, one-hot(i)]`` and acts in child i's
space. Then

- the actor (``ChildView`` + MLP) reads ``[child i's block, instruction, child i's held action, one-hot(i)]`` out
  of that row: one set of parameters for all children (decentralized execution: child i's action depends on its
  own block only);
- the critic (``_critic_input``) drops the one-hot and sees the whole observation (centralized training);
- the node's reward (the sum over its children, per ``AgentNode``) is given to each of its k rows, so every child
  gets the same advantage (values of the k rows are equal: same critic input), and PPO's ratio is **per child**
  ``pi(a_i | o_i) / pi_old(a_i | o_i)``, clipped per child, as MAPPO does (not the joint product of k ratios,
  which is clipped far more often as k grows);
- GAE runs per (env row, child) sequence — identical sequences, so identical advantages;
- the value loss is averaged over the k copies of each state (the same loss as once per state).

Learning-relevant settings are those of ``PPOSettings`` (the level's ``params``); ``rollout_len`` still counts
decisions per env copy.

In the actor runtime a MAPPO node is one process (one agent of its level) that serves its k children: at level 1,
k env agents. That is the standard MAPPO deployment (one shared actor evaluated for every agent); to run the k
actors as separate processes one would give each child its own copy of the actor and ship gradients or
parameters around, which the runtime does not do.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from tag_actors.agents.base import AgentContext
from tag_actors.agents.nets import activation_class, mlp
from tag_actors.agents.ppo import PPOAgent
from tag_actors.spaces import Box, Discrete, MultiDiscrete, Space


def child_space(space: Space, k: int) -> Space:
    """The space of one child's action inside the node's stacked action space."""
    if k == 1:
        return space
    if isinstance(space, Box) and space.shape[0] == k:
        return Box(space.shape[1:], space.low, space.high)
    if isinstance(space, MultiDiscrete) and len(space.nvec) == k and len(set(space.nvec)) == 1:
        return Discrete(space.nvec[0])
    raise ValueError(f"cannot split action space {space!r} into {k} equal per-child spaces")


class ChildView(nn.Module):
    """``[child blocks (k*m), instruction (c), held (k*h), one-hot(i) (k)]`` -> ``[block i (m), instruction,
    held i (h), one-hot(i)]``: what child i's shared actor sees. ``held`` is the node's held action, stacked per
    child like its action (``h = 0`` without ``observe_held``)."""

    def __init__(self, k: int, block_dim: int, instruction_dim: int, held_dim: int = 0):
        super().__init__()
        self.k, self.m, self.c, self.h = k, block_dim, instruction_dim, held_dim

    @property
    def out_dim(self) -> int:
        return self.m + self.c + self.h + self.k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, m, c, h = self.k, self.m, self.c, self.h
        blocks = x[:, : k * m].reshape(-1, k, m)
        instruction = x[:, k * m : k * m + c]
        onehot = x[:, k * m + c + k * h :]
        # The one-hot is normalized by the observation normalizer: its argmax still names the child.
        select = nn.functional.one_hot(onehot.argmax(-1), k).to(x.dtype)
        own = (blocks * select.unsqueeze(-1)).sum(1)
        if h == 0:
            return torch.cat([own, instruction, select], dim=-1)
        held = x[:, k * m + c : k * m + c + k * h].reshape(-1, k, h)
        own_held = (held * select.unsqueeze(-1)).sum(1)
        return torch.cat([own, instruction, own_held, select], dim=-1)


class MAPPOAgent(PPOAgent):
    """Shared decentralized actor, centralized critic, per-child PPO ratios (see the module docstring)."""

    def __init__(self, ctx: AgentContext):
        layout = ctx.layout
        dims = sorted({d for _, d in layout.children})
        if len(dims) != 1:
            raise ValueError(f"agent {ctx.name!r} (mappo): the shared actor needs children with equal observation "
                             f"sizes, got {layout.children}")
        self.k, self.block_dim, self.instruction_dim = len(layout.children), dims[0], layout.instruction
        if layout.held % self.k:
            raise ValueError(f"agent {ctx.name!r} (mappo): held action features ({layout.held}) do not split into "
                             f"{self.k} children")
        self.held_dim = layout.held // self.k
        self.node_ctx, self.node_space = ctx, ctx.action_space
        self.node_obs_dim, self.node_envs = ctx.obs_dim, ctx.num_envs
        inner = replace(ctx, obs_dim=ctx.obs_dim + self.k, num_envs=ctx.num_envs * self.k,
                        action_space=child_space(ctx.action_space, self.k))
        super().__init__(inner)
        # Replace PPOAgent's actor (which would read the whole row) by the shared per-child actor.
        view = ChildView(self.k, self.block_dim, self.instruction_dim, self.held_dim)
        activation = activation_class(self.cfg.activation)
        head_dim = self.net.actor[-1].out_features
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(ctx.seed) + self.cfg.seed_offset + 1)
            self.net.actor = nn.Sequential(view, *mlp(view.out_dim, self.cfg.hidden_sizes, head_dim, activation,
                                                      out_std=0.01))
        self.net.actor.to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr, eps=1e-5)
        self._onehot = np.tile(np.eye(self.k, dtype=np.float32), (self.node_envs, 1))

    # -- centralized critic --------------------------------------------------------------------------------------

    def _critic_dim(self) -> int:
        return self.obs_dim - self.k

    def _critic_input(self, obs: torch.Tensor) -> torch.Tensor:
        return obs[:, : self.obs_dim - self.k]

    # -- node rows <-> (row, child) rows ----------------------------------------------------------------------

    def _expand(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if obs.shape != (self.node_envs, self.node_obs_dim):
            raise ValueError(f"agent {self.node_ctx.name!r}: obs has shape {obs.shape}, expected "
                             f"{(self.node_envs, self.node_obs_dim)}")
        return np.concatenate([np.repeat(obs, self.k, axis=0), self._onehot], axis=1)

    def _rows(self, x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else np.repeat(np.asarray(x), self.k, axis=0)

    def act(self, obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """One action per child for the masked rows, from the shared actor."""
        actions = super().act(self._expand(obs), self._rows(mask))
        return actions.reshape(self.node_envs, *self.node_space.shape)

    def observe(self, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, next_obs: np.ndarray,
                ticks: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Close the windows of the masked rows, for every child row alike (they share the node's reward)."""
        super().observe(self._rows(reward), self._rows(terminated), self._rows(truncated), self._expand(next_obs),
                        self._rows(ticks), self._rows(mask))

    def _train(self, batch: dict[str, np.ndarray], gen: torch.Generator) -> dict[str, float]:
        stats = super()._train(batch, gen)
        stats["transitions"] = stats["transitions"] / self.k  # decisions of the node, not child rows
        return stats
