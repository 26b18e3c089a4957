"""Experiment loggers (``run.loggers``): the launcher turns the event logs it already follows into scalars and
hands them to each logger, so no agent process knows about TensorBoard, wandb or mlflow, and a logger that is
slow or fails never holds up the run's processes.

    csv          RUN_DIR/scalars.csv (env_steps, time, tag, value), always available
    tensorboard  RUN_DIR/tensorboard/ event files (torch.utils.tensorboard; extra ``tensorboard``)
    wandb        a Weights & Biases run (extra ``wandb``; WANDB_PROJECT, WANDB_MODE=offline work as usual)
    mlflow       an MLflow run (extra ``mlflow``; MLFLOW_TRACKING_URI as usual, default ./mlruns)
    plot         RUN_DIR/plots/returns.png at the end of the run (tag_actors.plot; extra ``plot``). Not on by
                 default: drawing costs a matplotlib import (seconds on a busy machine) at every run's end

Scalars (x axis: env steps): ``return/level_L`` (mean episode return per level; level 0 is the env's per-agent
return), ``episode_length``, ``agent/NAME/return``, ``env/steps_per_s``, ``train/NAME/KEY`` (every learner
update statistic: losses, entropy, KL, ...), ``staleness/NAME/{ticks_mean,seconds_mean}`` (async runs) and
``llm/NAME/{calls,ok,timeout,...}`` (LLM call outcomes, at the end of the run).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOGGERS: dict[str, tuple[str, ...]] = {
    # name -> the modules it needs (checked before the run starts)
    "csv": (),
    "tensorboard": ("tensorboard",),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
    "plot": ("matplotlib",),
}


class LoggerError(RuntimeError):
    """A logger that cannot work here (its package is missing); one line, naming the extra that installs it."""


@dataclass(frozen=True)
class Scalar:
    tag: str
    value: float
    step: int
    time: float


def check_available(names: list[str]) -> None:
    """Raise LoggerError, before any work, if a requested logger's package is not installed."""
    for name in names:
        if name not in LOGGERS:
            raise LoggerError(f"run.loggers: unknown logger {name!r} (known: {', '.join(LOGGERS)})")
        for module in LOGGERS[name]:
            if importlib.util.find_spec(module) is None:
                raise LoggerError(f"run.loggers includes {name!r}, which needs the {module!r} package: "
                                  f"pip install 'tag_actors[{name}]'")


class ScalarExtractor:
    """Event records -> scalars. Keeps the newest env step count, the x axis of records that carry none."""

    def __init__(self) -> None:
        self.env_steps = 0

    def __call__(self, events: list[dict[str, Any]]) -> list[Scalar]:
        out: list[Scalar] = []
        level_returns: dict[int, list[float]] = {}
        for e in events:
            step = int(e.get("env_steps", self.env_steps))
            self.env_steps = max(self.env_steps, step)
            name, kind, t = e["name"], e["type"], float(e.get("time", 0.0))
            if kind == "status" and name == "env":
                out.append(Scalar("env/steps_per_s", float(e["env_steps_per_s"]), step, t))
            elif kind == "episodes" and name == "env":
                per_agent = list(e["returns"].values())
                returns = [sum(col) / len(col) for col in zip(*per_agent, strict=True)]
                level_returns.setdefault(0, []).extend(returns)
                out.append(Scalar("episode_length", sum(e["lengths"]) / len(e["lengths"]), step, t))
            elif kind == "episodes":
                level_returns.setdefault(int(e["level"]), []).extend(e["returns"])
                out.append(Scalar(f"agent/{name}/return", sum(e["returns"]) / len(e["returns"]), step, t))
            elif kind == "update":
                for key, value in e.items():
                    if key not in ("type", "time", "name", "level", "tick", "env_steps") and _number(value):
                        out.append(Scalar(f"train/{name}/{key}", float(value), step, t))
            elif kind == "staleness":
                for key in ("ticks_mean", "seconds_mean"):
                    out.append(Scalar(f"staleness/{name}/{key}", float(e[key]), self.env_steps, t))
            elif kind == "end" and isinstance(e.get("agent_stats"), dict):
                for key, value in e["agent_stats"].items():
                    if _number(value):
                        out.append(Scalar(f"llm/{name}/{key}", float(value), self.env_steps, t))
        t_last = max((float(e.get("time", 0.0)) for e in events), default=0.0)
        for level, values in sorted(level_returns.items()):
            out.append(Scalar(f"return/level_{level}", sum(values) / len(values), self.env_steps, t_last))
        return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # not NaN


