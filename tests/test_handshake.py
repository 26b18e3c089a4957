"""A real env process meets parents that disagree with it: the handshake fails with an error naming both peers
and the field, on both sides, and never hangs."""

from __future__ import annotations

import subprocess
import sys

import msgpack
import pytest

from tag_actors import config
from tag_actors.launch import prepare_run
from tag_actors.spaces import Box
from tag_actors.transport import Hub
from tag_actors.wire import Hello, Kind, Welcome, encode

CFG = config.from_dict({
    "run": {"metrics": False, "startup_timeout_s": 20.0},
    "env": {"kind": "vmas", "scenario": "balance", "num_envs": 4, "n_agents": 4, "kwargs": {"n_agents": 4}},
    "levels": [{"agent": "random"}],
})


@pytest.fixture
def env_process(tmp_path):
    run_dir = tmp_path / "run"
    wiring = prepare_run(CFG, run_dir)
    proc = subprocess.Popen([sys.executable, "-m", "tag_actors.actor", str(run_dir), "env"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    hub = Hub("l1.0")
    yield proc, hub, wiring["endpoints"]["env/0"]
    hub.close()
    proc.kill()
    proc.wait()


def test_good_handshake_then_num_envs_mismatch(env_process):
    proc, hub, endpoint = env_process
    link = hub.connect_child(endpoint, "env/0")
    link.send(Hello("l1.0", "env/0", 8, None).to_message())
    answer = hub.recv(link, (Kind.WELCOME, Kind.REJECT), 30)
    assert answer.kind == Kind.REJECT
    assert "num_envs: parent 'l1.0' runs 8, child 'env/0' runs 4" in answer.meta["reason"]
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 1 and "HandshakeError" in out and "num_envs" in out


def test_instruction_space_mismatch(env_process):
    proc, hub, endpoint = env_process
    link = hub.connect_child(endpoint, "env/0")
    link.send(Hello("l1.0", "env/0", 4, Box((3,), -1.0, 1.0)).to_message())
    answer = hub.recv(link, (Kind.WELCOME, Kind.REJECT), 30)
    assert answer.kind == Kind.REJECT and "instruction_space" in answer.meta["reason"] and "shape" in answer.meta["reason"]


def test_welcome_carries_the_env_spaces(env_process):
    proc, hub, endpoint = env_process
    link = hub.connect_child(endpoint, "env/0")
    link.send(Hello("l1.0", "env/0", 4, None).to_message())
    welcome = Welcome.from_message(hub.recv(link, (Kind.WELCOME,), 30))
    assert welcome.message_space == Box((16,)) and welcome.instruction_space.shape == (2,)
    assert welcome.info["scenario"] == "balance"


def test_other_protocol_version_is_named(env_process):
    proc, hub, endpoint = env_process
    link = hub.connect_child(endpoint, "env/0")
    frames = encode(Hello("l1.0", "env/0", 4, None).to_message())
    header = msgpack.unpackb(frames[0])
    header["v"] = 99
    link.sock.send_multipart([msgpack.packb(header), *frames[1:]])
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "'l1.0' and 'env/0' speak different protocols: protocol version 99, this side speaks 1" in out
