"""Per-level observation selection (``LevelConfig.observe``): which parts of the env observation level 1 acts on.

TAG's claim is that managers coordinate what their workers cannot see. On balance every env agent observes the
goal, so its managers have nothing to add; ``observe`` lets a config hide parts of the env observation from
the level-1 agents while the levels above still receive them, since the message a level-1 node sends up (φ of
its children's messages) is built from the *full* observation. Flat baselines given the same ``observe`` see
what the hierarchy's workers see.

An entry is a named part of the env observation (the scenario's layout below, e.g. ``"package_goal"`` on VMAS
balance) or a half-open column range ``"a:b"`` of one env agent's observation. The selection applies to every
child block of a level-1 node alike, in the order given; an empty list selects everything.
"""

from __future__ import annotations

import re

__all__ = ["OBS_LAYOUTS", "ObservationSelectionError", "known_parts", "select_columns"]

OBS_LAYOUTS: dict[str, list[tuple[str, int]]] = {
    # vmas/scenarios/balance.py, Scenario.observation: 16 features per agent.
    "balance": [("pos", 2), ("vel", 2), ("package_rel", 2), ("line_rel", 2), ("package_goal", 2),
                ("package_vel", 2), ("line_vel", 2), ("line_ang_vel", 1), ("line_rot", 1)],
}
"""Named parts of the per-agent observation of scenarios whose layout is fixed, in observation order."""

_RANGE = re.compile(r"^(\d+):(\d+)$")


class ObservationSelectionError(ValueError):
    """A selection that names an unknown part or columns outside the observation."""


def known_parts(scenario: str) -> list[tuple[str, int]]:
    """The named parts of ``scenario``'s per-agent observation (empty when its layout is not known)."""
    return OBS_LAYOUTS.get(scenario, [])


def select_columns(entries: list[str], scenario: str, obs_dim: int | None) -> list[int]:
    """The columns of one env agent's observation that ``entries`` select, in order.

    ``obs_dim`` bounds the ranges (None: not known yet, checked again where the env's spaces are known).
    Raises ObservationSelectionError saying which entry is wrong and what is allowed."""
    parts = known_parts(scenario)
    starts, offset = {}, 0
    for name, size in parts:
        starts[name] = (offset, size)
        offset += size
    if parts and obs_dim is None:
        obs_dim = offset
    columns: list[int] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ObservationSelectionError(f"entry {entry!r} is not a string (a part name or 'a:b')")
        match = _RANGE.match(entry.strip())
        if match:
            start, stop = int(match.group(1)), int(match.group(2))
            if start >= stop:
                raise ObservationSelectionError(f"range {entry!r} is empty (write 'a:b' with a < b)")
            if obs_dim is not None and stop > obs_dim:
                raise ObservationSelectionError(f"range {entry!r} ends past the observation's {obs_dim} features")
            chosen = list(range(start, stop))
        elif entry in starts:
            start, size = starts[entry]
            chosen = list(range(start, start + size))
        else:
            names = ", ".join(n for n, _ in parts)
            allowed = (f"a part of {scenario!r}'s observation ({names}) or a column range 'a:b'" if parts else
                       f"a column range 'a:b' (scenario {scenario!r} has no named observation parts)")
            raise ObservationSelectionError(f"unknown part {entry!r}: expected {allowed}")
        repeated = sorted(set(chosen) & set(columns))
        if repeated:
            raise ObservationSelectionError(f"entry {entry!r} selects column(s) {repeated} a second time")
        columns += chosen
    return columns


def block_columns(columns: list[int], child_dims: list[int]) -> list[int]:
    """Columns of the concatenated children's observations that keep ``columns`` of every child block."""
    out, offset = [], 0
    for dim in child_dims:
        if columns and max(columns) >= dim:
            raise ObservationSelectionError(f"column {max(columns)} is past a child's {dim}-feature observation")
        out += [offset + c for c in columns]
        offset += dim
    return out
