"""Run configuration: TOML validated into typed dataclasses. Every error names the file, the key and what was
expected, so a typo never reaches a process.

    [run]     name, seed, mode, total_env_steps, transport, timeouts, checkpoints, metrics
    [env]     kind, scenario, num_envs, n_agents, max_steps, [env.kwargs]
    [[levels]] one table per level, bottom (level 1) first: agent, every, fan_in, message, instruction, [params]

The sections are typed dataclasses checked by pydantic (``strict``: no silent coercion; unknown keys are errors);
each level's ``params`` is checked against its agent type's schema (``tag_actors.agents.params_schema``).

``--set key=value`` overrides use dotted keys: ``run.seed=3``, ``env.kwargs.n_agents=4``, and for levels
``lN.key`` with N the level as everywhere else (process names ``l2.0``, progress lines): ``l2.params.lr=1e-4``
sets the second ``[[levels]]`` table. The value is read as a TOML value, or as a plain string when it is not one.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field

from tag_actors.spaces import Box, Discrete, Space

Positive = Annotated[int, Field(gt=0)]
AtLeastOne = Annotated[int, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0)]


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the key."""


@dataclass
class RunConfig:
    name: str = "run"
    """Run name: labels metrics and names the run folder."""
    seed: int = 0
    """Seed for the env and every agent (each agent derives its own from it and its name)."""
    mode: Literal["lockstep", "async"] = "lockstep"
    """'lockstep': a level waits for the instruction of the level above at its decision ticks (reproducible);
    'async': levels >= 2 never make the level below wait (see LevelConfig.mode)."""
    learner: Literal["auto", "inline", "background"] = "auto"
    """'inline': an agent learns in its acting thread, so its children wait while it updates (reproducible);
    'background': it learns on a copy in a second thread and keeps acting with the last weights (not
    reproducible: when new weights arrive depends on timing); 'auto': background when any level is async."""
    cpu_affinity: Literal["none", "env_apart"] = "none"
    """'none', or 'env_apart': the env process takes the first CPU it may use for itself and the agent processes
    on its host share the others (Linux, 2+ CPUs; each process pins itself). Pays when the env does not wait for
    level 1 (levels[0].mode = 'async'): the agents' wake-ups stop preempting the env's step."""
    total_env_steps: Positive = 20_000
    """Stop after this many env steps (summed over the env copies)."""
    transport: Literal["ipc", "tcp"] = "ipc"
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
    restart: Literal["never", "always"] = "never"
    """What a fault does: 'never' stops the run naming the process at fault; 'always' restarts that process alone
    from its latest checkpoint while the others wait for it to rejoin (Erlang's one_for_one), within max_restarts
    per restart_window_s. The env's policy, and the default of every level (lN.restart)."""
    max_restarts: int = 3
    """Restarts allowed within restart_window_s; one more stops the run (Erlang's restart intensity)."""
    restart_window_s: float = 300.0
    """The window of max_restarts."""
    restart_backoff_s: float = 1.0
    """Wait before a process's second restart in the window (its first is immediate); doubles with each further
    one of that process (at most 30 s)."""
    stall_timeout_s: float = 120.0
    """The launcher's stall watchdog: when no tick completes for this long while every process is up, it names who
    waits for whom and stops the run naming the stalled process (0: no watchdog). Must exceed log_every_s."""
    metrics: bool = True
    """Serve Prometheus metrics from every process."""
    metrics_base_port: int = 0
    """First metrics port (process i gets base + i; 0: pick free ports)."""
    max_message_bytes: Positive = 64 * 1024 * 1024
    """Largest accepted message; bigger ones are dropped and counted."""
    backend: Literal["local", "ray"] = "local"
    """'local': the launcher starts every process on this machine (or its --host share); 'ray': every process is
    a Ray actor on a Ray cluster (``--ray [ADDRESS]`` says the same; see [placement.ray])."""
    loggers: list[str] = field(default_factory=lambda: ["csv"])
    """Where the launcher writes the run's scalars: any of csv (scalars.csv), tensorboard, wandb, mlflow, and
    plot (the learning-curve PNG at the end); see tag_actors/loggers.py."""


@dataclass
class EnvConfig:
    kind: str = "vmas"
    """'vmas', 'pettingzoo', 'gymnasium', an installed plug-in (entry point group ``tag_actors.envs``) or a
    ``BatchedEnv`` class as 'my_pkg.envs:MyEnv' (built with ``num_envs``, ``seed`` and ``[env.kwargs]``)."""
    scenario: str = "balance"
    """Scenario name (vmas), module path (pettingzoo, e.g. 'mpe2.simple_spread_v3') or gym id."""
    num_envs: Positive = 64
    """Env copies stepped together; every message carries arrays with this leading dimension."""
    n_agents: Positive = 4
    """Number of agents the env has (one level-1 agent serves ``levels[0].fan_in`` of them)."""
    max_steps: Positive = 100
    """Time limit of an episode in env steps (truncation)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the env constructor."""
    device: str = "cpu"
    """Where a VMAS env simulates: 'cpu', 'cuda', 'cuda:N', or 'auto' (cuda when torch sees one)."""


