"""Building blocks the learning agents share: running normalizers, MLPs with CleanRL's initialization, the
actor-critic pair, and the policy head that maps network outputs to actions of a ``tag_actors.spaces`` space.

Nothing here knows about PPO's loss or the runtime; ``ppo.py``, ``mappo.py`` and ``message_ae.py`` compose them.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from tag_actors.spaces import Box, Discrete, MultiDiscrete, Space

__all__ = ["ActorCritic", "PolicyHead", "RunningMeanStd", "activation_class", "as_float64", "layer_init", "mlp"]

_LOG_SQRT_2PI_E = 0.5 * math.log(2 * math.pi * math.e)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class RunningMeanStd:
    """Running mean and variance (parallel algorithm, float64), as in gymnasium's normalization wrappers."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = 1e-4

    def update(self, x: np.ndarray) -> None:
        """Fold a batch of rows ``(n, *shape)`` into the statistics."""
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
        """Mean and variance as tensors (``torch.load(weights_only=True)`` reads them), count as a float."""
        return {"mean": torch.tensor(self.mean), "var": torch.tensor(self.var), "count": float(self.count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.mean = as_float64(state["mean"])
        self.var = as_float64(state["var"])
        self.count = float(state["count"])


def as_float64(x: Any) -> np.ndarray:
    """A float64 numpy copy of a checkpointed array (a tensor, or a numpy array from an older checkpoint)."""
    return (x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float64)


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weights with gain ``std`` and constant biases (CleanRL's initialization)."""
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def activation_class(name: Literal["tanh", "relu"]) -> type[nn.Module]:
    """The torch module class of an activation name."""
    return {"tanh": nn.Tanh, "relu": nn.ReLU}[name]


def mlp(
    in_dim: int, hidden: list[int], out_dim: int, activation: type[nn.Module], out_std: float
) -> nn.Sequential:
    """An MLP with ``layer_init`` layers; the output layer's gain is ``out_std``."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [layer_init(nn.Linear(in_dim, width)), activation()]
        in_dim = width
    layers.append(layer_init(nn.Linear(in_dim, out_dim), std=out_std))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs; Box actions add a state-independent log std."""

    def __init__(self, obs_dim: int, critic_dim: int, head_dim: int, hidden: list[int],
                 activation: Literal["tanh", "relu"], init_log_std: float, box: bool):
        super().__init__()
        act = activation_class(activation)
        self.critic = mlp(critic_dim, hidden, 1, act, out_std=1.0)
        self.actor = mlp(obs_dim, hidden, head_dim, act, out_std=0.01)
        self.log_std = nn.Parameter(torch.full((head_dim,), init_log_std)) if box else None


class PolicyHead:
    """The action distribution over a space, from the actor's output ``head``.

    Box: a diagonal Gaussian with the network's state-independent ``log_std`` around ``head``; with
    ``squash='tanh'`` the sample is squashed into the bounds, else clipped to them (when bounded). Discrete and
    MultiDiscrete: one categorical per component, their logits padded into a ``(K, max n)`` table.
    Actions are handled "raw" (pre-squash samples, category indices) for log-probabilities; ``to_env_action``
    turns them into the space's batched layout.
    """

    def __init__(self, space: Space, squash: Literal["gaussian", "tanh"], where: str,
                 device: torch.device | str = "cpu"):
        self.space, self.squash = space, squash
        if isinstance(space, Box):
            self.kind = "box"
            self.head_dim = space.flat_dim
            self.act_dim, self.act_dtype = self.head_dim, np.float32
            if squash == "tanh":
                lo, hi = (space.low, space.high) if space.bounded else (-1.0, 1.0)
                self._squash = (0.5 * (hi - lo), 0.5 * (hi + lo))  # action = scale * tanh(u) + shift
        elif isinstance(space, Discrete | MultiDiscrete):
            self.kind = "categorical"
            nvec = [space.n] if isinstance(space, Discrete) else list(space.nvec)
            self.head_dim = int(sum(nvec))
            self.act_dim, self.act_dtype = len(nvec), np.int64
            width = max(nvec)
            self._pad_index = torch.tensor([k * width + j for k, n in enumerate(nvec) for j in range(n)],
                                           device=device)
            self._pad_shape = (len(nvec), width)
        else:
            raise ValueError(f"{where}: unsupported action space {space!r}")

    @property
    def box(self) -> bool:
        """Whether actions are continuous (the network then needs a ``log_std``)."""
        return self.kind == "box"

    def _padded_logits(self, head: torch.Tensor) -> torch.Tensor:
        k, width = self._pad_shape
        padded = head.new_full((head.shape[0], k * width), -1e9)  # finite: -inf would give 0 * inf = nan grads
        padded[:, self._pad_index] = head
        return padded.view(-1, k, width)

    def sample(self, head: torch.Tensor, log_std: torch.Tensor | None, gen: torch.Generator,
               deterministic: bool) -> torch.Tensor:
        """Raw actions from the distribution (its mode when ``deterministic``)."""
        if deterministic:
            return head if self.kind == "box" else self._padded_logits(head).argmax(-1)
        if self.kind == "box":
            noise = torch.randn(head.shape, generator=gen).to(head.device)
            return head + log_std.exp() * noise
        logits = self._padded_logits(head)
        u = torch.rand(logits.shape, generator=gen).to(logits.device)
        return (logits - torch.log(-torch.log(u))).argmax(-1)  # Gumbel-max

    def log_prob_entropy(self, head: torch.Tensor, raw: torch.Tensor,
                         log_std: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of raw actions and entropies, summed over action components.

        For 'tanh' the log-prob is that of the pre-squash Gaussian sample (the squashing Jacobian does not depend
        on the parameters, so it cancels in the PPO ratio) and the entropy is the Gaussian's.
        """
        if self.kind == "box":
            log_std = log_std.expand_as(head)
            logp = -0.5 * ((raw - head) / log_std.exp()) ** 2 - log_std - _LOG_SQRT_2PI
            return logp.sum(-1), (log_std + _LOG_SQRT_2PI_E).sum(-1)
        logp_all = torch.log_softmax(self._padded_logits(head), dim=-1)
        logp = logp_all.gather(-1, raw.unsqueeze(-1)).squeeze(-1).sum(-1)
        entropy = -(logp_all.exp() * logp_all).sum((-1, -2))
        return logp, entropy

    def to_env_action(self, raw: np.ndarray) -> np.ndarray:
        """Raw samples ``(rows, act_dim)`` -> actions in the space's batched layout ``(rows, *shape)``."""
        space = self.space
        if self.kind == "box":
            if self.squash == "tanh":
                scale, shift = self._squash
                raw = np.tanh(raw) * scale + shift
            elif space.bounded:
                raw = np.clip(raw, space.low, space.high)
            return raw.astype(np.float32, copy=False).reshape(raw.shape[0], *space.shape)
        return raw[:, 0] if isinstance(space, Discrete) else raw
