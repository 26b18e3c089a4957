"""``python -m tag_actors.launch CONFIG``: wire the processes of a run, start them, supervise, show progress.

The launcher only wires and supervises: it writes the resolved config and the plan (endpoints, metrics ports,
Prometheus targets) into the run folder, starts the env and one process per agent, prints progress from their
event logs, and stops everyone cleanly on Ctrl-C, SIGTERM, or the first crash (named, with its traceback).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tag_actors import config as config_mod
from tag_actors.config_files import find_config
from tag_actors.end_of_run import RunEnd, check_loggers
from tag_actors.external import external_instructions, missing_externals
from tag_actors.progress import RunWatcher
from tag_actors.runlog import file_name
from tag_actors.topology import ENV, assign_endpoints, build_plan, host_address, host_of, remove_socket_dir

GRACE_S = 10.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tag_actors.launch", description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path, nargs="?",
                   help="TOML config file, or the name of a shipped one (balance, spread, ...); omit with --resume")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue a run from its checkpoints (its config, plus any --set; raise run.total_env_steps)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--seed", type=int, help="shorthand for --set run.seed=N")
    p.add_argument("--run-dir", type=Path, help="run folder (default: runs/<name>-<time>)")
    p.add_argument("--serial", action="store_true", help="run the whole hierarchy in this process (debugging)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or lines (the summary still prints)")
    p.add_argument("--host", help="start only the processes that placement puts on this host")
    p.add_argument("--schema", action="store_true",
                   help="print the JSON Schema of a config file (every agent type's params) and exit")
    return p.parse_args(argv)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def check_port_free(port: int, host: str, what: str) -> None:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise config_mod.ConfigError(f"{what}: port {port} on {host} is in use ({e.strerror})") from None


def local_processes(cfg: config_mod.Config, plan: Any, host: str | None) -> tuple[str, list[str]]:
    """(this host's name, the processes it runs). Several hosts in the placement need --host."""
    known = plan.processes()
    unknown = sorted(set(cfg.placement.processes) - set(known))
    if unknown:
        raise config_mod.ConfigError(f"{cfg.source}: placement.processes.{unknown[0]}: no such process "
                                     f"(processes: {', '.join(known)})")
    strangers = [n for n in cfg.placement.external if n not in known]
    if strangers:
        raise config_mod.ConfigError(f"{cfg.source}: placement.external: no process {strangers[0]!r} "
                                     f"(processes: {', '.join(known)})")
    if host is None:
        if cfg.multi_host:
            raise config_mod.ConfigError(f"{cfg.source}: the placement spreads the run over hosts "
                                         f"{', '.join(cfg.placement.hosts)}: start each with --host NAME")
        return next(iter(cfg.placement.hosts), socket.gethostname()), known
    if host not in cfg.placement.hosts:
        raise config_mod.ConfigError(f"--host {host!r} is not one of placement.hosts in {cfg.source} "
                                     f"({', '.join(cfg.placement.hosts) or 'none defined'})")
    return host, [n for n in known if host_of(cfg, plan, n) == host]


def prepare_run(cfg: config_mod.Config, run_dir: Path, resume: bool = False,
                host: str | None = None) -> dict[str, Any]:
    """Write config.json and plan.json into ``run_dir``; returns the plan's wiring. On several hosts every host
    computes the same plan from the same config (fixed ports), and runs its own share of the processes."""
    plan = build_plan(cfg)
    host, mine = local_processes(cfg, plan, host)
    if cfg.run.cpu_affinity == "env_apart" and ENV in mine and hasattr(os, "sched_getaffinity"):
        spare, agents = len(os.sched_getaffinity(0)) - 1, len(mine) - 1
        if agents > spare:
            print(f"tag_actors: run.cpu_affinity = 'env_apart' leaves {spare} CPU(s) to {agents} agent processes: "
                  "learning agents may fall behind an async env (fewer decisions) or hold up a lockstep one",
                  file=sys.stderr)
    address = host_address(cfg, host)
    from tag_actors.run_metrics import LAUNCHER, run_id

    run = run_id(run_dir, time.time(), fresh=not (run_dir / "plan.json").exists(), shared=cfg.multi_host)
    run_dir.mkdir(parents=True, exist_ok=True)
    names = plan.processes()
    links = [c for c, p in plan.parent.items() if p is not None]
    if cfg.run.transport == "tcp":
        if cfg.run.base_port:
            ports = [cfg.run.base_port + i for i in range(len(links))]
            for port, child in zip(ports, links, strict=True):
                if plan.process_of(child) in mine:
                    check_port_free(port, address, f"{cfg.source}: run.base_port (link of {child!r})")
        else:
            ports = free_ports(len(links), address)
        assign_endpoints(plan, cfg, ports)
    else:
        assign_endpoints(plan, cfg)
    metrics_ports: dict[str, int] = {}
    metrics_addr = address if cfg.multi_host else "127.0.0.1"
    if cfg.run.metrics:
        if cfg.run.metrics_base_port:
            metrics_ports = {n: cfg.run.metrics_base_port + i for i, n in enumerate(names)}
            for n in mine:
                check_port_free(metrics_ports[n], metrics_addr,
                                f"{cfg.source}: run.metrics_base_port (metrics of {n!r})")
            launcher_port = cfg.run.metrics_base_port + len(names)
            check_port_free(launcher_port, metrics_addr, f"{cfg.source}: run.metrics_base_port (the launcher's "
                            f"metrics, base + {len(names)})")
        else:
            *ports, launcher_port = free_ports(len(names) + 1)
            metrics_ports = dict(zip(names, ports, strict=True))
    wiring = {"endpoints": plan.endpoints, "metrics_ports": metrics_ports, "host": host, "processes": mine,
              "external": [n for n in mine if n in cfg.placement.external],
              "metrics_addr": metrics_addr, "resume": resume, "cwd": str(Path.cwd()), "run_id": run,
              "launcher_pid": os.getpid()}
    (run_dir / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "source": cfg.source}, indent=2))
    if metrics_ports:
        from tag_actors.metrics import file_sd_target, link_file_sd, write_file_sd

        wiring["launcher_metrics_port"] = launcher_port
        targets = [file_sd_target(metrics_addr, metrics_ports[n], run=run, config=cfg.run.name,
                                  level=plan.level_of(n), agent=n, host=host, role="env" if n == ENV else "agent")
                   for n in mine if n not in wiring["external"]]  # an external process serves none
        targets.append(file_sd_target(metrics_addr, launcher_port, run=run, config=cfg.run.name, level=None,
                                      agent=LAUNCHER, host=host, role=LAUNCHER))
        sd_file = write_file_sd(run_dir / "prometheus_targets.json", targets)
        root = Path(__file__).resolve().parent.parent
        monitoring = root / "monitoring"
        if monitoring.is_dir() and run_dir.is_relative_to(root):
            # a run inside the source checkout (runs/...): make it visible to monitoring/prometheus.yml
            wiring["file_sd_link"] = str(link_file_sd(sd_file, monitoring / "targets", name=run))
    (run_dir / "plan.json").write_text(json.dumps(wiring, indent=2))
    return wiring


