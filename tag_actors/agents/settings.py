"""Typed settings (the ``params`` table of a level) of the built-in learning and stand-in agents.

They live apart from the agents so that the launcher checks a config without importing torch: a typo in
``params`` is refused when the config is loaded, naming the file, the key and the allowed names, before any
process starts. Each model is also what its agent validates ``ctx.params`` into, and ``python -m
tag_actors.launch --schema`` publishes them as JSON Schema (the docstrings become the descriptions).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PPOSettings", "SlowSettings", "Settings"]


class Settings(BaseModel):
    """Base of agent settings: unknown keys are errors, values are not coerced (``"3"`` is not a number;
    integers are accepted for floats), and each field's docstring is its description in the JSON Schema."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True)


class PPOSettings(Settings):
    """PPO settings (``ppo`` and ``mappo`` agents); every field may be set in the level's ``params``."""

    lr: Annotated[float, Field(gt=0)] = 3e-4
    """Adam learning rate (the start value under the linear schedule)."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """'constant', or 'linear' decay from lr to 0 over total_updates updates."""
    total_updates: Annotated[int, Field(ge=1)] = 1_000_000_000
    """Number of updates the linear schedule spans (ignored when constant)."""
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.99
    """Discount factor per env tick (a decision held for k ticks is discounted by gamma**k)."""
    gae_lambda: Annotated[float, Field(ge=0, le=1)] = 0.95
    """GAE lambda (applied per decision, scaled by gamma**ticks)."""
    clip_coef: Annotated[float, Field(gt=0)] = 0.2
    """PPO surrogate clipping coefficient (also the value clipping range when clip_vloss)."""
    clip_vloss: bool = True
    """Clip the value loss around the old values, as in CleanRL."""
    norm_adv: bool = True
    """Normalize advantages per minibatch."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: Annotated[float, Field(ge=0)] = 0.5
    """Value loss coefficient."""
    max_grad_norm: Annotated[float, Field(gt=0)] = 0.5
    """Global gradient norm clipping threshold."""
    update_epochs: Annotated[int, Field(ge=1)] = 4
    """Passes over the batch per update."""
    num_minibatches: Annotated[int, Field(ge=1)] = 4
    """Minibatches per epoch (the batch is split into this many shuffled parts)."""
    rollout_len: Annotated[int, Field(ge=1)] = 128
    """Decisions per env copy per batch: an update is ready at rollout_len * num_envs closed transitions."""
    target_kl: Annotated[float, Field(gt=0)] | None = None
    """Stop the epochs early when the approximate KL of an epoch exceeds this (None: never)."""
    hidden_sizes: list[Annotated[int, Field(ge=1)]] = [64, 64]
    """Hidden layer widths of the actor and of the critic (separate networks)."""
    activation: Literal["tanh", "relu"] = "tanh"
    """Hidden layer activation."""
    norm_obs: bool = True
    """Normalize observations by a running mean/std (updated at act time), then clip to +-clip_obs."""
    clip_obs: Annotated[float, Field(gt=0)] = 10.0
    """Clip range of normalized observations."""
    norm_reward: bool = True
    """Scale rewards by the running std of the discounted return, then clip to +-clip_reward."""
    clip_reward: Annotated[float, Field(gt=0)] = 10.0
    """Clip range of scaled rewards."""
    action_dist: Literal["gaussian", "tanh"] = "gaussian"
    """Box actions: 'gaussian' (state-independent log std, clipped to bounds when bounded) or 'tanh' (squashed)."""
    init_log_std: float = 0.0
    """Initial log std of the Box action distribution."""
    seed_offset: int = 0
    """Added to the agent's seed (to decorrelate agents that share one)."""


class SlowSettings(Settings):
    """The ``slow`` stand-in agent: random actions after a fixed delay."""

    delay_s: Annotated[float, Field(ge=0)] = 0.05
    """Seconds each decision takes."""
