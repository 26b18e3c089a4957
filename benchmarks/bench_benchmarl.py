"""Training throughput against BenchMARL's MAPPO at equal settings, side by side in one run.

BenchMARL 1.5.2's MAPPO defaults on VMAS balance (4 agents): 10 envs, 6,000 frames per batch, 45 minibatch
iterations of 400 (= 3 passes over the batch in 15 minibatches), lr 5e-5, 256x256 tanh MLPs. Ours takes the same
numbers (num_envs 10, rollout_len 600 decisions per env copy, update_epochs 3, num_minibatches 15, lr 5e-5,
hidden 256x256) for flat MAPPO (configs/balance_mappo.toml) and for the 3-level 3PPO hierarchy
(configs/balance.toml; levels 2 and 3 decide every 2 and 4 ticks, so their rollouts are 300 and 150 decisions:
every level updates every 600 ticks), in-process, as actors in lockstep, and as actors with background learners.

    bash benchmarks/benchmarl/setup.sh          # BenchMARL in its own venv (/work/benchmarl-venv)
    python benchmarks/bench_benchmarl.py [--frames 60000]

Rates exclude start-up on both sides: ours from the env's status records (``runlog.steady_env_rate``), BenchMARL's
as frames / (its collection + training time). BenchMARL runs with one torch thread, as every process of ours.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tag_actors.runlog import steady_env_rate

HERE = Path(__file__).resolve().parent
EQUAL = {"lr": "5e-5", "update_epochs": "3", "num_minibatches": "15", "hidden_sizes": "[256, 256]"}


def ours(config: str, levels: int, frames: int, serial: bool, sets: list[str]) -> float:
    rollouts = [600 // (2**i) for i in range(levels)]  # every level updates every 600 ticks
    cmd = [sys.executable, "-m", "tag_actors.launch", config, "--quiet", "--set", "env.num_envs=10",
           "--set", f"run.total_env_steps={frames}", "--set", "run.metrics=false", "--set", "run.log_every_s=0.5"]
    for level, rollout in enumerate(rollouts):
        cmd += ["--set", f"levels.{level}.params.rollout_len={rollout}"]
        cmd += [x for k, v in EQUAL.items() for x in ("--set", f"levels.{level}.params.{k}={v}")]
    for kv in sets:
        cmd += ["--set", kv]
    if serial:
        cmd.append("--serial")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        subprocess.run([*cmd, "--run-dir", str(run_dir)], check=True, capture_output=True)
        return steady_env_rate(run_dir)


def benchmarl(venv: Path, frames: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mappo"
        subprocess.run([str(venv / "bin" / "python"), str(HERE / "benchmarl" / "run.py"), "run", "--algorithm",
                        "mappo", "--task", "vmas/balance", "--n-agents", "4", "--max-steps", "100", "--seed", "0",
                        "--frames", str(frames), "--threads", "1", "--out", str(out), "--raw-dir", tmp],
                       check=True, capture_output=True)
        info = json.loads(out.with_suffix(".json").read_text())
        return info["total_frames"] / (info["sum_collection_time_s"] + info["sum_training_time_s"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=60_000, help="env steps per run (BenchMARL: 6,000 per batch)")
    p.add_argument("--venv", type=Path, default=Path("/work/benchmarl-venv"))
    args = p.parse_args()
    rates = {"BenchMARL MAPPO": benchmarl(args.venv, args.frames)}
    for name, config, levels in (("MAPPO", "configs/balance_mappo.toml", 1), ("3PPO", "configs/balance.toml", 3)):
        rates[f"ours {name}, in-process"] = ours(config, levels, args.frames, True, [])
        rates[f"ours {name}, actors lockstep"] = ours(config, levels, args.frames, False, [])
        rates[f"ours {name}, actors background learners"] = ours(config, levels, args.frames, False,
                                                                 ["run.learner=background"])
    ref = rates["BenchMARL MAPPO"]
    for name, rate in rates.items():
        print(json.dumps({"case": name, "env_steps_per_s": round(rate, 1), "vs_benchmarl_mappo": round(rate / ref, 2)}))


if __name__ == "__main__":
    main()
