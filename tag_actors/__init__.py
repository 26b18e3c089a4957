"""tag_actors: TAG's LevelEnv as a network protocol; every agent at every level is its own process.

The public API, importable from here (each is cheap to import; torch loads only with a learning agent):

- ``check_agent`` / ``check_env``: test your own ``Agent`` / ``BatchedEnv`` class before a run;
- ``level_as_parallel_env``: a level of a hierarchy as a PettingZoo ``ParallelEnv`` (everything below it acting
  and learning in-process), to train it with any MARL code;
- ``load_config``: a TOML config, validated (``tag_actors.config``).

Agents: ``tag_actors.agents`` (the contract in ``tag_actors.agents.base``); environments: ``tag_actors.envs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["check_agent", "check_env", "level_as_parallel_env", "load_config"]

if TYPE_CHECKING:
    from tag_actors.checks import check_agent, check_env
    from tag_actors.config import load as load_config  # noqa: F401
    from tag_actors.pz_level import level_as_parallel_env

_LAZY = {"check_agent": ("tag_actors.checks", "check_agent"), "check_env": ("tag_actors.checks", "check_env"),
         "level_as_parallel_env": ("tag_actors.pz_level", "level_as_parallel_env"),
         "load_config": ("tag_actors.config", "load")}


def __getattr__(name: str) -> Any:
    """Import the public API on first use: ``import tag_actors`` stays as cheap as the launcher needs."""
    if name not in _LAZY:
        raise AttributeError(f"module 'tag_actors' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    return getattr(importlib.import_module(module), attr)
