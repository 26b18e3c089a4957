"""One agent of the hierarchy, as a pure state machine over numpy arrays: the same object runs in-process and
inside an actor process, which is what makes a seeded lockstep run give the same numbers both ways.

Each tick a node gets two calls, always in this order:

``on_children(reports)``   the children's reports (message, reward, flags) for this tick arrive from below. The
                           node accumulates its reward (sum over children, summed over the ticks its action is
                           held) and returns its own report for its parent (message = φ(children's messages)).
``on_instruction(x)``      the parent's instruction for this tick arrives from above (None for a root). The node
                           builds its observation (children's messages + instruction), closes the decision windows
                           that end here (``agent.observe``), decides where a window opens (``agent.act``), runs a
                           learning update when the agent has a full batch, and returns one action per child.

Decisions follow the run's tick clock: an agent decides every ``period`` ticks (the product of the ``every`` of its
level and all levels below), for every env copy that is not at its episode's last tick. Windows are per copy: an
episode end closes the copy's window (its final observation reaches ``observe``).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tag_actors.agents import AgentContext, make_agent
from tag_actors.protocol import waits_for_down
from tag_actors.spaces import Box, Discrete, MultiDiscrete, Space

if TYPE_CHECKING:
    from tag_actors.agents.message_ae import MessageAutoencoder


@dataclass(slots=True)
class Report:
    """What a level sends up for one tick, per env copy."""

    message: np.ndarray  # (B, m) float32
    reward: np.ndarray  # (B,) float32: this tick's reward
    terminated: np.ndarray  # (B,) bool
    truncated: np.ndarray  # (B,) bool
    first: np.ndarray  # (B,) bool: first observation of a new episode


def stacked_space(child_spaces: list[Space]) -> Space:
    """The action space of an agent that sends one action to each child (a single child: that child's space)."""
    if len(child_spaces) == 1:
        return child_spaces[0]
    first = child_spaces[0]
    if any(s != first for s in child_spaces):
        raise ValueError(f"children expect different instruction spaces: {[s.to_dict() for s in child_spaces]}")
    if isinstance(first, Box):
        return Box((len(child_spaces), *first.shape), first.low, first.high)
    if isinstance(first, Discrete):
        return MultiDiscrete((first.n,) * len(child_spaces))
    raise ValueError(f"cannot stack instruction spaces of type {type(first).__name__}")


class MessageFunction:
    """φ: children's messages -> this agent's message. 'identity' concatenates, 'mean' averages (equal sizes),
    'project' applies a fixed seeded random projection to ``dim`` features (bounded size at any depth),
    'autoencoder' sends the ``dim`` latent features of an autoencoder this node trains online on its inputs (the
    paper's learned φ, 3PPO-comm; see ``tag_actors.agents.message_ae``)."""

    def __init__(self, kind: str, in_dims: list[int], dim: int, seed: int):
        self.kind = kind
        self.ae: MessageAutoencoder | None = None
        if kind == "identity":
            self.dim = sum(in_dims)
        elif kind == "mean":
            if len(set(in_dims)) != 1:
                raise ValueError(f"message 'mean' needs children of equal message size, got {in_dims}")
            self.dim = in_dims[0]
        elif kind in ("project", "autoencoder"):
            if dim <= 0:
                raise ValueError(f"message {kind!r} needs message_dim > 0")
            total = sum(in_dims)
            if kind == "project":
                rng = np.random.default_rng(seed)
                self.weight = (rng.standard_normal((total, dim)) / np.sqrt(total)).astype(np.float32)
            else:
                from tag_actors.agents.message_ae import MessageAutoencoder  # torch only where φ is learned

                self.ae = MessageAutoencoder(total, dim, seed)
            self.dim = dim
        else:
            raise ValueError(f"unknown message function {kind!r} (identity, mean, project, autoencoder)")
        self.in_dims = in_dims

    @property
    def learned(self) -> bool:
        """Whether φ has parameters that change during the run (and so belong in the node's checkpoint)."""
        return self.ae is not None

    def __call__(self, parts: list[np.ndarray], joined: np.ndarray) -> np.ndarray:
        if self.kind == "identity":
            return joined
        if self.kind == "mean":
            return np.mean(parts, axis=0).astype(np.float32) if len(parts) > 1 else parts[0]
        if self.ae is not None:
            return self.ae(joined)
        return joined @ self.weight

    def state_dict(self) -> dict[str, Any]:
        return self.ae.state_dict() if self.ae is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.ae is not None:
            self.ae.load_state_dict(state)


@dataclass
class NodeSpec:
    """Everything that defines one agent node (built from the config; identical in every process)."""

    name: str
    level: int
    children: list[str]
    period: int
    agent_type: str
    params: dict[str, Any]
    message: str = "identity"
    message_dim: int = 0
    seed: int = 0
    period_s: float = 0.0
    """If > 0, decide on a wall-clock period instead of every ``period`` ticks (slow agents in async mode)."""
    learn_in_background: bool = False
    """Learners update on a copy in a second thread while this node keeps acting (``RunConfig.learner``)."""
    observe_held: bool = False
    """The node's observation ends with the action it holds (``LevelConfig.observe_held``)."""
    device: str = "cpu"
    """Where the agent's networks live and learn (``LevelConfig.device``; resolved in the agent's process)."""
    observe: list[str] = field(default_factory=list)
    """Level 1: the parts of each env agent's observation the agent acts on (``LevelConfig.observe``)."""
    scenario: str = ""
    """The VMAS scenario whose named observation parts ``observe`` may use ('' for other env kinds)."""


class AgentNode:
    """An agent plus the bookkeeping of its level: held actions, semi-MDP rewards, episode stats."""

    def __init__(self, spec: NodeSpec, num_envs: int, child_message_dims: list[int], child_instruction_spaces:
                 list[Space], instruction_space: Space | None, env_info: dict[str, Any] | None = None):
        self.spec = spec
        self.name = spec.name
        self.num_envs = n = num_envs
        self.instruction_space = instruction_space
        self.action_space = stacked_space(child_instruction_spaces)
        self.phi = MessageFunction(spec.message, child_message_dims, spec.message_dim, spec.seed + 7919)
        self.selected: np.ndarray | None = None
        """Columns of the children's concatenated messages the agent observes (None: all; ``spec.observe``)."""
        observed_dims = child_message_dims
        if spec.observe:
            from tag_actors.obs_select import block_columns, select_columns

            dims = set(child_message_dims)
            if len(dims) != 1:
                raise ValueError(f"agent {spec.name!r}: observe needs children with equal observation sizes, got "
                                 f"{child_message_dims}")
            columns = select_columns(spec.observe, spec.scenario, dims.pop())
            self.selected = np.array(block_columns(columns, child_message_dims), dtype=np.int64)
            observed_dims = [len(columns)] * len(child_message_dims)
        layout = list(zip(spec.children, observed_dims, strict=True))
        if instruction_space is not None:
            layout.append(("instruction", instruction_space.feature_dim))
        if spec.observe_held:
            layout.append(("held", self.action_space.feature_dim))
        self.obs_dim = sum(d for _, d in layout)
        self.agent = make_agent(spec.agent_type, AgentContext(
            name=spec.name, level=spec.level, obs_dim=self.obs_dim, action_space=self.action_space, num_envs=n,
            seed=spec.seed, params=dict(spec.params), env_info=dict(env_info or {}), obs_layout=layout,
            learn_in_background=spec.learn_in_background, device=spec.device))
        self.held = self.action_space.zeros(n)
        self.reward_acc = np.zeros(n, dtype=np.float32)
        self.ticks_held = np.zeros(n, dtype=np.int64)
        self.window_open = np.zeros(n, dtype=bool)
        self.episode_tick = np.zeros(n, dtype=np.int64)
        self.episode_return = np.zeros(n, dtype=np.float64)
        self.children_obs = np.zeros((n, sum(child_message_dims)), dtype=np.float32)
        self._flags = (np.zeros(n, dtype=bool),) * 3
        self.ticks = 0
        self.decisions = 0
        self.updates = 0
        self.cut = np.zeros(n, dtype=bool)
        """Copies whose episode in flight is cut (a restart: its process, or a child's, lost ticks of it): its end
        is not reported in ``finished``. A copy's next episode (its FIRST flag) is whole again."""
        self.finished: list[tuple[float, int]] = []
        """(return, length in env ticks) of the episodes that ended since the last ``pop_finished()``."""
        self.update_stats: list[dict[str, float]] = []
        self.last_act_seconds = 0.0
        self.due = np.zeros(n, dtype=bool)
        self.fresh = True
        """True until the first tick of this process's life is done: everybody decides then, on any clock (a
        resumed run starts mid-clock, with nothing held)."""
        self.last_decision_time = 0.0
        self.decided = False
        """Whether the last ``on_instruction`` took a decision (else the children's actions did not change)."""
        self.action_digest = 0
        """CRC32 over every action this node took: two runs took the same actions iff their digests match."""

    @property
    def message_space(self) -> Box:
        return Box((self.phi.dim,))

    def on_children(self, reports: list[Report]) -> Report:
        parts = [r.message for r in reports]
        self.children_obs = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        reward = reports[0].reward if len(reports) == 1 else np.sum([r.reward for r in reports], axis=0)
        reward = reward.astype(np.float32, copy=False)
        head = reports[0]
        first = head.first
        self._flags = (head.terminated, head.truncated, first)
        live = ~first
        self.reward_acc[live] += reward[live]
        self.ticks_held[live] += 1
        self.episode_return[live] += reward[live]
        self.episode_tick[first] = 0
        self.episode_return[first] = 0.0
        self.cut[first] = False
        ended = (head.terminated | head.truncated) & ~self.cut
        if ended.any():
            for b in np.flatnonzero(ended):
                self.finished.append((float(self.episode_return[b]), int(self.episode_tick[b])))
        message = self.phi(parts, self.children_obs)
        return Report(message, reward, head.terminated, head.truncated, first)

    def decides_at(self, period: int, joined: bool = False) -> bool:
        """Whether an agent with decision ``period`` decides this tick (valid after ``on_children``): the decision
        clock of PROTOCOL.md §9.1. A child and its parent compute the same answer from the same tick count and
        flags, so when the parent does not decide the child keeps its instruction without waiting for one:
        lockstep stays exact, and the round trip up the tree is paid only on the parent's decision ticks.
        ``joined``: this process was restarted and rejoined a parent mid-run, whose clock is not fresh."""
        terminated, truncated, _ = self._flags
        return waits_for_down(self.fresh and not joined, self.ticks, period, bool(np.all(terminated | truncated)))

    def observation(self, instruction: np.ndarray | None) -> np.ndarray:
        parts = [self.children_obs if self.selected is None else self.children_obs[:, self.selected]]
        if instruction is not None:
            parts.append(self.instruction_space.as_features(instruction))
        if self.spec.observe_held:
            parts.append(self.action_space.as_features(self.held))
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def on_instruction(self, instruction: np.ndarray | None, allow_decision: bool = True) -> list[np.ndarray]:
        """Close the windows that end at this tick, decide where one opens, return one action per child.

        ``allow_decision=False`` (async mode, when the node is catching up on a backlog of ticks) only keeps the
        books: decisions that fall due are remembered and taken at the next tick that allows one, on the latest
        observation — a slow agent acts on fresh messages instead of working through stale ones."""
        obs = self.observation(instruction)
        terminated, truncated, _first = self._flags
        ended = terminated | truncated
        due = self._due_now() & ~ended
        self.due |= due
        self.due &= ~ended
        decide = self.due if allow_decision else np.zeros_like(self.due)
        close = self.window_open & (decide | ended)
        if close.any():
            self.agent.observe(self.reward_acc, terminated & close, truncated & close, obs, self.ticks_held, close)
            self.reward_acc[close] = 0.0
            self.window_open[close] = False
        self.decided = bool(decide.any())
        if self.decided:
            start = time.perf_counter()
            action = self.agent.act(obs, decide)
            self.last_act_seconds = time.perf_counter() - start
            self.last_decision_time = time.monotonic()
            if decide.all():
                self.held = np.asarray(action, dtype=self.held.dtype).copy()
            else:
                self.held[decide] = action[decide]
            self.window_open |= decide
            self.ticks_held[decide] = 0
            self.decisions += 1
            self.action_digest = zlib.crc32(self.held.tobytes(), self.action_digest)
            self.due[:] = False
        self.episode_tick += 1
        self.ticks += 1
        self.fresh = False
        return self.split(self.held)

    def _due_now(self) -> np.ndarray:
        """Env copies whose decision falls due at this tick: all of them every ``period`` ticks of the run's
        clock (one clock for every copy, so a level's decisions and its round trips come together), or, with a
        wall-clock ``period_s``, once that much time has passed. A copy that starts a new episode between two
        decision ticks keeps its held action until the next one (at most ``period - 1`` ticks)."""
        if self.spec.period_s > 0:
            due = time.monotonic() - self.last_decision_time >= self.spec.period_s or self.fresh
        else:
            due = self.fresh or self.ticks % self.spec.period == 0
        return np.full(self.num_envs, due)

    def maybe_update(self) -> None:
        """Learn when the agent holds a full batch. The runtime calls this after sending its actions down, so the
        levels below keep working while this one learns; the order against the node's own state is the same in
        every runtime, which keeps seeded runs identical. A background learner returns at once; its stats
        arrive at a later call, when its update has finished."""
        if self.agent.ready():
            stats = self.agent.update()
            if stats is not None:
                self._record_update(stats)
        self._harvest_background_updates()

    def _harvest_background_updates(self) -> None:
        for stats in self.agent.finished_updates():
            self._record_update(stats)

    def _record_update(self, stats: dict[str, float]) -> None:
        self.update_stats.append(stats)
        self.updates += 1

    def split(self, action: np.ndarray) -> list[np.ndarray]:
        if len(self.spec.children) == 1:
            return [action]
        return [np.ascontiguousarray(action[:, i]) for i in range(len(self.spec.children))]

    def pop_finished(self) -> list[tuple[float, int]]:
        out, self.finished = self.finished, []
        return out

    def pop_update_stats(self) -> list[dict[str, float]]:
        out, self.update_stats = self.update_stats, []
        return out

    def state_dict(self) -> dict[str, Any]:
        agent = self.agent.state_dict()  # waits for a background update in progress, so count it too
        self._harvest_background_updates()
        state = {"agent": agent, "ticks": self.ticks, "decisions": self.decisions, "updates": self.updates}
        if self.phi.learned:
            state["phi"] = self.phi.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])
        self.ticks, self.decisions, self.updates = state["ticks"], state["decisions"], state["updates"]
        if self.phi.learned:
            self.phi.load_state_dict(state["phi"])
