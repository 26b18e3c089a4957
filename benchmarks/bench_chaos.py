"""Chaos: a 3PPO balance run (configs/balance.toml, 64 envs, actors) with ``run.restart = "always"`` in which a
seeded schedule kills (SIGKILL) a random agent process every ~``--every`` seconds, against an undisturbed run of
the same seed, one after the other in one command. Reported side by side:

- time from each kill to the env ticking again (its first status record after the restart), median and max;
- final return per env agent (mean of its last ``--last`` episodes), disturbed / undisturbed;
- rows of episodes.csv, and env steps per row (rows cut by a restart are the episodes in flight).

    python benchmarks/bench_chaos.py [--steps 300000] [--every 20] [--seed 0] [--out benchmarks/results/chaos.md]

Restarts are the whole run's (Erlang's one_for_all, see README "Faults"): every process comes back from its latest
checkpoint, so the kill-to-ticking time is a whole start-up (imports, handshakes) plus the backoff.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tag_actors.launch import actor_pids
from tag_actors.runlog import read_events

CONFIG = "configs/balance.toml"


def run(run_dir: Path, steps: int, seed: int, every_s: float | None, chaos_seed: int) -> dict:
    cmd = [sys.executable, "-m", "tag_actors.launch", CONFIG, "--quiet", "--run-dir", str(run_dir),
           "--seed", str(seed), "--set", f"run.total_env_steps={steps}", "--set", "run.metrics=false",
           "--set", "run.log_every_s=0.2", "--set", "run.restart=always", "--set", "run.max_restarts=1000",
           "--set", "run.restart_backoff_s=0.1", "--set", "run.checkpoint_every_s=5"]
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    kills: list[tuple[float, str]] = []
    rng = random.Random(chaos_seed)
    next_kill = None  # armed once the run ticks (again): the kills come ~every_s seconds of ticking apart
    try:
        while proc.poll() is None:
            time.sleep(0.2)
            if every_s is None:
                continue
            if next_kill is None:
                if ticking_since(run_dir, kills[-1][0] if kills else 0.0):
                    next_kill = time.monotonic() + every_s * rng.uniform(0.75, 1.25)
                continue
            if time.monotonic() < next_kill:
                continue
            pids = {n: p for n, p in actor_pids(run_dir).items() if n != "env"}
            victim = rng.choice(sorted(pids))
            with_time = time.time()
            try:
                os.kill(pids[victim], signal.SIGKILL)
                kills.append((with_time, victim))
            except ProcessLookupError:
                pass
            next_kill = None
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    env = read_events(run_dir, "env")
    status = [e for e in env if e["type"] == "status"]
    back = []
    for t, _ in kills:
        resumed = [e["time"] for e in env if e["type"] == "resumed" and e["time"] > t]
        after = [e["time"] for e in status if resumed and e["time"] > resumed[0]]
        if after:
            back.append(after[0] - t)
    rows = list(csv.DictReader((run_dir / "episodes.csv").open()))
    return {"code": proc.returncode, "wall_s": time.time() - started, "kills": kills, "back_s": back,
            "rows": rows, "env_steps": max((e["env_steps"] for e in status), default=0), "stderr": err}


def ticking_since(run_dir: Path, t: float) -> bool:
    """Whether the env has completed a tick after the restart that followed wall time ``t`` (0: since it began):
    a status record with more ticks than its ``resumed`` record."""
    events = [e for e in read_events(run_dir, "env") if e["time"] > t]
    if t:
        resumed = [i for i, e in enumerate(events) if e["type"] == "resumed"]
        if not resumed:
            return False
        events = events[resumed[0]:]
    ticks = [e["ticks"] for e in events if e["type"] in ("status", "resumed")]
    return len(ticks) >= 2 and ticks[-1] > ticks[0]


def final_returns(rows: list[dict], last: int) -> dict[str, float]:
    by_agent: dict[str, list[float]] = {}
    for r in rows:
        if r["name"].startswith("env:"):
            by_agent.setdefault(r["name"], []).append(float(r["episode_return"]))
    return {a: statistics.fmean(v[-last:]) for a, v in sorted(by_agent.items())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300_000)
    p.add_argument("--every", type=float, default=20.0, help="seconds between kills (±25%%, seeded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--last", type=int, default=200, help="episodes per agent in the final return")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        calm = run(Path(tmp) / "calm", args.steps, args.seed, None, args.seed)
        chaos = run(Path(tmp) / "chaos", args.steps, args.seed, args.every, args.seed)
    for name, r in (("undisturbed", calm), ("chaos", chaos)):
        if r["code"] != 0:
            sys.exit(f"{name} run failed ({r['code']}):\n{r['stderr'][-3000:]}")
    calm_ret, chaos_ret = final_returns(calm["rows"], args.last), final_returns(chaos["rows"], args.last)
    back = chaos["back_s"]
    lines = [
        f"| | undisturbed | chaos ({len(chaos['kills'])} kills) |",
        "|---|---|---|",
        f"| wall time (s) | {calm['wall_s']:.0f} | {chaos['wall_s']:.0f} |",
        f"| env steps | {calm['env_steps']:,} | {chaos['env_steps']:,} |",
        f"| episodes.csv rows | {len(calm['rows']):,} | {len(chaos['rows']):,} |",
        "| kill → ticking again, median / max (s) | — | "
        + (f"{statistics.median(back):.1f} / {max(back):.1f} |" if back else "— |"),
    ]
    for agent in calm_ret:
        ratio = chaos_ret.get(agent, float("nan")) / calm_ret[agent] if calm_ret[agent] else float("nan")
        lines.append(f"| final return {agent} (last {args.last} episodes) | {calm_ret[agent]:.2f} | "
                     f"{chaos_ret.get(agent, float('nan')):.2f} (ratio {ratio:.2f}) |")
    lines.append("")
    lines.append("kills: " + ", ".join(f"{v} at +{t - chaos['kills'][0][0]:.0f}s" for t, v in chaos["kills"]))
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
