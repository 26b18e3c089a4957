"""What the launcher shows while a run goes: it follows the processes' event logs (``events/*.jsonl``) and draws
a progress bar on a terminal, or prints plain lines (one per change, never the same twice) where stdout is a file
or a pipe: CI and Slurm logs get readable lines, not carriage returns.

The same events feed the loggers (``tag_actors.loggers``): the follower is read once and both take from it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ENV = "env"


@dataclass
class EventFollower:
    """Tails every ``events/*.jsonl`` of a run folder; ``poll()`` returns the complete lines written since the
    last poll (a half-written last line waits for the next)."""

    run_dir: Path
    offsets: dict[Path, int] = field(default_factory=dict)

    def poll(self) -> list[dict[str, Any]]:
        events_dir = self.run_dir / "events"
        if not events_dir.exists():
            return []
        out: list[dict[str, Any]] = []
        for path in sorted(events_dir.glob("*.jsonl")):
            offset = self.offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            self.offsets[path] = offset + end
            for line in chunk[:end].decode(errors="replace").splitlines():
                if line.strip():
                    out.append(json.loads(line))
        return out


@dataclass
class Progress:
    """The state a progress line shows: env steps, the env's rate, mean recent episode return per level."""

    total_env_steps: int
    env_steps: int = 0
    rate: float = 0.0
    returns: dict[int, deque] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    env_here: bool = False
    """Whether the env's own status records reach this launcher; on a host without the env (``--host``) the
    count comes from the env steps the agents' records carry (every UP carries the env's count)."""
    _relayed: tuple[float, int] | None = None

    def take(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            if e["name"] == ENV and e["type"] == "status":
                self.env_here = True
                if e["env_steps"] != self.env_steps:  # the status written at close repeats the count, rate 0
                    self.env_steps, self.rate = e["env_steps"], e["env_steps_per_s"]
                continue
            if not self.env_here and e.get("env_steps", 0) > self.env_steps:
                self._relay(e["env_steps"])
            if e["type"] == "episodes":
                if e["name"] == ENV:  # the env's per-agent return, averaged over its agents
                    per_agent = list(e["returns"].values())
                    returns = [sum(col) / len(col) for col in zip(*per_agent, strict=True)]
                    self.returns.setdefault(0, deque(maxlen=200)).extend(returns)
                else:
                    self.returns.setdefault(e["level"], deque(maxlen=200)).extend(e["returns"])

    def _relay(self, env_steps: int) -> None:
        """The env's count as an agent on this host last saw it; the rate since the first such count."""
        now = time.monotonic()
        if self._relayed is None:
            self._relayed = (now, env_steps)
        elif now - self._relayed[0] >= 1.0:
            self.rate = (env_steps - self._relayed[1]) / (now - self._relayed[0])
        self.env_steps = env_steps

    def fields(self) -> str:
        parts = [f"env steps {self.env_steps:,}/{self.total_env_steps:,} ({self.rate:,.0f}/s)"]
        for level in sorted(self.returns):
            r = self.returns[level]
            parts.append(f"L{level} return {sum(r) / len(r):.2f}")
        return " | ".join(parts)

    def line(self) -> str:
        return f"[{time.monotonic() - self.started:7.1f}s] {self.fields()}"

    def bar(self, width: int) -> str:
        """One terminal line: a bar, percent, elapsed and remaining time, then the fields cut to ``width``."""
        frac = min(self.env_steps / max(self.total_env_steps, 1), 1.0)
        elapsed = time.monotonic() - self.started
        eta = f"{(self.total_env_steps - self.env_steps) / self.rate:.0f}s" if self.rate > 0 and frac < 1 else "-"
        filled = int(20 * frac)
        text = (f"[{'#' * filled}{'.' * (20 - filled)}] {100 * frac:5.1f}% {elapsed:6.0f}s eta {eta:>5} "
                f"| {self.fields()}")
        return text[: max(width - 1, 10)]


class ProgressDisplay:
    """Draws ``Progress`` on ``out``: redraws one line in place on a terminal, prints a new plain line only when
    the shown fields changed otherwise. ``finish()`` ends the bar's line; the summary follows."""

    def __init__(self, progress: Progress, out: TextIO | None = None, bar: bool | None = None):
        self.progress = progress
        self.out = out or sys.stdout
        self.bar = self.out.isatty() if bar is None else bar
        self._last = ""
        self._drawn = False

    def show(self) -> None:
        if self.bar:
            width = shutil.get_terminal_size((120, 20)).columns
            self.out.write("\r\x1b[2K" + self.progress.bar(width))
            self._drawn = True
        else:
            fields = self.progress.fields()
            if fields == self._last:
                return
            self._last = fields
            self.out.write(f"[{time.monotonic() - self.progress.started:7.1f}s] {fields}\n")
        self.out.flush()

    def finish(self) -> None:
        """Draw the final state once (a plain line only if it is new), and leave the cursor on a fresh line."""
        self.show()
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False


@dataclass
class RunWatcher:
    """What the launcher (and a serial run) calls every ``log_every_s``: read the new events once, update the
    display, hand them to the loggers."""

    follower: EventFollower
    display: ProgressDisplay | None
    loggers: Any = None  # tag_actors.loggers.Loggers
    every_s: float = 2.0
    _last: float = field(default=0.0)

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        events = self.follower.poll()
        if self.display is not None:
            self.display.progress.take(events)
        if self.loggers is not None:
            self.loggers.write(events)
        if self.display is not None and not force:
            self.display.show()

    def finish(self) -> None:
        """Take the last events (what the processes wrote while closing), close the loggers, end the display."""
        self.tick(force=True)
        if self.display is not None:
            self.display.finish()
        if self.loggers is not None:
            self.loggers.close()
