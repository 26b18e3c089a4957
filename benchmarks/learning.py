"""Learning curves of several configs (methods) over several seeds, on one comparable metric.

    python benchmarks/learning.py --configs configs/balance.toml configs/balance_mappo.toml --seeds 0 1 2 \\
        --steps 600000 --serial --jobs 2 --out benchmarks/results/balance \\
        --ref heuristic=14.5 random=-5.3 [--extra benchmarks/results/benchmarl_balance.csv]

Each (config, seed) runs through the launcher (``python -m tag_actors.launch``, ``--serial`` optional: lockstep
serial and actor runs give identical numbers) in ``RUNS_DIR/<OUT name>/<method>-s<seed>`` (default runs/bench); a run whose ``episodes.csv``
already covers ``--steps`` is reused (``--rerun`` forces it). ``--collect-only`` skips running altogether.

The metric is the one BenchMARL reports: the per-agent mean episode return, from the env's own rows of
``episodes.csv`` (level 0, ``env:<agent>``): each episode's return averaged over the env agents. Whatever the
hierarchy above, this is the same number for every method.

Outputs: ``OUT.csv`` (method, seed, env_steps, mean_return: the mean return of the episodes that ended in each
bin of env steps), ``OUT.png`` (mean over seeds and a 95% t-interval band per method, reference lines, extra
curves from ``--extra`` CSVs of the same shape) and ``OUT_summary.csv`` / a printed table: final return (episodes
of the last 10% of steps), steps to reach the flat MAPPO's final return, wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tag_actors.evaluate import mean_ci95  # the same 95% t-interval as the evaluate command


def method_name(config: Path) -> str:
    name = config.stem
    return name.split("_", 1)[1] if "_" in name else "3ppo" if name in ("balance", "spread", "vspread") else name


def env_episodes(episodes_csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """(env_steps, per-agent mean return) per finished episode, from the level-0 rows of episodes.csv.

    Level 0 logs one row per env agent per episode, in the same order for every agent within an event: the k-th
    row of each agent at a given env_steps belongs to the same episode."""
    rows: dict[tuple[int, str], list[float]] = defaultdict(list)
    with episodes_csv.open() as f:
        for r in csv.DictReader(f):
            if r["level"] == "0":
                rows[(int(r["env_steps"]), r["name"])].append(float(r["episode_return"]))
    by_step: dict[int, list[list[float]]] = defaultdict(list)
    for (step, _agent), returns in rows.items():
        by_step[step].append(returns)
    steps, means = [], []
    for step in sorted(by_step):
        per_agent = np.array(by_step[step])  # (agents, episodes)
        steps += [step] * per_agent.shape[1]
        means += list(per_agent.mean(axis=0))
    return np.array(steps, dtype=np.int64), np.array(means, dtype=np.float64)


def bin_curve(steps: np.ndarray, returns: np.ndarray, total: int, bins: int) -> list[tuple[int, float]]:
    """Mean return of the episodes that ended in each of ``bins`` equal bins of [0, total]; x = bin end."""
    edges = np.linspace(0, total, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (steps > lo) & (steps <= hi)
        if sel.any():
            out.append((int(hi), float(returns[sel].mean())))
    return out


def final_return(steps: np.ndarray, returns: np.ndarray, total: int) -> float:
    """Mean of the episodes that ended in the last 10% of [0, total] (later ones, of a longer run, are left out)."""
    sel = (steps > 0.9 * total) & (steps <= total)
    return float(returns[sel].mean()) if sel.any() else float("nan")


def run_one(config: Path, seed: int, steps: int, run_dir: Path, serial: bool, extra_set: list[str]) -> float:
    """Run one (config, seed) through the launcher; returns the wall time in seconds."""
    cmd = [sys.executable, "-m", "tag_actors.launch", str(config), "--seed", str(seed), "--run-dir", str(run_dir),
           "--quiet", "--set", f"run.total_env_steps={steps}", "--set", "run.metrics=false"]
    for item in extra_set:
        cmd += ["--set", item]
    if serial:
        cmd.append("--serial")
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (run_dir / "launch.log").open("w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
    wall = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"{config} seed {seed} failed (exit {code}); see {run_dir / 'launch.log'}")
    (run_dir / "wall.json").write_text(json.dumps({"wall_s": wall, "serial": serial, "steps": steps}))
    return wall


def done_already(run_dir: Path, steps: int) -> bool:
    wall = run_dir / "wall.json"
    return wall.exists() and json.loads(wall.read_text())["steps"] >= steps and (run_dir / "episodes.csv").exists()


def load_extra(path: Path) -> dict[str, dict[int, list[tuple[int, float]]]]:
    curves: dict[str, dict[int, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    with path.open() as f:
        for r in csv.DictReader(f):
            curves[r["method"]][int(r["seed"])].append((int(float(r["env_steps"])), float(r["mean_return"])))
    return curves


def aggregate(seed_curves: dict[int, list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, mean over seeds and CI half-width at every x where every seed has a value."""
    per_seed = [dict(c) for c in seed_curves.values()]
    xs = sorted(set.intersection(*(set(c) for c in per_seed))) if per_seed else []
    mean, half = [], []
    for x in xs:
        m, h = mean_ci95(np.array([c[x] for c in per_seed]))
        mean.append(m)
        half.append(h)
    return np.array(xs), np.array(mean), np.array(half)