def _set_parent_death_signal() -> None:
    """Children get SIGTERM if the launcher dies, so a killed launcher leaves no orphans (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path


def actor_pids(run_dir: Path) -> dict[str, int]:
    """name -> pid of the live actor processes of ``run_dir`` (their argv ends with ``RUN_DIR NAME``)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if "tag_actors.actor" in argv and len(argv) >= 2 and argv[-2] == str(run_dir) and state != "Z":
            out[argv[-1]] = int(pid)
    return out


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


PEER_LOST_EXIT = 3  # an actor that exits because a peer vanished: a symptom, not the cause


def supervise(children: list[Child], watcher: RunWatcher | None, on_failure: Any = None) -> int:
    """Wait for every child (showing progress and feeding the loggers through ``watcher``); on the first failure
    report it (to ``on_failure(name, how)`` too), then stop the others. Returns the exit code."""
    while True:
        running = [c for c in children if c.proc.poll() is None]
        if any(c.proc.returncode not in (None, 0) for c in children):
            root, how = report_failure(children)
            if on_failure is not None:
                on_failure(root, how)
            terminate(children)
            return 1
        if not running:
            return 0
        if watcher:
            watcher.tick()
        time.sleep(0.1)


def report_failure(children: list[Child]) -> tuple[str, str]:
    """Name the process that caused the failure: one that crashed (it leaves ``logs/<name>.failure.json`` before
    its sockets close), rather than the neighbours that only saw it vanish and exited with PEER_LOST_EXIT."""
    def failure(c: Child) -> dict[str, Any] | None:
        path = c.log_path.with_suffix(".failure.json")
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        records = [(c, failure(c)) for c in children]
        crashes = [(c, f) for c, f in records if f and f["kind"] == "crash"]
        if crashes or all(c.proc.poll() is not None for c in children):
            break
        time.sleep(0.05)
    failed = [c for c in children if c.proc.poll() not in (None, 0)]
    crashed = sorted(crashes, key=lambda cf: cf[1]["time"])
    killed = [c for c in failed if c.proc.returncode < 0 or (c.proc.returncode != PEER_LOST_EXIT and not failure(c))]
    root = crashed[0][0] if crashed else (killed[0] if killed else failed[0])
    how = f"exit code {root.proc.returncode}" if root.proc.returncode is not None else "crashed"
    if root.proc.returncode is not None and root.proc.returncode < 0:
        how = f"killed by {signal.Signals(-root.proc.returncode).name}"
    print(f"\ntag_actors: process {root.name!r} failed ({how}); stopping the run."
          f"\n--- last lines of {root.log_path} ---\n{tail(root.log_path)}\n---", file=sys.stderr)
    for other in failed:
        if other is not root:
            print(f"tag_actors: process {other.name!r} also exited ({other.proc.returncode}): "
                  f"{tail(other.log_path, 1)}", file=sys.stderr)
    return root.name, how


