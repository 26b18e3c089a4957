"""Async mode pays, measured side by side in one run (ratios; the machine is shared and noisy):

1. ``--part slow``: level-1 tick rate with a 50 ms top agent, lockstep vs async, against the same hierarchy with
   an instant top.
2. ``--part train``: training throughput (env steps/s including PPO updates) of configs/balance.toml in-process
   (serial), as actors in lockstep, as actors in async mode, and async down to the env (``l1.mode =
   "async"``: the env steps on the actions it holds; level 1 observes them, ``observe_held``), also with the env
   on a CPU of its own (``run.cpu_affinity = "env_apart"``).

    python benchmarks/bench_async.py --part slow [--steps 20000]
    python benchmarks/bench_async.py --part train [--steps 60000]
    python benchmarks/bench_async.py --part llm [--base-url http://127.0.0.1:8000/v1]   (3. with a real LLM top)

Rates are the steady state from the env's status records (``runlog.steady_env_rate``: the last two thirds of the
run): start-up, the hierarchy's first decisions and the first updates are excluded, the same way for every case.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tag_actors.runlog import read_events, steady_env_rate


def rate(config: str, sets: list[str], serial: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "tag_actors.launch", config, "--quiet", "--run-dir", str(run_dir),
               "--set", "run.metrics=false", "--set", "run.log_every_s=0.5"]
        for kv in sets:
            cmd += ["--set", kv]
        if serial:
            cmd.append("--serial")
        subprocess.run(cmd, check=True, capture_output=True)
        end = next(e for e in read_events(run_dir, "env") if e["type"] == "end")
        ends = {e["name"]: e for e in read_events(run_dir) if e["type"] == "end"}
        top = max((n for n in ends if n != "env"), key=lambda n: int(n[1:].split(".")[0]))
        rate = steady_env_rate(run_dir)
        num_envs = json.loads((run_dir / "config.json").read_text())["config"]["env"]["num_envs"]
        return {"env_steps_per_s": round(rate, 1), "ticks_per_s": round(rate / num_envs, 1),
                "top_decisions": ends[top]["decisions"], "ticks": end["ticks"]}


def slow(steps: int, repeats: int) -> None:
    base = ["env.num_envs=16", f"run.total_env_steps={steps}"]
    slow_top = ["l3.agent=slow", "l3.params.delay_s=0.05"]
    cases = {"instant top, lockstep": base, "50 ms top, lockstep": base + slow_top,
             "50 ms top, async": base + slow_top + ["run.mode=async"]}
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for name, sets in cases.items():
            r = rate("configs/balance_random.toml", sets)
            if name not in best or r["ticks_per_s"] > best[name]["ticks_per_s"]:
                best[name] = r
    ref = best["instant top, lockstep"]["ticks_per_s"]
    for name, r in best.items():
        print(json.dumps({"case": name, **r, "level1_tick_rate_vs_instant_top": round(r["ticks_per_s"] / ref, 3)}))


def train(steps: int, repeats: int) -> None:
    sets = [f"run.total_env_steps={steps}"]
    env_async = ["run.mode=async", "l1.mode=async", "l1.observe_held=true"]
    cases = {"in-process (serial)": (sets, True), "actors, lockstep": (sets, False),
             "actors, async": (sets + ["run.mode=async"], False),
             "actors, async down to the env": (sets + env_async, False),
             "actors, async down to the env, env apart": (sets + env_async + ["run.cpu_affinity=env_apart"], False)}
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for name, (s, serial) in cases.items():
            r = rate("configs/balance.toml", s, serial)
            if name not in best or r["env_steps_per_s"] > best[name]["env_steps_per_s"]:
                best[name] = r
    ref = best["in-process (serial)"]["env_steps_per_s"]
    for name, r in best.items():
        print(json.dumps({"case": name, **r, "vs_in_process": round(r["env_steps_per_s"] / ref, 3)}))


def llm(steps: int, base_url: str) -> None:
    """Level-1 tick rate under an LLM top (async) against a random top, same hierarchy (configs/balance_llm.toml
    with random level-1 agents). Needs a model server: scripts/llm_server.sh 8000 --detach."""
    base = ["env.num_envs=16", f"run.total_env_steps={steps}", "l1.agent=random", "l1.params={}"]
    without = rate("configs/balance_llm.toml", base + ["l2.agent=random", "l2.params={}"])
    with_llm = rate("configs/balance_llm.toml", base + [f"l2.params.base_url={base_url}"])
    for name, r in (("random top", without), ("LLM top (async)", with_llm)):
        print(json.dumps({"case": name, **r, "vs_random_top": round(r["ticks_per_s"] / without["ticks_per_s"], 3)}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--part", choices=["slow", "train", "llm"], required=True)
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="model server for --part llm")
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    if args.part == "slow":
        slow(args.steps or 20000, args.repeats)
    elif args.part == "llm":
        llm(args.steps or 20000, args.base_url)
    else:
        train(args.steps or 60000, args.repeats)


if __name__ == "__main__":
    main()
