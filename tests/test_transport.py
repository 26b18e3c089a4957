"""Links over real sockets: delivery, bad frames dropped and counted while serving goes on, lost peers named,
CURVE keys enforced."""

from __future__ import annotations

import socket
import time

import msgpack
import numpy as np
import pytest
import zmq

from tag_actors.transport import Hub, LinkTimeout, PeerLost, Security, generate_keys
from tag_actors.wire import PROTOCOL_VERSION, Kind, Message, encode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["ipc", "tcp"])
def endpoint(request, tmp_path):
    if request.param == "ipc":
        return f"ipc://{tmp_path}/link"
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture
def hubs():
    made = []

    def make(name, **kw):
        hub = Hub(name, peer_timeout_s=kw.pop("peer_timeout_s", 2.0), **kw)
        made.append(hub)
        return hub

    yield make
    for h in made:
        h.close()


def up(x):
    x = np.asarray(x, np.float32).reshape(1, -1)
    return Message(Kind.UP, "", batch=1, arrays={"x": x, "r": np.zeros(1, np.float32), "f": np.zeros(1, np.uint8)})


def test_round_trip_both_ways(hubs, endpoint):
    child, parent = hubs("c"), hubs("p")
    to_parent = child.serve_parent(endpoint, "p")
    to_child = parent.connect_child(endpoint, "c")
    to_child.send(Message(Kind.HELLO, "", meta={"hi": 1}))
    hello = child.recv(to_parent, (Kind.HELLO,), 5)
    assert hello.sender == "p" and hello.meta == {"hi": 1}
    for i in range(50):
        to_parent.send(up([i, i + 1]))
        got = parent.recv(to_child, (Kind.UP,), 5)
        assert got.sender == "c" and got.seq == i + 0
        np.testing.assert_array_equal(got.arrays["x"], [[i, i + 1]])
        to_child.send(Message(Kind.DOWN, "", batch=1, arrays={"a": np.array([i])}))
        assert child.recv(to_parent, (Kind.DOWN,), 5).arrays["a"][0] == i


def raw_parent(zctx, endpoint, identity=b"p"):
    sock = zctx.socket(zmq.DEALER)
    sock.identity = identity
    sock.connect(endpoint)
    return sock


def test_garbage_and_oversized_frames_are_dropped_and_counted(hubs, zctx, endpoint):
    counted = []
    child = hubs("c", max_message_bytes=4096, on_bad_frame=lambda peer, reason: counted.append((peer, reason)))
    link = child.serve_parent(endpoint, "p")
    sock = raw_parent(zctx, endpoint)
    good = encode(Message(Kind.HELLO, "p"))
    sock.send_multipart([b"\x00\xff garbage"])
    sock.send_multipart([good[0], b"extra frame nobody announced"])
    sock.send_multipart(encode(Message(Kind.UP, "p", arrays={"x": np.zeros(2000, np.float32)})))  # 8 KB > 4 KB
    sock.send_multipart(encode(Message(Kind.UP, "someone-else")))
    sock.send_multipart(encode(Message(Kind.DOWN, "p")))  # a DOWN without its action
    sock.send_multipart(encode(Message(Kind.DOWN, "p", batch=1, arrays={"a": np.zeros(1)})))  # not awaited now
    sock.send_multipart(good)
    msg = child.recv(link, (Kind.HELLO,), 5)
    assert msg.kind == Kind.HELLO and msg.sender == "p"
    reasons = [r for _, r in counted]
    assert reasons == ["header", "frames", "oversized", "sender", "content", "unexpected"]
    assert all(peer == "p" for peer, _ in counted)
    assert sum(child.bad_frames.values()) == 6
    sock.send_multipart(encode(Message(Kind.DOWN, "p", batch=3, arrays={"a": np.ones(3, np.float32)})))
    assert child.recv(link, (Kind.DOWN,), 5).arrays["a"].sum() == 3  # still serving


