"""Per-process bookkeeping shared by the in-process and the actor runtimes: episode and update logs, metrics,
periodic and final checkpoints. Keeping it in one place is what makes both runtimes leave identical logs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tag_actors.envs import Level0
from tag_actors.node import AgentNode
from tag_actors.runlog import EventLog, checkpoint_path, load_checkpoint, save_checkpoint


class NodeRecorder:
    def __init__(self, run_dir: Path, node: AgentNode, metrics: Any = None, checkpoint_every_s: float = 0.0):
        self.node = node
        self.log = EventLog(run_dir, node.name)
        self.metrics = metrics
        self.checkpoint_file = checkpoint_path(run_dir, node.name)
        self.checkpoint_every_s = checkpoint_every_s
        self.last_checkpoint = time.monotonic()

    def after_tick(self, env_steps: int) -> None:
        node = self.node
        finished = node.pop_finished() if node.finished else ()
        if finished:
            self.log.write("episodes", level=node.spec.level, tick=node.ticks, env_steps=env_steps,
                           returns=[round(r, 6) for r, _ in finished], lengths=[n for _, n in finished])
            if self.metrics:
                for r, n in finished:
                    self.metrics.episode(r, n)
        if node.update_stats:
            for stats in node.pop_update_stats():
                self.log.write("update", level=node.spec.level, tick=node.ticks, env_steps=env_steps,
                               **{k: float(v) for k, v in stats.items()})
                if self.metrics:
                    self.metrics.learner(stats)
        if self.checkpoint_every_s and time.monotonic() - self.last_checkpoint > self.checkpoint_every_s:
            self.checkpoint()

    def restore(self) -> bool:
        """Load this node's checkpoint if there is one (``--resume``); episodes start afresh."""
        if not self.checkpoint_file.exists():
            return False
        self.node.load_state_dict(load_checkpoint(self.checkpoint_file))
        self.log.write("resumed", ticks=self.node.ticks, updates=self.node.updates, decisions=self.node.decisions)
        return True

    def checkpoint(self) -> None:
        save_checkpoint(self.checkpoint_file, self.node.state_dict(), ticks=self.node.ticks)
        self.last_checkpoint = time.monotonic()
        if self.metrics:
            self.metrics.checkpoint_saved()

    def close(self, reason: str) -> None:
        self.checkpoint()
        self.log.write("end", reason=reason, ticks=self.node.ticks, updates=self.node.updates,
                       decisions=self.node.decisions, action_digest=self.node.action_digest,
                       agent_stats=getattr(self.node.agent, "stats", None))
        self.log.close()


class EnvRecorder:
    def __init__(self, run_dir: Path, level0: Level0, metrics: Any = None, log_every_s: float = 2.0,
                 checkpoint_every_s: float = 0.0):
        self.level0 = level0
        self.log = EventLog(run_dir, "env")
        self.log.write("started")  # every handshake is done: the tick loop begins
        self.run_dir = run_dir
        self.metrics = metrics
        self.ticks = 0
        self.log_every_s = log_every_s
        self.started = self.last_status = self.last_checkpoint = time.monotonic()
        self.last_steps = 0
        self.checkpoint_every_s = checkpoint_every_s
        """The env's counters are checkpointed too, so that a restart after the env was killed loses at most
        this much of the run's clock."""

    def restore(self) -> None:
        """Continue the env's counters (env steps, ticks) from its checkpoint; the env copies start new episodes."""
        path = checkpoint_path(self.run_dir, "env")
        if path.exists():
            state = load_checkpoint(path)
            self.level0.env_steps, self.ticks = state["env_steps"], state["ticks"]
            self.last_steps = self.level0.env_steps
            self.log.write("resumed", ticks=self.ticks, env_steps=self.level0.env_steps)

    def continue_clock(self, tick: int, num_envs: int) -> None:
        """A restarted env takes the run's clock from its parents (they kept ticking it; its checkpoint is older).
        The env steps of the ticks since the checkpoint are counted as ``num_envs`` each (every copy stepped)."""
        if tick > self.ticks:
            self.level0.env_steps += (tick - self.ticks) * num_envs
            self.last_steps = self.level0.env_steps
        self.log.write("clock", checkpoint_tick=self.ticks, run_tick=tick, env_steps=self.level0.env_steps)
        self.ticks = tick

    def after_tick(self) -> None:
        self.ticks += 1
        finished = self.level0.pop_finished() if self.level0.finished_episodes else ()
        if finished:
            self.log.write("episodes", level=0, tick=self.ticks, env_steps=self.level0.env_steps,
                           returns={a: [round(e["return"][a], 6) for e in finished] for a in finished[0]["return"]},
                           lengths=[e["length"] for e in finished])
            if self.metrics:
                for e in finished:
                    self.metrics.episode(sum(e["return"].values()) / len(e["return"]), e["length"])
        now = time.monotonic()
        if now - self.last_status >= self.log_every_s:
            self.status(now)
            if self.checkpoint_every_s and now - self.last_checkpoint > self.checkpoint_every_s:
                self.checkpoint()
                self.last_checkpoint = now

    def checkpoint(self) -> None:
        save_checkpoint(checkpoint_path(self.run_dir, "env"), {"env_steps": self.level0.env_steps,
                                                                "ticks": self.ticks}, ticks=self.ticks)

    def status(self, now: float) -> None:
        steps = self.level0.env_steps
        rate = (steps - self.last_steps) / max(now - self.last_status, 1e-9)
        self.log.write("status", ticks=self.ticks, env_steps=steps, env_steps_per_s=round(rate, 1),
                       elapsed_s=round(now - self.started, 3), env_step_s=round(self.level0.step_seconds, 4))
        self.last_status, self.last_steps = now, steps

    def close(self, reason: str) -> None:
        self.checkpoint()
        self.status(time.monotonic())
        self.log.write("end", reason=reason, ticks=self.ticks, env_steps=self.level0.env_steps)
        self.log.close()
