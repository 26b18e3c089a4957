"""The learned message function φ (message = "autoencoder", the paper's 3PPO-comm): the autoencoder learns, a
node's checkpoint carries φ exactly, and a 3PPO-comm run gives the same numbers in-process and as actors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_runtime import summary

from tag_actors.node import AgentNode, NodeSpec, Report
from tag_actors.runlog import load_checkpoint, save_checkpoint
from tag_actors.spaces import Box


def test_autoencoder_learns_to_reconstruct_low_rank_inputs():
    """Rows that live on a 3-dimensional subspace of 16 features fit through an 8-feature bottleneck: with the
    default settings the reconstruction loss of the normalized rows falls well below its untrained value."""
    from tag_actors.agents.message_ae import MessageAutoencoder

    rng = np.random.default_rng(0)
    mix = rng.standard_normal((3, 16))
    ae = MessageAutoencoder(16, 8, seed=0)
    losses = []
    for _ in range(30):  # 30 training rounds of 16 calls of 64 rows
        for _ in range(ae.train_every):
            message = ae((rng.standard_normal((64, 3)) @ mix + 0.5).astype(np.float32))
        losses.append(ae.last_loss)
    assert message.shape == (64, 8) and message.dtype == np.float32 and np.all(np.abs(message) <= 1.0)
    print(f"reconstruction loss: first round {losses[0]:.4f}, round 30 {losses[-1]:.4f}")
    assert losses[-1] < 0.5 * losses[0], losses


def phi_node(seed: int, message: str = "autoencoder") -> AgentNode:
    spec = NodeSpec(name="l1.0", level=1, children=["env/0", "env/1"], period=1, agent_type="random", params={},
                    message=message, message_dim=4, seed=seed)
    return AgentNode(spec, 8, [6, 6], [Box((2,), -1.0, 1.0)] * 2, None)


def tick(node: AgentNode, rng: np.random.Generator) -> np.ndarray:
    """One tick of children's reports; the node's message up."""
    flags = np.zeros(8, dtype=bool)
    reports = [Report(rng.standard_normal((8, 6)).astype(np.float32), np.zeros(8, np.float32), flags, flags, flags)
               for _ in range(2)]
    return node.on_children(reports).message


def test_learned_phi_checkpoint_round_trip_gives_identical_messages(tmp_path):
    """A node's checkpoint (saved and loaded as the runtime does) carries φ's networks, optimizer, normalizer and
    generator: a node built with another seed and restored from it sends bit-identical messages afterwards, through
    further training rounds."""
    trained, restored = phi_node(seed=1), phi_node(seed=2)
    rng = np.random.default_rng(0)
    for _ in range(2 * trained.phi.ae.train_every):  # two rounds: the buffer is empty at the checkpoint
        tick(trained, rng)
    assert np.isfinite(trained.phi.ae.last_loss)
    path = tmp_path / "l1.0.pt"
    save_checkpoint(path, trained.state_dict())
    state = load_checkpoint(path)
    assert "phi" in state and "phi" not in phi_node(1, "project").state_dict()  # a fixed φ has nothing to save
    restored.load_state_dict(state)
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    for _ in range(trained.phi.ae.train_every + 3):  # across the next training round
        np.testing.assert_array_equal(tick(trained, a), tick(restored, b))
    for k, v in trained.phi.ae.decoder.state_dict().items():
        assert torch.equal(v, restored.phi.ae.decoder.state_dict()[k]), k


@pytest.mark.slow
def test_3ppo_comm_actors_match_in_process(launch, tmp_path):
    """configs/balance_3ppo_comm.toml (learned φ at levels 1 and 2), briefly: the same seed gives the same episode
    returns, actions and φ parameters in-process and as actors, and φ trained along the way."""
    args = ["configs/balance_3ppo_comm.toml", "--quiet", "--set", "run.total_env_steps=2560", "--set",
            "env.max_steps=20", "--set", "run.metrics=false", "--set", "run.checkpoint_every_s=0", "--set",
            "l1.params.rollout_len=8", "--set", "l2.params.rollout_len=4"]
    serial, actors = tmp_path / "serial", tmp_path / "actors"
    r1 = launch.run(*args, "--serial", "--run-dir", str(serial))
    assert r1.returncode == 0, r1.stderr
    r2 = launch.run(*args, "--run-dir", str(actors))
    assert r2.returncode == 0, r2.stderr + r2.stdout
    a, b = summary(serial), summary(actors)
    assert set(a) == set(b) == {"env", "l1.0", "l1.1", "l1.2", "l1.3", "l2.0", "l2.1", "l3.0"}
    for name in a:
        assert a[name]["returns"], f"{name}: no finished episode"
        assert a[name]["returns"] == b[name]["returns"], f"{name}: episode returns differ"
        assert b[name]["end"]["reason"] == "completed"
        if name != "env":
            assert a[name]["end"]["action_digest"] == b[name]["end"]["action_digest"], f"{name}: actions differ"
            assert a[name]["end"]["updates"] == b[name]["end"]["updates"]
    assert b["l1.0"]["end"]["updates"] > 0 and b["l2.0"]["end"]["updates"] > 0
    for name in ("l1.0", "l2.1"):
        phi_a = load_checkpoint(serial / "checkpoints" / f"{name}.pt")["phi"]
        phi_b = load_checkpoint(actors / "checkpoints" / f"{name}.pt")["phi"]
        assert np.isfinite(phi_b["last_loss"]) and phi_a["last_loss"] == phi_b["last_loss"], name
        for k, v in phi_a["encoder"].items():
            assert torch.equal(v, phi_b["encoder"][k]), f"{name}: φ encoder {k} differs"
