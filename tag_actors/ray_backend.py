"""The Ray backend: every process of a run (the env, each agent) is a Ray actor; Ray places and supervises, ZeroMQ
still carries the ticks.

Start-up, driven by the launcher (``--ray [ADDRESS]`` or ``run.backend = "ray"``):

1. one ``TagProcess`` actor per process, placed by ``[placement.ray]`` (a custom resource, a node label, or a
   placement group per level; by default Ray decides);
2. each reports its node (id, IP) and binds, then releases, the ports it will serve (its links, its metrics) on
   its node's IP; the driver builds the endpoints from those, writes config.json, plan.json and the Prometheus
   file_sd list, and makes the run's CURVE keys in memory (placement.curve): each actor gets its own key pair and
   the run's public keys as an argument of its ``run`` call, never through a file;
3. then ``run`` starts every tick loop, in the main thread of the actor's worker process (the signal handlers
   that checkpoint on SIGTERM need the main thread; a subprocess per actor would double the processes and put
   a process Ray does not know about between Ray and the loop).

Supervision stays the launcher's ``Supervisor``: each actor is seen through ``RayProc``, a Popen-like handle
(``poll``, ``returncode``, ``pid``, ``send_signal``, ``kill``, ``wait``). Signals go through a small
``NodeControl`` actor on each node (a sync actor runs its methods in the main thread one at a time, so the busy
process cannot be asked itself). A worker or node that Ray loses ends the handle with -SIGKILL, and the driver
writes that process's failure record naming the node, so blame and the restart policy treat it like a local
crash. A restarted process goes back to its place, or anywhere when no live node offers it any more.

The run folder must be one folder that every node sees at the same path (one machine, NFS, a shared volume):
the actors write their events, checkpoints and logs there and the driver reads them to supervise and summarise.
Each actor checks it at start, and a node that does not see it stops the run with that message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from tag_actors import config as config_mod
from tag_actors.ray_actors import (
    TOKEN_FILE,
    NodeControl,
    RayChild,
    RayProc,
    TagProcess,
    node_alive,
    node_names,
)
from tag_actors.ray_placement import ANYWHERE, GROUP_STRATEGIES, RESOURCE_SHARE, Place, places
from tag_actors.runlog import file_name
from tag_actors.topology import ENV, Plan, build_plan


@dataclass
class Spawned:
    handle: Any
    where: dict[str, Any]
    place: Place


class RayBackend:
    """Places, wires, starts and stops the processes of one run on a Ray cluster (see the module docstring)."""

    def __init__(self, cfg: config_mod.Config, run_dir: Path, address: str | None):
        self.run_dir = run_dir
        self.cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, transport="tcp", backend="ray"))
        address = address or cfg.placement.ray.address or None
        self.started_here = address == "local" or (address is None and not os.environ.get("RAY_ADDRESS"))
        init: dict[str, Any] = {"namespace": "tag_actors", "log_to_driver": False}
        if self.started_here:
            init["include_dashboard"] = False
        ray.init(address=address, **init)
        self.address = address or os.environ.get("RAY_ADDRESS") or "local"
        self.ip = ray.util.get_node_ip_address()
        self.plan: Plan = build_plan(self.cfg)
        self.names = self.plan.processes()
        try:
            self.places = places(self.cfg.placement.ray, self.names, self.plan.level_of, self.cfg.source)
        except ValueError as e:
            raise config_mod.ConfigError(str(e)) from None
        self.spawned: dict[str, Spawned] = {}
        self.groups: list[Any] = []
        self.controls: dict[str, Any] = {}
        self.securities: dict[str, Any] = {}
        self.wiring: dict[str, Any] = {}
        self.dead_nodes: set[str] = set()
        """Nodes that lost an actor of the run with their own death (Ray's GCS may call them alive a while
        longer, until their heartbeats are missed)."""

    # --- placing -------------------------------------------------------------------------------------------

    def _reachable(self, place: Place) -> bool:
        """Whether some live node offers ``place`` (else a restarted process goes anywhere)."""
        for n in ray.nodes():
            if not n["Alive"] or n["NodeID"] in self.dead_nodes:
                continue
            if place.resource and place.resource in n.get("Resources", {}):
                return True
            if place.label and n.get("Labels", {}).get(place.label[0]) == place.label[1]:
                return True
        return place == ANYWHERE

    def _options(self, name: str, place: Place, group: tuple[Any, int] | None) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.cfg.placement.ray.num_cpus, "max_restarts": 0,
                                "name": f"{self.run_dir.name}:{name}:{secrets.token_hex(3)}"}
        if place.resource:
            opts["resources"] = {place.resource: RESOURCE_SHARE}
        if place.label:
            opts["label_selector"] = {place.label[0]: place.label[1]}
        if group is not None:
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(group[0], placement_group_bundle_index=group[1])
        return opts

    def _create(self, names: list[str], restarting: bool) -> dict[str, Spawned]:
        """New actors for ``names``, each at its place (anywhere when that place is gone and this is a restart).
        An actor that dies before it reports (its node was dying, unknown to Ray yet) is placed again."""
        deadline = time.monotonic() + self.cfg.run.startup_timeout_s
        while True:
            try:
                return self._create_once(names, restarting, max(1.0, deadline - time.monotonic()))
            except RayActorError as e:
                if time.monotonic() >= deadline:
                    raise config_mod.ConfigError(f"Ray lost the run's actors while placing them: {e}") from None
                self._note_dead_node(e)
                print(f"tag_actors: an actor died while being placed ({str(e).strip().splitlines()[0]}); "
                      "placing again", file=sys.stderr)
                time.sleep(1.0)

    def _note_dead_node(self, error: Exception) -> None:
        text = str(error)
        if "node has died" in text or "node was terminated" in text:
            for node_id in (n["NodeID"] for n in ray.nodes()):
                if node_id in text:
                    self.dead_nodes.add(node_id)

    def _create_once(self, names: list[str], restarting: bool, timeout_s: float) -> dict[str, Spawned]:
        ray_cfg = self.cfg.placement.ray
        effective: dict[str, Place] = {}
        for name in names:
            place = self.places[name]
            if restarting and not self._reachable(place):
                print(f"tag_actors: no live node is {place.describe()} any more; {name!r} restarts where Ray "
                      "finds room", file=sys.stderr)
                place = ANYWHERE
            effective[name] = place
        group_of: dict[str, tuple[Any, int]] = {}
        for level, strategy in ray_cfg.groups.items():
            members = [n for n in names if str(self.plan.level_of(n)) == level]
            if not members:
                continue
            bundles = [{"CPU": ray_cfg.num_cpus} if ray_cfg.num_cpus else {} for _ in members]
            for bundle, n in zip(bundles, members, strict=True):
                if effective[n].resource:
                    bundle[effective[n].resource] = RESOURCE_SHARE
                if not bundle:
                    bundle["CPU"] = 0.001  # a bundle must ask for something
            pg = placement_group(bundles, strategy=GROUP_STRATEGIES[strategy])
            try:
                ray.get(pg.ready(), timeout=self.cfg.run.startup_timeout_s)
            except GetTimeoutError:
                remove_placement_group(pg)
                raise config_mod.ConfigError(
                    f"{self.cfg.source}: placement.ray.groups.{level} = {strategy!r}: Ray could not place the "
                    f"{len(members)} processes of level {level} that way within {self.cfg.run.startup_timeout_s:.0f}s "
                    f"(nodes: {', '.join(node_names().values())})") from None
            self.groups.append(pg)
            group_of.update({n: (pg, i) for i, n in enumerate(members)})
        handles = {n: TagProcess.options(**self._options(n, effective[n], group_of.get(n))).remote(
            str(self.run_dir), n, str(Path.cwd())) for n in names}
        refs = {n: h.where.remote() for n, h in handles.items()}
        try:
            wheres = dict(zip(refs, ray.get(list(refs.values()), timeout=timeout_s), strict=True))
        except RayActorError:
            for h in handles.values():
                ray.kill(h, no_restart=True)
            raise
        except GetTimeoutError:
            late = [n for n, r in refs.items() if not ray.wait([r], timeout=0)[0]]
            for h in handles.values():
                ray.kill(h, no_restart=True)
            raise config_mod.ConfigError(
                "Ray placed no actor for " + ", ".join(f"{n!r} (on {effective[n].describe()})" for n in late)
                + f" within run.startup_timeout_s = {self.cfg.run.startup_timeout_s:.0f}s; live nodes: "
                + ", ".join(node_names()[n["NodeID"]] for n in ray.nodes() if n["Alive"])) from None
        return {n: Spawned(handles[n], wheres[n], effective[n]) for n in names}

    def _control(self, node_id: str) -> Any:
        if node_id not in self.controls:
            self.controls[node_id] = NodeControl.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()
        return self.controls[node_id]

    # --- the launcher's interface ------------------------------------------------------------------------

    def prepare(self, resume: bool = False, restarts: int = 0, launcher_port: int | None = None) -> dict[str, Any]:
        """Place every process, collect its node and ports, and write config.json, plan.json and the Prometheus
        targets; returns the wiring (as ``launch.prepare_run`` does for local runs)."""
        from tag_actors.metrics import file_sd_target, link_file_sd, write_file_sd
        from tag_actors.run_metrics import LAUNCHER, run_id

        self.release_actors()
        cfg, plan = self.cfg, self.plan
        run = self.wiring.get("run_id") or run_id(self.run_dir, time.time(),
                                                   fresh=not (self.run_dir / "plan.json").exists())
        self.run_dir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        (self.run_dir / TOKEN_FILE).write_text(token)
        self.spawned = self._create(self.names, restarting=restarts > 0)
        links = [c for c, p in plan.parent.items() if p is not None]
        served = {n: [c for c in links if plan.process_of(c) == n] for n in self.names}
        metrics = 1 if cfg.run.metrics else 0
        reports = ray.get([self.spawned[n].handle.prepare.remote(token, len(served[n]) + metrics)
                           for n in self.names])
        names_of = node_names()
        for n, rep in zip(self.names, reports, strict=True):
            if not rep["sees_run_dir"]:
                raise config_mod.ConfigError(
                    f"the run folder {self.run_dir} is not visible on {names_of.get(self.spawned[n].where['node_id'])}"
                    f" where {n!r} runs: the Ray backend needs a run folder that every node sees at the same path "
                    "(one machine, NFS, a shared volume): give --run-dir on a shared filesystem")
        ip_of = {n: self.spawned[n].where["ip"] for n in self.names}
        endpoints, metrics_ports = {}, {}
        for n, rep in zip(self.names, reports, strict=True):
            for child, port in zip(served[n], rep["ports"], strict=False):
                endpoints[child] = f"tcp://{ip_of[n]}:{port}"
            if metrics:
                metrics_ports[n] = rep["ports"][-1]
        plan.endpoints = endpoints
        if cfg.placement.curve:
            self._make_keys()
        if metrics and launcher_port is None:
            with socket.socket() as s:
                s.bind((self.ip, 0))
                launcher_port = s.getsockname()[1]
        nodes = {n: self.spawned[n].where["node_id"] for n in self.names}
        wiring = {"endpoints": endpoints, "metrics_ports": metrics_ports, "host": "ray", "processes": self.names,
                  "external": [], "metrics_addr": self.ip, "metrics_addrs": ip_of, "hosts": ip_of,
                  "resume": resume, "cwd": str(Path.cwd()), "run_id": run, "launcher_pid": os.getpid(),
                  "restarts": restarts, "backend": "ray", "ray_address": self.address, "nodes": nodes,
                  "node_names": {n: names_of.get(nodes[n], nodes[n]) for n in self.names}}
        (self.run_dir / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "source": cfg.source},
                                                             indent=2))
        if metrics:
            wiring["launcher_metrics_port"] = launcher_port
            targets = [file_sd_target(ip_of[n], metrics_ports[n], run=run, config=cfg.run.name,
                                      level=plan.level_of(n), agent=n, host=ip_of[n],
                                      role="env" if n == ENV else "agent") for n in self.names]
            targets.append(file_sd_target(self.ip, launcher_port, run=run, config=cfg.run.name, level=None,
                                          agent=LAUNCHER, host=self.ip, role=LAUNCHER))
            sd_file = write_file_sd(self.run_dir / "prometheus_targets.json", targets)
            root = Path(__file__).resolve().parent.parent
            if (root / "monitoring").is_dir() and self.run_dir.is_relative_to(root):
                wiring["file_sd_link"] = str(link_file_sd(sd_file, root / "monitoring" / "targets", name=run))
        (self.run_dir / "plan.json").write_text(json.dumps(wiring, indent=2))
        self.wiring = wiring
        by_node: dict[str, list[str]] = {}
        for n in self.names:
            by_node.setdefault(names_of.get(nodes[n], nodes[n]), []).append(n)
        print(f"ray ({self.address}): " + "; ".join(f"{node}: {', '.join(ns)}" for node, ns in by_node.items()),
              flush=True)
        return wiring

    def _make_keys(self) -> None:
        """A CURVE key pair per process, made here for this run only: each actor gets its own secret key and the
        run's public keys with its ``run`` call (Ray's own channel; enable Ray's TLS where that must be private)."""
        import zmq

        from tag_actors.transport import Security

        pairs = {n: zmq.curve_keypair() for n in self.names}
        publics = [pub for pub, _ in pairs.values()]
        servers = {c: pairs[self.plan.process_of(c)][0] for c, p in self.plan.parent.items() if p is not None}
        self.securities = {n: Security(pub, sec, servers, publics) for n, (pub, sec) in pairs.items()}

    def start(self, names: list[str]) -> list[RayChild]:
        """Start the tick loop of every prepared actor (the endpoints are all known by now)."""
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for stale in logs.glob("*.failure.json"):  # a restarted run's old faults
            stale.unlink(missing_ok=True)
        return [self._child(n) for n in names]

    def _child(self, name: str) -> RayChild:
        sp = self.spawned[name]
        ref = sp.handle.run.remote(self.securities.get(name))
        local = sp.where["ip"] == self.ip and sp.where["hostname"] == socket.gethostname()
        proc = RayProc(self, name, sp.handle, ref, sp.where, self._control(sp.where["node_id"]), local)
        return RayChild(name, proc, self.run_dir / "logs" / f"{file_name(name)}.log")

    def spawn(self, name: str) -> RayChild:
        """One process again (for a supervisor that restarts processes one at a time): on its own node when that
        is alive (its endpoint, and so its neighbours' addresses, stay valid), else where its place allows."""
        old = self.spawned.get(name)
        if old is not None:
            with contextlib.suppress(Exception):
                ray.kill(old.handle, no_restart=True)
        self.spawned.update(self._create([name], restarting=True))
        new = self.spawned[name]
        if old is not None and new.where["ip"] != old.where["ip"]:
            print(f"tag_actors: {name!r} moved from {old.where['ip']} to {new.where['ip']}: its neighbours must "
                  "reconnect (the run restarts as a whole when its node is gone)", file=sys.stderr)
        return self._child(name)

    def describe_loss(self, name: str, node_id: str, error: Exception) -> str:
        """Why Ray lost ``name``'s actor, naming its node; also written as its failure record (kind 'crash'),
        unless the process wrote its own, so that blame names it and its node."""
        node = node_names().get(node_id, f"node {node_id[:8]}")
        if "node has died" in str(error) or "node was terminated" in str(error):
            self.dead_nodes.add(node_id)
        alive = node_alive(node_id) and node_id not in self.dead_nodes and self._answers(node_id)
        why = f"its Ray worker died on {node}" if alive else f"its node left the Ray cluster (or is cut off): {node}"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        message = f"{why} ({type(error).__name__}: {first[:160]})"
        path = self.run_dir / "logs" / f"{file_name(name)}.failure.json"
        if not path.exists():
            from tag_actors.actor import write_failure

            write_failure(self.run_dir, name, "crash", message, node=node, node_alive=alive)
        return message

    def _answers(self, node_id: str, timeout_s: float = 3.0) -> bool:
        """Whether the node's control actor still answers (Ray's GCS notices a dead node only after it has missed
        several heartbeats; a removed node's actors fail at once)."""
        control = self.controls.get(node_id)
        if control is None:
            return True
        try:
            ray.get(control.state.remote(os.getpid()), timeout=timeout_s)
            return True
        except Exception:  # noqa: BLE001 - lost or late: either way the node does not answer
            self.dead_nodes.add(node_id)
            return False

    def release_actors(self) -> None:
        for sp in self.spawned.values():
            with contextlib.suppress(Exception):
                ray.kill(sp.handle, no_restart=True)
        self.spawned = {}
        for pg in self.groups:
            with contextlib.suppress(Exception):
                remove_placement_group(pg)
        self.groups = []

    def close(self) -> None:
        """Kill every actor of the run (their loops have stopped by now), and the Ray this run started, if any."""
        self.release_actors()
        for control in self.controls.values():
            with contextlib.suppress(Exception):
                ray.kill(control, no_restart=True)
        self.controls = {}
        with contextlib.suppress(OSError):
            (self.run_dir / TOKEN_FILE).unlink()
        ray.shutdown()
