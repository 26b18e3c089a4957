"""What Prometheus learns about a run as a whole: its identity, its state, its progress, and who failed first.

The launcher serves these itself (job ``tag_launcher`` in monitoring/prometheus.yml), rather than pushing them
through a child: it is the one process that outlives every child and sees every exit code, so it is the only
one that can say "finished", "failed" or "stopped", and which process failed first. No Pushgateway is needed,
and the cost is one more small HTTP server thread in a process that otherwise sleeps.

=================================================  =====  ===================================================
series (labels run, config, host on each)           type   meaning
=================================================  =====  ===================================================
tag_run_info{state,failed_process,failure}          gauge  1; state = running | finished | failed | stopped;
                                                           failed_process: the process that failed first
tag_run_start_time_seconds                          gauge  unix time the launcher started the run
tag_run_end_time_seconds                            gauge  unix time it ended (0 while running)
tag_run_env_steps / tag_run_env_steps_target        gauge  env steps done (x batch) / run.total_env_steps
tag_run_progress_ratio                              gauge  env steps / target, 0 .. 1
tag_run_env_steps_per_second                        gauge  recent env throughput (env status records)
tag_run_eta_seconds                                 gauge  (target - done) / rate; absent until a rate is known
=================================================  =====  ===================================================

Run identity: ``run`` = the run folder's name plus its start time (:func:`run_id`), ``config`` = the config's
``run.name``: two runs of one config are two runs. At the end, in any way, the launcher marks the final state,
lets Prometheus scrape it once (when something scrapes), then empties the run's file_sd list and removes its
link in monitoring/targets/; links a killed launcher left behind are removed by :func:`sweep_links`
(``scripts/monitor.sh`` runs it).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from tag_actors.metrics import unknown_link
from tag_actors.metrics_serving import ScrapeClock, read_file_sd, serve_registry, stop_serving, write_file_sd
from tag_actors.procs import process_argv

STATES = ("running", "finished", "failed", "stopped")
_STAMP = "%Y%m%d-%H%M%S"
_STAMPED = re.compile(r"-\d{8}-\d{6}$")
LAUNCHER = "launcher"


def run_id(run_dir: Path, started: float, fresh: bool, shared: bool = False) -> str:
    """The run's unique id: the folder name when it is a fresh folder already named ``<name>-<start time>``
    (the default) or when ``shared`` (several hosts, started with the same --run-dir, must agree); otherwise
    (a folder reused by --resume or a second launch, or named without a time) the folder name plus the start
    time of this launch."""
    if shared or (fresh and _STAMPED.search(run_dir.name)):
        return run_dir.name
    return f"{run_dir.name}-{time.strftime(_STAMP, time.localtime(started))}"


def process_links(plan: Any, name: str, env: str = "env") -> tuple[list[str], list[str]]:
    """(configured peers of process ``name``, the names it serves endpoints as): the ``link`` label values its
    metrics may use, so that every (link, reason) series can exist at 0 from the start."""
    if name == env:
        served = sorted(c for c, p in plan.parent.items() if p is not None and plan.process_of(c) == env)
        return sorted({plan.parent[c] for c in served}), served
    parent = plan.parent.get(name)
    return ([parent] if parent else []) + list(plan.node(name).children), [name] if parent else []


def agent_features(agent: Any, has_parent: bool, parent_lockstep: bool) -> set[str]:
    """The ProcessMetrics features of an agent process: what it will really report."""
    from tag_actors.agents.base import Agent

    features = {"decisions", "checkpoint"}
    if type(agent).update is not Agent.update:
        features.add("learner")
    if hasattr(agent, "on_call"):
        features.add("llm")
    if has_parent:
        features.add("roundtrip" if parent_lockstep else "staleness")
    return features


def enable_agent_metrics(metrics: Any, agent: Any, parent: str | None, parent_lockstep: bool) -> None:
    """Enable an agent process's features (:func:`agent_features`); its round trip to a lockstep parent exists
    at 0 from the start too."""
    features = agent_features(agent, parent is not None, parent_lockstep)
    metrics.enable(*features)
    if parent is not None and "roundtrip" in features:
        metrics.declare_roundtrip(parent)


class RunMetrics:
    """The launcher's registry: run state, progress (read from the env's status records at each scrape), ETA."""

    def __init__(self, run: str, config: str, host: str, run_dir: Path, total_env_steps: int):
        self.labels = {"run": run, "config": config, "host": host}
        self.run_dir = run_dir
        self.total_env_steps = int(total_env_steps)
        self.state = "running"
        self._provisional = False  # "finished" read from the env's end record, before the launcher's own verdict
        self.failed_process = ""
        self.failure = ""
        self.started = time.time()
        self.ended = 0.0
        self.env_steps = 0
        self._rates: deque[float] = deque(maxlen=5)
        try:  # a reused folder (--resume, a second launch) holds earlier runs' records: only read what is new
            self._offset = (run_dir / "events" / "env.jsonl").stat().st_size
        except OSError:
            self._offset = 0
        self.scrapes = ScrapeClock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._httpd: Any = None
        self._thread: Any = None
        self.port: int | None = None

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        self._httpd, self._thread, self.port = serve_registry(
            self.registry, port, addr, f"the launcher of run {self.labels['run']!r}", on_sent=self.scrapes.tick
        )
        return self.port

    def close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            stop_serving(httpd, self._thread)

    # ------------------------------------------------------------------ state
    def failed(self, process: str, how: str) -> None:
        """The first failure wins: later ones (the neighbours that lost their peer) do not rename the cause."""
        if self.state == "running" or self._provisional:
            self.state, self.failed_process, self.failure = "failed", process, how
            self._provisional = False

    def end(self, exit_code: int) -> None:
        """The final state from the launcher's exit code (0 finished, 130 stopped by the user, else failed)."""
        if self.state == "running" or self._provisional:
            self.state = {0: "finished", 130: "stopped"}.get(exit_code, "failed")
            self._provisional = False
        self.ended = time.time()

    def deliver(self, max_wait_s: float = 10.0) -> bool:
        """Wait until the current state has been scraped (no wait when nothing ever scraped this launcher)."""
        return self.scrapes.wait_next(max_wait_s)

    # ------------------------------------------------------------------ collector
    def _follow(self) -> None:
        """Read the env's new status records (an append-only JSONL file) since the last scrape."""
        path = self.run_dir / "events" / "env.jsonl"
        try:
            with path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        for line in chunk[:end].splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("type") == "status":
                self.env_steps = int(e["env_steps"])
                if e.get("env_steps_per_s", 0) > 0:
                    self._rates.append(float(e["env_steps_per_s"]))
            elif e.get("type") == "end" and e.get("reason") == "completed" and self.state == "running":
                # the env reached the target: the processes now stop one by one, on purpose. Said at once, so
                # no alert reads their going as a failure (a failure after this still wins: see failed, end)
                self.state, self._provisional = "finished", True

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self._follow()
        names, values = list(self.labels), list(self.labels.values())

        def gauge(name: str, doc: str, value: float, **extra: str) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=[*names, *extra])
            g.add_metric([*values, *extra.values()], value)
            return g

        yield gauge("tag_run_info", "State of the run (running, finished, failed, stopped) and who failed first",
                    1, state=self.state, failed_process=self.failed_process, failure=self.failure)
        yield gauge("tag_run_start_time_seconds", "Unix time the run started", self.started)
        yield gauge("tag_run_end_time_seconds", "Unix time the run ended (0: running)", self.ended)
        yield gauge("tag_run_env_steps", "Env steps done (x batch)", self.env_steps)
        yield gauge("tag_run_env_steps_target", "run.total_env_steps", self.total_env_steps)
        yield gauge("tag_run_progress_ratio", "Env steps done / target",
                    min(1.0, self.env_steps / max(self.total_env_steps, 1)))
        rate = sum(self._rates) / len(self._rates) if self._rates else 0.0
        yield gauge("tag_run_env_steps_per_second", "Recent env steps per second (x batch)", rate)
        if rate > 0 and self.state == "running":
            yield gauge("tag_run_eta_seconds", "Seconds left at the recent rate",
                        max(0.0, self.total_env_steps - self.env_steps) / rate)

    def describe(self) -> list:
        return []