@dataclass
class LevelConfig:
    agent: str = "random"
    """Agent type: random, heuristic, slow, ppo, mappo, llm, an installed plug-in (entry point group
    ``tag_actors.agents``) or a class as 'my_pkg.my_module:MyAgent'."""
    every: AtLeastOne = 1
    """Act every this many ticks of the level below; the action is held in between."""
    fan_in: AtLeastOne = 1
    """Children per agent (level 1: env agents per agent)."""
    message: Literal["identity", "mean", "project", "autoencoder"] = "identity"
    """φ, the message sent up: identity (concatenate children), mean, project (a fixed seeded random projection)
    or autoencoder (learned: the latent of an autoencoder the agent trains online on its children's messages)."""
    message_dim: Annotated[int, Field(ge=0)] = 0
    """Message size for 'project' and 'autoencoder'."""
    instruction: dict[str, Any] = field(default_factory=dict)
    """Levels >= 2: the instruction sent to each child: {type = 'box', dim = k} or {type = 'discrete', n = k}."""
    params: dict[str, Any] = field(default_factory=dict)
    """Settings of the agent type (e.g. PPO hyperparameters), checked against its schema at load."""
    mode: Literal["", "lockstep", "async"] = ""
    """How this level drives the level below: 'lockstep' (children wait for its instructions at its decision
    ticks) or 'async' (children act on the latest instruction they hold). Empty: run.mode for levels >= 2,
    lockstep for level 1 (the env waits for its actions)."""
    period_s: NonNegative = 0.0
    """Async only: decide on this wall-clock period (seconds) instead of every ``every`` ticks (slow agents)."""
    device: str = "cpu"
    """Where the level's learners train: 'cpu', 'cuda', 'cuda:N', or 'auto' (cuda when torch sees one)."""
    restart: Literal["", "never", "always"] = ""
    """'never' or 'always': what a fault of one of this level's processes does (see run.restart; empty: that)."""
    observe_held: bool = False
    """Append the action this level holds to its own observation. For a level whose children do not wait
    (async): the action being applied while it decides, which makes the resulting delay part of the state."""
    observe: list[str] = field(default_factory=list)
    """Level 1 only: the parts of each env agent's observation its agents act on, as part names of the
    scenario's layout (VMAS balance: pos, vel, package_rel, line_rel, package_goal, package_vel, line_vel,
    line_ang_vel, line_rot) or column ranges 'a:b'; empty: all of it. The levels above still get the full
    observation in the messages (see tag_actors/obs_select.py)."""


@dataclass
class RayPlacementConfig:
    """Where the Ray backend puts processes (see tag_actors/ray_placement.py; default: Ray decides)."""

    address: str = ""
    """The cluster to join ('auto', 'HOST:PORT', 'ray://...'); empty: RAY_ADDRESS if set, else a local Ray of
    this machine, started for the run and stopped after it. ``--ray ADDRESS`` overrides it."""
    levels: dict[str, str] = field(default_factory=dict)
    """Level (a string; "0" is the env) -> "resource:NAME" or "label:KEY=VALUE"."""
    processes: dict[str, str] = field(default_factory=dict)
    """Process name (e.g. "l3.0") -> "resource:NAME" or "label:KEY=VALUE"; overrides ``levels``."""
    groups: dict[str, str] = field(default_factory=dict)
    """Level -> 'pack', 'spread', 'strict_pack' or 'strict_spread': its processes share one placement group."""
    num_cpus: float = 0.0
    """CPUs Ray reserves for each process (0: none; the processes mostly wait on their links)."""


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
    ray: RayPlacementConfig = field(default_factory=RayPlacementConfig)
    """The Ray backend's placement ([placement.ray])."""


