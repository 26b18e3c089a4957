"""tag_actors.metrics and tag_actors.run_metrics: exposition over HTTP, port errors, file_sd round trip, bounded
labels and counters born at 0, decisions vs ticks, series per process type (a budget), the launcher's run state.
Fast (no Prometheus needed; tests/test_monitoring.py has the live ones)."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import zmq
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tag_actors.metrics import (
    BAD_FRAME_REASONS,
    FEATURES,
    LEARNER_STATS,
    STRANGER_REASONS,
    MetricsPortError,
    ProcessMetrics,
    file_sd_target,
    link_file_sd,
    read_file_sd,
    write_file_sd,
)

CONST = {"run": "t1", "config": "cfg", "level": "2", "agent": "mid_0", "host": "hostA"}


@pytest.fixture
def served():
    m = ProcessMetrics("t1", "agent", "mid_0", 2, "hostA", config="cfg", features=FEATURES)
    port = m.serve(0)
    yield m, port
    m.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        return r.read().decode()


def exercise(m: ProcessMetrics) -> None:
    m.set_up()
    m.tick()
    m.tick(3)
    m.env_steps(64)
    m.decision(0.002)
    m.observe_roundtrip("up", 0.00015)
    m.observe_roundtrip("down:a0", 0.3)
    m.frame_sent("up", 100)
    m.frame_sent("up", 50)
    m.frame_received("down:a0", 70)
    m.bad_frame("down:a0", "header")
    m.queue_depth("up", 4)
    m.staleness(2, 0.004)
    m.episode(12.5, 100)
    m.episode(-3.0, 50)
    m.learner(
        {
            "policy_loss": 0.1,
            "value_loss": 2.0,
            "entropy": 1.2,
            "approx_kl": 0.01,
            "lr": 3e-4,
            "update_seconds": 0.8,
            "custom_thing": 7.0,
        }
    )
    m.checkpoint_saved()
    m.restart()
    m.llm_call("ok", 0.08, 120, 15)
    m.llm_call("timeout", 5.0, 100, 0)


def samples_by_name(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def one(samples: dict, name: str, **labels):
    hits = [s for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (
        f"{name}{labels}: {len(hits)} samples ({[s.labels for s in samples.get(name, [])]})"
    )
    return hits[0].value


def test_exposition_names_labels_types(served):
    m, port = served
    assert m.url == f"http://127.0.0.1:{port}/metrics"
    exercise(m)
    text = scrape(port)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    s = samples_by_name(text)

    # every sample carries the constant labels
    for name, lst in s.items():
        for sample in lst:
            for k, v in CONST.items():
                assert sample.labels.get(k) == v, f"{name} lacks {k}={v}: {sample.labels}"
    # no *_created clutter
    assert not [n for n in s if n.endswith("_created")]

    # counters end in _total
    counters = [
        "tag_ticks",
        "tag_decisions",
        "tag_env_steps",
        "tag_frames_sent",
        "tag_frames_received",
        "tag_bytes_sent",
        "tag_bytes_received",
        "tag_bad_frames",
        "tag_episodes",
        "tag_updates",
        "tag_process_restarts",
        "tag_llm_requests",
        "tag_llm_tokens",
        "process_cpu_seconds",
    ]
    for c in counters:
        assert fams[c].type == "counter", c
        assert all(x.name == c + "_total" for x in fams[c].samples), c
    assert "tag_ticks_total" in text and "tag_bad_frames_total{" in text

    histograms = [
        "tag_act_duration_seconds",
        "tag_message_roundtrip_seconds",
        "tag_instruction_staleness_ticks",
        "tag_instruction_staleness_seconds",
        "tag_episode_length",
        "tag_update_duration_seconds",
        "tag_llm_latency_seconds",
    ]
    for h in histograms:
        assert fams[h].type == "histogram", h
        assert {h + "_bucket", h + "_sum", h + "_count"} <= set(s), h

    # returns can be negative: bucket + count, and the sum as two monotonic counters
    assert fams["tag_episode_reward"].type == "histogram"
    assert {"tag_episode_reward_bucket", "tag_episode_reward_count"} <= set(s)
    counters += ["tag_episode_reward_positive", "tag_episode_reward_negative"]
    for c in counters:
        assert fams[c].type == "counter", c

    gauges = [
        "tag_up",
        "tag_episode_reward_mean",
        "tag_queue_depth",
        "tag_episode_reward_last",
        "tag_episode_length_last",
        "tag_checkpoint_timestamp_seconds",
        "process_resident_memory_bytes",
    ]
    gauges += [f"tag_learner_{k}" for k in LEARNER_STATS] + ["tag_learner_stat"]
    for g in gauges:
        assert fams[g].type == "gauge", g

    assert one(s, "tag_up") == 1
    info = s["tag_process_info"][0].labels
    assert info["role"] == "agent" and info["pid"] and info["version"]
    assert one(s, "tag_ticks_total") == 4
    assert one(s, "tag_decisions_total") == 1
    assert one(s, "tag_env_steps_total") == 64
    assert one(s, "tag_frames_sent_total", link="up") == 2
    assert one(s, "tag_bytes_sent_total", link="up") == 150
    assert one(s, "tag_frames_received_total", link="down:a0") == 1
    assert one(s, "tag_bytes_received_total", link="down:a0") == 70
    assert one(s, "tag_bad_frames_total", link="down:a0", reason="header") == 1
    assert one(s, "tag_queue_depth", link="up") == 4
    assert one(s, "tag_message_roundtrip_seconds_count", link="up") == 1
    assert one(s, "tag_message_roundtrip_seconds_bucket", link="up", le="0.0002") == 1
    assert one(s, "tag_message_roundtrip_seconds_bucket", link="up", le="0.0001") == 0
    assert one(s, "tag_message_roundtrip_seconds_bucket", link="down:a0", le="0.5") == 1
    assert one(s, "tag_act_duration_seconds_count") == 1
    assert one(s, "tag_episodes_total") == 2
    assert one(s, "tag_episode_reward_positive_total") == pytest.approx(12.5)
    assert one(s, "tag_episode_reward_negative_total") == pytest.approx(3.0)
    assert one(s, "tag_episode_reward_count") == 2
    assert one(s, "tag_episode_reward_bucket", le="-1.0") == 1
    assert one(s, "tag_episode_reward_bucket", le="30.0") == 2
    assert one(s, "tag_episode_reward_last") == -3.0
    assert one(s, "tag_episode_reward_mean") == pytest.approx(4.75)
    assert one(s, "tag_episode_length_last") == 50
    assert one(s, "tag_learner_policy_loss") == pytest.approx(0.1)
    assert one(s, "tag_learner_lr") == pytest.approx(3e-4)
    assert one(s, "tag_learner_stat", stat="custom_thing") == 7.0
    assert one(s, "tag_update_duration_seconds_count") == 1
    assert one(s, "tag_updates_total") == 1
    assert one(s, "tag_checkpoint_timestamp_seconds") > 1.7e9
    assert one(s, "tag_process_restarts_total") == 1
    assert one(s, "tag_llm_requests_total", outcome="ok") == 1
    assert one(s, "tag_llm_requests_total", outcome="timeout") == 1
    assert one(s, "tag_llm_tokens_total", kind="prompt") == 220
    assert one(s, "tag_llm_tokens_total", kind="completion") == 15
    assert one(s, "tag_llm_latency_seconds_count") == 2
    assert one(s, "tag_instruction_staleness_ticks_count") == 1
    assert one(s, "process_resident_memory_bytes") > 1e6
    assert "python_info" in s


def test_histogram_bucket_ranges():
    m = ProcessMetrics("r", "env", "env", 0, "h")
    text = m.exposition().decode()
    assert 'tag_act_duration_seconds_bucket{agent="env",config="r",host="h",le="0.0001"' in text
    assert 'le="10.0"' in text
    m.enable("roundtrip")
    m.observe_roundtrip("up", 0.001)
    s = samples_by_name(m.exposition().decode())
    les = [float(x.labels["le"]) for x in s["tag_message_roundtrip_seconds_bucket"]]
    assert min(les) == pytest.approx(50e-6) and max(x for x in les if x != float("inf")) == 1.0
    act = [float(x.labels["le"]) for x in s["tag_act_duration_seconds_bucket"]]
    assert min(act) == pytest.approx(100e-6) and max(x for x in act if x != float("inf")) == 10.0


def test_two_instances_in_one_process_do_not_clash():
    a = ProcessMetrics("r", "agent", "a", 1, "h")
    b = ProcessMetrics("r", "agent", "b", 1, "h")
    a.tick(5)
    assert 'tag_ticks_total{agent="a",config="r",host="h",level="1",run="r"} 5.0' in a.exposition().decode()
    assert 'tag_ticks_total{agent="b",config="r",host="h",level="1",run="r"} 0.0' in b.exposition().decode()


def test_port_in_use_raises_named_error():
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        m = ProcessMetrics("r", "agent", "top_agent", 3, "h")
        with pytest.raises(MetricsPortError) as ei:
            m.serve(port)
        msg = str(ei.value)
        assert str(port) in msg and "top_agent" in msg and "in use" in msg.lower()
        assert ei.value.errno == errno.EADDRINUSE, ei.value.errno
        # the instance is still usable on another port
        got = m.serve(0)
        assert got != port
        m.close()


def test_serve_returns_bound_port_and_close():
    m = ProcessMetrics("r", "env", "env", 0, "h")
    port = m.serve(0)
    assert port > 0
    assert "tag_up" in scrape(port)
    m.close()
    m.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_file_sd_round_trip(tmp_path):
    m = ProcessMetrics("run7", "agent", "a0", 1, "hostB")
    m.serve(0)
    try:
        targets = [
            m.file_sd_target(),
            file_sd_target("127.0.0.1", 9100, run="run7", level=0, agent="env", host="hostB", role="env"),
        ]
    finally:
        m.close()
    path = tmp_path / "sub" / "file_sd.json"
    assert write_file_sd(path, targets) == path
    raw = json.loads(path.read_text())
    assert raw[0] == {
        "targets": [f"127.0.0.1:{m.port}"],
        "labels": {"run": "run7", "config": "run7", "level": "1", "agent": "a0", "host": "hostB", "role": "agent"},
    }
    assert raw[1]["labels"]["level"] == "0"  # label values are strings, as Prometheus requires
    assert read_file_sd(path) == raw
    # rewrite atomically: no temporary files left behind
    write_file_sd(path, targets[:1])
    assert len(read_file_sd(path)) == 1
    assert [p.name for p in path.parent.iterdir()] == ["file_sd.json"]
    assert read_file_sd(tmp_path / "missing.json") == []
    with pytest.raises(ValueError):
        write_file_sd(path, [{"labels": {}}])
    with pytest.raises(ValueError):
        write_file_sd(path, [{"targets": "127.0.0.1:1"}])


def test_link_file_sd(tmp_path):
    run_file = tmp_path / "runs" / "exp1" / "file_sd.json"
    write_file_sd(
        run_file, [file_sd_target("127.0.0.1", 1, run="exp1", level=1, agent="a", host="h", role="agent")]
    )
    link = link_file_sd(run_file, tmp_path / "monitoring" / "targets")
    assert link.name == "exp1.json" and link.is_symlink()
    assert not link.readlink().is_absolute()
    assert read_file_sd(link) == read_file_sd(run_file)
    assert link_file_sd(run_file, tmp_path / "monitoring" / "targets") == link  # idempotent
    assert read_file_sd(link) == read_file_sd(run_file)
    assert [p.name for p in (tmp_path / "monitoring" / "targets").iterdir()] == ["exp1.json"]  # no temporary left


def test_module_is_light():
    code = (
        "import sys, tag_actors.metrics as m; "
        "bad = [x for x in ('torch', 'zmq', 'numpy') if x in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_hot_path_cost():
    """tick() + decision() + frame_sent() cost about what the bare prometheus_client calls they wrap cost (a
    counter, a histogram, two labelled counters bound once): a ratio measured side by side, which a loaded
    machine does not skew the way an absolute time does."""
    import timeit

    from prometheus_client import CollectorRegistry, Counter, Histogram

    m = ProcessMetrics("r", "agent", "a", 1, "h")
    m.declare_links(["up"])

    def ours():
        m.tick()
        m.decision(0.0012)
        m.frame_sent("up", 1200)

    reg = CollectorRegistry()
    ticks, decisions = Counter("t", "t", registry=reg), Counter("d", "d", registry=reg)
    act = Histogram("a", "a", registry=reg)
    frames, nbytes = Counter("f", "f", ["link"], registry=reg).labels("up"), Counter("b", "b", ["link"], registry=reg).labels("up")

    def bare():
        ticks.inc()
        decisions.inc()
        act.observe(0.0012)
        frames.inc()
        nbytes.inc(1200)

    n = 5000
    ratios = []
    for _ in range(5):  # interleaved, best of each: the same load for both
        t_ours = min(timeit.repeat(ours, number=n, repeat=3))
        t_bare = min(timeit.repeat(bare, number=n, repeat=3))
        ratios.append(t_ours / t_bare)
    assert min(ratios) < 1.6, f"ProcessMetrics hot path is {min(ratios):.2f}x the bare client calls ({ratios})"


def test_ppo_update_stats_feed_the_learner_gauges_the_dashboards_query():
    """A real PPO update's stats reach every ``tag_learner_<stat>`` gauge a dashboard queries (a misnamed stat,
    e.g. CleanRL's ``clipfrac``, would otherwise leave a gauge at 0 forever and only show up as a flat panel)."""
    import re
    from pathlib import Path

    import numpy as np

    from tag_actors.agents.base import AgentContext
    from tag_actors.agents.ppo import PPOAgent
    from tag_actors.metrics import LEARNER_ALIASES
    from tag_actors.spaces import Box

    n, obs_dim = 4, 3
    agent = PPOAgent(
        AgentContext(
            name="t",
            level=1,
            obs_dim=obs_dim,
            action_space=Box((2,), -1.0, 1.0),
            num_envs=n,
            seed=0,
            params={"rollout_len": 4},
        )
    )
    rng = np.random.default_rng(0)
    every = np.ones(n, dtype=bool)
    while not agent.ready():
        agent.act(rng.normal(size=(n, obs_dim)).astype(np.float32), every)
        agent.observe(
            rng.normal(size=n).astype(np.float32),
            np.zeros(n, bool),
            np.zeros(n, bool),
            rng.normal(size=(n, obs_dim)).astype(np.float32),
            np.ones(n, np.int64),
            every,
        )
    stats = agent.update()
    reported = {LEARNER_ALIASES.get(k, k) for k in stats}

    dash_dir = Path(__file__).resolve().parents[1] / "monitoring" / "grafana" / "dashboards"
    queried = set()
    for path in dash_dir.glob("*.json"):
        queried |= set(re.findall(r"tag_learner_([a-z_]+)\{", path.read_text()))
    queried.discard("stat")  # tag_learner_stat{stat=...}: whatever is left over
    assert queried, "no dashboard queries a learner gauge"
    assert queried <= set(LEARNER_STATS), queried - set(LEARNER_STATS)
    assert queried <= reported, (
        f"dashboards query learner gauges PPO never reports: {sorted(queried - reported)}"
    )

    m = ProcessMetrics("r", "agent", "a", 1, "h", features={"learner"})
    m.learner(stats)
    s = samples_by_name(m.exposition().decode())
    value_of = {LEARNER_ALIASES.get(k, k): float(v) for k, v in stats.items()}
    for key in queried:
        assert one(s, f"tag_learner_{key}") == pytest.approx(value_of[key], nan_ok=True), key
    assert "clipfrac" not in {x.labels.get("stat") for x in s.get("tag_learner_stat", [])}
    assert one(s, "tag_update_duration_seconds_count") == 1


