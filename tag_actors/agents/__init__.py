"""Agent types, resolved by name: built-in types, installed plug-ins and any importable class.

A level's ``agent`` key names its class in one of three ways, tried in this order:

- a built-in type: ``random``, ``heuristic``, ``slow``, ``ppo``, ``mappo``, ``llm``;
- an entry point of the group ``tag_actors.agents`` of an installed package (``[project.entry-points.
  "tag_actors.agents"] my_agent = "my_pkg.agents:MyAgent"`` in its pyproject.toml);
- ``"my_pkg.my_module:MyAgent"``: a module on the Python path and a class in it.

Every runtime (serial, actor processes on any host, Ray) resolves the name with ``agent_class``, so a plug-in
works wherever its module can be imported. Resolution imports an agent's module only when it is needed: the
launcher checks built-in ``params`` against torch-free schemas (``tag_actors.agents.settings``), so it never
loads torch; actor processes load only their own agent's code.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from tag_actors.agents.base import Agent, AgentContext, NoParams, ObsLayout, ParamsError, parse_params

AGENT_TYPES: dict[str, str] = {
    "random": "tag_actors.agents.simple:RandomAgent",
    "heuristic": "tag_actors.agents.simple:HeuristicAgent",
    "slow": "tag_actors.agents.simple:SlowAgent",
    "ppo": "tag_actors.agents.ppo:PPOAgent",
    "mappo": "tag_actors.agents.mappo:MAPPOAgent",
    "llm": "tag_actors.agents.llm:LLMAgent",
}
"""Built-in agent types -> ``module:Class``."""

_BUILTIN_PARAMS: dict[str, str] = {
    "slow": "tag_actors.agents.settings:SlowSettings",
    "ppo": "tag_actors.agents.settings:PPOSettings",
    "mappo": "tag_actors.agents.settings:PPOSettings",
    "llm": "tag_actors.agents.llm:LLMConfig",
}
"""Schemas of the built-in types, importable without the agents' own (torch) modules."""

ENTRY_POINT_GROUP = "tag_actors.agents"


class UnknownAgentType(KeyError):
    """An ``agent`` name that is neither built in, nor an entry point, nor an importable ``module:Class``."""

    def __str__(self) -> str:
        return str(self.args[0])


def plugin_agents() -> dict[str, str]:
    """Agent types installed packages offer through the ``tag_actors.agents`` entry point group."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_agent_types() -> list[str]:
    """Built-in and installed agent type names (a ``module:Class`` reference is accepted besides)."""
    return [*AGENT_TYPES, *sorted(set(plugin_agents()) - set(AGENT_TYPES))]


def resolve(type_name: str) -> str:
    """The ``module:Class`` reference an agent type name stands for."""
    if type_name in AGENT_TYPES:
        return AGENT_TYPES[type_name]
    plugins = plugin_agents()
    if type_name in plugins:
        return plugins[type_name]
    module, sep, cls = type_name.partition(":")
    if sep and module and cls:
        return type_name
    raise UnknownAgentType(
        f"unknown agent type {type_name!r}: expected one of {', '.join(known_agent_types())}, "
        "or a class as 'my_pkg.my_module:MyAgent'")


def load_object(ref: str, what: str) -> Any:
    """The object a ``module:attribute`` reference names; errors say what could not be found."""
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UnknownAgentType(f"{what} {ref!r}: cannot import module {module_name!r} ({e}); is it installed or "
                               "on PYTHONPATH (in every process that runs it)?") from e
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UnknownAgentType(f"{what} {ref!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def agent_class(type_name: str) -> type[Agent]:
    """The class for an agent type name (built-in, entry point or ``module:Class``)."""
    cls = load_object(resolve(type_name), "agent")
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise UnknownAgentType(f"agent {type_name!r} is {cls!r}, not a subclass of tag_actors.agents.Agent")
    return cls


def params_schema(type_name: str) -> Any:
    """The schema of an agent type's ``params`` table (its class's ``Params``); built-ins without importing
    their modules."""
    if type_name in _BUILTIN_PARAMS:
        return load_object(_BUILTIN_PARAMS[type_name], "params schema")
    if type_name in AGENT_TYPES:
        return NoParams
    return agent_class(type_name).Params


def check_params(type_name: str, params: dict[str, Any], where: str) -> Any:
    """``params`` validated by the agent type's schema (``ParamsError`` naming the key and the allowed ones)."""
    return parse_params(params_schema(type_name), params, where)


def make_agent(type_name: str, ctx: AgentContext) -> Agent:
    """Build the agent of type ``type_name`` for the context ``ctx``."""
    return agent_class(type_name)(ctx)


__all__ = ["AGENT_TYPES", "Agent", "AgentContext", "NoParams", "ObsLayout", "ParamsError", "UnknownAgentType",
           "agent_class", "check_params", "known_agent_types", "make_agent", "params_schema", "parse_params",
           "plugin_agents", "resolve"]
