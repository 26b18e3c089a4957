"""Decisions per second of the llm agent against a local model server: sequential and concurrent, side by side.

    python benchmarks/bench_llm.py                       # starts SmolLM2-135M with 4 slots on a free port
    python benchmarks/bench_llm.py --slots 1 --threads 2 # one process, two threads (the old server)
    python benchmarks/bench_llm.py --base-url http://127.0.0.1:8000/v1 --calls 16 --nvec 3,3,3,3

The agent is the top of a balance-like hierarchy: a MultiDiscrete action (one goal per child) from an
observation of one ``--child-dim`` message per child (+ ``--parent-dim`` numbers of instruction), random in
[-1, 1] and new at every decision. Two phases against the same server:

* sequential: ``shared`` mode, one call per ``act``, one after the other;
* concurrent: ``subset`` mode with ``--concurrency`` envs per ``act``, their calls in flight together on the
  agent's uvloop loop (one decision per env).

For each: decisions/s, latency per call (median / p90), valid replies, and the tokens of one decision's prompt:
the static system text (served by the server's prefix cache after the first call) and the observation text
(new every call), counted with the model's own tokenizer when llama_cpp is installed, plus the server's
``usage`` counts. ``--json`` adds one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("tag_actors") is None:  # run from a checkout without an install
    sys.path.insert(0, str(ROOT))

from tag_actors.agents.base import AgentContext  # noqa: E402
from tag_actors.agents.llm import LLMAgent  # noqa: E402
from tag_actors.spaces import MultiDiscrete  # noqa: E402

TASK = ("Four robots carry a package on a long bar to a goal. Each child message is one robot's observation. "
        "Give each robot a goal: 0 = push towards the goal, 1 = keep the bar level, 2 = brake.")


def _server_helpers():
    spec = importlib.util.spec_from_file_location("llm_server", ROOT / "scripts" / "llm_server.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("llm_server", mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def token_counter(model: Path | None):
    """A function text -> token count with the model's tokenizer, or None without llama_cpp."""
    if model is None or importlib.util.find_spec("llama_cpp") is None:
        return None
    import llama_cpp

    vocab = llama_cpp.Llama(str(model), vocab_only=True, verbose=False)
    return lambda text: len(vocab.tokenize(text.encode(), add_bos=False, special=True))


