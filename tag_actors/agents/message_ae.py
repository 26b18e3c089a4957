"""A learned message function φ: an autoencoder whose bottleneck is the message a node sends its parent.

The TAG paper's 3PPO-comm learns φ instead of forwarding (or randomly projecting) what a node observes. We ground
the messages as Lin et al. (2021), "Learning to ground multi-agent communication with autoencoders" do: the
message is the latent code of an autoencoder over what the sender sees, so it carries the information that
reconstructs those inputs without any task gradient. That fits TAG's decentralization: the sending node trains its
own φ on its own inputs (its children's messages), in its own process, and no gradient crosses levels — the parent
just sees the latent as part of its observation and learns to use it with its own algorithm.

The message is bounded (tanh, in [-1, 1]) and costs one small MLP forward pass under ``torch.no_grad``. Training
is online and counted in calls, never timed: every ``train_every`` calls the rows seen since the last round feed
``train_steps`` Adam minibatch steps. With the seeded generator and seeded initialization, the same seed gives
bit-identical messages in-process and as actors.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from tag_actors.agents.nets import RunningMeanStd


class MessageAutoencoder:
    """Encoder in_dim -> hidden -> dim (tanh: the message), decoder dim -> hidden -> in_dim, trained on the MSE
    reconstruction of the normalized input rows it encodes."""

    def __init__(self, in_dim: int, dim: int, seed: int, hidden: int = 64, lr: float = 1e-3, train_every: int = 16,
                 train_steps: int = 4, minibatch: int = 256, clip: float = 10.0):
        torch.set_num_threads(1)  # every process is single-threaded by design
        self.in_dim, self.dim = in_dim, dim
        self.train_every, self.train_steps, self.minibatch, self.clip = train_every, train_steps, minibatch, clip
        self.gen = torch.Generator().manual_seed(seed)  # minibatch sampling
        with torch.random.fork_rng(devices=[]):  # seeded init that leaves the global torch RNG alone
            torch.manual_seed(seed)
            self.encoder = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, dim), nn.Tanh())
            self.decoder = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, in_dim))
        self.optimizer = torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=lr)
        self.rms = RunningMeanStd((in_dim,))
        self.buffer: list[np.ndarray] = []
        """The raw input rows of each call since the last training round."""
        self.last_loss = float("nan")
        """Mean reconstruction loss (normalized inputs, before each step) of the last training round."""

    def normalize(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.rms.mean) / np.sqrt(self.rms.var + 1e-8)
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The message (B, dim) float32 for the input rows (B, in_dim); trains when a round falls due."""
        self.buffer.append(np.array(x, dtype=np.float32))
        with torch.no_grad():
            message = self.encoder(torch.from_numpy(self.normalize(x))).numpy()
        if len(self.buffer) >= self.train_every:
            self.train()
        return message

    def train(self) -> None:
        """Fold the buffered rows into the normalizer, take a few minibatch steps on them, clear the buffer. The
        normalizer changes only here, with the encoder, so between rounds φ is one fixed function."""
        raw = np.concatenate(self.buffer)
        self.buffer.clear()
        self.rms.update(raw)
        rows = torch.from_numpy(self.normalize(raw))
        losses = []
        for _ in range(self.train_steps):
            batch = rows[torch.randperm(len(rows), generator=self.gen)[:self.minibatch]]
            loss = torch.mean((self.decoder(self.encoder(batch)) - batch) ** 2)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
        self.last_loss = float(np.mean(losses))

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimizer, normalizer, generator and last loss, as tensors and plain values (copies). The
        buffer is not saved: a restored φ starts its next round afresh, as a resumed PPO agent starts collecting
        afresh."""
        return {
            "encoder": {k: v.clone() for k, v in self.encoder.state_dict().items()},
            "decoder": {k: v.clone() for k, v in self.decoder.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),  # Adam updates its moments in place
            "rms": self.rms.state_dict(),
            "gen": self.gen.get_state(),
            "last_loss": self.last_loss,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.decoder.load_state_dict(state["decoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rms.load_state_dict(state["rms"])
        self.gen.set_state(state["gen"])
        self.last_loss = float(state["last_loss"])
        self.buffer.clear()
