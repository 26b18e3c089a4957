"""The end of a run in one block: how far it got, how fast, what it learned, and where everything is.

Built from the run folder alone (the event logs every process wrote), so it is the same for an actor run, a
``--serial`` run and a stopped one, and ``python -m tag_actors.summary RUN_DIR`` prints it again later.

"Final" returns are the mean over the episodes that ended in the last 10 % of the run's env steps (the figure
the README's benchmarks report), per level; level 0 is the env's per-agent return (the mean over env agents).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tag_actors.runlog import read_events

FINAL_FRACTION = 0.1


@dataclass
class LevelReturn:
    mean: float
    episodes: int


@dataclass
class RunSummary:
    run_dir: Path
    name: str
    outcome: str
    """'completed', 'interrupted' or 'failed'."""
    env_steps: int
    steps_this_start: int
    """Env steps of this start of the run (a resumed run counts from where it resumed)."""
    wall_s: float
    final_returns: dict[int, LevelReturn] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)

    @property
    def steps_per_s(self) -> float:
        return self.steps_this_start / self.wall_s if self.wall_s > 0 else 0.0

    def text(self) -> str:
        lines = [f"=== run {self.name!r} {self.outcome} ===",
                 f"env steps     {self.env_steps:,}"
                 + (f" ({self.steps_this_start:,} in this start)" if self.steps_this_start != self.env_steps else ""),
                 f"wall time     {self.wall_s:,.1f} s",
                 f"steps/s       {self.steps_per_s:,.0f}"]
        if self.final_returns:
            lines.append(f"final returns (mean over episodes ending in the last {FINAL_FRACTION:.0%} of env steps)")
            for level, r in sorted(self.final_returns.items()):
                what = "env, per agent" if level == 0 else f"level {level}"
                lines.append(f"  {what:<16} {r.mean:10.3f}   ({r.episodes} episode{'s' * (r.episodes != 1)})")
        else:
            lines.append("final returns (no episode finished)")
        width = max(len(k) for k in self.artifacts) if self.artifacts else 0
        lines += [f"{k:<{width}}  {v}" for k, v in self.artifacts.items()]
        return "\n".join(lines)


def final_returns(events: list[dict[str, Any]], fraction: float = FINAL_FRACTION) -> dict[int, LevelReturn]:
    """Per level, the mean return of the episodes that ended in the last ``fraction`` of env steps. Levels whose
    episodes all ended earlier (an async top level that decides rarely) keep their last record's episodes."""
    episodes = [e for e in events if e["type"] == "episodes"]
    if not episodes:
        return {}
    last_step = max(e["env_steps"] for e in episodes)
    cutoff = last_step * (1 - fraction)
    by_level: dict[int, list[dict[str, Any]]] = {}
    for e in episodes:
        by_level.setdefault(int(e["level"]), []).append(e)
    out: dict[int, LevelReturn] = {}
    for level, records in by_level.items():
        recent = [e for e in records if e["env_steps"] >= cutoff]
        if not recent:
            newest = max(e["env_steps"] for e in records)
            recent = [e for e in records if e["env_steps"] == newest]
        values: list[float] = []
        for e in recent:
            if level == 0:
                per_agent = list(e["returns"].values())
                values += [sum(col) / len(col) for col in zip(*per_agent, strict=True)]
            else:
                values += e["returns"]
        out[level] = LevelReturn(sum(values) / len(values), len(values))
    return out


def _env_counts(events: list[dict[str, Any]]) -> tuple[int, int, float]:
    """(env steps at the end, env steps done in the last start, the env's own seconds in it) from its log."""
    env = [e for e in events if e["name"] == "env"]
    if not env:  # a host without the env (--host): the env's count as its agents saw it (every UP carries it)
        steps = max((e.get("env_steps", 0) for e in events), default=0)
        return steps, steps, 0.0
    start_steps, steps, elapsed = 0, 0, 0.0
    for e in env:
        if e["type"] == "started":
            start_steps, elapsed = steps, 0.0
        elif e["type"] == "resumed":
            start_steps = steps = e["env_steps"]
        elif e["type"] in ("status", "end"):
            steps = e["env_steps"]
            elapsed = e.get("elapsed_s", elapsed)
    return steps, steps - start_steps, elapsed


def summarize(run_dir: Path, wall_s: float | None = None, outcome: str = "completed",
              artifacts: dict[str, str] | None = None) -> RunSummary:
    """The summary of ``run_dir``. ``wall_s``: the launcher's own clock (start to end); without it the env's."""
    run_dir = Path(run_dir)
    events = read_events(run_dir)
    env_steps, this_start, env_elapsed = _env_counts(events)
    name = run_dir.name
    config = run_dir / "config.json"
    if config.exists():
        import json

        name = json.loads(config.read_text())["config"]["run"]["name"]
    found: dict[str, str] = {"run folder": str(run_dir)}
    checkpoints = sorted((run_dir / "checkpoints").glob("*.pt"))
    if checkpoints:
        found["checkpoints"] = f"{run_dir / 'checkpoints'}/ ({len(checkpoints)} files)"
    logs = [p for p in ("events", "logs") if (run_dir / p).is_dir()]
    if logs:
        found["logs"] = ", ".join(f"{run_dir / p}/" for p in logs)
    if (run_dir / "episodes.csv").exists():
        found["episodes"] = str(run_dir / "episodes.csv")
    found.update(artifacts or {})
    return RunSummary(run_dir, name, outcome, env_steps, this_start,
                      env_elapsed if wall_s is None else wall_s, final_returns(events), found)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tag_actors.summary", description="Print a run folder's summary.")
    p.add_argument("run_dir", type=Path)
    args = p.parse_args(argv)
    if not (args.run_dir / "events").is_dir():
        print(f"tag_actors.summary: {args.run_dir} is not a run folder (no events/)", file=sys.stderr)
        return 2
    print(summarize(args.run_dir, outcome="(from its logs)").text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