def terminate(children: list[Child]) -> None:
    for c in children:
        if c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for c in children:
        try:
            c.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"tag_actors: {c.name!r} did not stop within {GRACE_S:.0f}s; killing it", file=sys.stderr)
            c.proc.kill()
            c.proc.wait()


def start_children(run_dir: Path, names: list[str]) -> list[Child]:
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    children = []
    for name in names:
        log_path = run_dir / "logs" / f"{file_name(name)}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "tag_actors.actor", str(run_dir), name], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True, preexec_fn=_set_parent_death_signal)
        children.append(Child(name, proc, log_path))
    return children


def write_summary(run_dir: Path) -> Path:
    """episodes.csv: one row per finished episode per agent (level 0 rows are the env's per-agent returns)."""
    from tag_actors.runlog import read_events

    out = run_dir / "episodes.csv"
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "level", "env_steps", "episode_return", "episode_length"])
        for e in read_events(run_dir):
            if e["type"] != "episodes":
                continue
            if e["name"] == ENV:
                for agent, returns in e["returns"].items():
                    for r, n in zip(returns, e["lengths"], strict=True):
                        w.writerow([f"env:{agent}", 0, e["env_steps"], r, n])
            else:
                for r, n in zip(e["returns"], e["lengths"], strict=True):
                    w.writerow([e["name"], e["level"], e["env_steps"], r, n])
    return out


def _interrupt(signum: int, _frame: Any) -> None:
    """SIGTERM as Ctrl-C: unwind through the ``finally`` blocks that save checkpoints and logs."""
    raise KeyboardInterrupt


