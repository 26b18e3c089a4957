"""``[placement.ray]``: where the Ray backend puts each process, checked without importing Ray.

A process is placed by its name (``processes``), else by its level (``levels``; "0" is the env), else Ray decides.
A place is ``"resource:NAME"`` (a node that offers the custom resource NAME, e.g. ``ray start --resources
'{"gpu_box": 1}'``; each process asks for 0.001 of it, so any number fit) or ``"label:KEY=VALUE"`` (a node with
that Ray node label, e.g. ``ray start --labels 'zone=a'``). ``groups`` packs or spreads the processes of a level
with a Ray placement group (one bundle per process). Kept apart from ``ray_backend`` so that config checks and
their tests need no Ray.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

GROUP_STRATEGIES = {"pack": "PACK", "spread": "SPREAD", "strict_pack": "STRICT_PACK",
                    "strict_spread": "STRICT_SPREAD"}
RESOURCE_SHARE = 0.001
"""How much of a placement resource each process asks for: a marker, not a quota."""

_RESOURCE = re.compile(r"^resource:([A-Za-z0-9_.\-/]+)$")
_LABEL = re.compile(r"^label:([A-Za-z0-9_.\-/]+)=([A-Za-z0-9_.\-]*)$")


@dataclass(frozen=True)
class Place:
    """Where one process must run: on a node with ``resource``, or with the node label ``label`` = (key, value)."""

    resource: str | None = None
    label: tuple[str, str] | None = None

    def describe(self) -> str:
        if self.resource:
            return f"a node with resource {self.resource!r}"
        if self.label:
            return f"a node labelled {self.label[0]}={self.label[1]}"
        return "any node"


ANYWHERE = Place()


def parse_place(text: Any, where: str) -> Place:
    """``"resource:NAME"`` or ``"label:KEY=VALUE"``; ValueError naming ``where`` otherwise."""
    if isinstance(text, str):
        if m := _RESOURCE.match(text):
            return Place(resource=m.group(1))
        if m := _LABEL.match(text):
            return Place(label=(m.group(1), m.group(2)))
    raise ValueError(f"{where} = {text!r}: expected \"resource:NAME\" (a Ray custom resource of the node) or "
                     "\"label:KEY=VALUE\" (a Ray node label)")


def check_ray_placement(ray_cfg: Any, n_levels: int, source: str) -> None:
    """The table's values and level numbers (process names need the plan: ``places`` checks those)."""
    for key, table in (("levels", ray_cfg.levels), ("groups", ray_cfg.groups)):
        for level in table:
            if not (level.isdigit() and int(level) <= n_levels):
                raise ValueError(f"{source}: placement.ray.{key}.{level}: expected a level number 0..{n_levels}")
    for level, text in ray_cfg.levels.items():
        parse_place(text, f"{source}: placement.ray.levels.{level}")
    for name, text in ray_cfg.processes.items():
        parse_place(text, f"{source}: placement.ray.processes.{name}")
    for level, strategy in ray_cfg.groups.items():
        if strategy not in GROUP_STRATEGIES:
            raise ValueError(f"{source}: placement.ray.groups.{level} = {strategy!r}: expected one of "
                             f"{', '.join(GROUP_STRATEGIES)}")
        label = ray_cfg.levels.get(level, "")
        if label.startswith("label:"):
            raise ValueError(f"{source}: placement.ray.groups.{level}: a placement group cannot select nodes by "
                             f"label (placement.ray.levels.{level} = {label!r}); use \"resource:NAME\" there")
    if ray_cfg.num_cpus < 0:
        raise ValueError(f"{source}: placement.ray.num_cpus = {ray_cfg.num_cpus}: expected >= 0")


def places(ray_cfg: Any, processes: list[str], level_of: Any, source: str) -> dict[str, Place]:
    """Every process's place: ``processes`` first, then ``levels``, else anywhere."""
    unknown = sorted(set(ray_cfg.processes) - set(processes))
    if unknown:
        raise ValueError(f"{source}: placement.ray.processes.{unknown[0]}: no such process "
                         f"(processes: {', '.join(processes)})")
    out = {}
    for name in processes:
        if name in ray_cfg.processes:
            out[name] = parse_place(ray_cfg.processes[name], f"{source}: placement.ray.processes.{name}")
        elif (level := str(level_of(name))) in ray_cfg.levels:
            out[name] = parse_place(ray_cfg.levels[level], f"{source}: placement.ray.levels.{level}")
        else:
            out[name] = ANYWHERE
    return out


def check_not_host_placement(placement: Any, source: str) -> None:
    """The ``--host`` keys name hosts and addresses; the Ray backend discovers those, so they are a mistake there."""
    for key in ("hosts", "levels", "processes", "external"):
        if getattr(placement, key):
            raise ValueError(f"{source}: placement.{key} is for --host runs (fixed hosts and addresses); with the "
                             f"Ray backend place processes with placement.ray.levels / placement.ray.processes "
                             "(see launch/README.md, section Ray)")
