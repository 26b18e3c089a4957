"""Agent types by config name. Imported lazily so that processes which need no torch never load it."""

from __future__ import annotations

import importlib

from tag_actors.agents.base import Agent, AgentContext

AGENT_TYPES: dict[str, str] = {
    "random": "tag_actors.agents.simple:RandomAgent",
    "heuristic": "tag_actors.agents.simple:HeuristicAgent",
    "slow": "tag_actors.agents.simple:SlowAgent",
    "ppo": "tag_actors.agents.ppo:PPOAgent",
    "mappo": "tag_actors.agents.mappo:MAPPOAgent",
    "llm": "tag_actors.agents.llm:LLMAgent",
}


def agent_class(type_name: str) -> type[Agent]:
    """The class for an agent type name; raises KeyError listing the known types."""
    if type_name not in AGENT_TYPES:
        raise KeyError(f"unknown agent type {type_name!r}; known: {', '.join(sorted(AGENT_TYPES))}")
    module, _, cls = AGENT_TYPES[type_name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_agent(type_name: str, ctx: AgentContext) -> Agent:
    return agent_class(type_name)(ctx)


__all__ = ["AGENT_TYPES", "Agent", "AgentContext", "agent_class", "make_agent"]
