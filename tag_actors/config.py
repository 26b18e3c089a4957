"""Run configuration: TOML validated into typed dataclasses. Every error names the file, the key and what was
expected, so a typo never reaches a process.

    [run]     name, seed, mode, total_env_steps, transport, timeouts, checkpoints, metrics
    [env]     kind, scenario, num_envs, n_agents, max_steps, [env.kwargs]
    [[levels]] one table per level, bottom (level 1) first: agent, every, fan_in, message, instruction, [params]

``--set key=value`` overrides use dotted keys (``run.seed=3``, ``levels.1.agent=ppo``, ``env.kwargs.n_agents=4``);
the value is read as a TOML value, or as a plain string when it is not one.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tag_actors.spaces import Box, Discrete, Space


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the key."""


@dataclass
class RunConfig:
    name: str = "run"
    """Run name: labels metrics and names the run folder."""
    seed: int = 0
    """Seed for the env and every agent (each agent derives its own from it and its name)."""
    mode: str = "lockstep"
    """'lockstep': a level waits for the instruction of the level above at its decision ticks (reproducible);
    'async': levels >= 2 never make the level below wait (see LevelConfig.mode)."""
    learner: str = "auto"
    """'inline': an agent learns in its acting thread, so its children wait while it updates (reproducible);
    'background': it learns on a copy in a second thread and keeps acting with the last weights (not
    reproducible: when new weights arrive depends on timing); 'auto': background when any level is async."""
    cpu_affinity: str = "none"
    """'none', or 'env_apart': the env process takes the first CPU it may use for itself and the agent processes
    on its host share the others (Linux, 2+ CPUs; each process pins itself). Pays when the env does not wait for
    level 1 (levels[0].mode = 'async'): the agents' wake-ups stop preempting the env's step."""
    total_env_steps: int = 20_000
    """Stop after this many env steps (summed over the env copies)."""
    transport: str = "ipc"
    """'ipc' (one host, unix sockets) or 'tcp'."""
    bind_host: str = "127.0.0.1"
    """Address tcp endpoints bind to and connect to on a single host."""
    base_port: int = 0
    """First tcp port for links (0: pick free ports)."""
    startup_timeout_s: float = 120.0
    """How long a process waits for its peers' handshakes before failing with their names."""
    peer_timeout_s: float = 5.0
    """ZMTP heartbeat timeout: a silent peer is declared lost after this long."""
    checkpoint_every_s: float = 60.0
    """Seconds between periodic checkpoints of every agent (0: only at the end)."""
    log_every_s: float = 2.0
    """Seconds between progress lines and status records."""
    metrics: bool = True
    """Serve Prometheus metrics from every process."""
    metrics_base_port: int = 0
    """First metrics port (process i gets base + i; 0: pick free ports)."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest accepted message; bigger ones are dropped and counted."""
    loggers: list[str] = field(default_factory=lambda: ["csv"])
    """Where the launcher writes the run's scalars: any of csv (scalars.csv), tensorboard, wandb, mlflow, and
    plot (the learning-curve PNG at the end); see tag_actors/loggers.py."""


@dataclass
class EnvConfig:
    kind: str = "vmas"
    """'vmas', 'pettingzoo' or 'gymnasium'."""
    scenario: str = "balance"
    """Scenario name (vmas), module path (pettingzoo, e.g. 'mpe2.simple_spread_v3') or gym id."""
    num_envs: int = 64
    """Env copies stepped together; every message carries arrays with this leading dimension."""
    n_agents: int = 4
    """Number of agents the env has (one level-1 agent serves ``levels[0].fan_in`` of them)."""
    max_steps: int = 100
    """Time limit of an episode in env steps (truncation)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the env constructor."""
    device: str = "cpu"
    """Where a VMAS env simulates: 'cpu', 'cuda', 'cuda:N', or 'auto' (cuda when torch sees one)."""