# ---------------------------------------------------------------------------------------------------- labels
def _plan(config: str = "balance_3ppo_comm.toml"):
    from pathlib import Path

    from tag_actors import config as config_mod
    from tag_actors.topology import build_plan

    cfg = config_mod.load(Path(__file__).resolve().parents[1] / "configs" / config, [])
    return cfg, build_plan(cfg)


def test_every_link_and_reason_exists_at_zero_before_the_first_frame():
    """A counter born at its first increment reads 1 at its first scrape and increase() sees nothing: so every
    (link, reason) a process can count exists at 0 from the start, links from the plan, never from a peer."""
    from tag_actors.run_metrics import process_links

    _, plan = _plan()
    m = ProcessMetrics("r", "agent", "l1.0", 1, "h")
    peers, served = process_links(plan, "l1.0")
    assert peers == ["l2.0", "env/0"] and served == ["l1.0"]
    m.declare_links(peers, served)
    s = samples_by_name(m.exposition().decode())
    bad = {(x.labels["link"], x.labels["reason"]): x.value for x in s["tag_bad_frames_total"]}
    want = {(p, r) for p in peers for r in BAD_FRAME_REASONS} | {("unknown@l1.0", r) for r in STRANGER_REASONS}
    assert set(bad) == want
    assert set(bad.values()) == {0.0}
    for name in ("tag_frames_sent_total", "tag_frames_received_total", "tag_bytes_sent_total"):
        assert {x.labels["link"]: x.value for x in s[name]} == {"l2.0": 0.0, "env/0": 0.0}, name

    m.bad_frame("env/0", "truncated")
    m.bad_frame("unknown@l1.0", "unknown_peer")
    m.bad_frame("\x00intruder\ufffd@ipc:///x", "unknown_peer")  # an undeclared link: counted as 'unknown'
    m.bad_frame("l2.0", "a reason nobody listed")  # counted as 'other'
    s = samples_by_name(m.exposition().decode())
    bad = {(x.labels["link"], x.labels["reason"]): x.value for x in s["tag_bad_frames_total"]}
    assert bad[("env/0", "truncated")] == 1 and bad[("unknown@l1.0", "unknown_peer")] == 1
    assert bad[("unknown", "unknown_peer")] == 1 and bad[("l2.0", "other")] == 1
    assert not [k for k in bad if "\x00" in k[0] or "\ufffd" in k[0]]


