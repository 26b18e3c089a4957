"""PPO for one TAG agent, read top to bottom like CleanRL's ``ppo_continuous_action.py``.

The runtime drives the agent with batched numpy arrays (leading dimension ``num_envs``):

    act(obs, mask)        opens a transition (obs, action, log-prob, value) in every masked env row
    observe(reward, terminated, truncated, next_obs, ticks, mask)
                          closes the open transition of every masked row: ``reward`` is the sum over the ``ticks``
                          env ticks the action was held (semi-MDP), so bootstrapping discounts by gamma**ticks
    ready() / update()    a batch is ``rollout_len * num_envs`` closed transitions; update() runs the PPO epochs

With ``learn_in_background`` (async runs), update() hands the batch to a learner thread that trains ``net`` while
a copy of it keeps acting; the copy takes the new weights at the first act/observe after the update ends. The
policy lag is at most one update, and PPO's ratio against the logged log-probs corrects for it as usual.

Env rows decide at their own pace (masks differ per row), so each row holds its own sequence of transitions and
GAE runs per row over that sequence (``compute_gae``). Transitions still open at an update survive it and are
closed later with the value and log-prob recorded at act time (they were sampled by the old policy).

Settings come from the config's ``[levels.agent]`` table, validated into ``PPOConfig``.
"""

from __future__ import annotations

import copy
import math
import threading
import time
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from tag_actors.agents.base import Agent, AgentContext
from tag_actors.devices import resolve_device
from tag_actors.spaces import Box, Discrete, MultiDiscrete

# ----------------------------------------------------------------------------------------------------------------
# 1. Settings


@dataclass
class PPOConfig:
    """PPO settings; every field may be set in the agent's config table."""

    lr: float = 3e-4
    """Adam learning rate (the start value under the linear schedule)."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """'constant', or 'linear' decay from lr to 0 over total_updates updates."""
    total_updates: int = 1_000_000_000
    """Number of updates the linear schedule spans (ignored when constant)."""
    gamma: float = 0.99
    """Discount factor per env tick (a decision held for k ticks is discounted by gamma**k)."""
    gae_lambda: float = 0.95
    """GAE lambda (applied per decision, scaled by gamma**ticks)."""
    clip_coef: float = 0.2
    """PPO surrogate clipping coefficient (also the value clipping range when clip_vloss)."""
    clip_vloss: bool = True
    """Clip the value loss around the old values, as in CleanRL."""
    norm_adv: bool = True
    """Normalize advantages per minibatch."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient norm clipping threshold."""
    update_epochs: int = 4
    """Passes over the batch per update."""
    num_minibatches: int = 4
    """Minibatches per epoch (the batch is split into this many shuffled parts)."""
    rollout_len: int = 128
    """Decisions per env copy per batch: an update is ready at rollout_len * num_envs closed transitions."""
    target_kl: float | None = None
    """Stop the epochs early when the approximate KL of an epoch exceeds this (None: never)."""
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layer widths of the actor and of the critic (separate networks)."""
    activation: Literal["tanh", "relu"] = "tanh"
    """Hidden layer activation."""
    norm_obs: bool = True
    """Normalize observations by a running mean/std (updated at act time), then clip to +-clip_obs."""
    clip_obs: float = 10.0
    """Clip range of normalized observations."""
    norm_reward: bool = True
    """Scale rewards by the running std of the discounted return, then clip to +-clip_reward."""
    clip_reward: float = 10.0
    """Clip range of scaled rewards."""
    action_dist: Literal["gaussian", "tanh"] = "gaussian"
    """Box actions: 'gaussian' (state-independent log std, clipped to bounds when bounded) or 'tanh' (squashed)."""
    init_log_std: float = 0.0
    """Initial log std of the Box action distribution."""
    seed_offset: int = 0
    """Added to the agent's seed (to decorrelate agents that share one)."""

    @classmethod
    def from_params(cls, params: dict[str, Any], where: str = "ppo") -> PPOConfig:
        """Validate a config table; raises ValueError naming the bad key (prefixed by ``where``)."""
        hints = typing.get_type_hints(cls)
        valid = [f.name for f in fields(cls)]
        values: dict[str, Any] = {}
        for key, value in params.items():
            if key not in hints:
                raise ValueError(f"{where}: unknown parameter {key!r}; valid parameters: {', '.join(valid)}")
            values[key] = _check_type(where, key, value, hints[key])
        cfg = cls(**values)
        cfg._check_ranges(where)
        return cfg

    def _check_ranges(self, where: str) -> None:
        checks = [
            ("lr", self.lr > 0, "> 0"),
            ("total_updates", self.total_updates >= 1, ">= 1"),
            ("gamma", 0 < self.gamma <= 1, "in (0, 1]"),
            ("gae_lambda", 0 <= self.gae_lambda <= 1, "in [0, 1]"),
            ("clip_coef", self.clip_coef > 0, "> 0"),
            ("vf_coef", self.vf_coef >= 0, ">= 0"),
            ("max_grad_norm", self.max_grad_norm > 0, "> 0"),
            ("update_epochs", self.update_epochs >= 1, ">= 1"),
            ("num_minibatches", self.num_minibatches >= 1, ">= 1"),
            ("rollout_len", self.rollout_len >= 1, ">= 1"),
            ("target_kl", self.target_kl is None or self.target_kl > 0, "> 0"),
            ("hidden_sizes", all(h >= 1 for h in self.hidden_sizes), "made of widths >= 1"),
            ("clip_obs", self.clip_obs > 0, "> 0"),
            ("clip_reward", self.clip_reward > 0, "> 0"),
        ]
        for key, ok, rule in checks:
            if not ok:
                raise ValueError(f"{where}: parameter {key!r} must be {rule}, got {getattr(self, key)!r}")