def _main_serial(cfg: config_mod.Config, run_dir: Path, resume: bool, quiet: bool) -> int:
    """The whole hierarchy in this process (``--serial``): stopped by Ctrl-C or SIGTERM, it still checkpoints
    every agent and writes episodes.csv, as an actor run does."""
    from tag_actors.serial import run_serial

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "source": cfg.source}))
    end = RunEnd.start(cfg, run_dir, quiet)
    print(f"run {cfg.run.name!r}: the whole hierarchy in this process (--serial); run folder {run_dir}")
    signal.signal(signal.SIGTERM, _interrupt)
    code = 0
    try:
        run_serial(cfg, run_dir, progress=end.watcher.tick, resume=resume)
    except KeyboardInterrupt:
        print("\ntag_actors: interrupted; checkpoints and logs saved", file=sys.stderr)
        code = 130
    end.finish(code, write_summary(run_dir))
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.schema:
        print(json.dumps(config_mod.json_schema(), indent=2))
        return 0
    overrides = list(args.set) + ([f"run.seed={args.seed}"] if args.seed is not None else [])
    try:
        if args.resume:
            run_dir = args.resume.resolve()
            cfg = config_mod.load_resolved(run_dir / "config.json", overrides)
        elif args.config is None:
            raise config_mod.ConfigError("give a CONFIG file, or --resume RUN_DIR")
        else:
            cfg = config_mod.load(find_config(args.config), overrides)
            run_dir = (args.run_dir or Path("runs") / f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
        check_loggers(cfg)
        if args.serial:
            return _main_serial(cfg, run_dir, bool(args.resume), args.quiet)
        wiring = prepare_run(cfg, run_dir, resume=bool(args.resume), host=args.host)
    except config_mod.ConfigError as e:
        print(f"tag_actors: config error: {e}", file=sys.stderr)
        return 2
    names = wiring["processes"]
    where = f" on host {wiring['host']!r}" if cfg.multi_host else ""
    print(f"run {cfg.run.name!r}: {len(names)} processes{where} ({', '.join(names)}); run folder {run_dir}")
    if wiring["metrics_ports"]:
        ports = ", ".join(f"{n}:{wiring['metrics_ports'][n]}" for n in names)
        print(f"metrics: http://{wiring['metrics_addr']}:PORT/metrics with {ports}, "
              f"launcher:{wiring['launcher_metrics_port']}; label run=\"{wiring['run_id']}\"; Prometheus targets in "
              f"{run_dir / 'prometheus_targets.json'}")
    run_state = None
    if wiring.get("launcher_metrics_port"):
        from tag_actors import run_metrics

        run_state = run_metrics.start(wiring["run_id"], cfg.run.name, wiring["host"], run_dir,
                                      cfg.run.total_env_steps, wiring["launcher_metrics_port"],
                                      wiring["metrics_addr"])
    external = wiring["external"]
    for name in external:
        print(external_instructions(cfg, run_dir, wiring, name), flush=True)
    end = RunEnd.start(cfg, run_dir, args.quiet)
    children = start_children(run_dir, [n for n in names if n not in external])
    signal.signal(signal.SIGTERM, _interrupt)
    code = 130
    try:
        code = supervise(children, end.watcher, run_state.failed if run_state else None)
    except KeyboardInterrupt:
        print("\ntag_actors: interrupted; stopping every process (checkpoints and logs are being saved)",
              file=sys.stderr)
        terminate(children)
    finally:
        if code == 1:
            for name in missing_externals(run_dir, external):
                print(f"tag_actors: external process {name!r} did not join within run.startup_timeout_s = "
                      f"{cfg.run.startup_timeout_s:.0f}s (its neighbours waited for it; see the addresses above)",
                      file=sys.stderr)
        remove_socket_dir(wiring["endpoints"], every_process_ended=True)
        if wiring["metrics_ports"]:  # however the run ended: its final state, then it leaves Prometheus's targets
            from tag_actors import run_metrics

            link = wiring.get("file_sd_link")
            run_metrics.finish(run_state, code, run_dir / "prometheus_targets.json", Path(link) if link else None)
    end.finish(code, write_summary(run_dir))
    return code


if __name__ == "__main__":
    sys.exit(main())