def test_env_links_are_its_parents_and_its_endpoints():
    from tag_actors.run_metrics import process_links

    _, plan = _plan()
    assert process_links(plan, "env") == (["l1.0", "l1.1", "l1.2", "l1.3"], ["env/0", "env/1", "env/2", "env/3"])
    assert process_links(plan, "l3.0") == (["l2.0", "l2.1"], [])


def test_bad_frame_reasons_cover_every_reason_the_runtime_raises():
    """Every literal reason given to BadFrame(...) or count_bad(...) in tag_actors/ is one of the bounded sets
    (else it would be counted as 'other', losing what went wrong)."""
    import re
    from pathlib import Path

    src = "\n".join(p.read_text() for p in (Path(__file__).resolve().parents[1] / "tag_actors").rglob("*.py"))
    raised = set(re.findall(r'BadFrame\(\s*"(\w+)"', src)) | set(re.findall(r'count_bad\([^,]+,\s*"(\w+)"', src))
    assert raised, "no reasons found: the pattern no longer matches the source"
    assert raised <= set(BAD_FRAME_REASONS) | set(STRANGER_REASONS), raised - set(BAD_FRAME_REASONS)


def test_a_stranger_is_counted_under_one_unknown_link(zctx, free_port):
    """Two strangers with random (even binary) identities on one endpoint: one series, unknown@<owner>."""
    import numpy as np

    from tag_actors.transport import Hub
    from tag_actors.wire import Kind, Message, encode

    m = ProcessMetrics("r", "agent", "c", 1, "h")
    m.declare_links(["p"], ["c"])
    hub = Hub("c", on_bad_frame=m.bad_frame)
    try:
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        link = hub.serve_parent(endpoint, "p")
        for identity in (b"\x00\xffstranger-1", os.urandom(8)):
            sock = zctx.socket(zmq.DEALER)
            sock.identity = identity
            sock.connect(endpoint)
            sock.send_multipart(encode(Message(Kind.DOWN, "x", batch=1, arrays={"a": np.ones(1)})))
        deadline = time.monotonic() + 10
        while sum(hub.bad_frames.values()) < 2:
            assert time.monotonic() < deadline, hub.bad_frames
            if hub.wait([link], 0.2):
                hub.try_recv(link)
    finally:
        hub.close()
    assert set(hub.bad_frames) == {("unknown@c", "unknown_peer")}
    s = samples_by_name(m.exposition().decode())
    assert one(s, "tag_bad_frames_total", link="unknown@c", reason="unknown_peer") == 2
    links = {x.labels["link"] for x in s["tag_bad_frames_total"]}
    assert links == {"p", "unknown@c"}, links