def plot(curves: dict[str, dict[int, list[tuple[int, float]]]], refs: dict[str, float], out: Path,
         title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for method, seeds in curves.items():
        x, m, h = aggregate(seeds)
        if not len(x):
            continue
        (line,) = ax.plot(x, m, label=f"{method} ({len(seeds)} seeds)")
        if len(seeds) > 1:
            ax.fill_between(x, m - h, m + h, color=line.get_color(), alpha=0.2)
    for i, (name, value) in enumerate(refs.items()):
        ax.axhline(value, color="k", linestyle=["--", ":", "-."][i % 3], linewidth=1, label=f"{name} ({value:g})")
    ax.set_xlabel("env steps (summed over env copies)")
    ax.set_ylabel("per-agent mean episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def steps_to_reach(seeds: dict[int, list[tuple[int, float]]], target: float) -> float:
    """First x where the mean curve over seeds reaches ``target`` (nan if never)."""
    x, m, _ = aggregate(seeds)
    hit = np.flatnonzero(m >= target)
    return float(x[hit[0]]) if len(hit) else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", type=Path, required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--steps", type=int, default=600_000, help="env steps per run")
    p.add_argument("--serial", action="store_true", help="run in-process (same numbers as actors)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (each is one CPU-heavy process in serial)")
    p.add_argument("--out", type=Path, required=True, help="output prefix: OUT.csv, OUT.png, OUT_summary.csv")
    p.add_argument("--bins", type=int, default=30, help="bins of env steps for the curves")
    p.add_argument("--ref", nargs="*", default=[], metavar="NAME=VALUE", help="horizontal reference lines")
    p.add_argument("--extra", nargs="*", type=Path, default=[], help="CSV(s) of extra curves (method,seed,...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for all runs")
    p.add_argument("--baseline", default="mappo", help="method whose final return the 'steps to reach' targets")
    p.add_argument("--rerun", action="store_true", help="run again even when a finished run is there")
    p.add_argument("--collect-only", action="store_true", help="do not run; only collect existing runs")
    p.add_argument("--title", default=None)
    p.add_argument("--runs-dir", type=Path, default=Path("runs/bench"), help="where the runs go (git-ignored)")
    args = p.parse_args(argv)

    refs = {}
    for item in args.ref:
        name, _, value = item.partition("=")
        refs[name] = float(value)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    runs_root = args.runs_dir / out.name
    jobs = [(c, s, runs_root / f"{method_name(c)}-s{s}") for c in args.configs for s in args.seeds]

    walls: dict[tuple[str, int], float] = {}
    if not args.collect_only:
        todo = [j for j in jobs if args.rerun or not done_already(j[2], args.steps)]
        print(f"{len(jobs)} runs, {len(todo)} to run ({args.jobs} at a time, {'serial' if args.serial else 'actors'})",
              flush=True)

        def work(job: tuple[Path, int, Path]) -> None:
            config, seed, run_dir = job
            wall = run_one(config, seed, args.steps, run_dir, args.serial, args.set)
            print(f"  done {method_name(config)} seed {seed}: {wall:.0f}s", flush=True)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for _ in pool.map(work, todo):
                pass

    curves: dict[str, dict[int, list[tuple[int, float]]]] = defaultdict(dict)
    finals: dict[str, list[float]] = defaultdict(list)
    rows = []
    for config, seed, run_dir in jobs:
        episodes = run_dir / "episodes.csv"
        if not episodes.exists():
            print(f"  missing {episodes}; skipped", file=sys.stderr)
            continue
        method = method_name(config)
        steps, returns = env_episodes(episodes)
        curve = bin_curve(steps, returns, args.steps, args.bins)
        curves[method][seed] = curve
        finals[method].append(final_return(steps, returns, args.steps))
        rows += [(method, seed, x, y) for x, y in curve]
        if (run_dir / "wall.json").exists():
            walls[(method, seed)] = json.loads((run_dir / "wall.json").read_text())["wall_s"]
    for path in args.extra:
        for method, seeds in load_extra(path).items():
            for seed, curve in seeds.items():
                curves[method][seed] = sorted(curve)
                cut = [y for x, y in curve if x > 0.9 * max(xx for xx, _ in curve)]
                finals[method].append(float(np.mean(cut)) if cut else float("nan"))

    with out.with_suffix(".csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", "env_steps", "mean_return"])
        w.writerows((m, s, x, round(y, 4)) for m, s, x, y in rows)

    target = np.nanmean(finals[args.baseline]) if finals.get(args.baseline) else float("nan")
    summary = []
    for method in curves:
        m, h = mean_ci95(np.array(finals[method]))
        wall = [v for (mm, _), v in walls.items() if mm == method]
        summary.append({"method": method, "seeds": len(curves[method]), "final_mean_return": round(m, 3),
                        "final_ci95": round(h, 3), f"steps_to_{args.baseline}_final": steps_to_reach(curves[method], target),
                        "wall_s_per_run": round(float(np.mean(wall)), 1) if wall else float("nan")})
    with open(f"{out}_summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]) if summary else ["method"])
        w.writeheader()
        w.writerows(summary)
    print(f"\nfinal = mean per-agent episode return over the last 10% of {args.steps:,} steps; "
          f"target = {args.baseline}'s final ({target:.2f})")
    print(f"{'method':<14}{'seeds':>6}{'final':>9}{'±95%':>8}{'steps to target':>17}{'wall s/run':>12}")
    for s in summary:
        reach = s[f"steps_to_{args.baseline}_final"]
        print(f"{s['method']:<14}{s['seeds']:>6}{s['final_mean_return']:>9.2f}{s['final_ci95']:>8.2f}"
              f"{reach:>17,.0f}{s['wall_s_per_run']:>12.0f}")
    try:
        plot(curves, refs, out.with_suffix(".png"), args.title or out.name)
        print(f"\nwrote {out.with_suffix('.csv')}, {out}_summary.csv, {out.with_suffix('.png')}")
    except ImportError:
        print(f"\nwrote {out.with_suffix('.csv')}, {out}_summary.csv (no plot: pip install matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
