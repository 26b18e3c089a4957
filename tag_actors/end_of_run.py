"""What the launcher does around a run, the same for actor and ``--serial`` runs: before it, check that the
requested loggers can work (a one-line error, before any process starts); during it, follow the event logs into
the progress display and the loggers; after it, close the loggers (the plot logger draws) and print one summary."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tag_actors.config import Config, ConfigError
from tag_actors.loggers import LoggerError, Loggers, check_available
from tag_actors.progress import EventFollower, Progress, ProgressDisplay, RunWatcher
from tag_actors.summary import summarize


def check_loggers(cfg: Config) -> None:
    """ConfigError naming the extra to install when a logger of ``run.loggers`` cannot work here."""
    try:
        check_available(cfg.run.loggers)
    except LoggerError as e:
        raise ConfigError(f"{cfg.source}: {e}") from None


@dataclass
class RunEnd:
    run_dir: Path
    watcher: RunWatcher
    started: float

    @classmethod
    def start(cls, cfg: Config, run_dir: Path, quiet: bool) -> RunEnd:
        check_loggers(cfg)
        loggers = Loggers(cfg.run.loggers, run_dir, cfg.to_dict())
        display = None if quiet else ProgressDisplay(Progress(cfg.run.total_env_steps))
        watcher = RunWatcher(EventFollower(run_dir), display, loggers, cfg.run.log_every_s)
        return cls(run_dir, watcher, time.monotonic())

    def finish(self, code: int, episodes_csv: Path) -> None:
        """Read the last events, close the loggers, print the summary."""
        wall_s = time.monotonic() - self.started
        self.watcher.finish()
        artifacts = {"episodes": str(episodes_csv)}
        for name, where in self.watcher.loggers.where().items():
            artifacts[{"csv": "scalars", "plot": "plots"}.get(name, name)] = where
        artifacts.setdefault("plots", f"python -m tag_actors.plot {self.run_dir}  (or run.loggers += 'plot')")
        outcome = {0: "completed", 130: "interrupted"}.get(code, "failed")
        print(summarize(self.run_dir, wall_s, outcome, artifacts).text(), flush=True)
