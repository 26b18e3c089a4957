"""Chaos: a 3PPO balance run (configs/balance.toml, 64 envs, actors, lockstep) with ``run.restart = "always"`` in
which a seeded schedule SIGKILLs a random agent process every ~``--every`` seconds and the env once, against an
undisturbed run of the same seed and settings, one after the other in one command. Reported side by side:

- time from each kill to the env ticking again: the first env status record after the restarted process rejoined
  (its ``restarted`` event, written once its handshakes are done) that shows more ticks than the one before it;
  median and max, agents and the env apart;
- final return per env agent (mean of its last ``--last`` episodes), disturbed / undisturbed;
- rows of episodes.csv per process, and how many fewer each has than the env's per-agent rows of the same run
  (the episodes in flight that a restart cut: at most 64 per restart that touched that process).

    python benchmarks/bench_chaos.py [--steps 300000] [--every 20] [--seed 0] [--out benchmarks/results/chaos.md]

Restarts are per process (Erlang's one_for_one, README "Faults"): the killed process alone comes back from its
latest checkpoint (through the launcher's warm spare) and rejoins its neighbours, which wait for it.
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
from collections import Counter
from pathlib import Path

from tag_actors.launch import actor_pids
from tag_actors.runlog import read_events
from tag_actors.supervisor import env_completed

CONFIG = "configs/balance.toml"


def status_records(run_dir: Path) -> list[dict]:
    return [e for e in read_events(run_dir, "env") if e["type"] == "status"]


def run(run_dir: Path, steps: int, seed: int, every_s: float | None, chaos_seed: int, env_kill_at: int,
        config: str = CONFIG) -> dict:
    cmd = [sys.executable, "-m", "tag_actors.launch", config, "--quiet", "--run-dir", str(run_dir),
           "--seed", str(seed), "--set", f"run.total_env_steps={steps}", "--set", "run.metrics=false",
           "--set", "run.log_every_s=0.2", "--set", "run.restart=always", "--set", "run.max_restarts=1000",
           "--set", "run.checkpoint_every_s=5"]
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    kills: list[tuple[float, str]] = []
    loads: list[float] = []
    rng = random.Random(chaos_seed)
    next_kill = None  # armed once the run ticks (again): kills come ~every_s seconds of ticking apart
    try:
        while proc.poll() is None:
            time.sleep(0.2)
            loads.append(os.getloadavg()[0])
            if every_s is None:
                continue
            if next_kill is None:
                if ticking_again(run_dir, *(kills[-1] if kills else (0.0, ""))) is not None:
                    next_kill = time.monotonic() + every_s * rng.uniform(0.75, 1.25)
                continue
            if time.monotonic() < next_kill:
                continue
            pids = {n: p for n, p in actor_pids(run_dir).items() if n not in ("env", "spare")}
            if not pids or env_completed(run_dir):  # the run is ending: a kill now would only fail its stop
                continue
            victim = "env" if len(kills) == env_kill_at else rng.choice(sorted(pids))
            pid = actor_pids(run_dir).get(victim)
            with_time = time.time()
            try:
                os.kill(pid, signal.SIGKILL)
                kills.append((with_time, victim))
            except (ProcessLookupError, TypeError):
                pass
            next_kill = None
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    back = [(victim, ticking_again(run_dir, t, victim)) for t, victim in kills]
    rows = list(csv.DictReader((run_dir / "episodes.csv").open()))
    status = status_records(run_dir)
    return {"code": proc.returncode, "wall_s": time.time() - started, "kills": kills, "back": back, "rows": rows,
            "env_steps": max((e["env_steps"] for e in status), default=0), "stderr": err,
            "load": (statistics.fmean(loads) if loads else 0.0, max(loads, default=0.0))}


def ticking_again(run_dir: Path, killed_at: float, victim: str) -> float | None:
    """Seconds from the kill at ``killed_at`` until the env ticked again after ``victim`` came back (None: not
    yet). ``killed_at`` 0: whether the run ticks at all yet."""
    status = status_records(run_dir)
    if not killed_at:
        return 0.0 if len(status) >= 2 and status[-1]["ticks"] > status[0]["ticks"] else None
    resumed = [e["time"] for e in read_events(run_dir, victim) if e["type"] == "restarted" and e["time"] > killed_at]
    if not resumed:
        return None
    before = [e for e in status if e["time"] <= resumed[0]]
    last_ticks = before[-1]["ticks"] if before else -1
    for e in status:
        if e["time"] > resumed[0] and e["ticks"] > last_ticks:
            return e["time"] - killed_at
    return None


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
    p.add_argument("--env-kill-at", type=int, default=3, help="the kill (0-based) that kills the env")
    p.add_argument("--last", type=int, default=200, help="episodes per agent in the final return")
    p.add_argument("--out", type=Path)
    p.add_argument("--config", default=CONFIG, help="(balance_random.toml: a quick stress of the restarts)")
    p.add_argument("--keep", type=Path, help="keep both run folders here (default: a temporary folder)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or Path(tmp)
        calm = run(where / "calm", args.steps, args.seed, None, args.seed, args.env_kill_at, args.config)
        chaos = run(where / "chaos", args.steps, args.seed, args.every, args.seed, args.env_kill_at, args.config)
    for name, r in (("undisturbed", calm), ("chaos", chaos)):
        if r["code"] != 0:
            sys.exit(f"{name} run failed ({r['code']}):\n{r['stderr'][-3000:]}")
    calm_ret, chaos_ret = final_returns(calm["rows"], args.last), final_returns(chaos["rows"], args.last)
    agent_back = [b for v, b in chaos["back"] if v != "env" and b is not None]
    env_back = [b for v, b in chaos["back"] if v == "env" and b is not None]
    lines = [
        f"| | undisturbed | chaos ({len(chaos['kills'])} kills) |",
        "|---|---|---|",
        f"| wall time (s) | {calm['wall_s']:.0f} | {chaos['wall_s']:.0f} |",
        f"| load average, mean / max | {calm['load'][0]:.1f} / {calm['load'][1]:.1f} | "
        f"{chaos['load'][0]:.1f} / {chaos['load'][1]:.1f} |",
        f"| env steps | {calm['env_steps']:,} | {chaos['env_steps']:,} |",
        f"| episodes.csv rows | {len(calm['rows']):,} | {len(chaos['rows']):,} |",
        "| agent kill → ticking again, median / max (s) | — | "
        + (f"{statistics.median(agent_back):.2f} / {max(agent_back):.2f} ({len(agent_back)} kills) |"
           if agent_back else "— |"),
        "| env kill → ticking again (s) | — | " + (", ".join(f"{b:.2f}" for b in env_back) or "—") + " |",
    ]
    for agent in calm_ret:
        ratio = chaos_ret.get(agent, float("nan")) / calm_ret[agent] if calm_ret[agent] else float("nan")
        lines.append(f"| final return {agent} (last {args.last} episodes) | {calm_ret[agent]:.2f} | "
                     f"{chaos_ret.get(agent, float('nan')):.2f} (ratio {ratio:.2f}) |")
    lines += ["", "| process | rows, undisturbed | rows, chaos | fewer than the env's per-agent rows (chaos) | "
              "killed |", "|---|---|---|---|---|"]
    calm_rows, chaos_rows = Counter(r["name"] for r in calm["rows"]), Counter(r["name"] for r in chaos["rows"])
    env_rows = max((n for k, n in chaos_rows.items() if k.startswith("env:")), default=0)
    killed = Counter(v for _, v in chaos["kills"])
    for name in sorted(set(calm_rows) | set(chaos_rows)):
        lines.append(f"| {name} | {calm_rows[name]:,} | {chaos_rows[name]:,} | {env_rows - chaos_rows[name]:,} | "
                     f"{killed.get(name.split(':')[0], 0)} |")
    lines.append("")
    first = chaos["kills"][0][0] if chaos["kills"] else 0.0
    lines.append("kills (victim, seconds after the first, kill → ticking again): " + ", ".join(
        f"{v} +{t - first:.0f}s ({b:.2f}s)" if b is not None else f"{v} +{t - first:.0f}s (not back)"
        for (t, v), (_, b) in zip(chaos["kills"], chaos["back"], strict=True)))
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
