"""``python -m tag_actors.launch CONFIG``: wire the processes of a run, start them, supervise, show progress.

The launcher only wires and supervises: it writes the resolved config and the plan (endpoints, metrics ports,
Prometheus targets) into the run folder, starts the env and one process per agent, prints progress from their
event logs, and stops everyone cleanly on Ctrl-C, SIGTERM, or the first crash (named, with its traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tag_actors import config as config_mod
from tag_actors.config_files import find_config
from tag_actors.end_of_run import RunEnd, check_loggers
from tag_actors.external import external_instructions, missing_externals
from tag_actors.hosts import HandshakeWatch, remote_places
from tag_actors.procs import live_processes
from tag_actors.progress import RunWatcher
from tag_actors.runlog import checkpoint_ticks, file_name, read_events, write_episodes_csv
from tag_actors.spare import SPARE_ARG, SPARE_DELAY_ENV
from tag_actors.supervisor import (
    RESTARTS_ENV,
    Blame,
    RestartBudget,
    Spawn,
    Supervisor,
    env_completed,
    restart_policy,
    terminate,
)
from tag_actors.topology import ENV, assign_endpoints, build_plan, host_address, host_of, remove_socket_dir


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
    p.add_argument("--check", action="store_true",
                   help="with --host: check in seconds that every link to another host connects, the CURVE keys "
                        "match and the configs agree (run it on every host), then exit")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="every process a Ray actor (pip install 'tag_actors[ray]'): alone, on a Ray started for "
                        "this run; with 'auto' or HOST:PORT, on that cluster ([placement.ray] places them)")
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
    """Refuse a port another process listens on, as the bind of the run would. With SO_REUSEADDR, as ZeroMQ
    binds: a port a finished run left in TIME_WAIT is free to reuse at once, not 'in use'."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise config_mod.ConfigError(
                    f"{what}: cannot assign address {host}: not an address of this host (is placement.hosts "
                    f"right for this host? `ip addr` lists its addresses; fix it in the config or with "
                    f"--set placement.hosts.NAME=ADDR)") from None
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
                host: str | None = None, restarts: int = 0, launcher_port: int | None = None) -> dict[str, Any]:
    """Write config.json and plan.json into ``run_dir``; returns the plan's wiring. On several hosts every host
    computes the same plan from the same config (fixed ports), and runs its own share of the processes.
    ``restarts``/``launcher_port``: a run the launcher restarts after a fault keeps its launcher's metrics port."""
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
            if launcher_port is None:
                launcher_port = cfg.run.metrics_base_port + len(names)
                check_port_free(launcher_port, metrics_addr, f"{cfg.source}: run.metrics_base_port (the "
                                f"launcher's metrics, base + {len(names)})")
        else:
            *ports, fresh_port = free_ports(len(names) + 1)
            metrics_ports = dict(zip(names, ports, strict=True))
            launcher_port = fresh_port if launcher_port is None else launcher_port
    wiring = {"endpoints": plan.endpoints, "metrics_ports": metrics_ports, "host": host, "processes": mine,
              "external": [n for n in mine if n in cfg.placement.external],
              "metrics_addr": metrics_addr, "resume": resume, "cwd": str(Path.cwd()), "run_id": run,
              "launcher_pid": os.getpid(), "restarts": restarts}
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
    for pid, argv in live_processes().items():
        if "tag_actors.actor" in argv and len(argv) >= 2 and argv[-2] == str(run_dir):
            name = argv[-1]
            if name == SPARE_ARG:  # a warm spare keeps its argv when it becomes a process: its state file names it
                name = next((n for n, st in read_states(run_dir).items() if st.get("pid") == pid), "spare")
            out[name] = pid
    return out