def run_phase(agent: LLMAgent, rng: np.random.Generator, obs_dim: int, decisions: int, envs: int) -> dict:
    """``decisions`` env decisions, ``envs`` per ``act``; wall time, per-call latencies and stats."""
    latencies: list[float] = []
    agent.on_call = lambda outcome, seconds, pt, ct: latencies.append(seconds)
    agent.stats.update({k: 0 for k in agent.stats})
    mask = np.ones(envs, dtype=bool)
    t0 = time.perf_counter()
    for _ in range(max(1, decisions // envs)):
        agent.act(rng.uniform(-1, 1, (envs, obs_dim)).astype(np.float32), mask)
    wall = time.perf_counter() - t0
    s = dict(agent.stats)
    lat = np.array(latencies) * 1e3
    calls = int(s["calls"])
    return {
        "decisions": calls, "wall_s": wall, "decisions_per_s": calls / wall,
        "latency_ms_median": float(np.median(lat)), "latency_ms_p90": float(np.percentile(lat, 90)),
        "ok": int(s["ok"]), "bad_reply": int(s["bad_reply"]),
        "failed": int(s["timeout"] + s["http_error"] + s["connection_error"]),
        "usage_prompt_tokens_per_call": s["prompt_tokens"] / calls,
        "usage_completion_tokens_per_call": s["completion_tokens"] / calls,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", default=None, help="an OpenAI-compatible server (default: start a local one)")
    ap.add_argument("--slots", type=int, default=4, help="slots of the server this script starts")
    ap.add_argument("--threads", type=int, default=1, help="threads per slot of the server this script starts")
    ap.add_argument("--nice", type=int, default=0, help="niceness of the server this script starts")
    ap.add_argument("--calls", type=int, default=16, help="decisions per phase")
    ap.add_argument("--concurrency", type=int, default=4, help="calls in flight in the concurrent phase")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--nvec", default="3,3,3,3", help="MultiDiscrete goals per child, e.g. 3,3,3,3")
    ap.add_argument("--child-dim", type=int, default=16, help="length of each child's message")
    ap.add_argument("--parent-dim", type=int, default=0, help="numbers of the parent's instruction (0: none)")
    ap.add_argument("--number-format", default="int", choices=("int", "digit", "decimal"))
    ap.add_argument("--obs-scale", type=float, default=None, help="obs_scale (default: the agent's)")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--no-schema", action="store_true", help="send no response_format")
    ap.add_argument("--phases", default="sequential,concurrent")
    ap.add_argument("--json", action="store_true", help="print one JSON line with the results too")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # stop the server on the way out

    nvec = tuple(int(x) for x in a.nvec.split(","))
    layout = [(f"child_{i}", a.child_dim) for i in range(len(nvec))]
    layout += [("parent", a.parent_dim)] if a.parent_dim else []
    obs_dim = sum(d for _, d in layout)
    helpers = _server_helpers()
    model = helpers.find_gguf()
    proc = None
    base_url = a.base_url
    server = "given"
    if base_url is None:
        if model is None or importlib.util.find_spec("llama_cpp") is None:
            print("llama_cpp or the SmolLM2 GGUF is missing: scripts/llm_server.sh installs them", file=sys.stderr)
            return 2
        port = helpers.free_port()
        base_url = f"http://127.0.0.1:{port}/v1"
        log = Path(tempfile.gettempdir()) / f"bench_llm_server_{port}.log"
        settings = helpers.ServerSettings(n_threads=a.threads, n_threads_batch=a.threads, nice=a.nice)
        t0 = time.perf_counter()
        proc = helpers.start_pool(port, a.slots, settings, model, log)
        server = f"{a.slots} slot(s) x {a.threads} thread(s)" + (f", nice {a.nice}" if a.nice else "")
        print(f"server {base_url}: {server}, ready in {time.perf_counter() - t0:.1f} s (log {log})")
    count = token_counter(model)
    results: dict = {"nvec": list(nvec), "obs_dim": obs_dim, "number_format": a.number_format, "server": server,
                     "load_avg": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    try:
        rng = np.random.default_rng(0)
        for phase in a.phases.split(","):
            envs = 1 if phase == "sequential" else a.concurrency
            params = {"base_url": base_url, "max_tokens": a.max_tokens, "timeout_s": 60.0, "task": TASK,
                      "use_json_schema": not a.no_schema, "number_format": a.number_format}
            if a.obs_scale:
                params["obs_scale"] = a.obs_scale
            if phase == "concurrent":
                params.update(batch_mode="subset", envs_per_call=envs, concurrency=envs)
            ctx = AgentContext(name="top", level=2, obs_dim=obs_dim, action_space=MultiDiscrete(nvec),
                               num_envs=envs, seed=0, params=params, obs_layout=layout)
            agent = LLMAgent(ctx)
            for _ in range(a.warmup):  # every slot sees the static prefix once
                agent.act(rng.uniform(-1, 1, (envs, obs_dim)).astype(np.float32), np.ones(envs, dtype=bool))
            res = run_phase(agent, rng, obs_dim, a.calls, envs)
            if count is not None:
                obs = rng.uniform(-1, 1, obs_dim).astype(np.float32)
                res["system_tokens"] = count(agent.system_prompt)
                res["observation_tokens"] = count(agent.render_observation(obs))
            agent.close()
            results[phase] = res
    finally:
        if proc is not None:
            helpers.stop_server(proc)

    print(f"MultiDiscrete{nvec}, obs_dim {obs_dim}, number_format {a.number_format}, server {server}, "
          f"load avg {results['load_avg']} on {results['cpus']} CPUs")
    for phase in a.phases.split(","):
        r = results[phase]
        print(f"  {phase:<11} decisions/s {r['decisions_per_s']:5.2f}   latency ms median {r['latency_ms_median']:6.0f}"
              f"  p90 {r['latency_ms_p90']:6.0f}   valid {r['ok']}/{r['decisions']} (bad {r['bad_reply']}, failed "
              f"{r['failed']})")
    first = results[a.phases.split(",")[0]]
    if "system_tokens" in first:
        print(f"  prompt tokens per decision: {first['system_tokens']} static (system message, from the prefix "
              f"cache after the first call) + {first['observation_tokens']} observation (new every call)")
    print(f"  server usage per call: prompt {first['usage_prompt_tokens_per_call']:.0f} tokens (chat template "
          f"included), completion {first['usage_completion_tokens_per_call']:.1f}")
    if "sequential" in results and "concurrent" in results:
        ratio = results["concurrent"]["decisions_per_s"] / results["sequential"]["decisions_per_s"]
        results["concurrent_over_sequential"] = ratio
        print(f"  concurrent / sequential: {ratio:.2f}x")
    if a.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
