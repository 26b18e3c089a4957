"""A real env process meets parents that disagree with it (PROTOCOL.md §8): every refused HELLO is answered with
a REJECT naming both peers and the field, the env keeps waiting for an acceptable HELLO, and a peer of another
protocol version gets a REJECT it can read (in its own version)."""

from __future__ import annotations

import subprocess
import sys

import msgpack
import pytest

from tag_actors import config
from tag_actors.launch import prepare_run
from tag_actors.protocol import PROTOCOL_VERSION, SCHEMA_HASH
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


def ask(hub, endpoint, hello: Hello):
    link = hub.connect_child(endpoint, "env/0")
    link.send(hello.to_message())
    return link, hub.recv(link, (Kind.WELCOME, Kind.REJECT), 30)


@pytest.mark.parametrize("hello,field,words", [
    (Hello("l1.0", "env/0", 8, None), "num_envs", "num_envs: parent 'l1.0' runs 8, child 'env/0' runs 4"),
    (Hello("l1.0", "env/0", 4, Box((3,), -1.0, 1.0)), "instruction_space", "shape"),
    (Hello("l1.0", "env/0", 4, None, period=2), "period", "parent 'l1.0' decides every 2 ticks, child 'env/0' "
     "expects every 1"),
    (Hello("l1.0", "env/0", 4, None, mode="async"), "mode", "parent 'l1.0' runs 'async'"),
    (Hello("l1.0", "env/0", 4, None, schema="0" * 16), "schema", SCHEMA_HASH),
    (Hello("l1.0", "env/9", 4, None), "child", "asked for child 'env/9' but reached 'env/0'"),
])
def test_refused_hello_is_answered_then_a_good_one_is_welcomed(env_process, hello, field, words):
    proc, hub, endpoint = env_process
    link, answer = ask(hub, endpoint, hello)
    assert answer.kind == Kind.REJECT and answer.meta["field"] == field and words in answer.meta["reason"]
    assert answer.meta["speaks"] == [PROTOCOL_VERSION]
    link.send(Hello("l1.0", "env/0", 4, None).to_message())
    welcome = Welcome.from_message(hub.recv(link, (Kind.WELCOME,), 30))
    assert proc.poll() is None and welcome.num_envs == 4


def test_welcome_carries_the_env_spaces(env_process):
    proc, hub, endpoint = env_process
    _, answer = ask(hub, endpoint, Hello("l1.0", "env/0", 4, None))
    welcome = Welcome.from_message(answer)
    assert welcome.message_space == Box((16,)) and welcome.instruction_space.shape == (2,)
    assert welcome.info["scenario"] == "balance" and welcome.schema == SCHEMA_HASH and "ts" in welcome.caps


@pytest.mark.parametrize("version", [1, 99])
def test_other_protocol_version_gets_a_reject_in_its_own_version(env_process, zctx, version):
    """A version-1 parent reads the REJECT with its own decoder: the header echoes its version."""
    import zmq

    proc, _, endpoint = env_process
    sock = zctx.socket(zmq.DEALER)
    sock.identity = b"l1.0"
    sock.connect(endpoint)
    header = msgpack.unpackb(encode(Hello("l1.0", "env/0", 4, None).to_message())[0])
    header["v"] = version
    sock.send_multipart([msgpack.packb(header)])
    assert sock.poll(30_000), "no answer to a HELLO of another version"
    frames = sock.recv_multipart()
    answer = msgpack.unpackb(frames[0])
    assert answer["k"] == int(Kind.REJECT) and answer["v"] == version and answer["s"] == "env/0"
    assert (f"'l1.0' speaks protocol version {version}, 'env/0' speaks version {PROTOCOL_VERSION}"
            in answer["m"]["reason"])
    assert answer["m"]["field"] == "version" and proc.poll() is None