class CsvLogger:
    def __init__(self, run_dir: Path, config: dict[str, Any]):
        self.path = run_dir / "scalars.csv"
        new = not self.path.exists()
        self._file = self.path.open("a", newline="")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["env_steps", "time", "tag", "value"])

    def write(self, scalars: list[Scalar]) -> None:
        self._csv.writerows([s.step, round(s.time, 3), s.tag, s.value] for s in scalars)
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def where(self) -> str:
        return str(self.path)


class TensorBoardLogger:
    def __init__(self, run_dir: Path, config: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = run_dir / "tensorboard"
        self._writer = SummaryWriter(log_dir=str(self.log_dir))
        self._writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    def write(self, scalars: list[Scalar]) -> None:
        for s in scalars:
            self._writer.add_scalar(s.tag, s.value, s.step, walltime=s.time or None)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def where(self) -> str:
        return f"tensorboard --logdir {self.log_dir}"


class WandbLogger:
    def __init__(self, run_dir: Path, config: dict[str, Any]):
        import wandb

        self._wandb = wandb
        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", "tag_actors"), name=run_dir.name,
                               dir=str(run_dir), config=config)
        self._run.define_metric("*", step_metric="env_steps")  # events arrive out of step order across processes

    def write(self, scalars: list[Scalar]) -> None:
        by_step: dict[int, dict[str, float]] = {}
        for s in scalars:
            by_step.setdefault(s.step, {})[s.tag] = s.value
        for step, values in sorted(by_step.items()):
            self._run.log({"env_steps": step, **values})

    def close(self) -> None:
        self._run.finish()

    def where(self) -> str:
        return str(getattr(self._run, "url", None) or getattr(self._run, "dir", ""))


class MlflowLogger:
    def __init__(self, run_dir: Path, config: dict[str, Any]):
        import mlflow

        self._mlflow = mlflow
        self._run = mlflow.start_run(run_name=run_dir.name)
        flat = {f"{section}.{k}": v for section in ("run", "env") for k, v in config.get(section, {}).items()}
        mlflow.log_params({k: str(v)[:250] for k, v in flat.items()})

    def write(self, scalars: list[Scalar]) -> None:
        for s in scalars:
            self._mlflow.log_metric(s.tag, s.value, step=s.step, timestamp=int(1000 * s.time) or None)

    def close(self) -> None:
        self._mlflow.end_run()

    def where(self) -> str:
        return f"mlflow run {self._run.info.run_id} ({self._mlflow.get_tracking_uri()})"


class PlotLogger:
    """Draws the per-level learning curves from the event logs when the run ends (not while it runs)."""

    def __init__(self, run_dir: Path, config: dict[str, Any]):
        self.run_dir = run_dir
        self.out = run_dir / "plots" / "returns.png"
        self.result = "not drawn yet"

    def write(self, scalars: list[Scalar]) -> None:
        pass  # the curves are drawn from the event logs at close, whole

    def close(self) -> None:
        from tag_actors.plot import plot_runs

        try:
            self.result = str(plot_runs([self.run_dir], self.out))
        except ValueError:  # no finished episode: nothing to draw
            self.result = "none (no episode finished)"

    def where(self) -> str:
        return self.result


_CLASSES = {"plot": PlotLogger, "csv": CsvLogger, "tensorboard": TensorBoardLogger, "wandb": WandbLogger, "mlflow": MlflowLogger}


class Loggers:
    """Every logger of ``run.loggers`` behind one ``write(events)``. A logger that raises while writing is
    dropped with a one-line warning: losing a plot line must never stop a training run."""

    def __init__(self, names: list[str], run_dir: Path, config: dict[str, Any]):
        check_available(names)
        self.extract = ScalarExtractor()
        self.active: dict[str, Any] = {n: _CLASSES[n](run_dir, config) for n in dict.fromkeys(names)}

    def write(self, events: list[dict[str, Any]]) -> None:
        scalars = self.extract(events)
        if not scalars:
            return
        for name, logger in list(self.active.items()):
            try:
                logger.write(scalars)
            except Exception as e:  # noqa: BLE001 - any failure of a third-party logger
                import sys

                print(f"tag_actors: logger {name!r} failed ({type(e).__name__}: {e}); dropped", file=sys.stderr)
                del self.active[name]

    def close(self) -> None:
        for name, logger in list(self.active.items()):
            try:
                logger.close()
            except Exception as e:  # noqa: BLE001 - the run is over; its summary must still print
                import sys

                print(f"tag_actors: logger {name!r} failed to close ({type(e).__name__}: {e})", file=sys.stderr)
                del self.active[name]

    def where(self) -> dict[str, str]:
        return {name: logger.where() for name, logger in self.active.items()}
