"""Serial mode: the whole hierarchy in this one process through LevelEnv, no sockets.

For debugging, tutorials, and as the in-process baseline: a lockstep run with the same seed must leave the same
episode returns and action digests as the actor runtime
(``tests/test_runtime.py::test_lockstep_actors_match_in_process`` checks it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tag_actors.config import Config
from tag_actors.envs import make_env
from tag_actors.level_env import LevelEnv, build_hierarchy
from tag_actors.recorder import EnvRecorder, NodeRecorder
from tag_actors.topology import build_plan


def run_serial(cfg: Config, run_dir: Path, progress: Any = None, resume: bool = False) -> dict[str, Any]:
    plan = build_plan(cfg)
    env = make_env(cfg.env.kind, cfg.env.scenario, cfg.env.num_envs, cfg.run.seed, dict(cfg.env.kwargs),
                   device=cfg.env.device)
    stack = build_hierarchy(cfg, plan, env)
    level0 = stack[0].level0
    levels: list[LevelEnv] = stack[1:]  # type: ignore[assignment]
    nodes = [n for lv in levels for n in lv.nodes]
    recorders = [NodeRecorder(run_dir, n, None, cfg.run.checkpoint_every_s) for n in nodes]
    env_rec = EnvRecorder(run_dir, level0, None, cfg.run.log_every_s)
    if resume:
        env_rec.restore()
        for rec in recorders:
            rec.restore()
    top = levels[-1]
    started = time.perf_counter()
    reason = "interrupted"
    try:
        top.reset(cfg.run.seed + env_rec.ticks)  # a resumed run sees new episodes
        while level0.env_steps < cfg.run.total_env_steps:
            steps = level0.env_steps
            top.step({})
            env_rec.after_tick()
            for rec in recorders:
                rec.after_tick(steps)
            if progress is not None:
                progress()
        reason = "completed"
    finally:
        for rec in recorders:
            rec.close(reason)
        env_rec.close(reason)
        env.close()
    return {"env_steps": level0.env_steps, "ticks": env_rec.ticks, "seconds": time.perf_counter() - started}
