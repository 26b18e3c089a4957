"""What a process leaves behind: an append-only JSONL event log and atomic checkpoints.

Each process writes only its own files (``events/<name>.jsonl``, ``checkpoints/<name>.pt``), so a crash of one
never corrupts another's, and every line is flushed as written: a killed process loses at most the line it was
writing.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any


def file_name(name: str) -> str:
    return name.replace("/", "_")


class EventLog:
    """One JSON object per line: {"type": ..., "time": ..., "name": ..., ...}."""

    def __init__(self, run_dir: Path, name: str):
        path = run_dir / "events" / f"{file_name(name)}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._file = path.open("a", buffering=1)

    def write(self, type_: str, **fields: Any) -> None:
        record = {"type": type_, "time": round(time.time(), 3), "name": self.name, **fields}
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._file.close()


def read_events(run_dir: Path, name: str | None = None) -> list[dict[str, Any]]:
    files = [run_dir / "events" / f"{file_name(name)}.jsonl"] if name else sorted((run_dir / "events").glob("*.jsonl"))
    out = []
    for f in files:
        if f.exists():
            for line in f.read_text().splitlines():
                if line.strip():
                    out.append(json.loads(line))
    return out


def _steady_window(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The env's status records a third of the way through a finished run and at its end (of its last start,
    when it was resumed: times restart there). The first tick of a hierarchy waits for every level's first
    decision, and learners pay their first update late, so a window from the start would count start-up."""
    status: list[dict[str, Any]] = []
    for e in read_events(run_dir, "env"):
        if e["type"] == "started":
            status.clear()
        elif e["type"] == "status" and (not status or e["env_steps"] > status[-1]["env_steps"]):
            status.append(e)  # (the status written at close repeats the last count)
    if len(status) < 3:
        raise ValueError(f"{run_dir}: {len(status)} env status records; run longer or lower run.log_every_s")
    return status[len(status) // 3], status[-1]


def steady_env_rate(run_dir: Path) -> float:
    """Env steps per second of a finished run in its steady state (see ``_steady_window``)."""
    first, last = _steady_window(run_dir)
    return (last["env_steps"] - first["env_steps"]) / (last["elapsed_s"] - first["elapsed_s"])


def steady_tick_split(run_dir: Path) -> tuple[float, float]:
    """Milliseconds per tick in the steady state: (whole tick, the env's own step). The rest of a tick is the
    agents: computed in the same process (serial), or awaited over the wire from level 1 (actors)."""
    first, last = _steady_window(run_dir)
    ticks = max(last["ticks"] - first["ticks"], 1)
    return (1000 * (last["elapsed_s"] - first["elapsed_s"]) / ticks,
            1000 * (last["env_step_s"] - first["env_step_s"]) / ticks)


def checkpoint_path(run_dir: Path, name: str) -> Path:
    return run_dir / "checkpoints" / f"{file_name(name)}.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary file, then rename: a checkpoint is either the old one or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    if "torch" in sys.modules:
        import torch

        torch.save(state, tmp)
    else:
        with tmp.open("wb") as f:
            pickle.dump(state, f, protocol=5)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        head = f.read(2)
    if head == b"PK":  # torch's zip format
        import torch

        return torch.load(path, weights_only=False, map_location="cpu")  # a GPU run resumes or evaluates anywhere
    with path.open("rb") as f:
        return pickle.load(f)