# ---------------------------------------------------------------------------------------------------- features
def test_decisions_are_not_ticks():
    m = ProcessMetrics("r", "agent", "l3.0", 3, "h")
    for t in range(12):
        m.tick()
        if t % 4 == 0:  # period 4
            m.decision(0.001)
    s = samples_by_name(m.exposition().decode())
    assert one(s, "tag_ticks_total") == 12
    assert one(s, "tag_decisions_total") == 3
    assert one(s, "tag_act_duration_seconds_count") == 3


# The series budget of one process, by type: a base (its own series: up, info, ticks, act time, episodes, the
# client's process_* / python_* series and its features' histograms) plus what each link costs: 17 per
# configured peer (frames and bytes sent and received, 13 bad-frame reasons) and 2 per endpoint it serves
# (strangers: unknown_peer, auth). The old metrics exposed ~195 series per process, most of them buckets of
# histograms the process never fills (an env with learner and LLM histograms). Raising a base is a decision: say
# why. tests/test_monitoring.py checks the processes of a real run against the same budget.
SERIES_BASE = {
    "env": 80,
    "learner_with_parent": 135,  # + update duration (18) and round trip to the parent (21) histograms
    "learner_top": 115,
    "llm_top_async": 105,  # + LLM latency histogram (16), outcomes (5), tokens (2)
    "heuristic_with_parent": 100,
}
SERIES_PER_PEER, SERIES_PER_ENDPOINT = 4 + len(BAD_FRAME_REASONS), len(STRANGER_REASONS)


