"""Observation and action spaces, small enough to cross the wire as plain msgpack maps.

We do not use gymnasium.spaces on the wire: a handshake must compare spaces field by field and name the
field that differs, and must stay free of any environment library.

Conventions for batched arrays (leading dimension = ``num_envs``):
- ``Box``: float32 arrays of shape ``(num_envs, *shape)``.
- ``Discrete``: int64 arrays of shape ``(num_envs,)``.
- ``MultiDiscrete``: int64 arrays of shape ``(num_envs, len(nvec))`` (an upper agent's discrete goals, one per child).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Box:
    """A box of float32 vectors; ``low``/``high`` are scalars (infinite means unbounded)."""

    shape: tuple[int, ...]
    low: float = -math.inf
    high: float = math.inf

    @property
    def flat_dim(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def sample(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """A uniform batch of ``batch`` values (unbounded Box dimensions: within [-1, 1])."""
        lo = self.low if math.isfinite(self.low) else -1.0
        hi = self.high if math.isfinite(self.high) else 1.0
        return rng.uniform(lo, hi, size=(batch, *self.shape)).astype(np.float32)

    def zeros(self, batch: int) -> np.ndarray:
        """A batch of ``batch`` zero values (the held action before the first decision)."""
        return np.zeros((batch, *self.shape), dtype=np.float32)

    def as_features(self, x: np.ndarray) -> np.ndarray:
        """Flat float32 features of a batch of values of this space (what a child observes)."""
        return np.asarray(x, dtype=np.float32).reshape(x.shape[0], -1)

    @property
    def feature_dim(self) -> int:
        return self.flat_dim

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the wire (handshakes); ``space_from_dict`` reads it back."""
        return {"type": "box", "shape": list(self.shape), "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Discrete:
    """One of ``n`` choices; seen by a child as a one-hot vector."""

    n: int

    @property
    def shape(self) -> tuple[int, ...]:
        return ()

    def sample(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """A uniform batch of ``batch`` values (unbounded Box dimensions: within [-1, 1])."""
        return rng.integers(0, self.n, size=(batch,), dtype=np.int64)

    def zeros(self, batch: int) -> np.ndarray:
        """A batch of ``batch`` zero values (the held action before the first decision)."""
        return np.zeros((batch,), dtype=np.int64)

    def as_features(self, x: np.ndarray) -> np.ndarray:
        """Flat float32 features of a batch of values of this space (one-hot for indices)."""
        return np.eye(self.n, dtype=np.float32)[np.asarray(x, dtype=np.int64)]

    @property
    def feature_dim(self) -> int:
        return self.n

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the wire (handshakes); ``space_from_dict`` reads it back."""
        return {"type": "discrete", "n": self.n}


@dataclass(frozen=True)
class MultiDiscrete:
    """``len(nvec)`` independent discrete choices (an upper agent's goal for each child)."""

    nvec: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.nvec),)

    def sample(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """A uniform batch of ``batch`` values (unbounded Box dimensions: within [-1, 1])."""
        return np.stack([rng.integers(0, n, size=(batch,), dtype=np.int64) for n in self.nvec], axis=1)

    def zeros(self, batch: int) -> np.ndarray:
        """A batch of ``batch`` zero values (the held action before the first decision)."""
        return np.zeros((batch, len(self.nvec)), dtype=np.int64)

    def as_features(self, x: np.ndarray) -> np.ndarray:
        """Flat float32 features of a batch of values of this space (one-hot for indices)."""
        x = np.asarray(x, dtype=np.int64)
        return np.concatenate([np.eye(n, dtype=np.float32)[x[:, i]] for i, n in enumerate(self.nvec)], axis=1)

    @property
    def feature_dim(self) -> int:
        return int(sum(self.nvec))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the wire (handshakes); ``space_from_dict`` reads it back."""
        return {"type": "multidiscrete", "nvec": list(self.nvec)}


Space = Box | Discrete | MultiDiscrete


def space_from_dict(d: dict[str, Any]) -> Space:
    """Rebuild a space from its wire form; raises ValueError naming the bad field."""
    if not isinstance(d, dict) or "type" not in d:
        raise ValueError(f"space must be a map with a 'type' field, got {d!r}")
    kind = d["type"]
    try:
        if kind == "box":
            return Box(tuple(int(s) for s in d["shape"]), float(d["low"]), float(d["high"]))
        if kind == "discrete":
            return Discrete(int(d["n"]))
        if kind == "multidiscrete":
            return MultiDiscrete(tuple(int(n) for n in d["nvec"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"space of type {kind!r} is malformed: {e}") from e
    raise ValueError(f"unknown space type {kind!r}")


def space_difference(expected: Space, got: Space) -> str | None:
    """None when equal, else a short text naming the field that differs (for handshake errors)."""
    a, b = expected.to_dict(), got.to_dict()
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{key}: expected {a.get(key)!r}, got {b.get(key)!r}"
    return None


def concat_features(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate flat feature blocks along the feature axis (all share the batch dimension)."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