def read_states(run_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in (run_dir / "logs").glob("*.state.json"):
        try:
            st = json.loads(path.read_text())
            out[st["name"]] = st
        except (OSError, ValueError, KeyError):
            continue
    return out


def supervise(run_dir: Path, children: list[Child], watcher: RunWatcher | None, stall_timeout_s: float,
              on_failure: Callable[[str, str], None] | None = None, spawn: Spawn | None = None,
              restartable: Callable[[str], bool] = lambda name: False, budget: RestartBudget | None = None,
              hosts: HandshakeWatch | None = None, on_fault: Callable[[Blame], str] | None = None) -> Supervisor:
    """Wait for every child (showing progress and feeding the loggers through ``watcher``); on a fault name its
    cause (to ``on_failure(name, how)`` too) and either restart that process alone through ``spawn`` (its
    level's policy is 'always' and the budget allows) or stop the others (see ``supervisor``). ``hosts``: on a
    run over hosts, say whom the handshakes wait for where, and name a process of another host with its host."""

    def poll() -> None:
        if watcher is not None:
            watcher.tick()
        if hosts is not None:
            hosts.poll()

    supervisor = Supervisor(run_dir, children, stall_timeout_s, on_poll=poll, on_failure=on_failure, spawn=spawn,
                            restartable=restartable, budget=budget, on_fault=on_fault,
                            remote=remote_places(hosts.cfg, hosts.plan, hosts.mine) if hosts else {})
    supervisor.run()
    return supervisor


def start_child(run_dir: Path, name: str, restarts: int = 0) -> Child:
    """Start process ``name`` (``restarts`` > 0: the supervisor starts it again; it resumes and rejoins)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env[RESTARTS_ENV] = str(restarts)
    log_path = run_dir / "logs" / f"{file_name(name)}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tag_actors.actor", str(run_dir), name], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True, preexec_fn=_set_parent_death_signal)
    return Child(name, proc, log_path)


def start_children(run_dir: Path, names: list[str]) -> list[Child]:
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    for stale in (run_dir / "logs").glob("*.failure.json"):  # a resumed run's old faults
        stale.unlink(missing_ok=True)
    return [start_child(run_dir, name) for name in names]


SPARE_AFTER_RESTART_S = 3.0
"""The next spare starts importing this long after a restart, leaving the CPU to the restarted process."""


class Spawner:
    """The launcher's ``spawn(name) -> Child`` for the supervisor (``supervisor.Spawn``): it hands the name to a
    warm spare that has already imported torch and the run's code (``tag_actors.spare``), and starts the next
    spare; without a live spare it starts the process cold. Counts restarts per name."""

    def __init__(self, run_dir: Path, warm: bool = True):
        self.run_dir = run_dir
        self.warm = warm
        self.counts: dict[str, int] = {}
        self.spare: subprocess.Popen | None = None
        if warm:
            self._start_spare()

    def _start_spare(self, delay_s: float = 0.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        env[SPARE_DELAY_ENV] = str(delay_s)
        with (self.run_dir / "logs" / "spare.log").open("ab") as log:
            self.spare = subprocess.Popen([sys.executable, "-m", "tag_actors.actor", str(self.run_dir), SPARE_ARG],
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, env=env,
                                          start_new_session=True, preexec_fn=_set_parent_death_signal)

    def __call__(self, name: str) -> Child:
        self.counts[name] = self.counts.get(name, 0) + 1
        spare, self.spare = self.spare, None
        if spare is not None and spare.poll() is None and spare.stdin is not None:
            try:
                spare.stdin.write(f"{name} {self.counts[name]}\n".encode())
                spare.stdin.close()
                child = Child(name, spare, self.run_dir / "logs" / f"{file_name(name)}.log")
            except BrokenPipeError:
                child = start_child(self.run_dir, name, self.counts[name])
        else:
            child = start_child(self.run_dir, name, self.counts[name])
        if self.warm:
            self._start_spare(delay_s=SPARE_AFTER_RESTART_S)
        return child

    def close(self) -> None:
        """End the unused spare (end of its input: it exits; killed if it does not within a few seconds)."""
        spare, self.spare = self.spare, None
        if spare is None:
            return
        with contextlib.suppress(OSError):
            spare.stdin.close()
        try:
            spare.wait(timeout=5)
        except subprocess.TimeoutExpired:
            spare.kill()
            spare.wait()


def write_summary(run_dir: Path) -> Path:
    """episodes.csv: one row per finished episode per agent (level 0 rows are the env's per-agent returns)."""
    return write_episodes_csv(run_dir)


def _interrupt(signum: int, _frame: Any) -> None:
    """SIGTERM as Ctrl-C: unwind through the ``finally`` blocks that save checkpoints and logs."""
    raise KeyboardInterrupt


def catch_interrupts() -> None:
    """SIGINT and SIGTERM both stop the run cleanly. SIGINT is set explicitly: a launcher started as a background
    job of a script inherits SIGINT ignored (Python then installs no Ctrl-C handler), and ``kill -INT`` must still
    stop it."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def _main_serial(cfg: config_mod.Config, run_dir: Path, resume: bool, quiet: bool) -> int:
    """The whole hierarchy in this process (``--serial``): stopped by Ctrl-C or SIGTERM, it still checkpoints
    every agent and writes episodes.csv, as an actor run does."""
    from tag_actors.serial import run_serial

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "source": cfg.source}))
    end = RunEnd.start(cfg, run_dir, quiet)
    print(f"run {cfg.run.name!r}: the whole hierarchy in this process (--serial); run folder {run_dir}")
    catch_interrupts()
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
    backend = None
    try:
        if args.resume:
            run_dir = args.resume.resolve()
            cfg = config_mod.load_resolved(run_dir / "config.json", overrides)
            check_resume(run_dir, cfg)
        elif args.config is None:
            raise config_mod.ConfigError("give a CONFIG file, or --resume RUN_DIR")
        else:
            cfg = config_mod.load(find_config(args.config), overrides)
            run_dir = (args.run_dir or Path("runs") / f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
        check_loggers(cfg)
        if args.serial:
            return _main_serial(cfg, run_dir, bool(args.resume), args.quiet)
        if args.check:
            from tag_actors.preflight import preflight

            return preflight(cfg, args.host)
        backend = ray_backend(cfg, run_dir, args)
        wiring = (backend.prepare(resume=bool(args.resume)) if backend else
                  prepare_run(cfg, run_dir, resume=bool(args.resume), host=args.host))
    except config_mod.ConfigError as e:
        print(f"tag_actors: config error: {e}", file=sys.stderr)
        if backend is not None:
            backend.close()
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
    catch_interrupts()
    code = 130
    children: list[Child] = []
    budget = RestartBudget(cfg.run.max_restarts, cfg.run.restart_window_s, cfg.run.restart_backoff_s)

    def restartable(name: str) -> bool:
        """A fault of ``name`` is restarted when its level says 'always', on one host, with no external process
        (the launcher restarts only what it started)."""
        level = 0 if name == ENV else int(name[1:].split(".")[0])
        return restart_policy(cfg, level) == "always" and not cfg.multi_host and not external

    delay: list[float | None] = [None]

    def whole_run_fault(blame: Blame) -> str:
        """The Ray backend's fault: restart the whole run from its checkpoints if the level allows it and the
        budget is not spent; otherwise stop."""
        delay[0] = None
        if not restartable(blame.name):
            return "stopping the run"
        delay[0] = budget.next_delay(blame.name)
        if delay[0] is None:
            return (f"stopping the run: {cfg.run.max_restarts} restarts within run.restart_window_s = "
                    f"{cfg.run.restart_window_s:.0f}s already")
        return (f"restarting the run from its checkpoints in {delay[0]:.1f}s (restart {budget.total + 1}; "
                f"{len(budget.times) + 1} of {cfg.run.max_restarts} within {cfg.run.restart_window_s:.0f}s)")

    spawner: Spawner | None = None
    try:
        if backend is not None:  # Ray: a restarted process may land on another node (new endpoints):
            while True:          # the whole run restarts from its checkpoints (Erlang's one_for_all)
                children = backend.start(names)
                supervisor = supervise(run_dir, children, end.watcher, cfg.run.stall_timeout_s,
                                       run_state.failed if run_state else None, hosts=host_watch(cfg, wiring, run_dir),
                                       on_fault=whole_run_fault)
                code = 1 if supervisor.blame else 0
                if supervisor.blame is None or delay[0] is None:
                    break
                time.sleep(delay[0])
                restarts = budget.spend(supervisor.blame.name)
                remove_socket_dir(wiring["endpoints"], every_process_ended=True)
                wiring = backend.prepare(resume=True, restarts=restarts,
                                         launcher_port=wiring.get("launcher_metrics_port"))
                if env_completed(run_dir):
                    break
        else:
            children = start_children(run_dir, [n for n in names if n not in external])
            if any(restartable(n) for n in names):
                spawner = Spawner(run_dir)
            supervisor = supervise(run_dir, children, end.watcher, cfg.run.stall_timeout_s,
                                   run_state.failed if run_state else None, spawner, restartable, budget,
                                   host_watch(cfg, wiring, run_dir))
            children = supervisor.children
            code = 1 if supervisor.blame else 0
    except KeyboardInterrupt:
        stop_on_interrupt(children)
    finally:
        if spawner is not None:
            spawner.close()
        if code == 1:
            for name in missing_externals(run_dir, external):
                print(f"tag_actors: external process {name!r} did not join within run.startup_timeout_s = "
                      f"{cfg.run.startup_timeout_s:.0f}s (its neighbours waited for it; see the addresses above)",
                      file=sys.stderr)
        remove_socket_dir(wiring["endpoints"], every_process_ended=True)
        if backend is not None:
            backend.close()
        if wiring["metrics_ports"]:  # however the run ended: its final state, then it leaves Prometheus's targets
            from tag_actors import run_metrics

            link = wiring.get("file_sd_link")
            run_metrics.finish(run_state, code, run_dir / "prometheus_targets.json", Path(link) if link else None)
    end.finish(code, write_summary(run_dir))
    return code


def host_watch(cfg: config_mod.Config, wiring: dict[str, Any], run_dir: Path) -> HandshakeWatch | None:
    """On a run over hosts: the launcher's view of the other hosts (see ``hosts.HandshakeWatch``)."""
    if not cfg.multi_host:
        return None
    plan = build_plan(cfg)
    plan.endpoints = wiring["endpoints"]
    return HandshakeWatch(run_dir, cfg, plan, wiring["processes"])


def ray_backend(cfg: config_mod.Config, run_dir: Path, args: argparse.Namespace) -> Any:
    """The Ray backend when ``--ray`` or ``run.backend = "ray"`` asks for it; None for local processes."""
    if args.ray is None and cfg.run.backend != "ray":
        return None
    from tag_actors.ray_placement import check_not_host_placement

    if args.host:
        raise config_mod.ConfigError("--host and --ray: Ray places every process itself; give one of them")
    try:
        check_not_host_placement(cfg.placement, cfg.source)
    except ValueError as e:
        raise config_mod.ConfigError(str(e)) from None
    try:
        from tag_actors.ray_backend import RayBackend
    except ImportError as e:
        raise config_mod.ConfigError(f"the Ray backend needs Ray ({e}): pip install 'tag_actors[ray]'") from None
    return RayBackend(cfg, run_dir, args.ray)


def stop_on_interrupt(children: list[Child]) -> None:
    """Ctrl-C or SIGTERM: every process checkpoints and exits. A second one kills them at once; either way the
    launcher goes on to write episodes.csv, and no further signal interrupts it."""
    print("\ntag_actors: interrupted; stopping every process (checkpoints and logs are being saved; "
          "interrupt again to kill them now)", file=sys.stderr)
    again: list[int] = []

    def hurry(signum: int, _frame: Any) -> None:
        if not again:
            print("tag_actors: interrupted again; killing every process (episodes.csv is still written)",
                  file=sys.stderr)
        again.append(signum)

    signal.signal(signal.SIGINT, hurry)
    signal.signal(signal.SIGTERM, hurry)
    terminate(children, hurry=lambda: bool(again))


def check_resume(run_dir: Path, cfg: config_mod.Config) -> None:
    """``--resume`` continues every process from its latest checkpoint; refuse when those disagree by more than
    one checkpoint interval (a process that failed long before the others stopped would come back far behind,
    its parent's and children's clocks no longer matching its own)."""
    ticks = checkpoint_ticks(run_dir)
    if len(ticks) < 2:
        return
    rate = 0.0
    for e in read_events(run_dir, "env"):
        if e["type"] == "status" and e.get("elapsed_s"):
            rate = max(rate, e["ticks"] / e["elapsed_s"])  # ticks per second at the env (status since its start)
    allowed = max(1, int(rate * cfg.run.checkpoint_every_s) + 1) if cfg.run.checkpoint_every_s else 1
    spread = max(ticks.values()) - min(ticks.values())
    if spread > allowed:
        listing = ", ".join(f"{n} at tick {t}" for n, t in sorted(ticks.items(), key=lambda nt: nt[1]))
        raise config_mod.ConfigError(
            f"--resume {run_dir}: the checkpoints disagree by {spread} ticks, more than one checkpoint interval "
            f"(run.checkpoint_every_s = {cfg.run.checkpoint_every_s}: about {allowed} ticks): {listing}. "
            "A process that stopped long before the others would resume behind them; start a new run, or remove "
            "the stale checkpoints under checkpoints/ to start those agents afresh")


if __name__ == "__main__":
    sys.exit(main())
