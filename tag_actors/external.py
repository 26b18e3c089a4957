"""Processes of a run that the launcher does not start (``[placement] external``): what to tell them, and how to
name one that never joined. Such a process is any implementation of PROTOCOL.md (e.g. examples/)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tag_actors.config import Config
from tag_actors.protocol import PROTOCOL_VERSION, SCHEMA_HASH
from tag_actors.runlog import file_name
from tag_actors.topology import ENV, build_plan, host_of


def external_instructions(cfg: Config, run_dir: Path, wiring: dict[str, Any], name: str) -> str:
    """Where ``name`` must bind and connect, as whom it signs, and what its parent announces (PROTOCOL.md §2,
    §3, §8): everything an implementation needs besides the spec."""
    plan = build_plan(cfg)
    endpoints = wiring["endpoints"]
    served = [c for c in plan.parent if plan.process_of(c) == name and plan.parent[c] is not None]
    children = [c for c, p in plan.parent.items() if p == name]
    lines = [f"external process {name!r} (level {plan.level_of(name)}) is not started by the launcher: start it "
             f"now; the run waits run.startup_timeout_s = {cfg.run.startup_timeout_s:.0f}s for it.",
             f"  protocol version {PROTOCOL_VERSION}, schema {SCHEMA_HASH} (PROTOCOL.md); num_envs "
             f"{cfg.env.num_envs}"]
    for child in served:
        parent = plan.parent[child]
        assert parent is not None
        lines.append(f"  bind    {endpoints[child]}  as child {child!r} (sign as {child!r}) for parent {parent!r}, "
                     f"which decides every {plan.node(parent).period} ticks ({cfg.level_mode(plan.level_of(parent))})")
    for child in children:
        lines.append(f"  connect {endpoints[child]}  to child {child!r} (DEALER identity and signature {name!r})")
    if name != ENV:
        spec = plan.node(name)
        lines.append(f"  decide every {spec.period} ticks ({cfg.level_mode(spec.level)} for the level below)")
    if cfg.placement.curve:
        keys = Path(cfg.placement.keys_dir)
        host = host_of(cfg, plan, name)
        lines.append(f"  CURVE: its key pair {keys / host}.key_secret; servers' public keys {keys}/<host>.key "
                     f"(children on {', '.join(sorted({host_of(cfg, plan, plan.process_of(c)) for c in children}))})"
                     if children else f"  CURVE: its key pair {keys / host}.key_secret; admit clients listed in "
                     f"{keys}/*.key")
    if name != ENV:
        args = [f"--name {name}", f"--num-envs {cfg.env.num_envs}", *(f"--child {c}={endpoints[c]}" for c in children)]
        if served:
            args += [f"--bind {endpoints[served[0]]}", f"--parent {plan.parent[served[0]]}"]
        if name != ENV:
            args.append(f"--period {plan.node(name).period}")
        if cfg.placement.curve and children:
            child_host = host_of(cfg, plan, plan.process_of(children[0]))
            args += [f"--curve-keys {cfg.placement.keys_dir}", f"--host {host_of(cfg, plan, name)}",
                     f"--children-host {child_host}"]
        lines.append(f"  e.g.    python examples/foreign_agent.py {' '.join(args)}")
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    (run_dir / "logs" / f"{file_name(name)}.external.txt").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def missing_externals(run_dir: Path, external: list[str]) -> list[str]:
    """The external processes that a failed run's processes timed out waiting for (their failure records)."""
    missing = []
    for path in sorted((run_dir / "logs").glob("*.failure.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        text = record.get("message", "")
        if "Timeout" not in text and "within" not in text:
            continue
        for name in external:
            if name not in missing and re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", text):
                missing.append(name)
    return missing
