"""Wall time from launch to a good policy: what a user waits for.

    python benchmarks/time_to_target.py --configs configs/balance.toml configs/balance_fast.toml \\
        --modes actors serial --seeds 0 1 2 --target 55 --max-seconds 120

For every (config, mode, seed) the launcher is started as a subprocess (``python -m tag_actors.launch CONFIG
[--serial] --seed S --run-dir ...``) and the clock starts just before it: imports, process start-up and
handshakes count, as they do for a user. The env's own event log (``events/env.jsonl``) is read while the run
goes; each ``episodes`` record carries the wall time it was written and the per-agent returns of the episodes
that ended then (level 0, the metric BenchMARL reports). The **time to target** is the first record time at
which the rolling mean over the last ``--window`` episodes (each episode: its return averaged over the env
agents) reaches ``--target``. A run that reaches it is stopped (SIGTERM: every process checkpoints and exits);
one that does not is stopped at ``--max-seconds`` or when its step budget ends, and counts as not reached.

Runs go one after the other, interleaved (seed 0 of every config and mode, then seed 1, ...), so the load of a
shared machine falls on all of them alike; the 1-minute load average at the start of each run is printed
beside it. ``--benchmarl-record`` adds a row computed from a recorded BenchMARL run (its per-iteration curve and
wall time; BenchMARL spreads its wall time evenly over its iterations, so the time is its steps-to-target times
its mean seconds per step: an estimate, said so in the table).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Reached:
    """Where a run first reached the target: seconds after launch, env steps then, the rolling mean."""

    seconds: float
    env_steps: int
    rolling_mean: float


def env_episode_records(events: Iterable[dict]) -> list[tuple[float, int, list[float]]]:
    """(wall time, env steps, per-agent-mean return of each episode) for each of the env's ``episodes`` records."""
    out = []
    for e in events:
        if e.get("type") != "episodes" or e.get("name") != "env":
            continue
        per_agent = np.array(list(e["returns"].values()), dtype=np.float64)  # (agents, episodes)
        out.append((float(e["time"]), int(e["env_steps"]), per_agent.mean(axis=0).tolist()))
    return out


def time_to_target(events: Iterable[dict], start: float, target: float, window: int) -> Reached | None:
    """The first moment the rolling mean of the last ``window`` episodes reaches ``target`` (None: never).

    The mean is taken after each record (episodes that end in one record enter together), and only once
    ``window`` episodes have ended, so a lucky first episode does not count."""
    last: deque[float] = deque(maxlen=window)
    for t, steps, returns in env_episode_records(events):
        last.extend(returns)
        if len(last) == window and (mean := float(np.mean(last))) >= target:
            return Reached(t - start, steps, mean)
    return None


