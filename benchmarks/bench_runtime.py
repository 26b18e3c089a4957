"""Rollout cost of being actors: the same hierarchy of random agents in-process (serial) and as actors, side by
side in one run, for several ``num_envs``. Prints env-steps/s of each and the ratio actors / in-process.

    python benchmarks/bench_runtime.py [--config configs/balance_random.toml] [--envs 1 64 1024] [--steps N]

Rates are the steady state read from the env's status records (``runlog.steady_env_rate``: the last two
thirds of the run), so process start-up and the hierarchy's first decisions are excluded; start-up is printed
separately. Each tick is also split (``runlog.steady_tick_split``) into the env's own step and the rest: the
agents' work in-process, or the wait for level 1's actions as actors (``--set run.mode=async`` for async).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tag_actors.runlog import steady_env_rate, steady_tick_split


def run(config: str, num_envs: int, steps: int, serial: bool, extra: list[str]) -> tuple[float, float, float, float]:
    """(env steps/s, wall s with start-up, ms per tick, ms of it in the env's step), steady state."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "tag_actors.launch", config, "--quiet", "--run-dir", str(run_dir),
               "--set", f"env.num_envs={num_envs}", "--set", f"run.total_env_steps={steps}",
               "--set", "run.metrics=false", "--set", "run.log_every_s=0.25", *extra]
        if serial:
            cmd.append("--serial")
        started = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - started
        return steady_env_rate(run_dir), wall, *steady_tick_split(run_dir)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/balance_random.toml")
    p.add_argument("--envs", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--seconds", type=float, default=8.0, help="rough loop time per measurement")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args()
    extra = [x for kv in args.set for x in ("--set", kv)]
    rows = []
    for n in args.envs:
        probe = run(args.config, n, max(2000, min(n * 400, 200_000)), True, extra)[0]
        steps = int(probe * args.seconds)
        best = {True: (0.0,) * 4, False: (0.0,) * 4}
        for _ in range(args.repeats):  # interleaved, best of N: the machine is shared and noisy
            for serial in (True, False):
                result = run(args.config, n, steps, serial, extra)
                if result[0] > best[serial][0]:
                    best[serial] = result
        (rate_in, _, tick_in, env_in), (rate_act, wall_act, tick_act, env_act) = best[True], best[False]
        rows.append({"num_envs": n, "env_steps": steps, "in_process_steps_per_s": round(rate_in),
                     "actors_steps_per_s": round(rate_act),
                     "ratio_actors_over_in_process": round(rate_act / rate_in, 3),
                     "actors_wall_s_including_startup": round(wall_act, 2),
                     "in_process_ms_per_tick": round(tick_in, 3), "in_process_env_step_ms": round(env_in, 3),
                     "actors_ms_per_tick": round(tick_act, 3), "actors_env_step_ms": round(env_act, 3)})
        print(json.dumps(rows[-1]), flush=True)
    print(f"{'num_envs':>8} {'in-process/s':>13} {'actors/s':>10} {'ratio':>6}   ms per tick = env step + rest: "
          "in-process | actors")
    for r in rows:
        rest_in = r["in_process_ms_per_tick"] - r["in_process_env_step_ms"]
        rest_act = r["actors_ms_per_tick"] - r["actors_env_step_ms"]
        print(f"{r['num_envs']:>8} {r['in_process_steps_per_s']:>13,} {r['actors_steps_per_s']:>10,} "
              f"{r['ratio_actors_over_in_process']:>6.3f}   {r['in_process_ms_per_tick']:.2f} = "
              f"{r['in_process_env_step_ms']:.2f} + {rest_in:.2f} | {r['actors_ms_per_tick']:.2f} = "
              f"{r['actors_env_step_ms']:.2f} + {rest_act:.2f}")


if __name__ == "__main__":
    main()
