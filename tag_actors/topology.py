"""The shape of a run, derived from the config alone (so every host computes the same one): process names,
who is whose child, each agent's decision period and seed, and where each link listens."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from tag_actors.config import Config
from tag_actors.node import NodeSpec

ENV = "env"


def env_child(index: int) -> str:
    """The name of env agent ``index`` seen as a child of level 1."""
    return f"env/{index}"


def agent_name(level: int, index: int) -> str:
    return f"l{level}.{index}"


def agent_seed(run_seed: int, name: str) -> int:
    """A per-agent seed that depends only on the run seed and the agent's name."""
    return (run_seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


@dataclass
class Plan:
    nodes: list[NodeSpec]
    """Every agent, level 1 first."""
    parent: dict[str, str | None]
    """Parent of every child: env agents and agents."""
    depth: int
    endpoints: dict[str, str] = field(default_factory=dict)
    """The endpoint each child binds for the link to its parent, by child name."""

    def node(self, name: str) -> NodeSpec:
        return next(n for n in self.nodes if n.name == name)

    def processes(self) -> list[str]:
        return [ENV] + [n.name for n in self.nodes]

    def level_of(self, name: str) -> int:
        return 0 if name == ENV or name.startswith("env/") else self.node(name).level

    def process_of(self, child: str) -> str:
        """The process that serves a child of the tree (env agents are served by the env process)."""
        return ENV if child.startswith("env/") else child


def host_of(cfg: Config, plan: Plan, process: str) -> str:
    """Where a process runs: placement.processes, else placement.levels, else the first host ('local')."""
    pl = cfg.placement
    if process in pl.processes:
        return pl.processes[process]
    level = str(plan.level_of(process))
    if level in pl.levels:
        return pl.levels[level]
    return next(iter(pl.hosts), "local")


def host_address(cfg: Config, host: str) -> str:
    return cfg.placement.hosts.get(host, cfg.run.bind_host)


def make_socket_dir() -> Path:
    """A fresh folder for a run's ipc socket files: short (unix socket paths are limited to 107 bytes), private
    (mode 0700) and unguessable (mkdtemp), so no other local process can bind or connect there before the run's
    own. Its path travels in plan.json; the launcher removes it at the end, and every actor tries on its way out
    (the last one succeeds), so not even a killed launcher leaves it behind."""
    return Path(tempfile.mkdtemp(prefix="tag-"))


def socket_dir_of(endpoints: dict[str, str]) -> Path | None:
    """The ipc socket folder of a plan's endpoints (None for tcp)."""
    for ep in endpoints.values():
        if ep.startswith("ipc://"):
            return Path(ep[len("ipc://"):]).parent
    return None


def remove_socket_dir(endpoints: dict[str, str], every_process_ended: bool = False) -> None:
    """Remove the run's socket folder: once it is empty (an actor on its way out: the sockets of live processes
    keep it), or with whatever a killed process left in it (the launcher, once every process has ended)."""
    sock = socket_dir_of(endpoints)
    if sock is None:
        return
    if every_process_ended:
        shutil.rmtree(sock, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            sock.rmdir()


def build_plan(cfg: Config) -> Plan:
    nodes: list[NodeSpec] = []
    parent: dict[str, str | None] = {}
    below = [env_child(i) for i in range(cfg.env.n_agents)]
    period = 1
    for lvl, lc in enumerate(cfg.levels, start=1):
        period *= lc.every
        current = []
        for i in range(len(below) // lc.fan_in):
            name = agent_name(lvl, i)
            children = below[i * lc.fan_in:(i + 1) * lc.fan_in]
            for c in children:
                parent[c] = name
            nodes.append(NodeSpec(name=name, level=lvl, children=children, period=period, agent_type=lc.agent,
                                  params=lc.params, message=lc.message, message_dim=lc.message_dim,
                                  seed=agent_seed(cfg.run.seed, name), period_s=lc.period_s,
                                  learn_in_background=cfg.learns_in_background(), observe_held=lc.observe_held,
                                  device=lc.device, observe=list(lc.observe),
                                  scenario=cfg.env.scenario if cfg.env.kind == "vmas" else ""))
            current.append(name)
        below = current
    for name in below:
        parent[name] = None
    return Plan(nodes, parent, len(cfg.levels))


def assign_endpoints(plan: Plan, cfg: Config, ports: list[int] | None = None) -> None:
    """ipc: a socket file per link in a fresh ``make_socket_dir()``; tcp: one port per link."""
    children = [c for c, p in plan.parent.items() if p is not None]
    if cfg.run.transport == "ipc":
        sock = make_socket_dir()
        for c in children:
            plan.endpoints[c] = f"ipc://{sock / c.replace('/', '_')}"
    else:
        if ports is None:
            raise ValueError("tcp transport needs one port per link")
        for c, port in zip(children, ports, strict=True):
            address = host_address(cfg, host_of(cfg, plan, plan.process_of(c)))
            plan.endpoints[c] = f"tcp://{address}:{port}"
