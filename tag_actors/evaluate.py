"""``python -m tag_actors.evaluate RUN_DIR``: evaluate a trained hierarchy on fresh episodes.

Rebuilds the run's hierarchy in this process from ``RUN_DIR/config.json`` (the same plan and LevelEnv stack as
``--serial``), loads every agent's checkpoint from ``RUN_DIR/checkpoints/<name>.pt``, and runs N episodes with a
seed the training never used: one episode per env copy (``num_envs = N``; a copy whose episode ended early is
ignored afterwards). Learning is frozen: no updates, no change to observation normalizers, no stored
transitions. Prints the mean episode return of every level with a 95% t confidence interval over episodes and
writes ``RUN_DIR/eval.json``.

Level 0 is the env's per-agent return averaged over the env agents (the number BenchMARL reports); level l >= 1
is an agent's own return (the sum of its children's rewards) averaged over the agents of that level.

``--deterministic``: PPO/MAPPO agents act with the mean of their Gaussian (clipped or squashed) or the most
likely category instead of sampling. ``--video PATH.mp4|PATH.gif``: render env copy 0's first episode (VMAS,
PettingZoo/mpe2 and Gymnasium envs; see tag_actors/video.py for what each needs, checked before the evaluation
starts; without an X display VMAS renders headless through EGL, where libEGL (mesa) is installed). A frame the env
cannot render leaves a warning and no video, never a lost evaluation.

``--instructions zeros|random``: an ablation. Every agent that instructs others (level >= 2) still decides, but its
children get zeros (the first choice, for discrete instructions) or uniform random draws instead: how much the
return drops measures how much the levels below rely on their instructions. Written to
``RUN_DIR/eval_instructions_<how>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tag_actors import config as config_mod
from tag_actors.devices import DeviceError
from tag_actors.envs import make_env
from tag_actors.level_env import LevelEnv, build_hierarchy
from tag_actors.node import AgentNode
from tag_actors.runlog import checkpoint_path, load_checkpoint
from tag_actors.topology import build_plan
from tag_actors.video import VideoError, check_video, prepare_rendering, render_kwargs, write_video

# Two-sided 97.5% quantiles of Student's t by degrees of freedom (numpy only).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}


def mean_ci95(values: list[float] | np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval (the quantile of the nearest tabulated dof at or below)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return (float(x.mean()) if len(x) else float("nan")), float("nan")
    dof = len(x) - 1
    t = 1.960 if dof > 120 else _T975[max(d for d in _T975 if d <= dof)]
    return float(x.mean()), t * float(x.std(ddof=1)) / np.sqrt(len(x))


INSTRUCTIONS = ("policy", "zeros", "random")


def replace_instructions(node: AgentNode, how: str, rng: np.random.Generator) -> None:
    """Ablation: the instructions ``node`` sends are replaced by zeros or random draws from their space. The
    agent still decides (its own state, e.g. an LLM's history, moves on as in a normal run)."""
    decide, space = node.agent.act, node.action_space

    def act(obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        decide(obs, mask)
        return space.zeros(len(mask)) if how == "zeros" else space.sample(rng, len(mask))

    node.agent.act = act  # type: ignore[method-assign]


def evaluate(run_dir: Path, episodes: int = 32, seed: int = 12345, deterministic: bool = False,
             video: Path | None = None, overrides: list[str] | None = None,
             instructions: str = "policy", device: str | None = None) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if instructions not in INSTRUCTIONS:
        raise ValueError(f"instructions must be one of {', '.join(INSTRUCTIONS)}, not {instructions!r}")
    cfg = config_mod.load_resolved(run_dir / "config.json", list(overrides or []))
    kwargs = dict(cfg.env.kwargs)
    if video is not None:
        check_video(video, cfg.env.kind)
        prepare_rendering(cfg.env.kind)
        kwargs = render_kwargs(cfg.env.kind, kwargs)
    cfg.env.num_envs = episodes
    cfg.run.seed = seed
    if device is not None:  # e.g. evaluate a run trained on a GPU on a machine without one
        cfg.env.device = device
        for level in cfg.levels:
            level.device = device
    plan = build_plan(cfg)
    env = make_env(cfg.env.kind, cfg.env.scenario, episodes, seed, kwargs, device=cfg.env.device)
    stack = build_hierarchy(cfg, plan, env)
    level0 = stack[0].level0
    levels: list[LevelEnv] = stack[1:]  # type: ignore[assignment]
    nodes: list[AgentNode] = [n for lv in levels for n in lv.nodes]
    for node in nodes:
        path = checkpoint_path(run_dir, node.name)
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint for agent {node.name!r}: {path}")
        node.load_state_dict(load_checkpoint(path))
        node.agent.freeze(deterministic)
    if instructions != "policy":
        instructing = [n for n in nodes if n.spec.level >= 2]
        if not instructing:
            raise config_mod.ConfigError(f"{run_dir}: a one-level run sends no instructions to replace")
        rng = np.random.default_rng(seed + 1)
        for node in instructing:
            replace_instructions(node, instructions, rng)

    frames: list[np.ndarray] = []
    done = np.zeros(episodes, dtype=bool)
    env_return = np.full(episodes, np.nan)
    length = np.zeros(episodes, dtype=np.int64)
    node_return = {n.name: np.full(episodes, np.nan) for n in nodes}
    started = time.perf_counter()
    levels[-1].reset(seed)
    while not done.all():
        levels[-1].step({})
        ended = level0.pop_finished()
        # Every node saw the same episode ends this tick, in the same (env index) order as level 0.
        per_node = {n.name: n.pop_finished() for n in nodes}
        for j, e in enumerate(ended):
            b = e["env"]
            if done[b]:
                continue
            done[b] = True
            env_return[b] = float(np.mean(list(e["return"].values())))
            length[b] = e["length"]
            for name, finished in per_node.items():
                node_return[name][b] = finished[j][0]
        if video is not None and not done[0]:
            frame = env.render(0)
            if frame is None:
                print(f"evaluate: this {cfg.env.kind} env cannot render here (no display or EGL?); no video",
                      file=sys.stderr)
                video = None
            else:
                frames.append(frame)
    seconds = time.perf_counter() - started
    env.close()

    result: dict[str, Any] = {"run_dir": str(run_dir), "episodes": episodes, "seed": seed,
                              "deterministic": deterministic, "instructions": instructions,
                              "mean_episode_length": float(length.mean()),
                              "seconds": round(seconds, 3), "levels": {}}
    m, h = mean_ci95(env_return)
    result["levels"]["0"] = {"mean_return": m, "ci95": h, "what": "env per-agent return, mean over env agents"}
    for lvl in range(1, plan.depth + 1):
        names = [n.name for n in nodes if n.spec.level == lvl]
        per_episode = np.mean([node_return[n] for n in names], axis=0)
        m, h = mean_ci95(per_episode)
        result["levels"][str(lvl)] = {"mean_return": m, "ci95": h, "agents": names,
                                      "per_agent": {n: float(np.mean(node_return[n])) for n in names}}
    eval_file(run_dir, instructions).write_text(json.dumps(result, indent=2))  # saved before the video is written
    if video is not None and frames:
        result["video"] = str(write_video(frames, video))
        eval_file(run_dir, instructions).write_text(json.dumps(result, indent=2))
    return result


def eval_file(run_dir: Path, instructions: str) -> Path:
    return run_dir / ("eval.json" if instructions == "policy" else f"eval_instructions_{instructions}.json")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tag_actors.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--episodes", type=int, default=32, help="episodes (= env copies run at once)")
    p.add_argument("--seed", type=int, default=12345, help="env and agent seed (use one training never used)")
    p.add_argument("--deterministic", action="store_true", help="PPO/MAPPO: act with the mode, do not sample")
    p.add_argument("--video", type=Path, metavar="PATH.mp4|PATH.gif",
                   help="record env copy 0's first episode (VMAS, PettingZoo/mpe2, Gymnasium)")
    p.add_argument("--gif", type=Path, help=argparse.SUPPRESS)  # the old spelling of --video PATH.gif
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--device", choices=["cpu", "auto", "cuda"],
                   help="run the env and every agent here instead of where the run did (env.device, levels[].device)")
    p.add_argument("--instructions", choices=INSTRUCTIONS, default="policy",
                   help="ablation: levels >= 2 send zeros or random instructions instead of their own")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error("--episodes must be >= 1")
    try:
        result = evaluate(args.run_dir, args.episodes, args.seed, args.deterministic, args.video or args.gif,
                          args.set, args.instructions, args.device)
    except (config_mod.ConfigError, FileNotFoundError, VideoError, DeviceError) as e:
        print(f"tag_actors.evaluate: {e}", file=sys.stderr)
        return 2
    mode = "deterministic" if args.deterministic else "stochastic"
    ablation = "" if args.instructions == "policy" else f", instructions replaced by {args.instructions}"
    print(f"{args.run_dir}: {args.episodes} episodes, seed {args.seed}, {mode}{ablation}, "
          f"mean length {result['mean_episode_length']:.1f}")
    for lvl, r in result["levels"].items():
        print(f"  level {lvl}: mean episode return {r['mean_return']:9.3f} ± {r['ci95']:.3f} (95% CI)")
    if "video" in result:
        print(f"  video: {result['video']}")
    print(f"wrote {eval_file(args.run_dir, args.instructions)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
