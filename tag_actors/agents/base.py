"""The agent contract: what every policy (random, heuristic, PPO, MAPPO, LLM, or your own class) implements.

An agent knows nothing of sockets or of the hierarchy around it. The runtime (``tag_actors.node.AgentNode``)
feeds it batched numpy arrays, in-process or as an actor process, with the same calls in the same order:

    act(obs, mask)            at a decision tick; returns actions for every row (rows where ``mask`` is False
                              are ignored by the runtime)
    observe(reward, terminated, truncated, next_obs, ticks, mask)
                              closes the decision window of the masked rows: ``reward`` is the sum over the
                              ``ticks`` ticks the action was held (semi-MDP), ``next_obs`` the observation that
                              follows (the final one of an episode on an episode end)
    ready() / update()        the runtime calls update() whenever ready() says a batch is complete
    finished_updates()        stats of updates that ran in the background and have finished since
    freeze(deterministic)     evaluation: act without learning from now on
    state_dict() / load_state_dict(state)
                              checkpoints (written with ``torch.save``; tensors, numpy arrays and plain values)
    close()                   release threads, sessions

All arrays carry ``num_envs`` as their leading dimension; observations are flat float32 feature vectors whose
named blocks ``ctx.layout`` describes. An agent's settings come from the ``params`` table of its level in the
config, checked against the class's ``Params`` schema when the config is loaded (before any process starts) and
again when the agent is built. A class is used by naming it in a config: a built-in type (``"ppo"``), an entry
point of the group ``tag_actors.agents`` or ``"my_pkg.my_module:MyAgent"`` (see ``tag_actors.agents``).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pydantic

from tag_actors.spaces import Space

__all__ = ["Agent", "AgentContext", "NoParams", "ObsLayout", "ParamsError", "parse_params", "validate_plain"]


class ParamsError(ValueError):
    """An agent's ``params`` table does not fit its schema; the message names the key and the allowed names."""


class NoParams(pydantic.BaseModel):
    """The schema of an agent without settings: its ``params`` table must be empty."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


def _schema_fields(schema: Any) -> list[str]:
    fields = getattr(schema, "model_fields", None) or getattr(schema, "__pydantic_fields__", None)
    if fields is None:
        fields = getattr(schema, "__dataclass_fields__", {})
    return list(fields)


def validate_plain(schema: Any, data: Any) -> Any:
    """``data`` (plain values: what TOML, JSON or msgpack give) validated into ``schema`` in pydantic's strict JSON
    mode: no coercion (``"3"`` is not a number, ``1`` is not ``true``; integers are accepted for floats), and a
    dataclass schema takes a table (strict Python mode would want an instance)."""
    try:
        text = json.dumps(data)
    except (TypeError, ValueError) as e:
        raise ParamsError(f"not plain data (tables, lists, strings, numbers, booleans): {e}") from None
    return pydantic.TypeAdapter(schema).validate_json(text, strict=True)


def parse_params(schema: Any, params: dict[str, Any], where: str) -> Any:
    """``params`` validated into ``schema`` (a pydantic model or a dataclass); ``ParamsError`` otherwise.

    ``where`` prefixes the message (e.g. ``"configs/x.toml: l2.params"``); the message names the first wrong key
    and, for an unknown key, every allowed one."""
    if not isinstance(params, dict):
        raise ParamsError(f"{where}: expected a table of settings, got {type(params).__name__} {params!r}")
    try:
        return validate_plain(schema, params)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        allowed = _schema_fields(schema)
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            hint = f"allowed: {', '.join(allowed)}" if allowed else "this agent type takes no params"
            raise ParamsError(f"{where}.{key}: unknown parameter {key!r} ({hint})") from None
        raise ParamsError(f"{where}.{key}: {err['msg']}, got {err.get('input')!r}") from None


@dataclass(frozen=True)
class ObsLayout:
    """The named blocks of an agent's observation, in order: one per child (its message), then the parent's
    instruction (absent at the top), then the action the agent holds (only with ``observe_held``)."""

    children: list[tuple[str, int]]
    """(child name, message size) per child, in the order of the action's child axis."""
    instruction: int = 0
    """Size of the parent's instruction features (0: no parent)."""
    held: int = 0
    """Size of the held-action features (0: ``observe_held`` off)."""

    @classmethod
    def from_blocks(cls, blocks: list[tuple[str, int]]) -> ObsLayout:
        """Parse the runtime's ``[(name, size), ...]`` list; the names ``instruction`` and ``held`` are reserved."""
        named = dict(blocks)
        children = [(n, d) for n, d in blocks if n not in ("instruction", "held")]
        return cls(children, int(named.get("instruction", 0)), int(named.get("held", 0)))

    @property
    def children_dim(self) -> int:
        """Size of all children's blocks together (they come first)."""
        return sum(d for _, d in self.children)

    @property
    def dim(self) -> int:
        """Size of the whole observation."""
        return self.children_dim + self.instruction + self.held

    def slice(self, block: str) -> slice:
        """Columns of one block: a child's name, ``"instruction"`` or ``"held"``."""
        start = 0
        for name, dim in [*self.children, ("instruction", self.instruction), ("held", self.held)]:
            if name == block:
                return slice(start, start + dim)
            start += dim
        raise KeyError(f"no block {block!r} in the observation (blocks: {[n for n, _ in self.children]}, "
                       "instruction, held)")