def series_budget(kind: str, peers: int, endpoints: int) -> int:
    return SERIES_BASE[kind] + SERIES_PER_PEER * peers + SERIES_PER_ENDPOINT * endpoints


SERIES_BUDGET = SERIES_BASE  # the process types

NOT_FOR = {
    "env": ("tag_learner_", "tag_update", "tag_llm_", "tag_decisions", "tag_checkpoint", "tag_message_roundtrip",
            "tag_instruction_staleness", "tag_queue_depth"),
    "learner_with_parent": ("tag_llm_", "tag_env_steps", "tag_instruction_staleness"),
    "learner_top": ("tag_llm_", "tag_env_steps", "tag_message_roundtrip", "tag_instruction_staleness"),
    "llm_top_async": ("tag_learner_", "tag_update", "tag_env_steps", "tag_message_roundtrip"),
    "heuristic_with_parent": ("tag_learner_", "tag_update", "tag_llm_", "tag_env_steps"),
}


def process_of_type(kind: str) -> ProcessMetrics:
    """A ProcessMetrics set up as the actor sets up one of that type (features from agent_features)."""
    from tag_actors.run_metrics import enable_agent_metrics, process_links

    class Learner:  # what agent_features looks at: an overridden update(), an on_call hook
        def update(self):
            return {}

    class Heuristic:
        from tag_actors.agents.base import Agent

        update = Agent.update

    class LLM(Heuristic):
        on_call = None

    _, plan = _plan()
    name = {"env": "env", "learner_with_parent": "l1.0", "heuristic_with_parent": "l2.0"}.get(kind, "l3.0")
    m = ProcessMetrics("r", "env" if name == "env" else "agent", name, plan.level_of(name), "h")
    m.declare_links(*process_links(plan, name))
    if name != "env":
        agent = {"learner_with_parent": Learner, "learner_top": Learner, "llm_top_async": LLM}.get(kind, Heuristic)()
        parent = plan.parent[name]
        enable_agent_metrics(m, agent, parent, parent is not None)
        if "learner" in m.features:  # the statistics a PPO update reports (3 of them go to tag_learner_stat)
            m.learner(dict.fromkeys((*LEARNER_STATS, "clipfrac", "epochs", "transitions", "updates"), 0.5))
    return m


