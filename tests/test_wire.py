"""The codec: every kind and dtype round-trips; anything malformed raises BadFrame with a reason."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from tag_actors.spaces import Box, Discrete, MultiDiscrete
from tag_actors.wire import (
    ALLOWED_DTYPES,
    PROTOCOL_VERSION,
    BadFrame,
    HandshakeError,
    Hello,
    Kind,
    Message,
    Welcome,
    check_hello,
    check_welcome,
    decode,
    encode,
    pack_flags,
    unpack_flags,
)


def frames_as_bytes(frames):
    return [bytes(f) for f in frames]


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_round_trips(kind):
    msg = Message(kind, "l2.0", seq=7, tick=42, batch=3, arrays={"x": np.arange(6, dtype=np.float32).reshape(3, 2)},
                  meta={"stop": True, "e": 123})
    out = decode(frames_as_bytes(encode(msg)))
    assert (out.kind, out.sender, out.seq, out.tick, out.batch, out.meta) == (kind, "l2.0", 7, 42, 3, msg.meta)
    np.testing.assert_array_equal(out.arrays["x"], msg.arrays["x"])


@pytest.mark.parametrize("dtype", sorted(ALLOWED_DTYPES))
def test_every_dtype_round_trips(dtype):
    arr = (np.arange(24) % 2).astype(dtype).reshape(2, 3, 4)
    out = decode(frames_as_bytes(encode(Message(Kind.UP, "a", arrays={"a": arr, "scalar": np.array(3, dtype)}))))
    assert out.arrays["a"].dtype == np.dtype(dtype) and out.arrays["a"].shape == (2, 3, 4)
    np.testing.assert_array_equal(out.arrays["a"], arr)
    assert out.arrays["scalar"].shape == () and out.arrays["scalar"] == np.array(3, dtype)


def test_non_contiguous_and_empty_arrays():
    arr = np.arange(20, dtype=np.float64).reshape(4, 5)[:, ::2]
    out = decode(frames_as_bytes(encode(Message(Kind.DOWN, "a", arrays={"a": arr, "e": np.zeros((0, 3))}))))
    np.testing.assert_array_equal(out.arrays["a"], arr)
    assert out.arrays["e"].shape == (0, 3)


def header(**over):
    h = {"k": int(Kind.UP), "v": PROTOCOL_VERSION, "s": "x", "q": 0, "t": 0, "b": 1, "a": [["x", "float32", [2]]]}
    h.update(over)
    return msgpack.packb(h)


@pytest.mark.parametrize(
    "frames,reason",
    [
        ([], "empty"),
        ([b"\xc1garbage"], "header"),
        ([msgpack.packb([1, 2])], "header"),
        ([header(k=99), b"\0" * 8], "kind"),
        ([header(v=1), b"\0" * 8], "version"),
        ([header(v="2"), b"\0" * 8], "version"),
        ([header(), b"\0" * 7], "truncated"),
        ([header()], "frames"),
        ([header(a=[["x", "object", [1]]]), b"\0" * 8], "dtype"),
        ([header(a=[["x", "float32", [-2]]]), b"\0" * 8], "array"),
        ([header(s=5), b"\0" * 8], "header"),
        ([msgpack.packb({"k": 4, "v": PROTOCOL_VERSION}), b"\0" * 8], "header"),
        ([msgpack.packb({"k": 4}), b"\0" * 8], "version"),
    ],
)
def test_malformed_frames_raise_bad_frame(frames, reason):
    with pytest.raises(BadFrame) as e:
        decode(frames)
    assert e.value.reason == reason


def test_oversized_message_is_rejected_before_parsing():
    big = encode(Message(Kind.UP, "a", arrays={"x": np.zeros(1000, np.float32)}))
    with pytest.raises(BadFrame) as e:
        decode(frames_as_bytes(big), max_bytes=1000)
    assert e.value.reason == "oversized"


def test_flags_pack_and_unpack():
    t, tr, f = np.array([1, 0, 0, 1], bool), np.array([0, 1, 0, 1], bool), np.array([0, 0, 1, 1], bool)
    packed = pack_flags(t, tr, f)
    assert packed.dtype == np.uint8
    for a, b in zip(unpack_flags(packed), (t, tr, f), strict=True):
        np.testing.assert_array_equal(a, b)


def test_handshake_round_trip_and_checks():
    hello = Hello("l2.0", "l1.0", 64, Box((2,), -1.0, 1.0))
    back = Hello.from_message(decode(frames_as_bytes(encode(hello.to_message()))))
    assert back == hello
    check_hello(back, "l1.0", 64, Box((2,), -1.0, 1.0))
    with pytest.raises(HandshakeError, match="num_envs.*'l2.0'.*64.*'l1.0'.*32"):
        check_hello(back, "l1.0", 32, Box((2,), -1.0, 1.0))
    with pytest.raises(HandshakeError, match="instruction_space.*'l2.0'.*'l1.0'.*shape"):
        check_hello(back, "l1.0", 64, Box((3,), -1.0, 1.0))
    with pytest.raises(HandshakeError, match="asked for child 'l1.1'"):
        check_hello(Hello("l2.0", "l1.1", 64, None), "l1.0", 64, Discrete(5))

    welcome = Welcome("l1.0", 64, Box((16,)), MultiDiscrete((4, 4)), {"scenario": "balance"})
    back_w = Welcome.from_message(decode(frames_as_bytes(encode(welcome.to_message()))))
    assert back_w == welcome
    check_welcome(back_w, "l2.0", "l1.0", 64, MultiDiscrete((4, 4)))
    with pytest.raises(HandshakeError, match="instruction_space.*nvec"):
        check_welcome(back_w, "l2.0", "l1.0", 64, MultiDiscrete((4, 5)))


def test_handshake_with_a_malformed_space_names_the_field():
    msg = Hello("p", "c", 1, None).to_message()
    msg.meta["instruction_space"] = {"type": "box"}
    with pytest.raises(HandshakeError, match="instruction_space"):
        Hello.from_message(msg)