def test_a_stranger_is_counted_and_its_leaving_is_not_a_lost_parent(hubs, zctx, endpoint):
    child, parent = hubs("c"), hubs("p")
    link = child.serve_parent(endpoint, "p")
    to_child = parent.connect_child(endpoint, "c")
    to_child.send(Message(Kind.HELLO, ""))
    child.recv(link, (Kind.HELLO,), 5)
    link.established = True
    stranger = raw_parent(zctx, endpoint, b"intruder")
    stranger.send_multipart(encode(Message(Kind.DOWN, "intruder")))
    time.sleep(0.3)
    stranger.close(linger=0)
    to_child.send(Message(Kind.DOWN, "", batch=1, arrays={"a": np.array([1])}))
    assert child.recv(link, (Kind.DOWN,), 5).arrays["a"][0] == 1
    time.sleep(0.8)  # let the stranger's disconnect be noticed and forgiven
    to_child.send(Message(Kind.DOWN, "", batch=1, arrays={"a": np.array([2])}))
    assert child.recv(link, (Kind.DOWN,), 5).arrays["a"][0] == 2
    assert any(reason == "unknown_peer" for (_, reason) in child.bad_frames)


def test_lost_child_is_named_within_seconds(hubs, endpoint):
    child, parent = hubs("c"), hubs("p")
    to_parent = child.serve_parent(endpoint, "p")
    to_child = parent.connect_child(endpoint, "c")
    to_child.send(Message(Kind.HELLO, ""))
    child.recv(to_parent, (Kind.HELLO,), 5)
    to_parent.send(Message(Kind.WELCOME, ""))
    parent.recv(to_child, (Kind.WELCOME,), 5)
    to_child.established = True
    child.close()
    started = time.monotonic()
    with pytest.raises(PeerLost, match="'c'") as e:
        parent.recv(to_child, (Kind.UP,), 30)
    assert e.value.peer == "c" and time.monotonic() - started < 10


def test_lost_parent_is_named_within_seconds(hubs, endpoint):
    child, parent = hubs("c"), hubs("p")
    to_parent = child.serve_parent(endpoint, "p")
    to_child = parent.connect_child(endpoint, "c")
    to_child.send(Message(Kind.HELLO, ""))
    child.recv(to_parent, (Kind.HELLO,), 5)
    to_parent.established = True
    parent.close()
    started = time.monotonic()
    with pytest.raises(PeerLost, match="'p'"):
        child.recv(to_parent, (Kind.DOWN,), 30)
    assert time.monotonic() - started < 10


def test_timeout_names_the_silent_peers(hubs, tmp_path):
    parent = hubs("p")
    a = parent.connect_child(f"ipc://{tmp_path}/a", "a")
    b = parent.connect_child(f"ipc://{tmp_path}/b", "b")
    with pytest.raises(LinkTimeout, match="'p' waited 0s for WELCOME from a, b"):
        parent.recv_from_all([a, b], (Kind.WELCOME,), 0.3, "WELCOME")


def test_curve_admits_known_keys_and_refuses_others(hubs, tmp_path):
    c_pub, c_sec = generate_keys(tmp_path / "keys", "child")
    p_pub, p_sec = generate_keys(tmp_path / "keys", "parent")
    x_pub, x_sec = generate_keys(tmp_path / "keys", "intruder")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    child = hubs("c", security=Security(c_pub, c_sec, {}, [p_pub]))
    link = child.serve_parent(endpoint, "p")
    intruder = hubs("p", security=Security(x_pub, x_sec, {"c": c_pub}, []))
    bad = intruder.connect_child(endpoint, "c")
    bad.send(Message(Kind.HELLO, "", meta={"who": "intruder"}))
    with pytest.raises(LinkTimeout):
        child.recv(link, (Kind.HELLO,), 1.5)
    assert any(reason == "auth" for (_, reason) in child.bad_frames)
    parent = hubs("p", security=Security(p_pub, p_sec, {"c": c_pub}, []))
    good = parent.connect_child(endpoint, "c")
    good.send(Message(Kind.HELLO, "", meta={"who": "parent"}))
    assert child.recv(link, (Kind.HELLO,), 5).meta == {"who": "parent"}


def test_header_only_garbage_never_raises_from_recv(hubs, zctx, endpoint):
    child = hubs("c")
    link = child.serve_parent(endpoint, "p")
    sock = raw_parent(zctx, endpoint)
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 4))
        sock.send_multipart([rng.bytes(int(rng.integers(0, 64))) for _ in range(n)])
    sock.send_multipart([msgpack.packb({"k": 1, "v": PROTOCOL_VERSION, "s": "p", "q": 0, "t": 0, "b": 0, "a": []})])
    assert child.recv(link, (Kind.HELLO,), 5).sender == "p"
    assert sum(child.bad_frames.values()) >= 190