@dataclass
class Config:
    run: RunConfig
    env: EnvConfig
    levels: list[LevelConfig]
    source: str = "<config>"
    placement: PlacementConfig = field(default_factory=PlacementConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what a run's config.json holds)."""
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
    """Read a TOML config, apply ``--set`` overrides, validate; ConfigError names the file and key."""
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


LEVEL_KEY = re.compile(r"^[lL](\d+)$")


def level_key(level: int) -> str:
    """How a level is addressed in ``--set`` and in error messages: ``l2`` is level 2, the second [[levels]]."""
    return f"l{level}"


def apply_override(raw: dict[str, Any], item: str, source: str) -> None:
    """Apply one ``--set key=value`` to the raw config (see the module docstring for the key forms)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key=value (e.g. run.seed=3, l2.params.lr=1e-4)")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    parts = key.split(".")
    if parts[0] == "levels":
        index = parts[1] if len(parts) > 1 else "N"
        example = ".".join(parts[2:]) or "params.lr"
        hint = (f"l{int(index) + 1}.{example} for the table at index {index} (level {int(index) + 1}), or "
                f"l{index}.{example} for level {index}" if index.isdigit() and int(index) > 0 else
                f"l1.{example} for level 1 (the first [[levels]] table)")
        raise ConfigError(f"--set {key}: levels are addressed by their level number, counted from 1 as in process "
                          f"names (l2.0) and progress lines; write {hint}")
    node: Any = raw
    match = LEVEL_KEY.match(parts[0])
    if match:
        levels = raw.get("levels")
        level = int(match.group(1))
        count = len(levels) if isinstance(levels, list) else 0
        if not 1 <= level <= count:
            raise ConfigError(f"--set {key}: {source} has {count} levels (l1..l{count}), no level {level}")
        if len(parts) == 1:
            raise ConfigError(f"--set {key}: name a key of the level, e.g. {parts[0]}.agent=ppo")
        node, parts = levels[level - 1], parts[1:]
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a table")
    node[parts[-1]] = value


def _describe(err: dict[str, Any], fields: list[str]) -> str:
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"unknown key (valid keys here: {', '.join(fields)})"
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {err.get('input')!r}"


def _build(cls: type, raw: Any, where: str, source: str) -> Any:
    """One section as its dataclass, validated by pydantic; ConfigError names the file and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where} must be a table, got {type(raw).__name__}")
    from tag_actors.agents.base import ParamsError, validate_plain

    try:
        return validate_plain(cls, raw)
    except ParamsError as e:
        raise ConfigError(f"{source}: {where}: {e}") from None
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        table = cls  # the (nested) section the key belongs to, for the list of its valid keys
        for part in err["loc"][:-1]:
            inner = next((f.default_factory for f in dataclasses.fields(table) if f.name == part), None)
            if not (isinstance(inner, type) and dataclasses.is_dataclass(inner)):
                break
            table = inner
        fields = [f.name for f in dataclasses.fields(table)]
        raise ConfigError(f"{source}: {where}.{key}: {_describe(err, fields)}") from None


_STRICT_SECTIONS = pydantic.ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)
for _section in (RunConfig, EnvConfig, LevelConfig, PlacementConfig, RayPlacementConfig):
    _section.__pydantic_config__ = _STRICT_SECTIONS  # type: ignore[attr-defined]