@dataclass
class LevelConfig:
    agent: str = "random"
    """Agent type: random, heuristic, ppo, llm."""
    every: int = 1
    """Act every this many ticks of the level below; the action is held in between."""
    fan_in: int = 1
    """Children per agent (level 1: env agents per agent)."""
    message: str = "identity"
    """φ, the message sent up: identity (concatenate children), mean, project (a fixed seeded random projection)
    or autoencoder (learned: the latent of an autoencoder the agent trains online on its children's messages)."""
    message_dim: int = 0
    """Message size for 'project' and 'autoencoder'."""
    instruction: dict[str, Any] = field(default_factory=dict)
    """Levels >= 2: the instruction sent to each child: {type = 'box', dim = k} or {type = 'discrete', n = k}."""
    params: dict[str, Any] = field(default_factory=dict)
    """Settings of the agent type (e.g. PPO hyperparameters)."""
    mode: str = ""
    """How this level drives the level below: 'lockstep' (children wait for its instructions at its decision
    ticks) or 'async' (children act on the latest instruction they hold). Empty: run.mode for levels >= 2,
    lockstep for level 1 (the env waits for its actions)."""
    period_s: float = 0.0
    """Async only: decide on this wall-clock period (seconds) instead of every ``every`` ticks (slow agents)."""
    device: str = "cpu"
    """Where the level's learners train: 'cpu', 'cuda', 'cuda:N', or 'auto' (cuda when torch sees one)."""
    observe_held: bool = False
    """Append the action this level holds to its own observation. For a level whose children do not wait
    (async): the action being applied while it decides, which makes the resulting delay part of the state."""


@dataclass
class PlacementConfig:
    hosts: dict[str, Any] = field(default_factory=dict)
    """Host name -> the address its processes listen on and peers connect to (empty: everything on one host)."""
    levels: dict[str, Any] = field(default_factory=dict)
    """Level (as a string; "0" is the env) -> host name. Unplaced levels go to the first host."""
    processes: dict[str, Any] = field(default_factory=dict)
    """Process name (e.g. "l3.0") -> host name; overrides ``levels``."""
    curve: bool = False
    """Encrypt and authenticate every link with CURVE keys (python -m tag_actors.keys makes them)."""
    keys_dir: str = "keys"
    """Folder with <host>.key (public, all hosts) and <host>.key_secret (this host's only)."""
    external: list[str] = field(default_factory=list)
    """Processes the launcher does not start (e.g. ["l1.0"]): it prints where each must bind and connect, and the
    run waits for them within run.startup_timeout_s. Any implementation of PROTOCOL.md can take their place."""


@dataclass
class Config:
    run: RunConfig
    env: EnvConfig
    levels: list[LevelConfig]
    source: str = "<config>"
    placement: PlacementConfig = field(default_factory=PlacementConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"run": dataclasses.asdict(self.run), "env": dataclasses.asdict(self.env),
                "levels": [dataclasses.asdict(lv) for lv in self.levels],
                "placement": dataclasses.asdict(self.placement)}

    @property
    def multi_host(self) -> bool:
        return len(self.placement.hosts) > 1

    def level_mode(self, level: int) -> str:
        """'lockstep' or 'async': how the agents of ``level`` (1-based) drive the level below them."""
        explicit = self.levels[level - 1].mode
        if explicit:
            return explicit
        return self.run.mode if level >= 2 else "lockstep"

    def learns_in_background(self) -> bool:
        """Whether agents update on a copy in a second thread (see RunConfig.learner)."""
        if self.run.learner == "auto":
            return any(self.level_mode(lvl) == "async" for lvl in range(1, len(self.levels) + 1))
        return self.run.learner == "background"

    def instruction_space(self, level: int) -> Space:
        """The instruction an agent at ``level`` (>= 2) sends each child."""
        spec = self.levels[level - 1].instruction
        return Box((int(spec["dim"]),), -1.0, 1.0) if spec["type"] == "box" else Discrete(int(spec["n"]))


