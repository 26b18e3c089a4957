"""``python -m tag_actors.plot RUN_DIR [RUN_DIR ...]``: per-level learning curves, one run or several compared.

One panel per level (level 0: the env's per-agent return, the number BenchMARL reports; level l: the mean return
of that level's agents), x = env steps, y = the mean episode return of the episodes that ended in each of
``--bins`` equal slices of env steps. Several runs are drawn over each other, labelled by folder name: seeds,
configs, or a resumed run against its original. Read from the event logs, so a run still going can be plotted.

One run: ``RUN_DIR/plots/returns.png``. Several: ``--out`` (default ``comparison.png``). Needs matplotlib
(``pip install 'tag_actors[plot]'``).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

from tag_actors.runlog import read_events


def level_returns(run_dir: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """level -> (env steps at each episode's end, its return), sorted by env steps."""
    points: dict[int, list[tuple[int, float]]] = {}
    for e in read_events(Path(run_dir)):
        if e["type"] != "episodes":
            continue
        level, step = int(e["level"]), int(e["env_steps"])
        if e["name"] == "env":
            per_agent = list(e["returns"].values())
            values = [sum(col) / len(col) for col in zip(*per_agent, strict=True)]
        else:
            values = e["returns"]
        points.setdefault(level, []).extend((step, float(v)) for v in values)
    out = {}
    for level, pts in points.items():
        pts.sort()
        out[level] = (np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
    return out


def binned(steps: np.ndarray, values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean of ``values`` per slice of env steps (empty slices skipped), at the slice's right edge."""
    edges = np.linspace(0, steps.max(), bins + 1)
    which = np.clip(np.searchsorted(edges, steps, side="left") - 1, 0, bins - 1)
    xs, ys = [], []
    for b in range(bins):
        sel = which == b
        if sel.any():
            xs.append(edges[b + 1])
            ys.append(values[sel].mean())
    return np.array(xs), np.array(ys)


def plot_runs(run_dirs: list[Path], out: Path, bins: int = 50) -> Path:
    """Draw every run's per-level curves into ``out`` (PNG); returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {Path(d): level_returns(Path(d)) for d in run_dirs}
    levels = sorted({lvl for c in curves.values() for lvl in c})
    if not levels:
        raise ValueError(f"no finished episodes in {', '.join(str(d) for d in run_dirs)}")
    fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels), 3.4), squeeze=False)
    for ax, level in zip(axes[0], levels, strict=True):
        for run_dir, c in curves.items():
            if level in c:
                x, y = binned(*c[level], bins)
                ax.plot(x, y, label=run_dir.name, linewidth=1.4)
        ax.set_title("level 0 (env, per-agent return)" if level == 0 else f"level {level} (agent return)")
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean episode return")
    axes[0][-1].legend(fontsize="small", loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tag_actors.plot", description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", type=Path, help="PNG to write (default: RUN_DIR/plots/returns.png for one run, "
                                            "comparison.png for several)")
    p.add_argument("--bins", type=int, default=50, help="slices of env steps averaged per point")
    args = p.parse_args(argv)
    if importlib.util.find_spec("matplotlib") is None:
        print("tag_actors.plot: needs matplotlib: pip install 'tag_actors[plot]'", file=sys.stderr)
        return 2
    missing = [d for d in args.run_dirs if not (d / "events").is_dir()]
    if missing:
        print(f"tag_actors.plot: {missing[0]} is not a run folder (no events/)", file=sys.stderr)
        return 2
    out = args.out or (args.run_dirs[0] / "plots" / "returns.png" if len(args.run_dirs) == 1
                       else Path("comparison.png"))
    try:
        plot_runs(args.run_dirs, out, args.bins)
    except ValueError as e:
        print(f"tag_actors.plot: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
