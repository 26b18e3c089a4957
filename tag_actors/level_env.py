"""LevelEnv in-process: each level of the hierarchy presented as an environment to the level above.

``EnvLevel`` wraps level 0 (the real env); ``LevelEnv`` wraps a level of agents around the level below. Both
expose the same surface — ``names``, ``message_space(name)``, ``instruction_space(name)``, ``reset(seed)`` and
``step(actions)`` returning one ``Report`` per name — so any stack of them is again an environment. The actor
runtime (``tag_actors.actor``) runs the very same ``AgentNode`` objects, one per process, over sockets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tag_actors.config import Config
from tag_actors.envs import BatchedEnv, Level0, Tick
from tag_actors.node import AgentNode, Report
from tag_actors.spaces import Box, Space
from tag_actors.topology import Plan, env_child


def tick_reports(tick: Tick, agent_names: list[str]) -> dict[str, Report]:
    """Level 0's tick as one report per env agent (children named ``env/<index>``)."""
    return {
        env_child(i): Report(tick.obs[a], tick.rewards[a], tick.terminated, tick.truncated, tick.first)
        for i, a in enumerate(agent_names)
    }


class EnvLevel:
    """Level 0 as a LevelEnv: its 'agents' are the env's agents, its instructions are env actions."""

    def __init__(self, env: BatchedEnv, max_steps: int):
        self.env = env
        self.level0 = Level0(env, max_steps)
        self.names = [env_child(i) for i in range(len(env.agent_names))]
        self._agent = dict(zip(self.names, env.agent_names, strict=True))

    def message_space(self, name: str) -> Box:
        return self.env.observation_space(self._agent[name])

    def instruction_space(self, name: str) -> Space:
        return self.env.action_space(self._agent[name])

    def info(self, name: str) -> dict[str, Any]:
        return self.env.env_info(self._agent[name])

    def reset(self, seed: int) -> dict[str, Report]:
        return tick_reports(self.level0.reset(seed), self.env.agent_names)

    def step(self, actions: dict[str, np.ndarray]) -> dict[str, Report]:
        tick = self.level0.step({self._agent[n]: a for n, a in actions.items()})
        return tick_reports(tick, self.env.agent_names)


class LevelEnv:
    """A level of agents on top of the level below, seen from above as an environment."""

    def __init__(self, below: EnvLevel | LevelEnv, nodes: list[AgentNode], instruction: Space | None):
        self.below = below
        self.nodes = nodes
        self.names = [n.name for n in nodes]
        self._instruction = instruction

    def message_space(self, name: str) -> Box:
        return next(n for n in self.nodes if n.name == name).message_space

    def instruction_space(self, name: str) -> Space:
        if self._instruction is None:
            raise ValueError(f"{name!r} is at the top: it takes no instruction")
        return self._instruction

    def reset(self, seed: int) -> dict[str, Report]:
        reports = self.below.reset(seed)
        return {n.name: n.on_children([reports[c] for c in n.spec.children]) for n in self.nodes}

    def step(self, instructions: dict[str, np.ndarray | None]) -> dict[str, Report]:
        actions: dict[str, np.ndarray] = {}
        for node in self.nodes:
            for child, action in zip(node.spec.children, node.on_instruction(instructions.get(node.name)),
                                     strict=True):
                actions[child] = action
            node.maybe_update()
        reports = self.below.step(actions)
        return {n.name: n.on_children([reports[c] for c in n.spec.children]) for n in self.nodes}


def build_hierarchy(cfg: Config, plan: Plan, env: BatchedEnv) -> list[EnvLevel | LevelEnv]:
    """The whole stack in one process, level 0 first; the last entry is the top level."""
    stack: list[EnvLevel | LevelEnv] = [EnvLevel(env, cfg.env.max_steps)]
    for lvl in range(1, plan.depth + 1):
        below = stack[-1]
        instruction = cfg.instruction_space(lvl + 1) if lvl < plan.depth else None
        nodes = []
        for spec in (s for s in plan.nodes if s.level == lvl):
            env_info = below.info(spec.children[0]) if isinstance(below, EnvLevel) else None
            nodes.append(AgentNode(spec, cfg.env.num_envs, [below.message_space(c).flat_dim for c in spec.children],
                                   [below.instruction_space(c) for c in spec.children], instruction, env_info))
        stack.append(LevelEnv(below, nodes, instruction))
    return stack