@pytest.mark.parametrize("kind", sorted(SERIES_BUDGET))
def test_series_budget_per_process_type(kind):
    from tag_actors.run_metrics import process_links

    m = process_of_type(kind)
    m.set_up()
    samples = [x for fam in text_string_to_metric_families(m.exposition().decode()) for x in fam.samples]
    peers, served = process_links(_plan()[1], m.name)
    budget = series_budget(kind, len(peers), len(served))
    assert len(samples) <= budget, f"{kind}: {len(samples)} series, budget {budget}"
    names = {x.name for x in samples}
    wrong = sorted(n for n in names if n.startswith(NOT_FOR[kind]))
    assert not wrong, f"{kind} exposes series for what it never does: {wrong}"
    assert {"tag_up", "tag_ticks_total", "tag_episodes_total", "tag_bad_frames_total"} <= names


def test_a_feature_used_without_being_enabled_is_enabled_on_first_use():
    m = ProcessMetrics("r", "env", "env", 0, "h")
    assert "tag_updates_total" not in m.exposition().decode()
    m.learner({"policy_loss": 0.5})
    assert one(samples_by_name(m.exposition().decode()), "tag_updates_total") == 1
    with pytest.raises(ValueError, match="unknown feature"):
        m.enable("telepathy")


# ---------------------------------------------------------------------------------------------------- scrapes
def test_set_down_waits_for_the_next_scrape_only_when_something_scrapes():
    """A process that stops cleanly reports tag_up 0 and waits until a scrape has *delivered* it (the response
    written), so the alert rules can tell a clean stop from a crash; nobody scraping: no wait at all."""
    m = ProcessMetrics("r", "agent", "a", 1, "h")
    port = m.serve(0)
    try:
        t0 = time.monotonic()
        assert m.set_down(deliver_s=5.0) is False  # never scraped: no wait
        assert time.monotonic() - t0 < 1.0
        m.set_up()
        scrape(port)
        scrape(port)  # two scrapes: an interval is known
        got: list[str] = []
        scraper = threading.Timer(0.3, lambda: got.append(scrape(port)))
        scraper.start()
        try:
            assert m.set_down(deliver_s=5.0) is True
        finally:
            scraper.join()
        assert 'tag_up{agent="a",config="r",host="h",level="1",run="r"} 0.0' in got[0]
        t0 = time.monotonic()
        assert m.set_down(deliver_s=5.0) is False  # scraped before, nobody now: waits ~1.5 intervals, no more
        assert time.monotonic() - t0 < 5.0
    finally:
        m.close()