def read_jsonl(path: Path) -> list[dict]:
    """The complete lines of a JSONL file that may still be growing (a half-written last line is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@dataclass
class Outcome:
    config: str
    mode: str
    seed: int
    reached: Reached | None
    wall_s: float
    env_steps: int
    last_mean: float
    load1: float


def run_one(config: Path, mode: str, seed: int, run_dir: Path, target: float, window: int,
            max_seconds: float, overrides: list[str], label: str) -> Outcome:
    """Launch one run, watch its env log, stop it at the target or the time limit."""
    cmd = [sys.executable, "-m", "tag_actors.launch", str(config), "--seed", str(seed), "--run-dir", str(run_dir),
           "--quiet", "--set", "run.metrics=false"]
    if mode == "serial":
        cmd.append("--serial")
    for item in overrides:
        cmd += ["--set", item]
    load1 = os.getloadavg()[0]
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    stderr_path = run_dir.with_name(run_dir.name + ".stderr")
    start = time.time()
    with stderr_path.open("w") as stderr:  # a file, not a pipe: a full pipe would block the launcher
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    reached = None
    env_log = run_dir / "events" / "env.jsonl"
    try:
        while proc.poll() is None and time.time() - start < max_seconds:
            time.sleep(0.5)
            reached = time_to_target(read_jsonl(env_log), start, target, window)
            if reached is not None:
                break
    finally:
        if proc.poll() is None:
            # SIGTERM, not SIGINT: a job started in the background inherits SIGINT ignored. The launcher treats
            # SIGTERM as Ctrl-C: every process of the run checkpoints and exits.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    wall = time.time() - start
    events = read_jsonl(env_log)
    reached = reached or time_to_target(events, start, target, window)
    records = env_episode_records(events)
    if proc.returncode not in (0, 130, 143, -signal.SIGTERM) and not records:
        raise RuntimeError(f"{config} ({mode}, seed {seed}) failed (exit {proc.returncode}):\n"
                           f"{stderr_path.read_text()[-3000:]}")
    tail = [r for _, _, rs in records for r in rs][-window:]
    return Outcome(label, mode, seed, reached, wall, records[-1][1] if records else 0,
                   float(np.mean(tail)) if tail else float("nan"), load1)


def benchmarl_estimate(curve_csv: Path, target: float) -> tuple[float | None, int | None, float]:
    """(seconds, env steps) where a recorded BenchMARL curve first reaches ``target`` (seconds: steps times its
    run's mean seconds per step, from the JSON beside the CSV), and its total wall time."""
    meta = json.loads(curve_csv.with_suffix(".json").read_text())
    seconds_per_step = meta["wall_s_run"] / meta["total_frames"]
    with curve_csv.open() as f:
        for row in csv.DictReader(f):
            if float(row["mean_return"]) >= target:
                steps = int(row["env_steps"])
                return steps * seconds_per_step, steps, meta["wall_s_run"]
    return None, None, meta["wall_s_run"]


def table(outcomes: list[Outcome], target: float, max_seconds: float) -> str:
    lines = [f"target: per-agent return >= {target} (rolling mean); not reached within {max_seconds:.0f} s "
             "counts as > that",
             "| config | mode | median s to target | reached | per seed: s to target (env steps) [load1] "
             "| last rolling mean |", "| --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.config, o.mode), []).append(o)
    for (config, mode), runs in groups.items():
        times = [o.reached.seconds if o.reached else float("inf") for o in runs]
        median = float(np.median(times))
        med = f"{median:.1f}" if np.isfinite(median) else f"> {max_seconds:.0f}"
        seeds = ", ".join(
            (f"s{o.seed}: {o.reached.seconds:.1f} ({o.reached.env_steps:,})" if o.reached else
             f"s{o.seed}: not in {o.wall_s:.0f} s ({o.env_steps:,})") + f" [{o.load1:.1f}]" for o in runs)
        lasts = " / ".join(f"{o.last_mean:.1f}" for o in runs)
        lines.append(f"| {config} | {mode} | {med} | {sum(o.reached is not None for o in runs)}/"
                     f"{len(runs)} | {seeds} | {lasts} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", required=True,
                   help="config files, each optionally labelled LABEL=PATH (to run one file in several variants)")
    p.add_argument("--modes", nargs="+", choices=["actors", "serial"], default=["actors"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--target", type=float, default=55.0, help="per-agent return to reach")
    p.add_argument("--window", type=int, default=100, help="episodes in the rolling mean")
    p.add_argument("--max-seconds", type=float, default=120.0, help="stop a run that has not reached it by then")
    p.add_argument("--steps", type=int, default=5_000_000, help="run.total_env_steps (the time limit usually ends "
                                                                "a run first)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--set-for", nargs=2, action="append", default=[], metavar=("LABEL", "KEY=VALUE"),
                   help="override for the runs of one labelled config")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/time_to_target"))
    p.add_argument("--benchmarl-record", nargs="*", type=Path, default=[],
                   help="recorded BenchMARL curve CSV(s) (with the JSON beside) to add as estimated rows")
    p.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = p.parse_args(argv)

    outcomes = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    configs = [(spec.partition("=")[0], Path(spec.partition("=")[2])) if "=" in spec else (Path(spec).stem, Path(spec))
               for spec in args.configs]
    for seed in args.seeds:
        for label, config in configs:
            own = [item for name, item in args.set_for if name == label]
            for mode in args.modes:
                run_dir = args.runs_dir / f"{label}-{mode}-s{seed}-{stamp}"
                o = run_one(config, mode, seed, run_dir, args.target, args.window, args.max_seconds,
                            [f"run.total_env_steps={args.steps}", *args.set, *own], label)
                outcomes.append(o)
                said = (f"{o.reached.seconds:.1f} s ({o.reached.env_steps:,} steps)" if o.reached
                        else f"not reached in {o.wall_s:.0f} s ({o.env_steps:,} steps, last {o.last_mean:.1f})")
                print(f"{label} {mode} seed {seed}: {said}  [load1 {o.load1:.1f}]", flush=True)
    text = table(outcomes, args.target, args.max_seconds)
    for rec in args.benchmarl_record:
        seconds, steps, wall = benchmarl_estimate(rec, args.target)
        reached = f"~{seconds:.0f} ({steps:,} steps; estimate)" if seconds else f"not in its {wall:.0f} s"
        text += f"\n| {rec.name} (recorded BenchMARL) | its own | {reached} | | | |"
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