def load(path: str | Path, overrides: list[str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config: {e.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    for item in overrides or []:
        apply_override(raw, item, str(path))
    return from_dict(raw, str(path))


def load_resolved(path: Path, overrides: list[str] | None = None) -> Config:
    """The config a run folder was started with (its config.json), plus overrides: for --resume."""
    import json

    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read the run's config: {e}") from None
    raw = saved["config"]
    for item in overrides or []:
        apply_override(raw, item, str(path))
    return from_dict(raw, saved.get("source", str(path)))


def apply_override(raw: dict[str, Any], item: str, source: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value (e.g. run.seed=3)")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} has {len(node)} entries, no index {part!r}")
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, dict | list):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a table")
    if isinstance(node, list):
        raise ConfigError(f"--set {key}: cannot set a whole list entry")
    node[parts[-1]] = value


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if tp in expected:
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        raise ConfigError(f"{where}: expected {expected[tp]}, got {type(value).__name__} {value!r}")
    if (origin is dict or tp is dict) and not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
    if origin is list and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ConfigError(f"{where}: expected a list of strings, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, raw: Any, where: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where} must be a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"{source}: unknown key {where}.{unknown[0]} (valid keys in {where}: {', '.join(names)})")
    values = {k: _check_type(v, hints[k], f"{source}: {where}.{k}") for k, v in raw.items()}
    return cls(**values)


def from_dict(raw: dict[str, Any], source: str = "<config>") -> Config:
    unknown = sorted(set(raw) - {"run", "env", "levels", "placement"})
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key {unknown[0]!r} (valid: run, env, levels, placement)")
    raw = copy.deepcopy(raw)
    run = _build(RunConfig, raw.get("run", {}), "run", source)
    env = _build(EnvConfig, raw.get("env", {}), "env", source)
    levels_raw = raw.get("levels")
    if not isinstance(levels_raw, list) or not levels_raw:
        raise ConfigError(f"{source}: 'levels' must be a non-empty array of tables ([[levels]]), level 1 first")
    levels = [_build(LevelConfig, lv, f"levels[{i}]", source) for i, lv in enumerate(levels_raw)]
    placement = _build(PlacementConfig, raw.get("placement", {}), "placement", source)
    cfg = Config(run, env, levels, source, placement)
    validate(cfg)
    return cfg


def validate_placement(cfg: Config) -> None:
    src, pl = cfg.source, cfg.placement
    for key, host in [*((f"levels.{k}", v) for k, v in pl.levels.items()),
                      *((f"processes.{k}", v) for k, v in pl.processes.items())]:
        if host not in pl.hosts:
            raise ConfigError(f"{src}: placement.{key} = {host!r} is not one of placement.hosts "
                              f"({', '.join(pl.hosts) or 'none defined'})")
    for level in pl.levels:
        if not (level.isdigit() and int(level) <= len(cfg.levels)):
            raise ConfigError(f"{src}: placement.levels.{level}: expected a level number 0..{len(cfg.levels)}")
    if cfg.multi_host:
        if cfg.run.transport != "tcp":
            raise ConfigError(f"{src}: placement over {len(pl.hosts)} hosts needs run.transport = 'tcp'")
        if cfg.run.base_port <= 0 or (cfg.run.metrics and cfg.run.metrics_base_port <= 0):
            raise ConfigError(f"{src}: placement over several hosts needs fixed ports: set run.base_port"
                              + (" and run.metrics_base_port" if cfg.run.metrics else ""))


def validate(cfg: Config) -> None:
    validate_placement(cfg)
    src, run, env = cfg.source, cfg.run, cfg.env
    if run.mode not in ("lockstep", "async"):
        raise ConfigError(f"{src}: run.mode must be 'lockstep' or 'async', got {run.mode!r}")
    if run.learner not in ("auto", "inline", "background"):
        raise ConfigError(f"{src}: run.learner must be 'auto', 'inline' or 'background', got {run.learner!r}")
    if run.transport not in ("ipc", "tcp"):
        raise ConfigError(f"{src}: run.transport must be 'ipc' or 'tcp', got {run.transport!r}")
    if run.cpu_affinity not in ("none", "env_apart"):
        raise ConfigError(f"{src}: run.cpu_affinity must be 'none' or 'env_apart', got {run.cpu_affinity!r}")
    for key in ("total_env_steps", "max_message_bytes"):
        if getattr(run, key) <= 0:
            raise ConfigError(f"{src}: run.{key} must be > 0")
    for key in ("num_envs", "n_agents", "max_steps"):
        if getattr(env, key) <= 0:
            raise ConfigError(f"{src}: env.{key} must be > 0, got {getattr(env, key)}")
    from tag_actors.devices import check_device_spec
    from tag_actors.loggers import LOGGERS

    unknown_loggers = [n for n in run.loggers if n not in LOGGERS]
    if unknown_loggers:
        raise ConfigError(f"{src}: run.loggers: unknown logger {unknown_loggers[0]!r} (known: {', '.join(LOGGERS)})")
    check_device_spec(env.device, f"{src}: env.device", ConfigError)
    for i, lv in enumerate(cfg.levels):
        check_device_spec(lv.device, f"{src}: levels[{i}].device", ConfigError)
    if env.kind not in ("vmas", "pettingzoo", "gymnasium"):
        raise ConfigError(f"{src}: env.kind must be one of vmas, pettingzoo, gymnasium, got {env.kind!r}")
    from tag_actors.agents import AGENT_TYPES

    count = env.n_agents
    for i, lv in enumerate(cfg.levels):
        where = f"{src}: levels[{i}] (level {i + 1})"
        if lv.agent not in AGENT_TYPES:
            raise ConfigError(f"{where}.agent: unknown agent type {lv.agent!r} (known: {', '.join(AGENT_TYPES)})")
        if lv.every < 1 or lv.fan_in < 1:
            raise ConfigError(f"{where}: every and fan_in must be >= 1")
        if count % lv.fan_in:
            below = "env agents" if i == 0 else f"agents at level {i}"
            raise ConfigError(f"{where}.fan_in = {lv.fan_in} does not divide the {count} {below}")
        count //= lv.fan_in
        if lv.mode not in ("", "lockstep", "async"):
            raise ConfigError(f"{where}.mode: expected 'lockstep' or 'async', got {lv.mode!r}")
        if lv.period_s < 0:
            raise ConfigError(f"{where}.period_s must be >= 0")
        if lv.period_s > 0 and cfg.level_mode(i + 1) != "async":
            raise ConfigError(f"{where}.period_s needs this level in async mode (set run.mode = 'async' or "
                              f"levels[{i}].mode = 'async'): in lockstep the level below waits on its ticks")
        if lv.message not in ("identity", "mean", "project", "autoencoder"):
            raise ConfigError(f"{where}.message: expected identity, mean, project or autoencoder, got {lv.message!r}")
        if lv.message in ("project", "autoencoder") and lv.message_dim <= 0:
            raise ConfigError(f"{where}.message_dim must be > 0 with message = {lv.message!r}")
        if i == 0:
            if lv.instruction:
                raise ConfigError(f"{where}.instruction: level 1 sends env actions, not instructions; remove it")
            continue
        spec = lv.instruction
        kind = spec.get("type")
        size_key = {"box": "dim", "discrete": "n"}.get(kind)
        if size_key is None:
            raise ConfigError(f"{where}.instruction.type: expected 'box' or 'discrete', got {kind!r}")
        extra = sorted(set(spec) - {"type", size_key})
        if extra:
            raise ConfigError(f"{where}.instruction: unknown key {extra[0]!r} for type {kind!r}")
        if not isinstance(spec.get(size_key), int) or spec[size_key] < 1:
            raise ConfigError(f"{where}.instruction.{size_key}: expected a positive integer, got "
                              f"{spec.get(size_key)!r}")
