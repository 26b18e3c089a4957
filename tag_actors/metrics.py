"""Prometheus metrics for every tag_actors process (env, agents, launcher).

One :class:`ProcessMetrics` per OS process. It owns a *private* registry (never the client's global one), so
several instances can live in one interpreter (tests, in-process runs) without clashing, and it serves that
registry over HTTP with :meth:`ProcessMetrics.serve`.

Every exposed series carries the labels ``run``, ``level``, ``agent`` (the process name) and ``host``. They are
added at scrape time by a small wrapping collector, so the hot-path metrics themselves are label-free (or carry
only ``link``/``reason``/... whose children are bound once and cached): a call costs about a microsecond and never
formats labels. The client's process collector (``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
...), platform collector (``python_info``) and GC collector are included and carry the same labels. The
``*_created`` samples of the client are dropped (they double the series count and nothing here uses them).

Series (all prefixed ``tag_``; counters end in ``_total`` on the wire):

=========================================  =========  ==========================================================
name                                       type       meaning
=========================================  =========  ==========================================================
tag_up                                     gauge      1 once :meth:`set_up` ran, 0 after :meth:`set_down`
tag_process_info{role,pid,python,version}  info       static facts: role, pid, python, tag_actors version
tag_ticks_total                            counter    ticks of this process (agent: its decisions; env: steps)
tag_env_steps_total                        counter    env steps x batch (env process; env steps/s = rate)
tag_act_duration_seconds                   histogram  decision time (agent) or step time (env); 100 us .. 10 s
tag_message_roundtrip_seconds{link}        histogram  send UP to receive DOWN on a link; 50 us .. 1 s
tag_frames_sent_total{link}                counter    frames sent on a link
tag_frames_received_total{link}            counter    frames received on a link
tag_bytes_sent_total{link}                 counter    payload bytes sent on a link
tag_bytes_received_total{link}             counter    payload bytes received on a link
tag_bad_frames_total{link,reason}          counter    malformed / refused frames, dropped
tag_queue_depth{link}                      gauge      messages waiting on a link
tag_instruction_staleness_ticks            histogram  age of the parent instruction used, in ticks (async mode)
tag_instruction_staleness_seconds          histogram  the same in seconds
tag_episodes_total                         counter    finished episodes
tag_episode_reward_positive_total          counter    sum of the positive episode returns
tag_episode_reward_negative_total          counter    sum of the magnitudes of the negative episode returns
tag_episode_reward                         histogram  distribution of episode returns (buckets, _count; no _sum)
tag_episode_reward_last                    gauge      return of the last finished episode
tag_episode_reward_mean                    gauge      mean return of the last ``reward_window`` (100) episodes
tag_episode_length                         histogram  episode length in ticks
tag_episode_length_last                    gauge      length of the last finished episode
tag_learner_<stat>                         gauge      last value of a known learner statistic (see LEARNER_STATS;
                                                      ``clipfrac`` is read as ``clip_fraction``)
tag_learner_stat{stat}                     gauge      last value of any other learner statistic
tag_update_duration_seconds                histogram  time of one learner update; 1 ms .. 120 s
tag_updates_total                          counter    learner updates
tag_checkpoint_timestamp_seconds           gauge      unix time of the last checkpoint (0 = none yet)
tag_process_restarts_total                 counter    restarts (see :meth:`restart`)
tag_llm_requests_total{outcome}            counter    LLM calls by outcome (ok, error, timeout, invalid, ...)
tag_llm_latency_seconds                    histogram  LLM call latency; 10 ms .. 120 s
tag_llm_tokens_total{kind}                 counter    kind = prompt | completion
=========================================  =========  ==========================================================

Episode reward. Returns can be negative, and a histogram's ``_sum`` would then go down, which rate() and
increase() read as a counter reset (the client even drops ``_sum`` when a bucket is negative). So the sum of
returns is exported as two monotonic counters, the positive part and the magnitude of the negative part; the
mean return of any window and any group is exact and aggregatable::

    (sum by (level) (increase(tag_episode_reward_positive_total[10m]))
       - sum by (level) (increase(tag_episode_reward_negative_total[10m])))
      / sum by (level) (increase(tag_episodes_total[10m]))

which is what the dashboards, the recording rule ``tag_level:tag_episode_reward:mean10m`` and the
``TagRewardNotImproving`` alert use. The histogram (symmetric buckets roughly x3 apart, -1000..1000, settable with
``reward_buckets=``) serves coarse distributions; ``tag_episode_reward_last`` and ``tag_episode_reward_mean`` (mean
of the last ``reward_window`` episodes, computed in the process) are for a glance.

This module imports only the standard library and prometheus_client (no torch, no zmq).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.metrics_core import Metric

__all__ = [
    "ACT_BUCKETS",
    "LEARNER_ALIASES",
    "LEARNER_STATS",
    "ROUNDTRIP_BUCKETS",
    "MetricsPortError",
    "ProcessMetrics",
    "file_sd_target",
    "link_file_sd",
    "read_file_sd",
    "write_file_sd",
]

#: round trip of a message, send UP to receive DOWN: 50 us (loopback floor ~120 us) .. 1 s
ROUNDTRIP_BUCKETS: tuple[float, ...] = (
    50e-6,
    100e-6,
    200e-6,
    350e-6,
    500e-6,
    750e-6,
    1e-3,
    2e-3,
    3.5e-3,
    5e-3,
    7.5e-3,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
)
#: decision time of an agent / step time of an env: 100 us .. 10 s (an LLM agent sits at the top end)
ACT_BUCKETS: tuple[float, ...] = (
    100e-6,
    250e-6,
    500e-6,
    1e-3,
    2.5e-3,
    5e-3,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
STALENESS_TICK_BUCKETS: tuple[float, ...] = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)
STALENESS_SECONDS_BUCKETS: tuple[float, ...] = (*ACT_BUCKETS, 30.0)
REWARD_BUCKETS: tuple[float, ...] = (
    -1000,
    -300,
    -100,
    -30,
    -10,
    -3,
    -1,
    0,
    1,
    3,
    10,
    30,
    100,
    300,
    1000,
)
LENGTH_BUCKETS: tuple[float, ...] = (1, 10, 25, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
UPDATE_BUCKETS: tuple[float, ...] = (
    1e-3,
    5e-3,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
LLM_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

#: learner statistics exported as their own gauge ``tag_learner_<key>``; other keys of :meth:`learner`'s dict go to
#: ``tag_learner_stat{stat=key}``; ``update_seconds`` feeds the ``tag_update_duration_seconds`` histogram instead.
LEARNER_STATS: tuple[str, ...] = (
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "explained_variance",
    "grad_norm",
    "lr",
    "loss",
)

#: other names learners use for a statistic of LEARNER_STATS (PPO reports CleanRL's ``clipfrac``): reported as the
#: named gauge, so ``tag_learner_clip_fraction`` is the one series for it whatever the learner calls it
LEARNER_ALIASES: dict[str, str] = {"clipfrac": "clip_fraction"}

_CONST_LABELS = ("run", "level", "agent", "host")


class MetricsPortError(OSError):
    """The metrics HTTP port cannot be bound (already in use, or not permitted)."""


class _ConstLabelCollector:
    """Re-exposes every metric of an inner registry with constant labels added and ``*_created`` dropped."""

    def __init__(self, inner: CollectorRegistry, labels: Mapping[str, str]):
        self._inner = inner
        self._labels = dict(labels)

    def collect(self) -> Iterator[Metric]:
        const = self._labels
        for metric in self._inner.collect():
            out = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            out.samples = [
                s._replace(labels={**const, **s.labels})
                for s in metric.samples
                if not s.name.endswith("_created")
            ]
            yield out


class ProcessMetrics:
    """The Prometheus metrics of one tag_actors process.

    ``role``: ``"env"`` or ``"agent"`` (``"launcher"`` or another short word is accepted too); ``name``: the
    process's agent name (label ``agent``); ``level``: 0 for the env, l >= 1 for agents.

    Hot-path methods (:meth:`tick`, :meth:`observe_act`, :meth:`frame_sent`, ...) cost about 1 us each; labelled
    children (per link, reason, outcome) are created on first use and cached.
    """

    def __init__(
        self,
        run: str,
        role: str,
        name: str,
        level: int,
        host: str,
        *,
        reward_buckets: Sequence[float] = REWARD_BUCKETS,
        reward_window: int = 100,
    ):
        if not role or not isinstance(role, str):
            raise ValueError(f"ProcessMetrics: role must be a non-empty string (env, agent), got {role!r}")
        for key, value in (("run", run), ("name", name), ("host", host)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"ProcessMetrics: {key} must be a non-empty string, got {value!r}")
        self.run = run
        self.role = role
        self.name = name
        self.level = int(level)
        self.host = host
        self.labels: dict[str, str] = {"run": run, "level": str(self.level), "agent": name, "host": host}

        inner = CollectorRegistry(auto_describe=True)
        self._inner = inner
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ConstLabelCollector(inner, self.labels))
        ProcessCollector(registry=inner)
        PlatformCollector(registry=inner)
        GCCollector(registry=inner)

        r = inner
        self._up = Gauge("tag_up", "1 while the process is up and serving its role", registry=r)
        self._info = Info("tag_process", "Static facts about this tag_actors process", registry=r)
        self._ticks = Counter("tag_ticks", "Ticks of this process (agent: decisions; env: steps)", registry=r)
        self._env_steps = Counter(
            "tag_env_steps", "Environment steps times batch size (env process)", registry=r
        )
        self._act = Histogram(
            "tag_act_duration_seconds",
            "Decision time of an agent, or step time of an env",
            buckets=ACT_BUCKETS,
            registry=r,
        )
        self._roundtrip = Histogram(
            "tag_message_roundtrip_seconds",
            "Time from sending a message UP a link to receiving the answer DOWN",
            ["link"],
            buckets=ROUNDTRIP_BUCKETS,
            registry=r,
        )
        self._frames_sent = Counter("tag_frames_sent", "Frames sent", ["link"], registry=r)
        self._frames_received = Counter("tag_frames_received", "Frames received", ["link"], registry=r)
        self._bytes_sent = Counter("tag_bytes_sent", "Payload bytes sent", ["link"], registry=r)
        self._bytes_received = Counter("tag_bytes_received", "Payload bytes received", ["link"], registry=r)
        self._bad_frames = Counter(
            "tag_bad_frames", "Malformed or refused frames (dropped)", ["link", "reason"], registry=r
        )
        self._queue_depth = Gauge("tag_queue_depth", "Messages waiting on a link", ["link"], registry=r)
        self._stale_ticks = Histogram(
            "tag_instruction_staleness_ticks",
            "Age in ticks of the parent instruction an agent acted on",
            buckets=STALENESS_TICK_BUCKETS,
            registry=r,
        )
        self._stale_seconds = Histogram(
            "tag_instruction_staleness_seconds",
            "Age in seconds of the parent instruction an agent acted on",
            buckets=STALENESS_SECONDS_BUCKETS,
            registry=r,
        )
        self._episodes = Counter("tag_episodes", "Finished episodes", registry=r)
        self._reward_pos = Counter(
            "tag_episode_reward_positive", "Sum of the positive episode returns", registry=r
        )
        self._reward_neg = Counter(
            "tag_episode_reward_negative", "Sum of the magnitudes of the negative episode returns", registry=r
        )
        self._reward = Histogram(
            "tag_episode_reward",
            "Distribution of episode returns (mean over a window: see tag_episode_reward_positive_total)",
            buckets=tuple(reward_buckets),
            registry=r,
        )
        self._reward_last = Gauge(
            "tag_episode_reward_last", "Return of the last finished episode", registry=r
        )
        self._reward_mean = Gauge(
            "tag_episode_reward_mean", f"Mean return of the last {int(reward_window)} episodes", registry=r
        )
        self._reward_window: deque[float] = deque(maxlen=max(1, int(reward_window)))
        self._length = Histogram(
            "tag_episode_length", "Episode length in ticks", buckets=LENGTH_BUCKETS, registry=r
        )
        self._length_last = Gauge(
            "tag_episode_length_last", "Length of the last finished episode", registry=r
        )
        self._learner_gauges = {
            key: Gauge(f"tag_learner_{key}", f"Learner statistic {key} (last update)", registry=r)
            for key in LEARNER_STATS
        }
        self._learner_other = Gauge(
            "tag_learner_stat", "Other learner statistics (last update)", ["stat"], registry=r
        )
        self._update = Histogram(
            "tag_update_duration_seconds",
            "Duration of one learner update",
            buckets=UPDATE_BUCKETS,
            registry=r,
        )
        self._updates = Counter("tag_updates", "Learner updates", registry=r)
        self._checkpoint = Gauge(
            "tag_checkpoint_timestamp_seconds", "Unix time of the last checkpoint (0: none yet)", registry=r
        )
        self._restarts = Counter("tag_process_restarts", "Restarts of this process", registry=r)
        self._llm_requests = Counter("tag_llm_requests", "LLM calls by outcome", ["outcome"], registry=r)
        self._llm_latency = Histogram(
            "tag_llm_latency_seconds", "Latency of one LLM call", buckets=LLM_BUCKETS, registry=r
        )
        self._llm_tokens = Counter("tag_llm_tokens", "LLM tokens", ["kind"], registry=r)
        self._llm_prompt = self._llm_tokens.labels("prompt")
        self._llm_completion = self._llm_tokens.labels("completion")

        # caches of bound children: link -> child(ren)
        self._c_roundtrip: dict[str, Any] = {}
        self._c_sent: dict[str, tuple[Any, Any]] = {}
        self._c_received: dict[str, tuple[Any, Any]] = {}
        self._c_queue: dict[str, Any] = {}
        self._c_bad: dict[tuple[str, str], Any] = {}
        self._c_llm: dict[str, Any] = {}
        self._c_other: dict[str, Any] = {}
        self._c_lock = threading.Lock()

        # bound methods of the unlabelled hot-path metrics
        self._ticks_inc = self._ticks.inc
        self._env_steps_inc = self._env_steps.inc
        self._act_observe = self._act.observe

        self._httpd: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        self.addr: str | None = None

    # ------------------------------------------------------------------ serving
    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``addr:port`` in a daemon thread; ``port=0`` picks a free port.

        Returns the bound port. A port already in use (or otherwise not bindable) raises
        :class:`MetricsPortError` naming the address, the port and this process.
        """
        if self._httpd is not None:
            raise RuntimeError(f"ProcessMetrics {self.name!r}: already serving on {self.addr}:{self.port}")
        try:
            httpd, thread = start_http_server(int(port), addr=addr, registry=self.registry)
        except OSError as exc:
            raise MetricsPortError(
                exc.errno,
                f"metrics port {port} on {addr} cannot be bound for process {self.name!r} "
                f"(role {self.role}, level {self.level}, run {self.run!r}): {exc.strerror or exc}; "
                f"another process (maybe another run) is using it: choose another port, or port 0 for a free one",
            ) from exc
        self._httpd, self._thread = httpd, thread
        self.port = int(httpd.server_address[1])
        self.addr = addr
        return self.port

    def close(self) -> None:
        """Stop the HTTP server (if any). Safe to call twice."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str | None:
        """``http://addr:port/metrics`` once serving, else None."""
        if self.port is None:
            return None
        return f"http://{self.addr}:{self.port}/metrics"

    def exposition(self) -> bytes:
        """The text exposition (what a scrape returns), without HTTP."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def file_sd_target(self, addr: str | None = None) -> dict[str, Any]:
        """This process as one file_sd target (needs :meth:`serve` first)."""
        if self.port is None:
            raise RuntimeError(f"ProcessMetrics {self.name!r}: serve() first")
        return file_sd_target(
            addr or self.addr or "127.0.0.1",
            self.port,
            run=self.run,
            level=self.level,
            agent=self.name,
            host=self.host,
            role=self.role,
        )

    # ------------------------------------------------------------------ lifecycle
    def set_up(self) -> None:
        """``tag_up`` = 1 and the static ``tag_process_info``. Call once the process serves its role."""
        from tag_actors import __version__

        self._info.info(
            {
                "role": self.role,
                "pid": str(os.getpid()),
                "python": platform.python_version(),
                "version": __version__,
            }
        )
        self._up.set(1)

    def set_down(self) -> None:
        """``tag_up`` = 0 (clean shutdown in progress)."""
        self._up.set(0)

    def restart(self, n: int = 1) -> None:
        """Count ``n`` restarts (``tag_process_restarts_total``). In a process the supervisor started again after
        a crash, call it before :meth:`serve` with the number of restarts so far (so its first scrape shows it);
        a launcher with its own ProcessMetrics may instead call it once per child restart."""
        self._restarts.inc(n)

    def checkpoint_saved(self) -> None:
        """``tag_checkpoint_timestamp_seconds`` = now."""
        self._checkpoint.set(time.time())

    # ------------------------------------------------------------------ hot path
    def tick(self, n: int = 1) -> None:
        self._ticks_inc(n)

    def env_steps(self, n: int) -> None:
        self._env_steps_inc(n)

    def observe_act(self, seconds: float) -> None:
        self._act_observe(seconds)

    def observe_roundtrip(self, link: str, seconds: float) -> None:
        child = self._c_roundtrip.get(link)
        if child is None:
            child = self._bind(self._c_roundtrip, link, lambda: self._roundtrip.labels(link))
        child.observe(seconds)

    def frame_sent(self, link: str, nbytes: int) -> None:
        pair = self._c_sent.get(link)
        if pair is None:
            pair = self._bind(
                self._c_sent, link, lambda: (self._frames_sent.labels(link), self._bytes_sent.labels(link))
            )
        pair[0].inc()
        pair[1].inc(nbytes)

    def frame_received(self, link: str, nbytes: int) -> None:
        pair = self._c_received.get(link)
        if pair is None:
            pair = self._bind(
                self._c_received,
                link,
                lambda: (self._frames_received.labels(link), self._bytes_received.labels(link)),
            )
        pair[0].inc()
        pair[1].inc(nbytes)

    def bad_frame(self, link: str, reason: str) -> None:
        key = (link, reason)
        child = self._c_bad.get(key)
        if child is None:
            child = self._bind(self._c_bad, key, lambda: self._bad_frames.labels(link, reason))
        child.inc()

    def queue_depth(self, link: str, n: int) -> None:
        child = self._c_queue.get(link)
        if child is None:
            child = self._bind(self._c_queue, link, lambda: self._queue_depth.labels(link))
        child.set(n)

    def staleness(self, ticks: float, seconds: float) -> None:
        self._stale_ticks.observe(ticks)
        self._stale_seconds.observe(seconds)

    # ------------------------------------------------------------------ per episode / update
    def episode(self, reward: float, length: int) -> None:
        """A finished episode of this process: its return (summed reward) and its length in ticks."""
        reward = float(reward)
        self._episodes.inc()
        if reward >= 0:
            self._reward_pos.inc(reward)
        else:
            self._reward_neg.inc(-reward)
        self._reward.observe(reward)
        self._reward_last.set(reward)
        window = self._reward_window
        window.append(reward)
        self._reward_mean.set(sum(window) / len(window))
        self._length.observe(length)
        self._length_last.set(length)

    def learner(self, stats: Mapping[str, float]) -> None:
        """One learner update: known keys (LEARNER_STATS, or an alias of one in LEARNER_ALIASES) ->
        ``tag_learner_<key>``; ``update_seconds`` -> ``tag_update_duration_seconds``; other numeric keys ->
        ``tag_learner_stat{stat=key}``. Counts ``tag_updates_total``."""
        gauges = self._learner_gauges
        for key, value in stats.items():
            if key == "update_seconds":
                self._update.observe(float(value))
                continue
            gauge = gauges.get(LEARNER_ALIASES.get(key, key))
            if gauge is None:
                gauge = self._c_other.get(key)
                if gauge is None:
                    gauge = self._bind(self._c_other, key, lambda k=key: self._learner_other.labels(k))
            gauge.set(float(value))
        self._updates.inc()

    def llm_call(self, outcome: str, seconds: float, prompt_tokens: int, completion_tokens: int) -> None:
        child = self._c_llm.get(outcome)
        if child is None:
            child = self._bind(self._c_llm, outcome, lambda: self._llm_requests.labels(outcome))
        child.inc()
        self._llm_latency.observe(seconds)
        if prompt_tokens:
            self._llm_prompt.inc(prompt_tokens)
        if completion_tokens:
            self._llm_completion.inc(completion_tokens)

    # ------------------------------------------------------------------ internals
    def _bind(self, cache: dict, key: Any, make: Any) -> Any:
        with self._c_lock:
            child = cache.get(key)
            if child is None:
                child = make()
                cache[key] = child
            return child


# ---------------------------------------------------------------------- file_sd
def file_sd_target(
    addr: str, port: int, *, run: str, level: int | str, agent: str, host: str, role: str
) -> dict[str, Any]:
    """One Prometheus file_sd entry: ``{"targets": ["addr:port"], "labels": {run, level, agent, host, role}}``."""
    return {
        "targets": [f"{addr}:{int(port)}"],
        "labels": {"run": run, "level": str(level), "agent": agent, "host": host, "role": role},
    }


def _check_targets(targets: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(targets):
        if not isinstance(entry, Mapping) or "targets" not in entry:
            raise ValueError(f"file_sd entry {i} must be a mapping with a 'targets' list, got {entry!r}")
        addrs = entry["targets"]
        if isinstance(addrs, str) or not all(isinstance(a, str) and ":" in a for a in addrs):
            raise ValueError(
                f"file_sd entry {i}: 'targets' must be a list of 'host:port' strings, got {addrs!r}"
            )
        labels = entry.get("labels", {}) or {}
        # Prometheus requires string label values (an int level would make the whole file invalid)
        out.append({"targets": list(addrs), "labels": {str(k): str(v) for k, v in labels.items()}})
    return out


def write_file_sd(path: str | Path, targets: Iterable[Mapping[str, Any]]) -> Path:
    """Write a Prometheus file_sd JSON list atomically (temporary file in the same folder, then os.replace),
    so Prometheus never reads a half-written file. Label values are written as strings. Returns the path."""
    path = Path(path)
    data = _check_targets(targets)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def read_file_sd(path: str | Path) -> list[dict[str, Any]]:
    """Read a file_sd JSON list (as written by :func:`write_file_sd`); a missing file reads as []."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    data = json.loads(text) if text.strip() else []
    if not isinstance(data, list):
        raise ValueError(f"{path}: a file_sd file holds a JSON list, got {type(data).__name__}")
    return _check_targets(data)


def link_file_sd(
    run_file: str | Path, targets_dir: str | Path | None = None, name: str | None = None
) -> Path:
    """Point ``monitoring/targets/<name>.json`` at a run's file_sd file with a *relative* symlink (works on the
    host and inside the docker-compose containers, which mount ``runs/`` beside the config). Returns the link."""
    run_file = Path(run_file).resolve()
    if targets_dir is None:
        targets_dir = Path(__file__).resolve().parent.parent / "monitoring" / "targets"
    targets_dir = Path(targets_dir).resolve()
    targets_dir.mkdir(parents=True, exist_ok=True)
    link = targets_dir / f"{name or run_file.parent.name}.json"
    rel = os.path.relpath(run_file, targets_dir)
    tmp = targets_dir / f".{link.name}.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(rel)
    os.replace(tmp, link)
    return link


def default_host() -> str:
    """The host label to use when the config does not name one."""
    return socket.gethostname() or "localhost"


if __name__ == "__main__":  # pragma: no cover - manual check: python -m tag_actors.metrics
    m = ProcessMetrics("demo", "agent", "demo_agent", 1, default_host())
    m.set_up()
    m.tick()
    sys.stdout.write(m.exposition().decode())
