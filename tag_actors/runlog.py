"""What a process leaves behind: an append-only JSONL event log and atomic checkpoints.

Each process writes only its own files (``events/<name>.jsonl``, ``checkpoints/<name>.pt``), so a crash of one
never corrupts another's, and every line is flushed as written: a killed process loses at most the line it was
writing.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
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
            lines = f.read_text().splitlines()
            for i, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    if i < len(lines) - 1:
                        raise
                    # the line a killed process was writing: everything before it stands
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


_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
"""The first record of torch's legacy (non-zip) checkpoint format, which ``torch.load`` still reads."""
_TORCH_PROTOCOL = 1001


def save_checkpoint(path: Path, state: dict[str, Any], ticks: int | None = None) -> None:
    """Write to a temporary file, then rename: a checkpoint is either the old one or the new one, never half.

    Every checkpoint loads with ``torch.load(path, weights_only=True)`` (no pickled code runs on load; one holding
    numpy arrays, as plug-in agents may, needs numpy's array globals allowed: ``load_checkpoint`` does): a process
    that uses torch saves with it; one that does not (the env, random and scripted agents: importing torch costs
    them seconds at exit) writes torch's legacy format by hand, which for plain values is five pickles. ``ticks``
    (the run's clock at this checkpoint) also goes into a small JSON file beside it, which ``--resume`` reads to
    compare checkpoints without loading them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    if "torch" in sys.modules:
        import torch

        torch.save(state, tmp)
    else:
        sys_info = {"protocol_version": _TORCH_PROTOCOL, "little_endian": sys.byteorder == "little",
                    "type_sizes": {"short": 2, "int": 4, "long": 4}}
        body = pickle.dumps(state, protocol=2)
        try:
            _PlainUnpickler(io.BytesIO(body)).load()
        except pickle.UnpicklingError as e:
            raise TypeError(f"checkpoint {path}: a state_dict must hold tensors and plain values ({e})") from None
        with tmp.open("wb") as f:
            for record in (_TORCH_MAGIC, _TORCH_PROTOCOL, sys_info):
                pickle.dump(record, f, protocol=2)
            f.write(body)
            pickle.dump([], f, protocol=2)  # the keys of its tensor storages: none
    os.replace(tmp, path)
    if ticks is not None:
        _write_atomic(checkpoint_info_path(path), json.dumps({"ticks": int(ticks), "time": round(time.time(), 3)}))


_NUMPY_ARRAY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                        ("numpy", "ndarray"), ("numpy", "dtype")}


def _numpy_global(module: str, name: str) -> Any | None:
    """The numpy callables that rebuild an array, a scalar or a dtype of numbers or strings (data, never code);
    None for anything else. Object arrays are not among them."""
    if (module, name) == ("_codecs", "encode"):  # how pickle protocol 2 writes bytes (torch allows it too)
        return importlib.import_module(module).encode
    allowed = (module, name) in _NUMPY_ARRAY_GLOBALS or (
        module == "numpy.dtypes" and name.endswith("DType") and name != "ObjectDType")
    return getattr(importlib.import_module(module), name) if allowed else None


def _numpy_safe_globals() -> list[Any]:
    """The same numpy globals as objects, for ``torch.serialization.safe_globals``."""
    import numpy as np

    found = [_numpy_global(m, n) for m, n in sorted(_NUMPY_ARRAY_GLOBALS) if importlib.util.find_spec(m.split(".")[0])]
    dtypes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDGSU"}
    return [g for g in found if g is not None] + sorted(dtypes, key=str)


class _PlainUnpickler(pickle.Unpickler):
    """Plain values and numpy arrays only: no other class is ever imported or called."""

    def find_class(self, module: str, name: str) -> Any:
        found = _numpy_global(module, name)
        if found is None:
            raise pickle.UnpicklingError(f"checkpoint refers to {module}.{name}; only tensors, numpy arrays and "
                                         "plain values are allowed")
        return found


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by ``save_checkpoint`` (torch's zip format: loaded by torch, weights only; the legacy
    format with plain values: read without torch). Plain pickles of older versions still load."""
    with path.open("rb") as f:
        head = f.read(2)
        if head == b"PK":  # torch's zip format
            import torch

            # numpy arrays (a plug-in agent may keep them) are data: allowed, as torch's docs show
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                return torch.load(path, weights_only=True, map_location="cpu")  # a GPU run resumes anywhere
        f.seek(0)
        first = _PlainUnpickler(f).load()
        if first != _TORCH_MAGIC:
            f.seek(0)
            return pickle.load(f)  # a checkpoint of an older version (a plain pickle this project wrote)
        _PlainUnpickler(f).load()
        _PlainUnpickler(f).load()
        return _PlainUnpickler(f).load()


def checkpoint_info_path(path: Path) -> Path:
    return path.with_suffix(".json")


def checkpoint_ticks(run_dir: Path) -> dict[str, int]:
    """process file name -> the run's tick at its latest checkpoint (checkpoints without their JSON beside them
    are loaded to read it)."""
    out = {}
    for ckpt in sorted((run_dir / "checkpoints").glob("*.pt")):
        info = checkpoint_info_path(ckpt)
        try:
            out[ckpt.stem] = int(json.loads(info.read_text())["ticks"])
        except (OSError, ValueError, KeyError):
            out[ckpt.stem] = int(load_checkpoint(ckpt)["ticks"])
    return out


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def state_path(run_dir: Path, name: str) -> Path:
    return run_dir / "logs" / f"{file_name(name)}.state.json"


def write_state(run_dir: Path, name: str, phase: str, **fields: Any) -> None:
    """What this process is doing, for its supervisor: ``phase`` (starting, handshake, running, waiting, stopping)
    and, while waiting, what for and from whom. Written only when the phase changes or a wait passes half a
    second, never per tick; a frozen process leaves its last state, which is how a stall is traced to it."""
    record = {"name": name, "pid": os.getpid(), "phase": phase, "time": round(time.time(), 3), **fields}
    _write_atomic(state_path(run_dir, name), json.dumps(record))


def read_state(run_dir: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(state_path(run_dir, name).read_text())
    except (OSError, ValueError):
        return None


def write_episodes_csv(run_dir: Path) -> Path:
    """episodes.csv: one row per finished episode per agent (level 0 rows are the env's per-agent returns), from
    the event logs. Written atomically: the launcher writes it at the end of a run, and when the launcher was
    killed the processes write it on their way out (the last one out leaves the fullest)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["name", "level", "env_steps", "episode_return", "episode_length"])
    for e in read_events(run_dir):
        if e["type"] != "episodes":
            continue
        if e["name"] == "env":
            for agent, returns in e["returns"].items():
                for r, n in zip(returns, e["lengths"], strict=True):
                    w.writerow([f"env:{agent}", 0, e["env_steps"], r, n])
        else:
            for r, n in zip(e["returns"], e["lengths"], strict=True):
                w.writerow([e["name"], e["level"], e["env_steps"], r, n])
    out = run_dir / "episodes.csv"
    _write_atomic(out, buf.getvalue())
    return out
