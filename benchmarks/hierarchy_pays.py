"""Does the hierarchy pay? Hierarchies against flat learners given the same level-1 observation, plus the
instruction ablation, with 95% intervals over seeds.

    python benchmarks/hierarchy_pays.py --configs configs/balance_local.toml configs/balance_local_mappo_ppo.toml \\
        configs/balance_local_2mappo_ppo.toml configs/balance_local_ippo.toml configs/balance_local_mappo.toml \\
        --seeds 0 1 2 --steps 300000 --jobs 2 --out benchmarks/results/balance_local --runs-dir runs/bench

1. Trains every (config, seed) through ``benchmarks/learning.py`` (serial, same runs folder layout; finished runs
   are reused; ``--collect-only`` trains nothing) and takes its curves and final returns (episodes of the last
   10% of the steps, per-agent return of the env).
2. Evaluates every seed's final checkpoints on ``--episodes`` fresh episodes (``python -m tag_actors.evaluate
   RUN --deterministic --seed 1000``), and every hierarchy's a second and third time with its instructions
   silenced (``--instructions zeros``) and replaced by uniform noise (``--instructions random``).
3. Prints (and writes ``OUT_hierarchy.md``) one row per method: training final ± 95% t-interval over seeds,
   evaluation return with its own instructions, zeros and random, and what silencing costs (1 - zeros/own, from
   the seed means). The verdict lines compare each hierarchy with the flat MAPPO: better with non-overlapping
   intervals, or not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import learning  # noqa: E402  (benchmarks/ is not a package)

from tag_actors import config as config_mod  # noqa: E402
from tag_actors.evaluate import mean_ci95  # noqa: E402

ABLATIONS = ("policy", "zeros", "random")


def evaluate(run_dir: Path, how: str, episodes: int) -> float:
    """Per-agent env return of ``run_dir``'s checkpoints on fresh episodes (cached in its eval JSON)."""
    out = run_dir / ("eval.json" if how == "policy" else f"eval_instructions_{how}.json")
    if not (out.exists() and json.loads(out.read_text())["episodes"] == episodes):
        subprocess.run([sys.executable, "-m", "tag_actors.evaluate", str(run_dir), "--episodes", str(episodes),
                        "--seed", "1000", "--deterministic", "--instructions", how], check=True,
                       stdout=subprocess.DEVNULL)
    return float(json.loads(out.read_text())["levels"]["0"]["mean_return"])


def training_final(run_dir: Path, total: int) -> float:
    """The mean return of the episodes that ended in the last 10% of the steps or, where no episode ended there
    (every env copy ends its fixed-length episodes at the same tick, e.g. navigation), of the last ones before."""
    steps, returns = learning.env_episodes(run_dir / "episodes.csv")
    final = learning.final_return(steps, returns, total)
    if np.isnan(final) and (steps <= total).any():
        last = steps[steps <= total].max()
        final = float(returns[steps == last].mean())
    return final


def fmt(values: list[float]) -> str:
    if not values:
        return "—"
    m, h = mean_ci95(np.array(values))
    digits = 2 if abs(m) < 10 else 1
    return f"{m:.{digits}f} ± {h:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", type=Path, required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300_000)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per run and ablation")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--runs-dir", type=Path, default=Path("runs/bench"))
    p.add_argument("--flat-baseline", default=None, help="method name of the flat MAPPO (default: the flat "
                                                         "config whose level 1 is mappo)")
    p.add_argument("--collect-only", action="store_true")
    args = p.parse_args(argv)

    learning.main(["--configs", *map(str, args.configs), "--seeds", *map(str, args.seeds), "--steps",
                   str(args.steps), "--serial", "--jobs", str(args.jobs), "--out", str(args.out), "--runs-dir",
                   str(args.runs_dir), *(["--collect-only"] if args.collect_only else [])])

    rows, finals, evals = [], {}, {}
    depth, flat_mappo = {}, args.flat_baseline
    for config in args.configs:
        method = learning.method_name(config)
        cfg = config_mod.load(config)
        depth[method] = len(cfg.levels)
        if depth[method] == 1 and cfg.levels[0].agent == "mappo" and flat_mappo is None:
            flat_mappo = method
        finals[method], evals[method] = [], {how: [] for how in ABLATIONS}
        for seed in args.seeds:
            run_dir = args.runs_dir / args.out.name / f"{method}-s{seed}"
            if not (run_dir / "episodes.csv").exists():
                continue
            finals[method].append(training_final(run_dir, args.steps))
            for how in ABLATIONS if depth[method] > 1 else ("policy",):
                evals[method][how].append(evaluate(run_dir, how, args.episodes))
    lines = [f"per-agent return; training final = episodes of the last 10% of {args.steps:,} steps (or the last "
             "batch before, where none ended there); evaluation: "
             f"{args.episodes} fresh episodes, deterministic, seed 1000; ± = 95% t-interval over seeds",
             "| method | levels | seeds | training final | eval, own instructions | zeros | random | "
             "silencing costs | per seed (final) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method in finals:
        own, zeros = evals[method]["policy"], evals[method]["zeros"]
        cost = (f"{100 * (1 - np.mean(zeros) / np.mean(own)):.0f} %" if zeros and np.mean(own) > 0 else "—")
        lines.append(f"| {method} | {depth[method]} | {len(finals[method])} | {fmt(finals[method])} | {fmt(own)} | "
                     f"{fmt(zeros)} | {fmt(evals[method]['random'])} | {cost} | "
                     f"{' / '.join(f'{v:.2f}' for v in finals[method])} |")
        rows.append(method)
    if flat_mappo in finals and len(finals[flat_mappo]) > 1:
        fm, fh = mean_ci95(np.array(finals[flat_mappo]))
        for method in rows:
            if depth[method] > 1 and len(finals[method]) > 1:
                m, h = mean_ci95(np.array(finals[method]))
                verdict = ("beats" if m - h > fm + fh else "is below" if m + h < fm - fh else "overlaps")
                lines.append(f"\n{method} {verdict} flat {flat_mappo} (training final {m:.2f} ± {h:.2f} against "
                             f"{fm:.2f} ± {fh:.2f})")
    text = "\n".join(lines)
    print(text)
    Path(f"{args.out}_hierarchy.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
