"""The shape of a run, derived from the config alone (so every host computes the same one): process names,
who is whose child, each agent's decision period and seed, and where each link listens."""

from __future__ import annotations

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


def socket_dir(run_dir: Path) -> Path:
    """A short folder for ipc socket files (unix socket paths are limited to 107 bytes)."""
    return Path(tempfile.gettempdir()) / f"tag-{zlib.crc32(str(run_dir.resolve()).encode()):08x}"


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
                                  learn_in_background=cfg.learns_in_background(), observe_held=lc.observe_held))
            current.append(name)
        below = current
    for name in below:
        parent[name] = None
    return Plan(nodes, parent, len(cfg.levels))


def assign_endpoints(plan: Plan, cfg: Config, run_dir: Path, ports: list[int] | None = None) -> None:
    """ipc: a socket file per link in ``socket_dir(run_dir)``; tcp: one port per link."""
    children = [c for c, p in plan.parent.items() if p is not None]
    if cfg.run.transport == "ipc":
        sock = socket_dir(run_dir)
        sock.mkdir(parents=True, exist_ok=True)
        for c in children:
            plan.endpoints[c] = f"ipc://{sock / c.replace('/', '_')}"
    else:
        if ports is None:
            raise ValueError("tcp transport needs one port per link")
        for c, port in zip(children, ports, strict=True):
            address = host_address(cfg, host_of(cfg, plan, plan.process_of(c)))
            plan.endpoints[c] = f"tcp://{address}:{port}"