def _check_type(where: str, key: str, value: Any, hint: Any) -> Any:
    """The value converted to the field's type, or ValueError naming the key."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def bad(expected: str) -> ValueError:
        return ValueError(
            f"{where}: parameter {key!r} must be {expected}, got {type(value).__name__} {value!r}"
        )

    if hint is bool:
        if not isinstance(value, bool):
            raise bad("a boolean")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        return float(value)
    if origin is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(repr(a) for a in args))
        return value
    if origin is list:
        if not isinstance(value, list | tuple) or any(
            isinstance(v, bool) or not isinstance(v, int) for v in value
        ):
            raise bad("a list of integers")
        return [int(v) for v in value]
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(where, key, value, inner)
    raise TypeError(f"PPOConfig field {key!r} has an unsupported type {hint!r}")  # a bug in this file


# ----------------------------------------------------------------------------------------------------------------
# 2. Pieces: running statistics, GAE over ragged per-env sequences, the networks


class RunningMeanStd:
    """Running mean and variance (parallel algorithm, float64), as in gymnasium's normalization wrappers."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = 1e-4

    def update(self, x: np.ndarray) -> None:
        if len(x) == 0:
            return
        batch_mean, batch_var, n = x.mean(axis=0), x.var(axis=0), x.shape[0]
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        return {"mean": torch.tensor(self.mean), "var": torch.tensor(self.var), "count": float(self.count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = _float64(state["mean"])
        self.var = _float64(state["var"])
        self.count = float(state["count"])


def _float64(x: Any) -> np.ndarray:
    """A float64 numpy copy of a checkpointed array (a tensor, or a numpy array from an older checkpoint)."""
    return (x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float64)


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    ticks: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    env_ids: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns of semi-MDP transitions; each env row's transitions form their own sequence.

    The arrays are flat (one entry per transition); ``env_ids`` says which env row each belongs to, and within a
    row the entries are in chronological order. With ``d_t = gamma**ticks_t``:

        delta_t = r_t + d_t * (1 - terminated_t) * V(next_obs_t) - V(obs_t)
        A_t     = delta_t + d_t * lam * (1 - done_t) * A_{t+1}        (done = terminated | truncated)

    where ``A_{t+1}`` is the advantage of the row's next transition (0 after the row's last one: its tail is
    bootstrapped by ``V(next_obs)``). Truncated transitions bootstrap, terminated ones do not. Returns
    ``(advantages, returns = advantages + values)`` as float64.
    """
    n = len(rewards)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    env_ids = np.asarray(env_ids, dtype=np.int64)
    discount = float(gamma) ** np.asarray(ticks, dtype=np.float64)
    term = np.asarray(terminated, dtype=np.float64)
    done = np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool)
    values = np.asarray(values, dtype=np.float64)
    delta = np.asarray(rewards, dtype=np.float64) + discount * (1.0 - term) * next_values - values
    carry = discount * lam * (1.0 - done)

    # Lay the ragged sequences out as rows of a padded (envs, longest) table, then sweep it backwards once.
    order = np.argsort(env_ids, kind="stable")
    ids = env_ids[order]
    counts = np.bincount(ids)
    starts = np.cumsum(counts) - counts
    pos = np.arange(n) - starts[ids]
    delta_tab = np.zeros((len(counts), counts.max()))
    carry_tab = np.zeros_like(delta_tab)
    delta_tab[ids, pos] = delta[order]
    carry_tab[ids, pos] = carry[order]
    adv_tab = np.zeros_like(delta_tab)
    next_adv = np.zeros(len(counts))
    for t in range(delta_tab.shape[1] - 1, -1, -1):
        next_adv = delta_tab[:, t] + carry_tab[:, t] * next_adv
        adv_tab[:, t] = next_adv
    advantages = np.empty(n)
    advantages[order] = adv_tab[ids, pos]
    return advantages, advantages + values


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(
    in_dim: int, hidden: list[int], out_dim: int, activation: type[nn.Module], out_std: float
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [layer_init(nn.Linear(in_dim, width)), activation()]
        in_dim = width
    layers.append(layer_init(nn.Linear(in_dim, out_dim), std=out_std))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs; Box actions add a state-independent log std."""

    def __init__(self, obs_dim: int, critic_dim: int, head_dim: int, cfg: PPOConfig, box: bool):
        super().__init__()
        activation = {"tanh": nn.Tanh, "relu": nn.ReLU}[cfg.activation]
        self.critic = mlp(critic_dim, cfg.hidden_sizes, 1, activation, out_std=1.0)
        self.actor = mlp(obs_dim, cfg.hidden_sizes, head_dim, activation, out_std=0.01)
        self.log_std = nn.Parameter(torch.full((head_dim,), cfg.init_log_std)) if box else None


# ----------------------------------------------------------------------------------------------------------------
# 3. The agent


_LOG_SQRT_2PI_E = 0.5 * math.log(2 * math.pi * math.e)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class PPOAgent(Agent):
    """Clipped PPO with GAE over semi-MDP decisions, one independent learner per TAG agent."""

    def __init__(self, ctx: AgentContext):
        super().__init__(ctx)
        torch.set_num_threads(1)  # every process is single-threaded by design
        self.cfg = cfg = PPOConfig.from_params(ctx.params, where=f"agent {ctx.name!r} (ppo)")
        seed = int(ctx.seed) + cfg.seed_offset
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)  # action sampling and minibatch shuffling
        # Networks live on ``device``; random draws stay on the CPU generator (and move), so a seeded run samples
        # the same numbers wherever it learns.
        self.device = torch.device(resolve_device(ctx.device, f"agent {ctx.name!r}: device"))

        # Action space -> head layout.
        space = ctx.action_space
        self.space = space
        self.B, self.obs_dim = ctx.num_envs, ctx.obs_dim
        if isinstance(space, Box):
            self.kind = "box"
            head_dim = space.flat_dim
            self.act_dim, self.act_dtype = head_dim, np.float32
            if cfg.action_dist == "tanh":
                lo, hi = (space.low, space.high) if space.bounded else (-1.0, 1.0)
                self._squash = (0.5 * (hi - lo), 0.5 * (hi + lo))  # action = scale * tanh(u) + shift
        elif isinstance(space, Discrete | MultiDiscrete):
            self.kind = "categorical"
            nvec = [space.n] if isinstance(space, Discrete) else list(space.nvec)
            head_dim = int(sum(nvec))
            self.act_dim, self.act_dtype = len(nvec), np.int64
            # Logits of all components padded into a (K, max n) table; padding has probability 0.
            width = max(nvec)
            self._pad_index = torch.tensor([k * width + j for k, n in enumerate(nvec) for j in range(n)],
                                           device=self.device)
            self._pad_shape = (len(nvec), width)
        else:
            raise ValueError(f"agent {ctx.name!r} (ppo): unsupported action space {space!r}")

        # Networks, initialized under the agent's seed without disturbing the global torch RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = ActorCritic(ctx.obs_dim, self._critic_dim(), head_dim, cfg, box=self.kind == "box")
        self.net.to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, eps=1e-5)

        # Normalizers.
        self.obs_rms = RunningMeanStd((ctx.obs_dim,))
        self.ret_rms = RunningMeanStd(())
        self.discounted_return = np.zeros(self.B, dtype=np.float64)  # per env row, for reward scaling

        # Open transitions (one slot per env row) and closed ones (chunks in chronological order).
        self.open = np.zeros(self.B, dtype=bool)
        self.open_obs = np.zeros((self.B, ctx.obs_dim), dtype=np.float32)
        self.open_action = np.zeros((self.B, self.act_dim), dtype=self.act_dtype)
        self.open_logp = np.zeros(self.B, dtype=np.float32)
        self.open_value = np.zeros(self.B, dtype=np.float32)
        self.closed: list[dict[str, np.ndarray]] = []
        self.num_closed = 0
        self.updates = 0

        # Background learning: ``net`` learns in a thread while ``_policy`` (a copy) acts. torch generators are
        # not thread-safe, so the learner shuffles with its own.
        self.background = ctx.learn_in_background
        self.learn_gen = torch.Generator().manual_seed(seed + 1) if self.background else self.gen
        self._policy: ActorCritic | None = None
        self._learner: threading.Thread | None = None
        self._result: dict[str, float] | Exception | None = None
        self._learned: list[dict[str, float]] = []
        self.frozen = False
        self.deterministic = False

    # -- network helpers ----------------------------------------------------------------------------------------

    def _critic_dim(self) -> int:
        return self.obs_dim

    def _critic_input(self, obs: torch.Tensor) -> torch.Tensor:
        """What the critic sees for these (normalized) observations; a centralized critic would override this."""
        return obs

    def _value(self, obs: torch.Tensor, net: ActorCritic) -> torch.Tensor:
        return net.critic(self._critic_input(obs)).squeeze(-1)

    def _acting_net(self) -> ActorCritic:
        """The network that acts: ``net`` itself, or in background mode the copy, refreshed when an update ends."""
        if not self.background:
            return self.net
        self._collect(wait=False)
        if self._policy is None:
            self._policy = copy.deepcopy(self.net)
        return self._policy

    def _collect(self, wait: bool) -> None:
        """Harvest a finished background update: its stats, and its weights into the acting copy."""
        if self._learner is None or (self._learner.is_alive() and not wait):
            return
        self._learner.join()
        self._learner = None
        result, self._result = self._result, None
        if isinstance(result, Exception):
            raise RuntimeError(f"agent {self.ctx.name!r}: the background update failed: {result}") from result
        if result is not None:
            self._learned.append(result)
        if self._policy is not None:
            self._policy.load_state_dict(self.net.state_dict())

    def _normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        if not self.cfg.norm_obs:
            return obs.astype(np.float32, copy=False)
        z = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + 1e-8)
        return np.clip(z, -self.cfg.clip_obs, self.cfg.clip_obs).astype(np.float32)

    def _padded_logits(self, head: torch.Tensor) -> torch.Tensor:
        k, width = self._pad_shape
        padded = head.new_full(
            (head.shape[0], k * width), -1e9
        )  # finite: -inf would give 0 * inf = nan grads
        padded[:, self._pad_index] = head
        return padded.view(-1, k, width)

    def _sample(self, head: torch.Tensor, net: ActorCritic) -> torch.Tensor:
        """Raw actions (pre-squash/clip Gaussian samples, or category indices) from the policy head; the mode of
        the distribution when ``deterministic`` (evaluation)."""
        if self.deterministic:
            return head if self.kind == "box" else self._padded_logits(head).argmax(-1)
        if self.kind == "box":
            noise = torch.randn(head.shape, generator=self.gen).to(head.device)
            return head + net.log_std.exp() * noise
        logits = self._padded_logits(head)
        u = torch.rand(logits.shape, generator=self.gen).to(logits.device)
        return (logits - torch.log(-torch.log(u))).argmax(-1)  # Gumbel-max

    def _log_prob_entropy(self, head: torch.Tensor, raw: torch.Tensor,
                          net: ActorCritic) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of raw actions and entropies, summed over action components.

        For 'tanh' the log-prob is that of the pre-squash Gaussian sample (the squashing Jacobian does not depend
        on the parameters, so it cancels in the PPO ratio) and the entropy is the Gaussian's.
        """
        if self.kind == "box":
            log_std = net.log_std.expand_as(head)
            logp = -0.5 * ((raw - head) / log_std.exp()) ** 2 - log_std - _LOG_SQRT_2PI
            return logp.sum(-1), (log_std + _LOG_SQRT_2PI_E).sum(-1)
        logp_all = torch.log_softmax(self._padded_logits(head), dim=-1)
        logp = logp_all.gather(-1, raw.unsqueeze(-1)).squeeze(-1).sum(-1)
        entropy = -(logp_all.exp() * logp_all).sum((-1, -2))
        return logp, entropy

    def _to_env_action(self, raw: np.ndarray) -> np.ndarray:
        """Raw samples -> actions in the space's batched layout ``(rows, *shape)``."""
        if self.kind == "box":
            if self.cfg.action_dist == "tanh":
                scale, shift = self._squash
                raw = np.tanh(raw) * scale + shift
            elif self.space.bounded:
                raw = np.clip(raw, self.space.low, self.space.high)
            return raw.astype(np.float32, copy=False).reshape(raw.shape[0], *self.space.shape)
        return raw[:, 0] if isinstance(self.space, Discrete) else raw

    # -- the runtime's calls -------------------------------------------------------------------------------------

    def act(self, obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if obs.shape != (self.B, self.obs_dim):
            raise ValueError(
                f"agent {self.ctx.name!r}: obs has shape {obs.shape}, expected {(self.B, self.obs_dim)}"
            )
        all_rows = mask is None or bool(np.all(mask))
        rows = slice(None) if all_rows else np.flatnonzero(mask)
        obs_m = obs if all_rows else obs[rows]
        if self.cfg.norm_obs and not self.frozen:
            self.obs_rms.update(obs_m)
        obs_n = self._normalize_obs(obs_m)
        net = self._acting_net()
        with torch.no_grad():
            x = torch.from_numpy(obs_n).to(self.device)
            head = net.actor(x)
            raw = self._sample(head, net)
            logp, _ = self._log_prob_entropy(head, raw, net)
            value = self._value(x, net)
        raw_np = raw.cpu().numpy().reshape(len(obs_n), self.act_dim)
        self.open[rows] = True
        self.open_obs[rows] = obs_n
        self.open_action[rows] = raw_np
        self.open_logp[rows] = logp.cpu().numpy()
        self.open_value[rows] = value.cpu().numpy()
        if all_rows:
            return self._to_env_action(raw_np)
        actions = self.space.zeros(self.B)
        actions[rows] = self._to_env_action(raw_np)
        return actions

    def observe(
        self,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        next_obs: np.ndarray,
        ticks: np.ndarray,
        mask: np.ndarray | None = None,
    ) -> None:
        closing = self.open if mask is None else (np.asarray(mask, dtype=bool) & self.open)
        rows = np.flatnonzero(closing)
        if len(rows) == 0 or self.frozen:
            return
        reward = np.asarray(reward, dtype=np.float64)[rows]
        term = np.asarray(terminated, dtype=bool)[rows]
        trunc = np.asarray(truncated, dtype=bool)[rows]
        ticks_m = np.asarray(ticks, dtype=np.int64)[rows]

        # Reward scaling by the running std of the discounted return (per env row, semi-MDP discounted).
        if self.cfg.norm_reward:
            ret = self.discounted_return[rows] * self.cfg.gamma**ticks_m + reward
            self.ret_rms.update(ret)
            self.discounted_return[rows] = np.where(term | trunc, 0.0, ret)
            reward = np.clip(
                reward / np.sqrt(self.ret_rms.var + 1e-8), -self.cfg.clip_reward, self.cfg.clip_reward
            )

        with torch.no_grad():
            next_obs_n = self._normalize_obs(np.asarray(next_obs, dtype=np.float32)[rows])
            next_value = self._value(torch.from_numpy(next_obs_n).to(self.device),
                                     self._acting_net()).cpu().numpy()

        self.closed.append(
            {
                "env": rows,
                "obs": self.open_obs[rows],
                "action": self.open_action[rows],
                "logp": self.open_logp[rows],
                "value": self.open_value[rows],
                "reward": reward.astype(np.float32),
                "next_value": next_value,
                "ticks": ticks_m,
                "terminated": term,
                "truncated": trunc,
            }
        )
        self.num_closed += len(rows)
        self.open[rows] = False

    def ready(self) -> bool:
        if self.frozen:
            return False
        if self.background:
            self._collect(wait=False)
            if self._learner is not None:
                return False  # one update at a time: the batch grows until the learner is free
        return self.num_closed >= self.cfg.rollout_len * self.B

    def update(self) -> dict[str, float] | None:
        if self.num_closed == 0:
            return {"updates": float(self.updates), "transitions": 0.0}
        batch = {k: np.concatenate([c[k] for c in self.closed]) for k in self.closed[0]}
        self.closed, self.num_closed = [], 0
        if not self.background:
            return self._train(batch, self.gen)
        self._learner = threading.Thread(target=self._learn, args=(batch,), name=f"{self.ctx.name}-learner",
                                         daemon=True)
        self._learner.start()
        return None

    def _learn(self, batch: dict[str, np.ndarray]) -> None:
        try:
            self._result = self._train(batch, self.learn_gen)  # read by _collect after join()
        except Exception as e:  # noqa: BLE001 — raised again in the acting thread, which owns the process
            self._result = e

    def finished_updates(self) -> list[dict[str, float]]:
        if self.background:
            self._collect(wait=False)
        out, self._learned = self._learned, []
        return out

    def freeze(self, deterministic: bool) -> None:
        """Act without learning or updating the normalizers (evaluation); ``deterministic``: take the mode."""
        self._collect(wait=True)
        self.frozen, self.deterministic = True, deterministic

    def close(self) -> None:
        self._collect(wait=True)

    def _train(self, batch: dict[str, np.ndarray], gen: torch.Generator) -> dict[str, float]:
        """The PPO epochs on one batch of closed transitions (in the caller's thread or the learner's)."""
        cfg = self.cfg
        start = time.perf_counter()
        # Advantages per env row over its own sequence of decisions.
        advantages, returns = compute_gae(
            batch["reward"], batch["value"], batch["next_value"], batch["ticks"],
            batch["terminated"], batch["truncated"], batch["env"], cfg.gamma, cfg.gae_lambda,
        )  # fmt: skip
        dev = self.device
        b_obs = torch.from_numpy(batch["obs"]).to(dev)
        b_actions = torch.from_numpy(batch["action"]).to(dev)
        if self.kind == "categorical":
            b_actions = b_actions.long()
        b_logp = torch.from_numpy(batch["logp"]).to(dev)
        b_values = torch.from_numpy(batch["value"]).to(dev)
        b_adv = torch.from_numpy(advantages.astype(np.float32)).to(dev)
        b_returns = torch.from_numpy(returns.astype(np.float32)).to(dev)
        n = len(b_obs)

        # Learning rate annealing.
        if cfg.lr_schedule == "linear":
            lr = cfg.lr * max(0.0, 1.0 - self.updates / cfg.total_updates)
        else:
            lr = cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

        # Optimizing the policy and value network.
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "clipfrac": 0.0}
        grad_norm_sum, steps, epochs_run = 0.0, 0, 0
        for _epoch in range(cfg.update_epochs):
            perm = torch.randperm(n, generator=gen).to(dev)
            epoch_kl, epoch_steps = 0.0, 0
            for mb in torch.tensor_split(perm, min(cfg.num_minibatches, n)):
                head = self.net.actor(b_obs[mb])
                newlogp, entropy = self._log_prob_entropy(head, b_actions[mb], self.net)
                newvalue = self._value(b_obs[mb], self.net)
                logratio = newlogp - b_logp[mb]
                ratio = logratio.exp()

                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()  # http://joschu.net/blog/kl-approx.html
                    clipfrac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()

                mb_adv = b_adv[mb]
                if cfg.norm_adv and len(mb) > 1:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)

                # Policy loss
                pg_loss1 = -mb_adv * ratio
                pg_loss2 = -mb_adv * torch.clamp(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                # Value loss
                if cfg.clip_vloss:
                    v_loss_unclipped = (newvalue - b_returns[mb]) ** 2
                    v_clipped = b_values[mb] + torch.clamp(
                        newvalue - b_values[mb], -cfg.clip_coef, cfg.clip_coef
                    )
                    v_loss_clipped = (v_clipped - b_returns[mb]) ** 2
                    v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb]) ** 2).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - cfg.ent_coef * entropy_loss + v_loss * cfg.vf_coef

                self.optimizer.zero_grad()
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
                self.optimizer.step()

                for key, value in (("policy_loss", pg_loss), ("value_loss", v_loss), ("entropy", entropy_loss),
                                   ("approx_kl", approx_kl), ("clipfrac", clipfrac)):  # fmt: skip
                    sums[key] += float(value.detach())
                grad_norm_sum += float(grad_norm)
                epoch_kl += float(approx_kl)
                steps += 1
                epoch_steps += 1
            epochs_run += 1
            if cfg.target_kl is not None and epoch_kl / epoch_steps > cfg.target_kl:
                break

        self.updates += 1
        var_y = float(np.var(returns))
        explained_var = math.nan if var_y == 0 else 1.0 - float(np.var(returns - batch["value"])) / var_y
        stats = {key: value / steps for key, value in sums.items()}
        stats.update(
            explained_variance=explained_var,
            lr=lr,
            grad_norm=grad_norm_sum / steps,
            epochs=float(epochs_run),
            transitions=float(n),
            updates=float(self.updates),
            update_seconds=time.perf_counter() - start,
        )
        return stats

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Network, optimizer, normalizers, counters and RNG states, as tensors and plain values (so that
        ``torch.load(weights_only=True)`` reads it). Transitions in flight are not saved: a resumed agent starts
        collecting afresh (an observe before its first act after load closes nothing). A background update in
        progress is waited for, so the weights saved are whole."""
        self._collect(wait=True)
        return {
            "config": asdict(self.cfg),
            "net": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "obs_rms": self.obs_rms.state_dict(),
            "ret_rms": self.ret_rms.state_dict(),
            "discounted_return": torch.from_numpy(self.discounted_return.copy()),
            "updates": self.updates,
            "rng": self.rng.bit_generator.state,
            "torch_rng": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._collect(wait=True)
        self._policy = None
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_rms.load_state_dict(state["obs_rms"])
        self.ret_rms.load_state_dict(state["ret_rms"])
        self.discounted_return = _float64(state["discounted_return"])
        self.updates = int(state["updates"])
        self.rng.bit_generator.state = state["rng"]
        self.gen.set_state(state["torch_rng"])
        self.open[:] = False
        self.closed, self.num_closed = [], 0