# ---------------------------------------------------------------------------------------------------- run state
def test_run_id_is_unique_per_launch():
    from pathlib import Path

    from tag_actors.run_metrics import run_id

    t = time.mktime((2026, 11, 30, 2, 13, 30, 0, 0, -1))
    assert run_id(Path("runs/bal-20261130-021330"), t, fresh=True) == "bal-20261130-021330"
    assert run_id(Path("runs/bal-20261130-021330"), t + 3600, fresh=False) == "bal-20261130-021330-20261130-031330"
    assert run_id(Path("/tmp/x/run"), t, fresh=True) == "run-20261130-021330"
    assert run_id(Path("/tmp/x/run"), t + 5, fresh=True) != run_id(Path("/tmp/x/run"), t, fresh=True)
    assert run_id(Path("runs/shared"), t, fresh=False, shared=True) == "shared"


def scrape_of(rm) -> dict:
    return samples_by_name(generate_latest(rm.registry).decode())


def test_run_metrics_state_progress_eta_and_first_failure(tmp_path):
    from tag_actors.run_metrics import RunMetrics

    events = tmp_path / "events"
    events.mkdir()
    rm = RunMetrics("bal-1", "bal", "h", tmp_path, total_env_steps=10_000)

    def scrape() -> dict:
        return samples_by_name(generate_latest(rm.registry).decode())

    s = scrape()
    info = s["tag_run_info"][0].labels
    assert (info["state"], info["failed_process"], info["run"], info["config"]) == ("running", "", "bal-1", "bal")
    assert one(s, "tag_run_progress_ratio") == 0 and "tag_run_eta_seconds" not in s
    with (events / "env.jsonl").open("w") as f:
        for steps, rate in ((1000, 500.0), (2000, 500.0)):
            f.write(json.dumps({"type": "status", "name": "env", "env_steps": steps, "env_steps_per_s": rate}) + "\n")
        f.write('{"type": "status", "env_st')  # a line being written: read on a later scrape
    s = scrape()
    assert one(s, "tag_run_env_steps") == 2000 and one(s, "tag_run_progress_ratio") == pytest.approx(0.2)
    assert one(s, "tag_run_eta_seconds") == pytest.approx(8000 / 500)
    rm.failed("l1.2", "killed by SIGKILL")
    rm.failed("l1.1", "exit code 3")  # a neighbour that lost its peer: not the cause
    rm.end(1)
    s = scrape()
    assert len(s["tag_run_info"]) == 1
    info = s["tag_run_info"][0].labels
    assert (info["state"], info["failed_process"], info["failure"]) == ("failed", "l1.2", "killed by SIGKILL")
    assert "tag_run_eta_seconds" not in s and one(s, "tag_run_end_time_seconds") > 0
    # the env's end record says "finished" at once (a failure during the shutdown still wins); records of an
    # earlier run in the same folder are not read
    r = RunMetrics("y", "y", "h", tmp_path, 10_000)
    assert scrape_of(r)["tag_run_info"][0].labels["state"] == "running"
    with (events / "env.jsonl").open("a") as f:
        f.write('us", "env_steps": 1}\n')  # the rest of the earlier run's partial line: not a record
    assert scrape_of(r)["tag_run_info"][0].labels["state"] == "running"
    with (events / "env.jsonl").open("a") as f:
        f.write(json.dumps({"type": "end", "name": "env", "reason": "completed"}) + "\n")
    assert scrape_of(r)["tag_run_info"][0].labels["state"] == "finished"
    r.failed("l3.0", "exit code 1")
    r.end(1)
    assert (r.state, r.failed_process) == ("failed", "l3.0")
    for code, state in ((0, "finished"), (130, "stopped"), (2, "failed")):
        r = RunMetrics("x", "x", "h", tmp_path, 1)
        r.end(code)
        assert r.state == state


