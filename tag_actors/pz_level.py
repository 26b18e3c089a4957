"""A level of a TAG hierarchy as a PettingZoo ``ParallelEnv``: train it with any multi-agent RL code.

``level_as_parallel_env(cfg, level=k)`` keeps levels 1..k-1 of the config as they are (acting and learning, in
this process, through the same ``LevelEnv`` stack as ``--serial``) and hands level k to you: the ParallelEnv's
agents are level k's agents (``l{k}.0``, ...), an agent's observation is what a level-k agent observes (its
children's messages, concatenated), its action is one instruction per child (the config's ``instruction`` of
level k; at level 1, the env agents' actions), and its reward is the sum of its children's rewards over the
ticks the action is held. One ``step`` is one decision of level k: the action is held until the run's clock
reaches level k's next decision tick (``every`` of level k and below), or the episode ends. Levels above k are
not built: level k is the top.

The env runs one copy (``env.num_envs`` is set to 1). An episode that ends removes every agent (``agents``
becomes empty); ``reset`` then starts the next one the way the runtime does (the levels below see the final
observation, then the new episode). A ``reset`` in the middle of an episode truncates it at the next tick first,
so the levels below never learn across an episode boundary. Only the first ``reset(seed)`` seeds the env.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from pettingzoo import ParallelEnv

from tag_actors.config import Config
from tag_actors.envs import make_env
from tag_actors.level_env import EnvLevel, LevelEnv
from tag_actors.node import AgentNode, Report, stacked_space
from tag_actors.spaces import Box, Discrete, MultiDiscrete, Space
from tag_actors.topology import build_plan

__all__ = ["LevelParallelEnv", "level_as_parallel_env"]


def gymnasium_space(space: Space) -> Any:
    """A ``tag_actors.spaces`` space as the gymnasium space PettingZoo code expects."""
    from gymnasium import spaces

    if isinstance(space, Box):
        return spaces.Box(np.float32(space.low), np.float32(space.high), space.shape, np.float32)
    if isinstance(space, Discrete):
        return spaces.Discrete(space.n)
    if isinstance(space, MultiDiscrete):
        return spaces.MultiDiscrete(list(space.nvec))
    raise TypeError(f"no gymnasium space for {space!r}")


class LevelParallelEnv(ParallelEnv):
    """Level ``level`` of ``cfg`` as a ParallelEnv over everything below it (see the module docstring)."""

    metadata = {"name": "tag_actors_level_v0", "render_modes": []}

    def __init__(self, cfg: Config, level: int):
        if not 1 <= level <= len(cfg.levels):
            raise ValueError(f"{cfg.source}: level {level} does not exist (levels 1..{len(cfg.levels)})")
        cfg = copy.deepcopy(cfg)
        cfg.env.num_envs = 1
        cfg.levels = cfg.levels[:level]
        self.cfg, self.level = cfg, level
        plan = build_plan(cfg)
        self.env = make_env(cfg.env.kind, cfg.env.scenario, 1, cfg.run.seed, dict(cfg.env.kwargs))
        below: EnvLevel | LevelEnv = EnvLevel(self.env, cfg.env.max_steps)
        self.level0 = below.level0
        for lvl in range(1, level):
            nodes = []
            for spec in (s for s in plan.nodes if s.level == lvl):
                env_info = below.info(spec.children[0]) if isinstance(below, EnvLevel) else None
                nodes.append(AgentNode(spec, 1, [below.message_space(c).flat_dim for c in spec.children],
                                       [below.instruction_space(c) for c in spec.children],
                                       cfg.instruction_space(lvl + 1), env_info))
            below = LevelEnv(below, nodes, cfg.instruction_space(lvl + 1))
        self.below = below
        self.lower_nodes = _nodes(below)
        self.specs = [s for s in plan.nodes if s.level == level]
        self.period = self.specs[0].period
        self.possible_agents = [s.name for s in self.specs]
        self.agents: list[str] = []
        self._children = {s.name: s.children for s in self.specs}
        self._action_space = {s.name: stacked_space([below.instruction_space(c) for c in s.children])
                              for s in self.specs}
        self._obs_dim = {s.name: sum(below.message_space(c).flat_dim for c in s.children) for s in self.specs}
        self._gym_obs = {a: gymnasium_space(Box((d,))) for a, d in self._obs_dim.items()}
        self._gym_act = {a: gymnasium_space(s) for a, s in self._action_space.items()}
        self._reports: dict[str, Report] | None = None
        self._held: dict[str, np.ndarray] = {}
        self.tick = 0

    def observation_space(self, agent: str) -> Any:
        """A flat float32 Box: the agent's children's messages."""
        return self._gym_obs[agent]

    def action_space(self, agent: str) -> Any:
        """One instruction (or env action) per child, stacked."""
        return self._gym_act[agent]

    def _observations(self) -> dict[str, np.ndarray]:
        return {a: np.concatenate([self._reports[c].message[0] for c in self._children[a]]).astype(np.float32)
                for a in self.possible_agents}

    def _tick(self) -> None:
        self._reports = self.below.step(self._held)
        self.tick += 1

    def _ended(self) -> bool:
        head = next(iter(self._reports.values()))
        return bool(head.terminated[0] or head.truncated[0])

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Start an episode: the first call resets the env (seeded); later ones continue the run's clock."""
        if self._reports is None:
            self._reports = self.below.reset(self.cfg.run.seed if seed is None else seed)
        else:
            if not self._ended():  # truncate the running episode at the next tick, as a time limit would
                self.level0.episode_len[:] = self.level0.max_steps - 1
                self._tick()
            self._tick()  # the env's auto-reset step: the levels below close their windows, the new episode starts
        self._held = {c: self.below.instruction_space(c).zeros(1) for s in self.specs for c in s.children}
        self.agents = list(self.possible_agents)
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Hold the agents' actions until level k's next decision tick (or the episode's end)."""
        for agent in self.agents:
            action = np.asarray(actions[agent], dtype=self._action_space[agent].zeros(1).dtype)[None]
            children = self._children[agent]
            for i, child in enumerate(children):
                self._held[child] = action if len(children) == 1 else np.ascontiguousarray(action[:, i])
        rewards = dict.fromkeys(self.agents, 0.0)
        while True:
            self._tick()
            for agent in self.agents:
                rewards[agent] += float(sum(self._reports[c].reward[0] for c in self._children[agent]))
            if self._ended() or self.tick % self.period == 0:
                break
        head = next(iter(self._reports.values()))
        terminated, truncated = bool(head.terminated[0]), bool(head.truncated[0])
        obs = self._observations()
        out = ({a: obs[a] for a in self.agents}, rewards, dict.fromkeys(self.agents, terminated),
               dict.fromkeys(self.agents, truncated), {a: {} for a in self.agents})
        if terminated or truncated:
            self.agents = []
        return out

    def close(self) -> None:
        """Close the env and every agent below."""
        for node in self.lower_nodes:
            node.agent.close()
        self.env.close()


def _nodes(level: EnvLevel | LevelEnv) -> list[AgentNode]:
    out: list[AgentNode] = []
    while isinstance(level, LevelEnv):
        out.extend(level.nodes)
        level = level.below
    return out


def level_as_parallel_env(cfg: Config | str, level: int) -> LevelParallelEnv:
    """Level ``level`` (1-based) of a config (a ``Config`` or a TOML path) as a PettingZoo ParallelEnv."""
    if not isinstance(cfg, Config):
        from tag_actors.config import load

        cfg = load(cfg)
    return LevelParallelEnv(cfg, level)
