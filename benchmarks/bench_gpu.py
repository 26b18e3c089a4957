"""3PPO on VMAS balance at 1,024-4,096 env copies: the env and every level's learners on CUDA against all on the
CPU, side by side in one command. Prints a markdown table (steady env steps/s, the mean PPO update time per
level, wall time) headed by the machine (GPU name, CPU count, torch version).

    python benchmarks/bench_gpu.py [--envs 1024 2048 4096] [--ticks 192] [--mode actors|serial] [--devices cpu cuda]

Each configuration is a launcher run of configs/balance.toml with ``env.device`` and every ``levels[].device`` set,
``total_env_steps = ticks * envs`` (enough for several updates of every level at the config's rollout lengths),
in a temporary folder. The steady rate skips start-up (see tag_actors.runlog.steady_env_rate). Where torch sees
no CUDA device the cuda rows are reported as not run, with why.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tag_actors.runlog import read_events, steady_env_rate  # noqa: E402


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return (f"{platform.node()}: {gpu}; {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); "
            f"torch {torch.__version__}")


def run_one(envs: int, device: str, ticks: int, mode: str, work: Path) -> dict[str, float]:
    run_dir = work / f"{device}-{envs}"
    sets = {"env.num_envs": envs, "env.device": f'"{device}"', "run.total_env_steps": ticks * envs,
            "run.metrics": "false", "run.log_every_s": 1, "run.checkpoint_every_s": 0,
            "run.startup_timeout_s": 600}
    sets.update({f"levels.{i}.device": f'"{device}"' for i in range(3)})
    cmd = [sys.executable, "-m", "tag_actors.launch", str(ROOT / "configs" / "balance.toml"), "--quiet",
           "--run-dir", str(run_dir), *(["--serial"] if mode == "serial" else [])]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    started = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if r.returncode != 0:
        raise RuntimeError(f"{device} x {envs} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    updates: dict[int, list[float]] = {}
    for e in read_events(run_dir):
        if e["type"] == "update" and "update_seconds" in e:
            updates.setdefault(int(e["level"]), []).append(float(e["update_seconds"]))
    out = {"steps_per_s": steady_env_rate(run_dir), "wall_s": wall}
    for level, secs in updates.items():
        out[f"update_s_l{level}"] = sum(secs) / len(secs)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--ticks", type=int, default=192, help="env ticks per run (env steps = ticks * envs)")
    p.add_argument("--mode", choices=["actors", "serial"], default="actors")
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    args = p.parse_args(argv)
    import torch

    print(f"machine: {machine()}\nmode: {args.mode}, {args.ticks} ticks per run\n")
    print("| envs | device | steady env steps/s | update s (L1 / L2 / L3) | wall s | cuda / cpu |")
    print("| ---: | --- | ---: | --- | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for envs in args.envs:
            rates: dict[str, float] = {}
            for device in args.devices:
                if device.startswith("cuda") and not torch.cuda.is_available():
                    print(f"| {envs} | {device} | not run: torch sees no CUDA device | | | |")
                    continue
                res = run_one(envs, device, args.ticks, args.mode, Path(tmp))
                rates[device] = res["steps_per_s"]
                upd = " / ".join(f"{res.get(f'update_s_l{lv}', float('nan')):.3f}" for lv in (1, 2, 3))
                ratio = (f"{rates[device] / rates['cpu']:.2f}x" if device != "cpu" and "cpu" in rates else "")
                print(f"| {envs} | {device} | {res['steps_per_s']:,.0f} | {upd} | {res['wall_s']:.0f} | {ratio} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
