"""PPO for one TAG agent, read top to bottom like CleanRL's ``ppo_continuous_action.py``.

The runtime drives the agent with batched numpy arrays (leading dimension ``num_envs``):

    act(obs, mask)        opens a transition (obs, action, log-prob, value) in every masked env row
    observe(reward, terminated, truncated, next_obs, ticks, mask)
                          closes the open transition of every masked row: ``reward`` is the sum over the ``ticks``
                          env ticks the action was held (semi-MDP), so bootstrapping discounts by gamma**ticks
    ready() / update()    a batch is ``rollout_len * num_envs`` closed transitions; update() runs the PPO epochs

Env rows decide at their own pace (masks differ per row), so each row holds its own sequence of transitions and
GAE runs per row over that sequence (``compute_gae``). Transitions still open at an update survive it and are
closed later with the value and log-prob recorded at act time (they were sampled by the old policy).

Settings: ``PPOSettings`` (``tag_actors.agents.settings``), the level's ``params`` table. Networks, normalizers
and the action distribution come from ``tag_actors.agents.nets``; with ``learn_in_background`` (async runs) the
update runs in a ``BackgroundLearner`` thread while a copy of the network keeps acting (policy lag at most one
update, which PPO's ratio against the logged log-probs corrects for as usual).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from tag_actors.agents.base import Agent, AgentContext, parse_params
from tag_actors.agents.learner import BackgroundLearner
from tag_actors.agents.nets import ActorCritic, PolicyHead, RunningMeanStd, as_float64
from tag_actors.agents.settings import PPOSettings
from tag_actors.devices import resolve_device

__all__ = ["PPOAgent", "PPOSettings", "compute_gae"]


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


class PPOAgent(Agent):
    """Clipped PPO with GAE over semi-MDP decisions, one independent learner per TAG agent."""

    Params = PPOSettings

    def __init__(self, ctx: AgentContext):
        super().__init__(ctx)
        torch.set_num_threads(1)  # every process is single-threaded by design
        self.cfg = cfg = parse_params(PPOSettings, ctx.params, f"agent {ctx.name!r} (ppo): params")
        seed = int(ctx.seed) + cfg.seed_offset
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)  # action sampling and minibatch shuffling
        # Networks live on ``device``; random draws stay on the CPU generator (and move), so a seeded run samples
        # the same numbers wherever it learns.
        self.device = torch.device(resolve_device(ctx.device, f"agent {ctx.name!r}: device"))
        self.B, self.obs_dim = ctx.num_envs, ctx.obs_dim

        # Policy head (action distribution) and networks, initialized under the agent's seed without disturbing
        # the global torch RNG.
        self.head = PolicyHead(ctx.action_space, cfg.action_dist, f"agent {ctx.name!r} (ppo)", self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = ActorCritic(ctx.obs_dim, self._critic_dim(), self.head.head_dim, cfg.hidden_sizes,
                                   cfg.activation, cfg.init_log_std, box=self.head.box)
        self.net.to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, eps=1e-5)

        # Normalizers.
        self.obs_rms = RunningMeanStd((ctx.obs_dim,))
        self.ret_rms = RunningMeanStd(())
        self.discounted_return = np.zeros(self.B, dtype=np.float64)  # per env row, for reward scaling

        # Open transitions (one slot per env row) and closed ones (chunks in chronological order).
        self.open = np.zeros(self.B, dtype=bool)
        self.open_obs = np.zeros((self.B, ctx.obs_dim), dtype=np.float32)
        self.open_action = np.zeros((self.B, self.head.act_dim), dtype=self.head.act_dtype)
        self.open_logp = np.zeros(self.B, dtype=np.float32)
        self.open_value = np.zeros(self.B, dtype=np.float32)
        self.closed: list[dict[str, np.ndarray]] = []
        self.num_closed = 0
        self.updates = 0

        # Background learning: the learner trains ``net`` in its thread with its own generator (torch generators
        # are not thread-safe) while a copy acts.
        self.learner = BackgroundLearner(self.net, ctx.name) if ctx.learn_in_background else None
        self.learn_gen = torch.Generator().manual_seed(seed + 1) if self.learner else self.gen
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
        """The network that acts: ``net`` itself, or in background mode the learner's copy."""
        return self.net if self.learner is None else self.learner.acting_net()

    def _wait_for_learner(self) -> None:
        if self.learner is not None:
            self.learner.collect(wait=True)

    def _normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        if not self.cfg.norm_obs:
            return obs.astype(np.float32, copy=False)
        z = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + 1e-8)
        return np.clip(z, -self.cfg.clip_obs, self.cfg.clip_obs).astype(np.float32)

    # -- the runtime's calls -------------------------------------------------------------------------------------

    def act(self, obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Sample actions for the masked rows and open a transition in each."""
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
            raw = self.head.sample(head, net.log_std, self.gen, self.deterministic)
            logp, _ = self.head.log_prob_entropy(head, raw, net.log_std)
            value = self._value(x, net)
        raw_np = raw.cpu().numpy().reshape(len(obs_n), self.head.act_dim)
        self.open[rows] = True
        self.open_obs[rows] = obs_n
        self.open_action[rows] = raw_np
        self.open_logp[rows] = logp.cpu().numpy()
        self.open_value[rows] = value.cpu().numpy()
        if all_rows:
            return self.head.to_env_action(raw_np)
        actions = self.ctx.action_space.zeros(self.B)
        actions[rows] = self.head.to_env_action(raw_np)
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
        """Close the open transitions of the masked rows (see the module docstring)."""
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
        """A full batch is closed (and, in background mode, the learner is free)."""
        if self.frozen or (self.learner is not None and self.learner.busy):
            return False  # one update at a time: the batch grows until the learner is free
        return self.num_closed >= self.cfg.rollout_len * self.B

    def update(self) -> dict[str, float] | None:
        """Train on the closed transitions: inline (returns the stats) or in the background (returns None)."""
        if self.num_closed == 0:
            return {"updates": float(self.updates), "transitions": 0.0}
        batch = {k: np.concatenate([c[k] for c in self.closed]) for k in self.closed[0]}
        self.closed, self.num_closed = [], 0
        if self.learner is None:
            return self._train(batch, self.gen)
        self.learner.start(lambda b: self._train(b, self.learn_gen), batch)
        return None

    def finished_updates(self) -> list[dict[str, float]]:
        """Stats of the background updates that ended since the last call."""
        return [] if self.learner is None else self.learner.pop_finished()

    def freeze(self, deterministic: bool) -> None:
        """Act without learning or updating the normalizers (evaluation); ``deterministic``: take the mode."""
        self._wait_for_learner()
        self.frozen, self.deterministic = True, deterministic

    def close(self) -> None:
        """Wait for a background update in progress."""
        self._wait_for_learner()

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
        if not self.head.box:
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
                newlogp, entropy = self.head.log_prob_entropy(head, b_actions[mb], self.net.log_std)
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
        self._wait_for_learner()
        return {
            "config": self.cfg.model_dump(),
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
        """Restore what ``state_dict`` returned; open transitions are dropped."""
        if self.learner is not None:
            self.learner.forget_policy()
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_rms.load_state_dict(state["obs_rms"])
        self.ret_rms.load_state_dict(state["ret_rms"])
        self.discounted_return = as_float64(state["discounted_return"])
        self.updates = int(state["updates"])
        self.rng.bit_generator.state = state["rng"]
        self.gen.set_state(state["torch_rng"])
        self.open[:] = False
        self.closed, self.num_closed = [], 0
