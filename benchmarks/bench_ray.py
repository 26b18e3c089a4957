"""The Ray backend against the plain launcher, side by side in one command: start-up to the first tick, and
steady env-steps/s with random agents and with 3PPO training, alternating the two backends over several repeats.

    python benchmarks/bench_ray.py [--envs 64] [--steps 20000] [--repeats 3]

The Ray runs join one Ray started here for the whole benchmark (``ray.init`` in this process; stopped at the end),
as a run on a standing cluster would; one extra run per repeat uses ``--ray`` alone, which starts (and stops) a
Ray of its own, to show that cost too. Rates are the env's steady state (``runlog.steady_env_rate``: the last two
thirds of the run). The machine may be shared: the load average is printed, and the ratios are what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tag_actors.runlog import read_events, steady_env_rate

CONFIGS = {"random": "configs/balance_random.toml", "3ppo": "configs/balance.toml"}


def run(config: str, envs: int, steps: int, ray_address: str | None, extra: list[str]) -> dict[str, float]:
    """One run: seconds from launch to the env's first tick, wall seconds, steady env steps/s."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "tag_actors.launch", config, "--quiet", "--run-dir", str(run_dir),
               "--set", f"env.num_envs={envs}", "--set", f"run.total_env_steps={steps}",
               "--set", "run.metrics=false", "--set", "run.log_every_s=0.25", *extra]
        if ray_address is not None:
            cmd += ["--ray"] + ([ray_address] if ray_address != "local" else [])
        started = time.time()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.time() - started
        first = next(e["time"] for e in read_events(run_dir, "env") if e["type"] == "status" and e["ticks"] >= 1)
        return {"first_tick_s": first - started, "wall_s": wall, "steps_per_s": steady_env_rate(run_dir)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", type=int, default=64)
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--plain-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a --set for the plain launcher's runs only (e.g. run.transport=tcp, the Ray backend's)")
    args = p.parse_args()
    import ray

    load_before = os.getloadavg()
    ray.init(include_dashboard=False, log_to_driver=False, namespace="bench_ray")
    address = ray.get_runtime_context().gcs_address
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        for name in args.configs:
            results[name] = {"plain": [], "ray": [], "ray_own": []}
            for i in range(args.repeats):  # alternating, so that the machine's load hits both alike
                for backend, addr in (("plain", None), ("ray", address)) if i % 2 == 0 else (("ray", address),
                                                                                               ("plain", None)):
                    extra = [] if addr else [x for kv in args.plain_set for x in ("--set", kv)]
                    results[name][backend].append(run(CONFIGS[name], args.envs, args.steps, addr, extra))
                results[name]["ray_own"].append(run(CONFIGS[name], args.envs, max(args.steps // 4, 2000), "local",
                                                    []))
                print(f"{name} repeat {i + 1}: " + json.dumps({b: r[-1] for b, r in results[name].items()}),
                      flush=True)
    finally:
        ray.shutdown()
    load_after = os.getloadavg()
    med = statistics.median
    print(f"\nload average before {load_before[0]:.1f}, after {load_after[0]:.1f} ({os.cpu_count()} CPUs); "
          f"{args.envs} envs, {args.steps} env steps per run, {args.repeats} repeats, medians"
          + (f"; plain runs with --set {' '.join(args.plain_set)}" if args.plain_set else "") + "\n")
    print("| agents | plain steps/s | Ray steps/s | Ray / plain | first tick plain | first tick Ray (cluster up) "
          "| ratio | first tick `--ray` (starts Ray) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        sp, sr = med(x["steps_per_s"] for x in r["plain"]), med(x["steps_per_s"] for x in r["ray"])
        fp, fr = med(x["first_tick_s"] for x in r["plain"]), med(x["first_tick_s"] for x in r["ray"])
        fo = med(x["first_tick_s"] for x in r["ray_own"])
        print(f"| {name} | {sp:.0f} | {sr:.0f} | {sr / sp:.2f} | {fp:.1f} s | {fr:.1f} s | {fr / fp:.2f} | "
              f"{fo:.1f} s |")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "load": [load_before, load_after]}, indent=2))


if __name__ == "__main__":
    main()