@dataclass
class AgentContext:
    """Everything an agent may need to build itself."""

    name: str
    """Process name, e.g. ``l2.0`` (level 2, index 0)."""
    level: int
    """Level in the hierarchy, 1 = directly above the environment."""
    obs_dim: int
    """Size of a flat observation row."""
    action_space: Space
    """What ``act`` returns per row: one action per child, stacked (a single child: its space)."""
    num_envs: int
    """Rows of every array (env copies stepped together)."""
    seed: int
    """This agent's own seed (derived from the run's seed and its name)."""
    params: dict[str, Any] = field(default_factory=dict)
    """The ``params`` table of the agent's level (already checked against the class's ``Params`` schema)."""
    env_info: dict[str, Any] = field(default_factory=dict)
    """What the level-0 environment says about the env agent below (scenario, agent name); level 1 only."""
    obs_layout: list[tuple[str, int]] = field(default_factory=list)
    """The named blocks of the observation as ``(name, size)`` pairs; ``layout`` parses them."""
    learn_in_background: bool = False
    """Learners may update on a copy in a second thread and keep acting meanwhile (not reproducible)."""
    device: str = "cpu"
    """The level's ``device`` spec ('cpu', 'auto', 'cuda[:N]'); learners resolve it with tag_actors.devices."""

    @property
    def layout(self) -> ObsLayout:
        """The observation's blocks, typed (a single ``obs`` block when the runtime gave none)."""
        return ObsLayout.from_blocks(self.obs_layout or [("obs", self.obs_dim)])


class Agent(ABC):
    """Base class of every agent. Subclasses implement ``act``; learners also ``observe``, ``ready``,
    ``update`` and the checkpoint methods, and declare their settings as ``Params``."""

    Params: ClassVar[Any] = NoParams
    """The schema of the level's ``params`` table: a pydantic model (or dataclass). ``parse_params(self.Params,
    ctx.params, ...)`` gives the typed settings."""

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
        """Feedback for the decision windows that closed in the masked rows. Non-learners ignore it."""

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
        """Everything needed to resume: tensors, numpy arrays and plain values (loaded with
        ``torch.load(weights_only=True)``; the built-in agents keep to tensors and plain values, so that a plain
        ``torch.load(path, weights_only=True)`` reads their checkpoints with no globals allowed)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.rng.bit_generator.state = state["rng"]

    def close(self) -> None:
        """Release external resources (HTTP sessions, threads)."""
