"""Level-0 environments: ``make_env`` builds a ``BatchedEnv`` for VMAS, PettingZoo (parallel), Gymnasium, or
your own class.

``env.kind`` names the environment in one of three ways, tried in this order: a built-in kind (``vmas``,
``pettingzoo``, ``gymnasium``: ``scenario`` picks the task); an entry point of the group ``tag_actors.envs`` of an
installed package; or ``"my_pkg.envs:MyEnv"``, a ``BatchedEnv`` subclass on the Python path. A plug-in class is
built as ``MyEnv(num_envs=..., seed=..., **env.kwargs)`` (``scenario`` is for the built-in kinds). Every runtime
builds the env through ``make_env``, so a plug-in works wherever its module can be imported;
``tag_actors.check_env`` tests one.

Importing this package is cheap on purpose: agent processes import it (for ``heuristic_for`` and the error type)
and must not pay for torch/vmas/pettingzoo. Every environment library is imported inside ``make_env`` and the
scripted policies inside ``heuristic_for``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from tag_actors.envs.base import BatchedEnv, Level0, Tick
from tag_actors.spaces import Box, Discrete, MultiDiscrete, Space

__all__ = ["BatchedEnv", "EnvError", "KINDS", "Level0", "Tick", "env_class", "heuristic_for", "make_env",
           "plugin_envs", "resolve_env"]

ENTRY_POINT_GROUP = "tag_actors.envs"


class EnvError(Exception):
    """A problem with the environment setup (kind, library, scenario, kwargs), worded for the person running it."""


KINDS: dict[str, tuple[str, str]] = {
    # kind -> (python package it needs, pip name)
    "gymnasium": ("gymnasium", "gymnasium"),
    "pettingzoo": ("pettingzoo", "pettingzoo"),
    "vmas": ("vmas", "vmas"),
}


def plugin_envs() -> dict[str, str]:
    """Env kinds installed packages offer through the ``tag_actors.envs`` entry point group."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve_env(kind: str) -> str | None:
    """None for a built-in kind, else the ``module:Class`` reference of a plug-in; EnvError if neither."""
    if kind in KINDS:
        return None
    plugins = plugin_envs()
    if kind in plugins:
        return plugins[kind]
    module, sep, cls = kind.partition(":")
    if sep and module and cls:
        return kind
    raise EnvError(f"unknown env kind {kind!r}: expected one of {', '.join([*KINDS, *sorted(plugins)])}, "
                   "or a BatchedEnv class as 'my_pkg.envs:MyEnv'")


def env_class(kind: str) -> type[BatchedEnv]:
    """The ``BatchedEnv`` subclass a plug-in kind names (imports its module)."""
    ref = resolve_env(kind)
    if ref is None:
        raise EnvError(f"env kind {kind!r} is built in; make_env builds it")
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise EnvError(f"env kind {kind!r}: cannot import module {module_name!r} ({e}); is it installed or on "
                       "PYTHONPATH (in every process that runs it)?") from e
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, BatchedEnv)):
        raise EnvError(f"env kind {kind!r}: {attr!r} in {module_name!r} is "
                       f"{'missing' if cls is None else repr(cls)}, not a tag_actors.envs.BatchedEnv subclass")
    return cls


def require(kind: str, module: str, pip_name: str | None = None) -> Any:
    """Import ``module`` for env kind ``kind`` or raise an EnvError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise EnvError(
            f"env kind {kind!r} needs the {module!r} package: pip install {pip_name or module} ({e})"
        ) from e


def make_env(
    kind: str, scenario: str, num_envs: int, seed: int, kwargs: dict[str, Any] | None = None,
    device: str = "cpu",
) -> BatchedEnv:
    """Build ``num_envs`` seeded copies of ``scenario`` from the env library ``kind`` (or a plug-in class).

    ``kwargs`` go to the scenario (VMAS scenario kwargs, PettingZoo ``parallel_env(**kwargs)``, ``gymnasium.make``)
    or to a plug-in's constructor; the caller's dict is not modified. The episode time limit is not set here:
    ``Level0`` applies it. ``device`` ('cpu', 'auto', 'cuda[:N]'): where a VMAS env simulates; the other kinds
    run on the CPU only (a plug-in gets ``device`` only if its constructor takes it).
    """
    if not isinstance(num_envs, int) or num_envs < 1:
        raise EnvError(f"num_envs must be a positive integer, got {num_envs!r}")
    if resolve_env(kind) is not None:
        cls = env_class(kind)
        extra = {"device": device} if "device" in inspect.signature(cls).parameters else {}
        try:
            return cls(num_envs=num_envs, seed=seed, **extra, **dict(kwargs or {}))
        except TypeError as e:
            raise EnvError(f"env kind {kind!r}: {cls.__name__}(num_envs, seed, **env.kwargs) failed: {e}") from e
    module, pip_name = KINDS[kind]
    require(kind, module, pip_name)
    kwargs = dict(kwargs or {})
    if device not in ("cpu", "auto") and kind != "vmas":
        raise EnvError(f"env.device = {device!r}: only vmas envs simulate on a device; {kind} runs on the CPU")
    if kind == "vmas":
        from tag_actors.devices import resolve_device
        from tag_actors.envs.vmas_env import VmasEnv

        return VmasEnv(scenario, num_envs, seed, kwargs, resolve_device(device, "env.device"))
    if kind == "pettingzoo":
        from tag_actors.envs.pettingzoo_env import PettingZooEnv

        return PettingZooEnv(scenario, num_envs, seed, kwargs)
    from tag_actors.envs.gym_env import GymEnv

    return GymEnv(scenario, num_envs, seed, kwargs)


def heuristic_for(env_info: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """The scripted policy (obs batch -> action batch) for the env agent described by ``env_info``.

    ``env_info`` is what ``BatchedEnv.env_info(agent)`` returned, possibly in another process: the policy is
    rebuilt from it alone, without an env object. Raises EnvError when the scenario has no heuristic.
    """
    from tag_actors.envs.heuristics import heuristic_for as _heuristic_for

    return _heuristic_for(env_info)


def space_from_gym(space: Any, what: str) -> Space:
    """Our Box/Discrete/MultiDiscrete from a gymnasium (or gym) space, by duck typing (no import needed).

    Box bounds become scalars (the min of ``low``, the max of ``high``): our wire format keeps one bound per box.
    """
    name = type(space).__name__
    if name == "Discrete":
        if int(getattr(space, "start", 0)) != 0:
            raise EnvError(f"{what}: Discrete spaces with start != 0 are not supported ({space})")
        return Discrete(int(space.n))
    if name == "MultiDiscrete":
        return MultiDiscrete(tuple(int(n) for n in np.asarray(space.nvec).ravel()))
    if name == "Box":
        low = float(np.min(space.low)) if np.size(space.low) else -np.inf
        high = float(np.max(space.high)) if np.size(space.high) else np.inf
        return Box(tuple(int(s) for s in space.shape), low, high)
    raise EnvError(f"{what}: unsupported space {space!r} (only Box, Discrete and MultiDiscrete)")


def plain(value: Any) -> Any:
    """``value`` as plain msgpack-able data (numpy scalars/arrays and tuples converted, others as strings)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return str(value)
