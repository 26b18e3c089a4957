"""How often the LLM at the top of a running hierarchy actually decides: calls, outcomes and seconds per decision.

    python benchmarks/llm_in_loop.py --base-url http://127.0.0.1:8000/v1                # configs/balance_llm.toml
    python benchmarks/llm_in_loop.py --base-url URL --tree /path/to/other/checkout      # the same run, other code

Runs ``python -m tag_actors.launch CONFIG --set run.total_env_steps=STEPS --set l2.params.base_url=URL``
(the PPO level learning below the LLM, as configured) from ``--tree`` (its code on PYTHONPATH), then reads the
run's events: the LLM node's ``agent_stats`` (calls by outcome, fallbacks) and the time from its ``started`` to
its ``end`` record. Prints the share of calls answered within the timeout and the seconds per LLM decision
(``ok`` answers only: a fallback is not the LLM deciding), plus the machine's load average, since these figures
depend on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_events(run_dir: Path) -> list[dict]:
    out = []
    for f in sorted((run_dir / "events").glob("*.jsonl")):
        out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return out


def summarise(run_dir: Path, llm_node: str) -> dict:
    events = [e for e in read_events(run_dir) if e.get("name") == llm_node]
    start = min(e["time"] for e in events)
    end = next(e for e in events if e["type"] == "end")
    s = end.get("agent_stats") or {}
    seconds = end["time"] - start
    calls, ok = int(s.get("calls", 0)), int(s.get("ok", 0))
    return {
        "seconds": round(seconds, 1), "decisions": end["decisions"], "calls": calls, "ok": ok,
        "timeout": int(s.get("timeout", 0)), "http_error": int(s.get("http_error", 0)),
        "connection_error": int(s.get("connection_error", 0)), "bad_reply": int(s.get("bad_reply", 0)),
        "fallbacks": int(s.get("fallbacks", 0)),
        "ok_share": ok / calls if calls else 0.0,
        "s_per_llm_decision": seconds / ok if ok else float("inf"),
        "mean_latency_s": s.get("latency_s_sum", 0.0) / calls if calls else 0.0,
        "prompt_tokens_per_call": s.get("prompt_tokens", 0) / calls if calls else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True, help="the model server the LLM level calls")
    ap.add_argument("--config", default="configs/balance_llm.toml")
    ap.add_argument("--steps", type=int, default=30000, help="run.total_env_steps")
    ap.add_argument("--tree", default=str(ROOT), help="checkout whose code runs (cwd and PYTHONPATH)")
    ap.add_argument("--llm-node", default="l2.0")
    ap.add_argument("--set", action="append", default=[], help="extra --set KEY=VALUE for the launcher")
    ap.add_argument("--label", default="")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    tree = Path(a.tree).resolve()
    run_dir = Path(tempfile.mkdtemp(prefix="llm_in_loop_")) / "run"
    cmd = [sys.executable, "-m", "tag_actors.launch", a.config, "--quiet", "--run-dir", str(run_dir),
           "--set", f"run.total_env_steps={a.steps}", "--set", "run.metrics=false",
           "--set", f"l2.params.base_url={a.base_url}"]
    for kv in a.set:
        cmd += ["--set", kv]
    env = dict(os.environ, PYTHONPATH=str(tree))
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:], file=sys.stderr)
        return r.returncode
    res = summarise(run_dir, a.llm_node)
    res.update(label=a.label, tree=str(tree), steps=a.steps, wall_s=round(wall, 1),
               load_before=round(load0[0], 2), load_after=round(load1[0], 2), run_dir=str(run_dir))
    print(f"{a.label or tree}: {a.config}, {a.steps} env steps, {res['seconds']} s of LLM node "
          f"(load avg {res['load_before']} -> {res['load_after']} on {os.cpu_count()} CPUs)")
    print(f"  LLM calls {res['calls']}: ok {res['ok']}, timeout {res['timeout']}, bad_reply {res['bad_reply']}, "
          f"http_error {res['http_error']}, connection_error {res['connection_error']}; "
          f"fallbacks {res['fallbacks']}")
    print(f"  answered within the timeout {100 * res['ok_share']:.0f}%   seconds per LLM decision "
          f"{res['s_per_llm_decision']:.2f}   mean call {res['mean_latency_s']:.2f} s   prompt tokens per call "
          f"{res['prompt_tokens_per_call']:.0f}")
    if a.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
