"""Scaling: hierarchies of 4, 16 and 64 env agents (VMAS balance with n agents; fan-in 4 per level up to one top
agent; random agents, one process each). Prints env steps/s, start-up time (launch to the first tick, all
handshakes done) and resident memory, total and per process, measured from /proc while the run ticks.

    python benchmarks/bench_scale.py [--agents 4 16 64] [--envs 64] [--seconds 10] [--agent random]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tag_actors.launch import actor_pids
from tag_actors.runlog import read_events, steady_env_rate


def config_text(n: int, num_envs: int, agent: str) -> str:
    levels = [f'[[levels]]\nagent = "{agent}"\n']
    count = n
    while count > 1:
        fan = 4 if count % 4 == 0 else count
        count //= fan
        levels.append(f'[[levels]]\nagent = "{agent}"\nfan_in = {fan}\ninstruction = {{ type = "box", dim = 2 }}\n')
    return f"""[run]
name = "scale-{n}"
total_env_steps = 1000000000
metrics = false
startup_timeout_s = 300

[env]
kind = "vmas"
scenario = "balance"
num_envs = {num_envs}
n_agents = {n}
max_steps = 100
kwargs = {{ n_agents = {n} }}

""" + "\n".join(levels)


def rss_of_run(run_dir: Path) -> list[int]:
    """Resident bytes of each live actor process of the run."""
    out = []
    for pid in actor_pids(run_dir).values():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        out.append(next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) * 1024)
    return out


def measure(n: int, num_envs: int, seconds: float, agent: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "scale.toml"
        cfg.write_text(config_text(n, num_envs, agent))
        run_dir = Path(tmp) / "run"
        started = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "tag_actors.launch", str(cfg), "--quiet", "--run-dir",
                                 str(run_dir), "--set", "run.log_every_s=1"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            first = None
            while first is None and time.time() - started < 300:
                first = next((e for e in read_events(run_dir, "env") if e["type"] == "started"), None)
                time.sleep(0.2)
            if first is None:
                raise RuntimeError(f"no start after 300 s: {proc.stderr.read().decode()[-2000:]}")
            startup = first["time"] - started
            time.sleep(seconds / 2)
            rss = rss_of_run(run_dir)
            time.sleep(seconds / 2)
            rate = steady_env_rate(run_dir)
        finally:
            proc.send_signal(2)
            proc.wait(60)
    return {"env_agents": n, "processes": len(rss), "num_envs": num_envs, "startup_s": round(startup, 2),
            "env_steps_per_s": round(rate), "rss_total_mb": round(sum(rss) / 2**20),
            "rss_max_per_process_mb": round(max(rss) / 2**20), "rss_mean_per_process_mb": round(sum(rss) / len(rss) / 2**20)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--agents", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--envs", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--agent", default="random")
    args = p.parse_args()
    for n in args.agents:
        print(json.dumps(measure(n, args.envs, args.seconds, args.agent)), flush=True)


if __name__ == "__main__":
    main()