# ---------------------------------------------------------------------- launcher side
def start(run: str, config: str, host: str, run_dir: Path, total_env_steps: int, port: int,
          addr: str) -> RunMetrics:
    metrics = RunMetrics(run, config, host, run_dir, total_env_steps)
    metrics.serve(port, addr)
    return metrics


def finish(metrics: RunMetrics | None, exit_code: int, sd_file: Path | None, link: Path | None) -> None:
    """End of a run, whatever the end: final state, delivered to a scraping Prometheus, then the run leaves
    Prometheus's targets (an empty file_sd list, and no link in monitoring/targets/)."""
    if metrics is not None:
        metrics.end(exit_code)
        metrics.deliver()
    if sd_file is not None and sd_file.exists():
        write_file_sd(sd_file, [])
    if link is not None:
        link.unlink(missing_ok=True)
    if metrics is not None:
        metrics.close()


def launcher_alive(pid: int) -> bool:
    """Whether ``pid`` is a live tag_actors launcher (not a zombie, not a recycled pid of something else)."""
    argv = process_argv(pid)
    return argv is not None and "tag_actors.launch" in argv


def sweep_links(targets_dir: Path) -> list[Path]:
    """Remove the links of monitoring/targets/ whose run is over: the target file is gone or empty, or the
    launcher recorded in the run's plan.json is no longer alive (killed). Returns what was removed."""
    removed = []
    for link in sorted(targets_dir.glob("*.json")):
        if not link.is_symlink():
            continue
        target = Path(os.path.realpath(link))
        stale = not target.exists()
        if not stale:
            try:
                stale = not read_file_sd(target)
                pid = json.loads((target.parent / "plan.json").read_text()).get("launcher_pid")
                stale = stale or (pid is not None and not launcher_alive(int(pid)))
            except (OSError, ValueError):
                stale = True
        if stale:
            link.unlink(missing_ok=True)
            removed.append(link)
    return removed


def main(argv: list[str] | None = None) -> int:
    """``python -m tag_actors.run_metrics sweep [TARGETS_DIR]``: remove stale run links (monitor.sh runs it)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "sweep" or len(args) > 2:
        print(main.__doc__, file=sys.stderr)
        return 2
    targets = Path(args[1]) if len(args) == 2 else Path(__file__).resolve().parent.parent / "monitoring" / "targets"
    for link in sweep_links(targets):
        print(f"removed stale run link {link}")
    return 0


__all__ = ["LAUNCHER", "STATES", "RunMetrics", "agent_features", "enable_agent_metrics", "finish", "process_links", "run_id", "start",
           "sweep_links", "unknown_link"]

if __name__ == "__main__":
    sys.exit(main())
