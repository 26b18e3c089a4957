"""Prometheus metrics for every tag_actors process (env, agents; the launcher's own are in run_metrics.py).

One :class:`ProcessMetrics` per OS process. It owns a *private* registry (never the client's global one), so
several instances can live in one interpreter (tests, in-process runs) without clashing, and it serves that
registry over HTTP with :meth:`ProcessMetrics.serve`.

Labels. Every exposed series carries ``run`` (the run's unique id: its folder name plus start time, so two runs
of one config never share a series), ``config`` (the config's ``run.name``), ``level``, ``agent`` (the process
name) and ``host``. They are added at scrape time by a wrapping collector, so the hot-path metrics themselves are
label-free or carry only ``link``/``reason``/... children bound once and cached. Every other label value comes
from a bounded set chosen here or by the plan: ``link`` is the configured name of the peer (a stranger that
connects is counted under ``unknown@<endpoint owner>``, never under the identity it chose), ``reason`` one of
:data:`BAD_FRAME_REASONS` (anything else becomes ``other``).

Counters that count. A labelled counter created at its first increment reads 1 at its first scrape, and
``increase()`` sees no increase: the first bad frame would be invisible. :meth:`ProcessMetrics.declare_links`
creates every (link x reason) child at 0 before the first frame, and each feature's series exist from the moment
the feature is enabled.

Series only for what a process does. A process exposes the core series (up, info, ticks, act time, frames, bytes,
bad frames, episodes) plus the *features* it has: ``env`` (env steps), ``decisions`` (an agent's decisions and
queue depth), ``roundtrip`` (an agent with a lockstep parent), ``staleness`` (an agent under an async parent),
``learner`` (a learning agent), ``checkpoint`` (agents), ``llm`` (an LLM agent). The actor enables them from the
plan and the agent; a method of a feature that was not enabled enables it on first use (a safety net: nothing is
lost, the series is only born late).

Series (all prefixed ``tag_``; counters end in ``_total`` on the wire):

=========================================  =========  ==========================================================
name                                       type       meaning
=========================================  =========  ==========================================================
tag_up                                     gauge      1 once :meth:`set_up` ran, 0 after :meth:`set_down` (a
                                                      process that stops cleanly reports 0 before it goes)
tag_process_info{role,pid,python,version}  info       static facts: role, pid, python, tag_actors version
tag_ticks_total                            counter    env ticks this process took part in (every process of a
                                                      run sees every env tick: env and agent rates are equal)
tag_decisions_total                        counter    decisions of an agent (act() calls; an agent of period p
                                                      decides every p ticks) [decisions]
tag_act_duration_seconds                   histogram  decision time (agent) or step time (env); 100 us .. 10 s
tag_env_steps_total                        counter    env steps x batch [env]
tag_queue_depth{link}                      gauge      ticks an async agent is behind its children [decisions]
tag_message_roundtrip_seconds{link}        histogram  send UP to receive DOWN on a link; 50 us .. 1 s [roundtrip]
tag_frames_sent_total{link}                counter    frames sent on a link
tag_frames_received_total{link}            counter    frames received on a link
tag_bytes_sent_total{link}                 counter    payload bytes sent on a link
tag_bytes_received_total{link}             counter    payload bytes received on a link
tag_bad_frames_total{link,reason}          counter    malformed / refused frames, dropped
tag_instruction_staleness_ticks            histogram  age of the parent instruction used, in ticks [staleness]
tag_instruction_staleness_seconds          histogram  the same in seconds [staleness]
tag_episodes_total                         counter    finished episodes
tag_episode_reward_positive_total          counter    sum of the positive episode returns
tag_episode_reward_negative_total          counter    sum of the magnitudes of the negative episode returns
tag_episode_reward                         histogram  distribution of episode returns (buckets, _count; no _sum)
tag_episode_reward_last                    gauge      return of the last finished episode
tag_episode_reward_mean                    gauge      mean return of the last ``reward_window`` (100) episodes
tag_episode_length                         histogram  episode length in ticks
tag_episode_length_last                    gauge      length of the last finished episode
tag_learner_<stat>                         gauge      last value of a known learner statistic (see LEARNER_STATS;
                                                      ``clipfrac`` is read as ``clip_fraction``) [learner]
tag_learner_stat{stat}                     gauge      last value of any other learner statistic [learner]
tag_update_duration_seconds                histogram  time of one learner update; 1 ms .. 120 s [learner]
tag_updates_total                          counter    learner updates [learner]
tag_checkpoint_timestamp_seconds           gauge      unix time of the last checkpoint (0 = none yet) [checkpoint]
tag_process_restarts_total                 counter    restarts (see :meth:`restart`)
tag_llm_requests_total{outcome}            counter    LLM calls by outcome (LLM_OUTCOMES, else other) [llm]
tag_llm_latency_seconds                    histogram  LLM call latency; 10 ms .. 120 s [llm]
tag_llm_tokens_total{kind}                 counter    kind = prompt | completion [llm]
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

Serving over HTTP and the file_sd lists live in :mod:`tag_actors.metrics_serving` (re-exported here). Both
modules import only the standard library and prometheus_client (no torch, no zmq).
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
)
from prometheus_client.metrics_core import Metric

from tag_actors.metrics_serving import (
    MetricsPortError,
    ScrapeClock,
    file_sd_target,
    link_file_sd,
    read_file_sd,
    serve_registry,
    stop_serving,
    write_file_sd,
)

__all__ = [
    "ACT_BUCKETS",
    "BAD_FRAME_REASONS",
    "FEATURES",
    "LEARNER_ALIASES",
    "LEARNER_STATS",
    "ROUNDTRIP_BUCKETS",
    "STRANGER_REASONS",
    "MetricsPortError",
    "ProcessMetrics",
    "file_sd_target",
    "link_file_sd",
    "read_file_sd",
    "serve_registry",
    "unknown_link",
    "write_file_sd",
]

#: round trip of a message, send UP to receive DOWN: 50 us (loopback floor ~120 us) .. 1 s
ROUNDTRIP_BUCKETS: tuple[float, ...] = (
    50e-6, 100e-6, 200e-6, 350e-6, 500e-6, 750e-6, 1e-3, 2e-3, 3.5e-3, 5e-3, 7.5e-3, 0.01, 0.02, 0.05, 0.1,
    0.2, 0.5, 1.0,
)
#: decision time of an agent / step time of an env: 100 us .. 10 s (an LLM agent sits at the top end)
ACT_BUCKETS: tuple[float, ...] = (
    100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
STALENESS_TICK_BUCKETS: tuple[float, ...] = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)
STALENESS_SECONDS_BUCKETS: tuple[float, ...] = (*ACT_BUCKETS, 30.0)
REWARD_BUCKETS: tuple[float, ...] = (-1000, -300, -100, -30, -10, -3, -1, 0, 1, 3, 10, 30, 100, 300, 1000)
LENGTH_BUCKETS: tuple[float, ...] = (1, 10, 25, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
UPDATE_BUCKETS: tuple[float, ...] = (
    1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)
LLM_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

#: learner statistics exported as their own gauge ``tag_learner_<key>``; other keys of :meth:`learner`'s dict go to
#: ``tag_learner_stat{stat=key}``; ``update_seconds`` feeds the ``tag_update_duration_seconds`` histogram instead.
LEARNER_STATS: tuple[str, ...] = (
    "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance", "grad_norm",
    "lr", "loss",
)

#: other names learners use for a statistic of LEARNER_STATS (PPO reports CleanRL's ``clipfrac``): reported as the
#: named gauge, so ``tag_learner_clip_fraction`` is the one series for it whatever the learner calls it
LEARNER_ALIASES: dict[str, str] = {"clipfrac": "clip_fraction"}

_CONST_LABELS = ("run", "config", "level", "agent", "host")

#: why a frame from a known peer was dropped: the BadFrame reasons of tag_actors.wire (PROTOCOL.md §13; ``shape``,
#: ``batch`` and ``meta`` break the handshake's agreement, ``tick`` is a DOWN for another tick), plus ``sender``
#: (signed by someone else), ``unexpected`` (a kind not awaited now) and ``other`` (any reason not listed here)
BAD_FRAME_REASONS: tuple[str, ...] = (
    "empty", "oversized", "header", "kind", "version", "frames", "array", "dtype", "truncated", "content",
    "shape", "batch", "meta", "tick", "sender", "unexpected", "other",
)
#: why a frame from a stranger (an identity other than the configured peer) was dropped: ``protocol`` is a
#: connection that failed its ZMTP handshake (garbage on a raw TCP socket), ``auth`` one that failed CURVE
STRANGER_REASONS: tuple[str, ...] = ("unknown_peer", "auth", "protocol")
#: LLM call outcomes counted under their own name: tag_actors.agents.llm.OUTCOMES (anything else: ``other``)
LLM_OUTCOMES: tuple[str, ...] = ("ok", "timeout", "http_error", "connection_error", "bad_reply", "other")
#: optional groups of series a process may have (see the module docstring)
FEATURES: frozenset[str] = frozenset(
    {"env", "decisions", "roundtrip", "staleness", "learner", "checkpoint", "llm"}
)
DEFAULT_FEATURES: dict[str, frozenset[str]] = {
    "env": frozenset({"env"}),
    "agent": frozenset({"decisions", "checkpoint"}),
}


def unknown_link(endpoint_owner: str) -> str:
    """The ``link`` label of strangers on the endpoint served by ``endpoint_owner`` (one per endpoint)."""
    return f"unknown@{endpoint_owner}"


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

    ``role``: ``"env"`` or ``"agent"``; ``name``: the process's agent name (label ``agent``); ``level``: 0 for the
    env, l >= 1 for agents; ``run``: the run's unique id; ``config``: the config name (default: ``run``);
    ``features``: the optional series groups (default: by role, see DEFAULT_FEATURES; more with :meth:`enable`).

    Hot-path methods (:meth:`tick`, :meth:`observe_act`, :meth:`frame_sent`, ...) cost about 1 us each.
    """

    def __init__(
        self,
        run: str,
        role: str,
        name: str,
        level: int,
        host: str,
        *,
        config: str | None = None,
        features: Iterable[str] | None = None,
        reward_buckets: Sequence[float] = REWARD_BUCKETS,
        reward_window: int = 100,
    ):
        if not role or not isinstance(role, str):
            raise ValueError(f"ProcessMetrics: role must be a non-empty string (env, agent), got {role!r}")
        config = run if config is None else config
        for key, value in (("run", run), ("name", name), ("host", host), ("config", config)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"ProcessMetrics: {key} must be a non-empty string, got {value!r}")
        self.run = run
        self.config = config
        self.role = role
        self.name = name
        self.level = int(level)
        self.host = host
        self.labels: dict[str, str] = {
            "run": run,
            "config": config,
            "level": str(self.level),
            "agent": name,
            "host": host,
        }
        self.scrapes = ScrapeClock()

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
        self._ticks = Counter(
            "tag_ticks", "Env ticks this process took part in (the same rate in every process)", registry=r
        )
        self._act = Histogram(
            "tag_act_duration_seconds",
            "Decision time of an agent, or step time of an env",
            buckets=ACT_BUCKETS,
            registry=r,
        )
        self._frames_sent = Counter("tag_frames_sent", "Frames sent", ["link"], registry=r)
        self._frames_received = Counter("tag_frames_received", "Frames received", ["link"], registry=r)
        self._bytes_sent = Counter("tag_bytes_sent", "Payload bytes sent", ["link"], registry=r)
        self._bytes_received = Counter("tag_bytes_received", "Payload bytes received", ["link"], registry=r)
        self._bad_frames = Counter(
            "tag_bad_frames", "Malformed or refused frames (dropped)", ["link", "reason"], registry=r
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
        self._restarts = Counter("tag_process_restarts", "Restarts of this process", registry=r)

        # caches of bound children: link -> child(ren)
        self._c_roundtrip: dict[str, Any] = {}
        self._c_sent: dict[str, tuple[Any, Any]] = {}
        self._c_received: dict[str, tuple[Any, Any]] = {}
        self._c_queue: dict[str, Any] = {}
        self._c_bad: dict[tuple[str, str], Any] = {}
        self._c_llm: dict[str, Any] = {}
        self._c_other: dict[str, Any] = {}
        self._c_lock = threading.Lock()
        self._known_links: set[str] = set()

        # bound methods of the unlabelled hot-path metrics
        self._ticks_inc = self._ticks.inc
        self._act_observe = self._act.observe

        self.features: set[str] = set()
        self.enable(*(DEFAULT_FEATURES.get(role, frozenset()) if features is None else features))

        self._httpd: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        self.addr: str | None = None

    # ------------------------------------------------------------------ features
    def enable(self, *features: str) -> None:
        """Create the series of optional features (see FEATURES); enabling one twice is a no-op."""
        unknown = set(features) - FEATURES
        if unknown:
            raise ValueError(f"ProcessMetrics: unknown feature(s) {sorted(unknown)}; known: {sorted(FEATURES)}")
        with self._c_lock:
            for feature in features:
                if feature not in self.features:
                    getattr(self, f"_make_{feature}")(self._inner)
                    self.features.add(feature)

    def _make_env(self, r: CollectorRegistry) -> None:
        self._env_steps = Counter("tag_env_steps", "Environment steps times batch size", registry=r)
        self._env_steps_inc = self._env_steps.inc

    def _make_decisions(self, r: CollectorRegistry) -> None:
        self._decisions = Counter("tag_decisions", "Decisions of an agent (act() calls)", registry=r)
        self._decisions_inc = self._decisions.inc
        self._queue_depth = Gauge(
            "tag_queue_depth", "Ticks an async agent is behind its children", ["link"], registry=r
        )

    def _make_roundtrip(self, r: CollectorRegistry) -> None:
        self._roundtrip = Histogram(
            "tag_message_roundtrip_seconds",
            "Time from sending a message UP a link to receiving the answer DOWN",
            ["link"],
            buckets=ROUNDTRIP_BUCKETS,
            registry=r,
        )

    def _make_staleness(self, r: CollectorRegistry) -> None:
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

    def _make_learner(self, r: CollectorRegistry) -> None:
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

    def _make_checkpoint(self, r: CollectorRegistry) -> None:
        self._checkpoint = Gauge(
            "tag_checkpoint_timestamp_seconds", "Unix time of the last checkpoint (0: none yet)", registry=r
        )

    def _make_llm(self, r: CollectorRegistry) -> None:
        self._llm_requests = Counter("tag_llm_requests", "LLM calls by outcome", ["outcome"], registry=r)
        for outcome in LLM_OUTCOMES:
            self._c_llm[outcome] = self._llm_requests.labels(outcome)
        self._llm_latency = Histogram(
            "tag_llm_latency_seconds", "Latency of one LLM call", buckets=LLM_BUCKETS, registry=r
        )
        self._llm_tokens = Counter("tag_llm_tokens", "LLM tokens", ["kind"], registry=r)
        self._llm_prompt = self._llm_tokens.labels("prompt")
        self._llm_completion = self._llm_tokens.labels("completion")

    def _need(self, feature: str) -> None:
        if feature not in self.features:
            self.enable(feature)

    def declare_links(self, peers: Iterable[str], served: Iterable[str] = ()) -> None:
        """Create every link series at 0 before the first frame: frames and bytes per configured peer, bad frames
        per (peer, reason in BAD_FRAME_REASONS) and per (``unknown@<owner>``, reason in STRANGER_REASONS) for each
        endpoint this process serves (``served``: the names it answers as on them)."""
        for peer in peers:
            self._known_links.add(peer)
            self._sent_pair(peer)
            self._received_pair(peer)
            for reason in BAD_FRAME_REASONS:
                self._bad_child(peer, reason)
        for owner in served:
            link = unknown_link(owner)
            self._known_links.add(link)
            for reason in STRANGER_REASONS:
                self._bad_child(link, reason)

    def declare_roundtrip(self, link: str) -> None:
        """Create the round-trip histogram of ``link`` (the parent's) before its first observation."""
        self._need("roundtrip")
        self._bind(self._c_roundtrip, link, lambda: self._roundtrip.labels(link))

    # ------------------------------------------------------------------ serving
    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``addr:port`` in a daemon thread; ``port=0`` picks a free port.

        Returns the bound port. A port already in use (or otherwise not bindable) raises
        :class:`MetricsPortError` naming the address, the port and this process.
        """
        if self._httpd is not None:
            raise RuntimeError(f"ProcessMetrics {self.name!r}: already serving on {self.addr}:{self.port}")
        self._httpd, self._thread, self.port = serve_registry(
            self.registry,
            port,
            addr,
            f"process {self.name!r} (role {self.role}, level {self.level}, run {self.run!r})",
            on_sent=self.scrapes.tick,
        )
        self.addr = addr
        return self.port

    def close(self) -> None:
        """Stop the HTTP server (if any). Safe to call twice."""
        httpd, self._httpd = self._httpd, None
        thread, self._thread = self._thread, None
        stop_serving(httpd, thread)

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
            config=self.config,
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

    def set_down(self, deliver_s: float = 0.0) -> bool:
        """``tag_up`` = 0: this process stops on purpose (the alert TagAgentDown ignores a process whose last
        tag_up was 0). With ``deliver_s`` > 0, wait (at most that long, and only if something scrapes this
        process) until the 0 has been scraped; returns whether it was."""
        self._up.set(0)
        return self.scrapes.wait_next(deliver_s) if deliver_s > 0 else False

    def restart(self, n: int = 1) -> None:
        """Count ``n`` restarts (``tag_process_restarts_total``). In a process the supervisor started again after
        a crash, call it before :meth:`serve` with the number of restarts so far (so its first scrape shows it)."""
        self._restarts.inc(n)

    def checkpoint_saved(self) -> None:
        """``tag_checkpoint_timestamp_seconds`` = now."""
        self._need("checkpoint")
        self._checkpoint.set(time.time())

    # ------------------------------------------------------------------ hot path
    def tick(self, n: int = 1) -> None:
        """``n`` env ticks seen by this process."""
        self._ticks_inc(n)

    def decision(self, seconds: float) -> None:
        """One decision of an agent that took ``seconds`` (counts it and observes the act time)."""
        if "decisions" not in self.features:
            self.enable("decisions")
        self._decisions_inc()
        self._act_observe(seconds)

    def env_steps(self, n: int) -> None:
        if "env" not in self.features:
            self.enable("env")
        self._env_steps_inc(n)

    def observe_act(self, seconds: float) -> None:
        """The env's step time (agents: use :meth:`decision`, which also counts the decision)."""
        self._act_observe(seconds)

    def observe_roundtrip(self, link: str, seconds: float) -> None:
        child = self._c_roundtrip.get(link)
        if child is None:
            self._need("roundtrip")
            child = self._bind(self._c_roundtrip, link, lambda: self._roundtrip.labels(link))
        child.observe(seconds)

    def _sent_pair(self, link: str) -> tuple[Any, Any]:
        return self._bind(
            self._c_sent, link, lambda: (self._frames_sent.labels(link), self._bytes_sent.labels(link))
        )

    def _received_pair(self, link: str) -> tuple[Any, Any]:
        return self._bind(
            self._c_received,
            link,
            lambda: (self._frames_received.labels(link), self._bytes_received.labels(link)),
        )

    def _bad_child(self, link: str, reason: str) -> Any:
        return self._bind(self._c_bad, (link, reason), lambda: self._bad_frames.labels(link, reason))

    def frame_sent(self, link: str, nbytes: int) -> None:
        pair = self._c_sent.get(link) or self._sent_pair(link)
        pair[0].inc()
        pair[1].inc(nbytes)

    def frame_received(self, link: str, nbytes: int) -> None:
        pair = self._c_received.get(link) or self._received_pair(link)
        pair[0].inc()
        pair[1].inc(nbytes)

    def bad_frame(self, link: str, reason: str) -> None:
        """A dropped frame. ``reason`` outside BAD_FRAME_REASONS / STRANGER_REASONS counts as ``other``; once
        links are declared, a ``link`` that is not one of them counts as ``unknown`` (labels stay bounded)."""
        child = self._c_bad.get((link, reason))
        if child is None:
            if self._known_links and link not in self._known_links:
                link = "unknown"
            if reason not in BAD_FRAME_REASONS and reason not in STRANGER_REASONS:
                reason = "other"
            child = self._bad_child(link, reason)
        child.inc()

    def queue_depth(self, link: str, n: int) -> None:
        child = self._c_queue.get(link)
        if child is None:
            self._need("decisions")
            child = self._bind(self._c_queue, link, lambda: self._queue_depth.labels(link))
        child.set(n)

    def staleness(self, ticks: float, seconds: float) -> None:
        if "staleness" not in self.features:
            self.enable("staleness")
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
        self._need("learner")
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
        self._need("llm")
        child = self._c_llm.get(outcome) or self._c_llm["other"]
        child.inc()
        self._llm_latency.observe(seconds)
        if prompt_tokens:
            self._llm_prompt.inc(prompt_tokens)
        if completion_tokens:
            self._llm_completion.inc(completion_tokens)

    # ------------------------------------------------------------------ internals
    def _bind(self, cache: dict, key: Any, make: Any) -> Any:
        child = cache.get(key)
        if child is not None:
            return child
        with self._c_lock:
            child = cache.get(key)
            if child is None:
                child = make()
                cache[key] = child
            return child


def default_host() -> str:
    """The host label to use when the config does not name one."""
    return socket.gethostname() or "localhost"


if __name__ == "__main__":  # pragma: no cover - manual check: python -m tag_actors.metrics
    m = ProcessMetrics("demo", "agent", "demo_agent", 1, default_host())
    m.set_up()
    m.tick()
    sys.stdout.write(m.exposition().decode())
