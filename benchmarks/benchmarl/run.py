"""Run one BenchMARL experiment and convert its CSV logs into our learning-curve shape.

Runs INSIDE the BenchMARL venv (see setup.sh; default /work/benchmarl-venv), not the project venv.

    run     one experiment (mappo|ippo) on vmas/balance, vmas/simple_spread or pettingzoo/simple_spread, CPU,
            BenchMARL default hyperparameters (conf/experiment/base_experiment.yaml,
            conf/algorithm/<algo>.yaml, conf/model/layers/mlp.yaml) unless overridden.
            Writes <out>.csv (method,seed,env_steps,mean_return) and <out>.json (timings).
    merge   concatenate per-run CSVs into one CSV and per-run JSONs into one JSON.

mean_return is BenchMARL's ``collection/reward/episode_reward_mean`` (one group, so equal to
``collection/agents/reward/episode_reward_mean``): for every episode that
ended in that iteration's batch, the episode return of each agent averaged over the agents of the
group "agents", then averaged over those episodes. env_steps is ``counters/total_frames`` (frames
collected so far, one frame = one step of one (sub)environment with all agents acting).

Example:
    nice -n 5 /work/benchmarl-venv/bin/python benchmarks/benchmarl/run.py run \
        --algorithm mappo --task vmas/balance --seed 0 --frames 600000 \
        --out benchmarks/results/benchmarl_runs/balance_mappo_s0
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

# Mean over groups of (mean over the group's agents of each ended episode's return), averaged over the
# episodes that ended in the iteration. Both tasks here have a single group ("agents" in VMAS, "agent" in
# PettingZoo), so this equals collection/<group>/reward/episode_reward_mean.
CURVE_KEY = "collection_reward_episode_reward_mean"
FRAMES_KEY = "counters_total_frames"


def _read_scalar(scalars: Path, key: str) -> dict[int, float]:
    out: dict[int, float] = {}
    f = scalars / f"{key}.csv"
    if not f.exists():
        return out
    for line in f.read_text().splitlines():
        if not line.strip():
            continue
        step, value = line.split(",", 1)
        out[int(float(step))] = float(value)
    return out


def _versions() -> dict[str, str]:
    import importlib.metadata as m

    v = {"python": platform.python_version()}
    for p in ["torch", "torchrl", "tensordict", "benchmarl", "vmas", "pettingzoo"]:
        try:
            v[p] = m.version(p)
        except m.PackageNotFoundError:
            pass
    return v


def cmd_run(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)

    from benchmarl.algorithms import IppoConfig, MappoConfig
    from benchmarl.environments import PettingZooTask, VmasTask
    from benchmarl.experiment import Experiment, ExperimentConfig
    from benchmarl.models.mlp import MlpConfig

    env_name, task_name = a.task.split("/")
    enum = {"vmas": VmasTask, "pettingzoo": PettingZooTask}[env_name]
    task = getattr(enum, task_name.upper()).get_from_yaml()
    if env_name == "vmas":
        task.config.update({"n_agents": a.n_agents, "max_steps": a.max_steps})
    else:
        task.config.update({"N": a.n_agents, "max_cycles": a.max_steps})

    algo = {"mappo": MappoConfig, "ippo": IppoConfig}[a.algorithm].get_from_yaml()

    cfg = ExperimentConfig.get_from_yaml()
    cfg.sampling_device = "cpu"
    cfg.train_device = "cpu"
    cfg.buffer_device = "cpu"
    cfg.max_n_frames = a.frames
    cfg.max_n_iters = None
    cfg.loggers = ["csv"]  # no wandb
    cfg.render = False  # no video (torchvision is uninstalled)
    cfg.create_json = False
    cfg.checkpoint_interval = 0
    cfg.checkpoint_at_end = False
    raw = Path(a.raw_dir).resolve() / Path(a.out).name
    raw.mkdir(parents=True, exist_ok=True)
    cfg.save_folder = str(raw)
    for kv in a.set or []:  # overrides of ExperimentConfig fields, e.g. lr=3e-4
        k, v = kv.split("=", 1)
        old = getattr(cfg, k)
        setattr(cfg, k, type(old)(v) if old is not None and not isinstance(old, bool) else json.loads(v))

    model = MlpConfig.get_from_yaml()
    critic = MlpConfig.get_from_yaml()

    exp = Experiment(
        task=task,
        algorithm_config=algo,
        model_config=model,
        critic_model_config=critic,
        seed=a.seed,
        config=cfg,
    )
    import resource

    load_start = os.getloadavg()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    exp.run()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)

    scalars = Path(exp.folder_name) / exp.name / "scalars"
    curve = _read_scalar(scalars, CURVE_KEY)
    frames = _read_scalar(scalars, FRAMES_KEY)
    coll = _read_scalar(scalars, "timers_collection_time")
    train = _read_scalar(scalars, "timers_training_time")
    itert = _read_scalar(scalars, "timers_iteration_time")
    evalret = _read_scalar(scalars, "eval_reward_episode_reward_mean")

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [(a.method, a.seed, int(frames[s]), curve[s]) for s in sorted(curve) if s in frames]
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", "env_steps", "mean_return"])
        w.writerows(rows)

    total_frames = int(max(frames.values())) if frames else exp.total_frames
    sum_it = sum(itert.values())
    last5 = [r[3] for r in rows[-5:]]
    info = {
        "method": a.method,
        "seed": a.seed,
        "algorithm": a.algorithm,
        "task": a.task,
        "task_config": dict(task.config),
        "total_frames": total_frames,
        "iterations": len(itert),
        "wall_s_run": round(wall, 2),
        "env_steps_per_s_incl_training": round(total_frames / wall, 1),
        "process_cpu_s": round(cpu_s, 2),
        "cpu_utilisation": round(cpu_s / wall, 3),
        "env_steps_per_cpu_s": round(total_frames / cpu_s, 1),
        "sum_iteration_time_s": round(sum_it, 2),
        "sum_collection_time_s": round(sum(coll.values()), 2),
        "sum_training_time_s": round(sum(train.values()), 2),
        "eval_and_other_time_s": round(sum_it - sum(coll.values()) - sum(train.values()), 2),
        "collection_only_env_steps_per_s": round(total_frames / sum(coll.values()), 1) if coll else None,
        "training_fraction_of_wall": round(sum(train.values()) / wall, 3) if train else None,
        "final_mean_return": rows[-1][3] if rows else None,
        "final_mean_return_last5_iters": round(sum(last5) / len(last5), 3) if last5 else None,
        "eval_mean_return_by_iter": {str(k): v for k, v in sorted(evalret.items())},
        "curve_key": "collection/reward/episode_reward_mean (== collection/<group>/reward/episode_reward_mean, single group)",
        "hyperparameters": {
            "frames_per_batch": cfg.on_policy_collected_frames_per_batch,
            "n_envs": cfg.on_policy_n_envs_per_worker,
            "n_minibatch_iters": cfg.on_policy_n_minibatch_iters,
            "minibatch_size": cfg.on_policy_minibatch_size,
            "lr": cfg.lr,
            "gamma": cfg.gamma,
            "lmbda": algo.lmbda,
            "clip_epsilon": algo.clip_epsilon,
            "entropy_coef": algo.entropy_coef,
            "share_param_critic": algo.share_param_critic,
            "share_policy_params": cfg.share_policy_params,
            "model": "mlp 256x256 tanh (policy and critic)",
            "evaluation_interval": cfg.evaluation_interval,
            "evaluation_episodes": cfg.evaluation_episodes,
        },
        "torch_threads": torch.get_num_threads(),
        "raw_log_dir": str(Path(exp.folder_name) / exp.name),
        "versions": _versions(),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "niceness": os.nice(0),
        "host_cpus": os.cpu_count(),
        "loadavg_at_start": load_start,
        "loadavg_at_end": os.getloadavg(),
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str))
    print(json.dumps({k: info[k] for k in ["method", "total_frames", "wall_s_run",
                                            "env_steps_per_s_incl_training",
                                            "collection_only_env_steps_per_s",
                                            "final_mean_return_last5_iters"]}))


def cmd_merge(a: argparse.Namespace) -> None:
    rows = []
    runs = []
    for p in a.inputs:
        p = Path(p)
        with open(p.with_suffix(".csv")) as f:
            r = list(csv.reader(f))
            rows.extend(r[1:])
        if p.with_suffix(".json").exists():
            runs.append(json.loads(p.with_suffix(".json").read_text()))
    with open(a.out_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", "env_steps", "mean_return"])
        w.writerows(rows)
    extra = json.loads(a.extra) if a.extra else {}
    Path(a.out_json).write_text(json.dumps({**extra, "runs": runs}, indent=2, default=str))
    print(f"wrote {a.out_csv} ({len(rows)} rows) and {a.out_json} ({len(runs)} runs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--algorithm", choices=["mappo", "ippo"], required=True)
    r.add_argument("--task", default="vmas/balance",
                   choices=["vmas/balance", "vmas/simple_spread", "pettingzoo/simple_spread"])
    r.add_argument("--n-agents", type=int, default=4)
    r.add_argument("--max-steps", type=int, default=100)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--frames", type=int, default=600_000)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--method", default=None, help="name in the CSV; default BenchMARL-<ALGO>")
    r.add_argument("--out", required=True, help="output path without extension (.csv and .json written)")
    r.add_argument("--raw-dir", default="/work/benchmarl-runs", help="where BenchMARL writes its own logs")
    r.add_argument("--set", action="append", help="override an ExperimentConfig field, KEY=VALUE")
    m = sub.add_parser("merge")
    m.add_argument("--inputs", nargs="+", required=True, help="per-run output paths (without extension)")
    m.add_argument("--out-csv", required=True)
    m.add_argument("--out-json", required=True)
    m.add_argument("--extra", default=None, help="JSON object merged into the top level of out-json")
    a = ap.parse_args()
    if a.cmd == "run":
        a.method = a.method or f"BenchMARL-{a.algorithm.upper()}"
        cmd_run(a)
    else:
        cmd_merge(a)


if __name__ == "__main__":
    main()