def from_dict(raw: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a raw config (parsed TOML, or a run's config.json) into ``Config``."""
    unknown = sorted(set(raw) - {"run", "env", "levels", "placement"})
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key {unknown[0]!r} (valid: run, env, levels, placement)")
    raw = copy.deepcopy(raw)
    run = _build(RunConfig, raw.get("run", {}), "run", source)
    env = _build(EnvConfig, raw.get("env", {}), "env", source)
    levels_raw = raw.get("levels")
    if not isinstance(levels_raw, list) or not levels_raw:
        raise ConfigError(f"{source}: 'levels' must be a non-empty array of tables ([[levels]]), level 1 first")
    levels = [_build(LevelConfig, lv, level_key(i + 1), source) for i, lv in enumerate(levels_raw)]
    placement = _build(PlacementConfig, raw.get("placement", {}), "placement", source)
    cfg = Config(run, env, levels, source, placement)
    validate(cfg)
    return cfg


def validate_placement(cfg: Config) -> None:
    """Placement names known hosts and levels; several hosts need tcp and fixed ports."""
    src, pl = cfg.source, cfg.placement
    for key, host in [*((f"levels.{k}", v) for k, v in pl.levels.items()),
                      *((f"processes.{k}", v) for k, v in pl.processes.items())]:
        if host not in pl.hosts:
            raise ConfigError(f"{src}: placement.{key} = {host!r} is not one of placement.hosts "
                              f"({', '.join(pl.hosts) or 'none defined'})")
    for level in pl.levels:
        if not (level.isdigit() and int(level) <= len(cfg.levels)):
            raise ConfigError(f"{src}: placement.levels.{level}: expected a level number 0..{len(cfg.levels)}")
    from tag_actors.ray_placement import check_not_host_placement, check_ray_placement

    try:
        check_ray_placement(pl.ray, len(cfg.levels), src)
        if cfg.run.backend == "ray":
            check_not_host_placement(pl, src)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.multi_host:
        if cfg.run.transport != "tcp":
            raise ConfigError(f"{src}: placement over {len(pl.hosts)} hosts needs run.transport = 'tcp'")
        if cfg.run.base_port <= 0 or (cfg.run.metrics and cfg.run.metrics_base_port <= 0):
            raise ConfigError(f"{src}: placement over several hosts needs fixed ports: set run.base_port"
                              + (" and run.metrics_base_port" if cfg.run.metrics else ""))


def validate(cfg: Config) -> None:
    """What the section schemas cannot see: keys that depend on each other, the agents' params, the env kind."""
    from tag_actors.agents import ParamsError, UnknownAgentType, check_params
    from tag_actors.envs import EnvError, env_class, resolve_env

    validate_placement(cfg)
    src, run = cfg.source, cfg.run
    if run.max_restarts < 0 or run.restart_window_s <= 0 or run.restart_backoff_s < 0:
        raise ConfigError(f"{src}: run.max_restarts must be >= 0, run.restart_window_s > 0 and "
                          "run.restart_backoff_s >= 0")
    if run.stall_timeout_s < 0 or 0 < run.stall_timeout_s <= run.log_every_s:
        raise ConfigError(f"{src}: run.stall_timeout_s = {run.stall_timeout_s} must be 0 (off) or more than "
                          f"run.log_every_s = {run.log_every_s} (the env reports its ticks that often)")
    from tag_actors.devices import check_device_spec
    from tag_actors.loggers import LOGGERS

    unknown_loggers = [n for n in cfg.run.loggers if n not in LOGGERS]
    if unknown_loggers:
        raise ConfigError(f"{src}: run.loggers: unknown logger {unknown_loggers[0]!r} (known: {', '.join(LOGGERS)})")
    check_device_spec(cfg.env.device, f"{src}: env.device", ConfigError)
    for i, lv in enumerate(cfg.levels):
        check_device_spec(lv.device, f"{src}: {level_key(i + 1)}.device", ConfigError)
    try:
        if resolve_env(cfg.env.kind) is not None:
            env_class(cfg.env.kind)  # a plug-in: its module must import here, as in the env's process
    except EnvError as e:
        raise ConfigError(f"{src}: env.kind: {e}") from None
    count = cfg.env.n_agents
    for i, lv in enumerate(cfg.levels):
        where = f"{src}: {level_key(i + 1)}"
        try:
            check_params(lv.agent, lv.params, f"{where}.params")
        except UnknownAgentType as e:
            raise ConfigError(f"{where}.agent: {e}") from None
        except ParamsError as e:
            raise ConfigError(f"{e} [agent {lv.agent!r}]") from None
        if count % lv.fan_in:
            below = "env agents" if i == 0 else f"agents at level {i}"
            raise ConfigError(f"{where}.fan_in = {lv.fan_in} does not divide the {count} {below}")
        count //= lv.fan_in
        if lv.period_s > 0 and cfg.level_mode(i + 1) != "async":
            raise ConfigError(f"{where}.period_s needs this level in async mode (set run.mode = 'async' or "
                              f"{level_key(i + 1)}.mode = 'async'): in lockstep the level below waits on its ticks")
        if lv.message in ("project", "autoencoder") and lv.message_dim <= 0:
            raise ConfigError(f"{where}.message_dim must be > 0 with message = {lv.message!r}")
        if lv.observe:
            check_observe(cfg, i + 1)
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


def check_observe(cfg: Config, level: int) -> None:
    """``lN.observe`` is a valid selection of the env observation, on level 1 (the only level that gets it)."""
    from tag_actors.obs_select import ObservationSelectionError, select_columns

    where = f"{cfg.source}: {level_key(level)}.observe"
    if level != 1:
        raise ConfigError(f"{where}: only level 1 selects parts of the env observation; the levels above see "
                          "their children's messages (remove it, or set it on l1)")
    try:
        select_columns(cfg.levels[0].observe, cfg.env.scenario if cfg.env.kind == "vmas" else "", None)
    except ObservationSelectionError as e:
        raise ConfigError(f"{where}: {e}") from None


def json_schema() -> dict[str, Any]:
    """JSON Schema of a config file, for editors: the sections, and each level's ``params`` by its ``agent``
    (built-in and installed agent types; a ``module:Class`` level gets the generic level schema)."""
    from tag_actors.agents import known_agent_types, params_schema

    def section(cls: type) -> dict[str, Any]:
        return pydantic.TypeAdapter(cls).json_schema()

    level = section(LevelConfig)
    variants = []
    for name in known_agent_types():
        params = pydantic.TypeAdapter(params_schema(name)).json_schema()
        variants.append({"if": {"properties": {"agent": {"const": name}}, "required": ["agent"]},
                         "then": {"properties": {"params": params}}})
    level["allOf"] = variants
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tag_actors run config",
        "type": "object",
        "additionalProperties": False,
        "properties": {"run": section(RunConfig), "env": section(EnvConfig), "placement": section(PlacementConfig),
                       "levels": {"type": "array", "minItems": 1, "items": level,
                                  "description": "One table per level, level 1 (above the env) first."}},
        "required": ["levels"],
    }