def test_sweep_removes_links_of_runs_that_are_over(tmp_path):
    from tag_actors.metrics import link_file_sd
    from tag_actors.run_metrics import sweep_links

    targets = tmp_path / "monitoring" / "targets"
    entry = [file_sd_target("127.0.0.1", 1, run="r", level=1, agent="a", host="h", role="agent")]

    def run(name: str, pid: int | None, entries=entry) -> Path:
        d = tmp_path / "runs" / name
        write_file_sd(d / "prometheus_targets.json", entries)
        (d / "plan.json").write_text(json.dumps({"launcher_pid": pid}))
        return link_file_sd(d / "prometheus_targets.json", targets)

    from pathlib import Path

    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "tag_actors.launch"])
    try:
        live = run("live", launcher.pid)
        killed = run("killed", 2**22 + 12345)  # no such process
        finished = run("finished", launcher.pid, [])  # the launcher emptied its list
        gone = run("gone", launcher.pid)
        (tmp_path / "runs" / "gone" / "prometheus_targets.json").unlink()
        removed = sweep_links(targets)
        assert sorted(p.name for p in removed) == sorted(p.name for p in (killed, finished, gone))
        assert [p.name for p in targets.iterdir()] == [live.name]
    finally:
        launcher.kill()
        launcher.wait(timeout=10)
    assert sweep_links(targets) == [live]  # its launcher is gone now


def test_llm_outcomes_are_the_agents():
    """Every outcome the LLM agent reports has its own series from the start (else it would read 'other')."""
    from tag_actors.agents.llm import OUTCOMES
    from tag_actors.metrics import LLM_OUTCOMES

    assert set(OUTCOMES) <= set(LLM_OUTCOMES)
    m = ProcessMetrics("r", "agent", "top", 2, "h", features={"llm"})
    s = samples_by_name(m.exposition().decode())
    assert {x.labels["outcome"]: x.value for x in s["tag_llm_requests_total"]} == dict.fromkeys(LLM_OUTCOMES, 0.0)
    m.llm_call("bad_reply", 0.1, 10, 2)
    m.llm_call("something new", 0.1, 10, 2)
    s = samples_by_name(m.exposition().decode())
    assert one(s, "tag_llm_requests_total", outcome="bad_reply") == 1
    assert one(s, "tag_llm_requests_total", outcome="other") == 1
