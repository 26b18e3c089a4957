"""tag_actors.metrics: exposition over HTTP, port errors, file_sd round trip. Fast (no Prometheus needed)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tag_actors.metrics import (
    LEARNER_STATS,
    MetricsPortError,
    ProcessMetrics,
    file_sd_target,
    link_file_sd,
    read_file_sd,
    write_file_sd,
)

CONST = {"run": "t1", "level": "2", "agent": "mid_0", "host": "hostA"}


@pytest.fixture
def served():
    m = ProcessMetrics("t1", "agent", "mid_0", 2, "hostA")
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
    m.observe_act(0.002)
    m.observe_roundtrip("up", 0.00015)
    m.observe_roundtrip("down:a0", 0.3)
    m.frame_sent("up", 100)
    m.frame_sent("up", 50)
    m.frame_received("down:a0", 70)
    m.bad_frame("down:a0", "decode")
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
    assert one(s, "tag_env_steps_total") == 64
    assert one(s, "tag_frames_sent_total", link="up") == 2
    assert one(s, "tag_bytes_sent_total", link="up") == 150
    assert one(s, "tag_frames_received_total", link="down:a0") == 1
    assert one(s, "tag_bytes_received_total", link="down:a0") == 70
    assert one(s, "tag_bad_frames_total", link="down:a0", reason="decode") == 1
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
    assert 'tag_act_duration_seconds_bucket{agent="env",host="h",le="0.0001"' in text
    assert 'le="10.0"' in text
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
    assert 'tag_ticks_total{agent="a",host="h",level="1",run="r"} 5.0' in a.exposition().decode()
    assert 'tag_ticks_total{agent="b",host="h",level="1",run="r"} 0.0' in b.exposition().decode()


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
        assert isinstance(ei.value, OSError)
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
        "labels": {"run": "run7", "level": "1", "agent": "a0", "host": "hostB", "role": "agent"},
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
    link_file_sd(run_file, tmp_path / "monitoring" / "targets")  # idempotent


def test_module_is_light():
    code = (
        "import sys, tag_actors.metrics as m; "
        "bad = [x for x in ('torch', 'zmq', 'numpy') if x in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_hot_path_cost():
    """tick() + observe_act() + frame_sent() should cost a few microseconds at most (about 2 us measured)."""
    import timeit

    m = ProcessMetrics("r", "agent", "a", 1, "h")
    m.frame_sent("up", 1)

    def call():
        m.tick()
        m.observe_act(0.0012)
        m.frame_sent("up", 1200)

    n = 20000
    best = min(timeit.repeat(call, number=n, repeat=5)) / n
    assert best < 20e-6, f"{best * 1e6:.1f} us per tick()+observe_act()+frame_sent()"


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

    m = ProcessMetrics("r", "agent", "a", 1, "h")
    m.learner(stats)
    s = samples_by_name(m.exposition().decode())
    value_of = {LEARNER_ALIASES.get(k, k): float(v) for k, v in stats.items()}
    for key in queried:
        assert one(s, f"tag_learner_{key}") == pytest.approx(value_of[key], nan_ok=True), key
    assert "clipfrac" not in {x.labels.get("stat") for x in s.get("tag_learner_stat", [])}
    assert one(s, "tag_update_duration_seconds_count") == 1
