"""The protocol module against PROTOCOL.md and the per-tick checks: the spec names the current schema hash and
every clause the code cites; UP/DOWN that differ from the handshake's agreement in any dtype, rank, dimension,
batch or metadata type raise BadFrame (never another exception); the decision clock; REJECT in the peer's
version; a hub drops such frames and counts them per reason."""

from __future__ import annotations

import re
from pathlib import Path

import msgpack
import numpy as np
import pytest

from tag_actors import protocol as P
from tag_actors.protocol import BadFrame, Kind, Message
from tag_actors.spaces import Box, Discrete, MultiDiscrete
from tag_actors.wire import decode, encode

ROOT = Path(__file__).resolve().parent.parent
SPEC = (ROOT / "PROTOCOL.md").read_text()


def frames(msg: Message) -> list[bytes]:
    return [bytes(f) for f in encode(msg)]


def test_the_spec_states_the_current_version_and_schema_hash():
    assert f"# The LevelEnv protocol, version {P.PROTOCOL_VERSION}" in SPEC
    assert SPEC.count(P.SCHEMA_HASH) >= 2, "PROTOCOL.md must state the schema hash (§8.4, Appendix A)"
    for agent in ("examples/foreign_agent.py", "examples/node_agent/agent.mjs"):
        text = (ROOT / agent).read_text()
        assert f'SCHEMA = "{P.SCHEMA_HASH}"' in text and "VERSION = 2" in text, agent


def test_every_clause_cited_in_the_code_exists_in_the_spec():
    headings = set(re.findall(r"^#{3,4} (§\d+(?:\.\d+)?)", SPEC, re.M))
    headings |= {"§5.6", "§5.7", "§5.8"}  # one heading: "§5.6 STOP, §5.7 BYE, §5.8 PING"
    cited: set[str] = set()
    for path in [*(ROOT / "tag_actors").glob("*.py"), ROOT / "examples" / "foreign_agent.py",
                 ROOT / "examples" / "node_agent" / "agent.mjs"]:
        cited |= set(re.findall(r"§\d+(?:\.\d+)?", path.read_text()))
    assert cited and cited <= headings, f"cited but not in PROTOCOL.md: {sorted(cited - headings)}"


def test_the_spec_lists_every_kind_flag_and_array_of_the_code():
    for kind in Kind:
        assert f"| {int(kind)} | {kind.name} |" in SPEC
    for name, bit in (("TERMINATED", P.TERMINATED), ("TRUNCATED", P.TRUNCATED), ("FIRST", P.FIRST)):
        assert f"| {bit} | {name} |" in SPEC
    for spec in P.up_arrays(Box((16,)), 8).specs:
        assert f"| `{spec[0]}` | {spec[1]} |" in SPEC
    for key in (*P.HELLO_KEYS, *P.WELCOME_KEYS, *P.CAPABILITIES):
        assert f"| `{key}` |" in SPEC, key


B = 4
UP = {Kind.UP: P.up_arrays(Box((16,)), B)}


def up(x=None, r=None, f=None, batch=B, meta=None) -> Message:
    x = np.zeros((B, 16), np.float32) if x is None else x
    r = np.zeros(B, np.float32) if r is None else r
    f = np.zeros(B, np.uint8) if f is None else f
    msg = P.up_message(x, r, f, 3, 12, False)
    msg.batch, msg.sender = batch, "env/0"
    if meta is not None:
        msg.meta = meta
    return msg


def test_an_agreed_up_decodes_to_views_of_the_frames():
    x = np.arange(B * 16, dtype=np.float32).reshape(B, 16)
    out = decode(frames(up(x=x, f=np.array([4, 0, 1, 2], np.uint8))), agreed=UP)
    np.testing.assert_array_equal(out.arrays["x"], x)
    assert out.arrays["f"].dtype == np.uint8 and out.tick == 3 and out.meta == {"e": 12}


@pytest.mark.parametrize("msg,reason,words", [
    (up(f=np.zeros(B, np.float64)), "dtype", "UP array 'f' is 'float64', the link agreed 'uint8'"),
    (up(x=np.zeros((B, 70), np.float32)), "shape", "UP array 'x' has shape [4, 70], the link agreed [4, 16]"),
    (up(x=np.zeros((B, 16, 1), np.float32)), "shape", "[4, 16, 1]"),
    (up(r=np.zeros((B - 1,), np.float32)), "shape", "UP array 'r'"),
    (up(r=np.zeros(B, np.float64)), "dtype", "'r'"),
    (up(batch=B + 1), "batch", "batch 5, the link agreed 4"),
    (up(meta={"e": "many"}), "meta", "e must be an integer"),
    (up(meta={"e": 1, "stop": 1}), "meta", "stop a boolean"),
])
def test_an_up_unlike_the_agreement_is_a_bad_frame(msg, reason, words):
    with pytest.raises(BadFrame) as e:
        decode(frames(msg), agreed=UP)
    assert e.value.reason == reason and words in e.value.detail


def test_missing_extra_and_reordered_arrays_are_bad_frames():
    base = up()
    for arrays in ({"x": base.arrays["x"], "r": base.arrays["r"]},
                   {**base.arrays, "y": np.zeros(B, np.float32)},
                   {"r": base.arrays["r"], "x": base.arrays["x"], "f": base.arrays["f"]}):
        with pytest.raises(BadFrame) as e:
            decode(frames(Message(Kind.UP, "env/0", tick=1, batch=B, arrays=arrays)), agreed=UP)
        assert e.value.reason == "content"


def test_a_header_that_lies_about_its_frames_is_a_bad_frame():
    good = frames(up())
    h = msgpack.unpackb(good[0])
    h["a"][0][1] = "int8"  # header says int8 (4 x 16 bytes would be needed) but float32 bytes follow
    with pytest.raises(BadFrame) as e:
        decode([msgpack.packb(h), *good[1:]], agreed=UP)
    assert e.value.reason == "dtype"
    with pytest.raises(BadFrame) as e:
        decode([good[0], good[1][:-4], *good[2:]], agreed=UP)
    assert e.value.reason == "truncated"


@pytest.mark.parametrize("space,dtype,shape", [
    (Box((2,), -1.0, 1.0), np.float32, (B, 2)),
    (Discrete(5), np.int64, (B,)),
    (MultiDiscrete((3, 3)), np.int64, (B, 2)),
])
def test_down_is_checked_against_the_instruction_space(space, dtype, shape):
    agreed = {Kind.DOWN: P.down_arrays(space, B)}
    good = space.zeros(B)
    assert good.dtype == dtype and good.shape == shape
    out = decode(frames(P.down_message(good, 7, 1.5)), agreed=agreed)
    assert out.arrays["a"].shape == shape and out.meta == {"ts": 1.5}
    for bad in (good.astype(np.float64 if dtype == np.float32 else np.int32), np.zeros((B, 70), dtype)):
        with pytest.raises(BadFrame):
            decode(frames(P.down_message(bad, 7, None)), agreed=agreed)
    with pytest.raises(BadFrame) as e:
        decode(frames(P.down_message(good, 7, "now")), agreed=agreed)
    assert e.value.reason == "meta"


def test_random_garbage_against_an_agreement_raises_only_bad_frame():
    rng = np.random.default_rng(1)
    good = frames(up())
    for _ in range(300):
        h = msgpack.unpackb(good[0])
        choice = rng.integers(0, 5)
        if choice == 0:
            h["a"] = [None, 3, "x", [[1, 2]], [["x"]], [["x", "float32", "4"]]][int(rng.integers(0, 6))]
        elif choice == 1:
            h["a"][int(rng.integers(0, 3))][2] = [int(v) for v in rng.integers(-1, 80, int(rng.integers(0, 4)))]
        elif choice == 2:
            h["b"] = int(rng.integers(-1, 9))
        elif choice == 3:
            h["m"] = {"e": [1.5, "x", None, 3][int(rng.integers(0, 4))], "stop": [True, 1, None][int(rng.integers(0, 3))]}
        else:
            h["a"][int(rng.integers(0, 3))][1] = str(rng.choice(["float16", "int64", "object", "<f4", "bool"]))
        try:
            decode([msgpack.packb(h), *good[1:]], agreed=UP)
        except BadFrame:
            pass


@pytest.mark.parametrize("first,tick,period,all_ended,waits", [
    (True, 7, 4, False, True),   # first tick of the link: always
    (False, 8, 4, False, True),  # a multiple of the period
    (False, 9, 4, False, False),
    (False, 8, 4, True, False),  # every copy ended: the parent only observes
    (True, 0, 1, True, False),
    (False, 5, 1, False, True),
])
def test_the_decision_clock(first, tick, period, all_ended, waits):
    assert P.waits_for_down(first, tick, period, all_ended) is waits


def test_decision_period_is_the_product_of_every_up_to_the_level():
    assert [P.decision_period([1, 2, 2], level) for level in (1, 2, 3)] == [1, 2, 4]


def test_reject_in_the_peer_version_carries_reason_field_and_speaks():
    msg = P.reject_message("env/0", P.VersionMismatch(P.version_reject_reason("l1.0", "env/0", 1), 1), version=1)
    h = msgpack.unpackb(encode(msg)[0])
    assert h["v"] == 1 and h["k"] == 3 and h["m"]["field"] == "version" and h["m"]["speaks"] == [2]
    assert "'l1.0' speaks protocol version 1, 'env/0' speaks version 2" in h["m"]["reason"]


def test_handshake_carries_period_mode_schema_and_caps():
    hello = P.Hello("l2.0", "l1.0", 8, Box((2,), -1.0, 1.0), period=4, mode="async")
    back = P.Hello.from_message(decode(frames(hello.to_message())))
    assert back == hello and back.schema == P.SCHEMA_HASH and "ts" in back.caps
    for key, value in (("period", 0), ("period", 1.5), ("mode", "eager")):
        msg = hello.to_message()
        msg.meta[key] = value
        with pytest.raises(P.HandshakeError) as e:
            P.Hello.from_message(decode(frames(msg)))
        assert e.value.field == key
    welcome = P.Welcome("l1.0", 8, Box((4,)), Box((2,), -1.0, 1.0), caps=["ts", "future-thing"])
    assert P.agreed_caps(hello, welcome) == {"ts"}
    assert P.agreed_caps(hello, P.Welcome("l1.0", 8, Box((4,)), Box((2,)), caps=[])) == frozenset()


def test_a_hub_drops_and_counts_frames_unlike_the_agreement(tmp_path):
    from tag_actors.transport import Hub

    endpoint = f"ipc://{tmp_path}/link"
    parent, child = Hub("l1.0"), Hub("env/0")
    try:
        up_link = child.serve_parent(endpoint, "l1.0")
        down_link = parent.connect_child(endpoint, "env/0")
        down_link.agreed = UP
        down_link.send(P.Hello("l1.0", "env/0", B, None).to_message())  # connects; the child learns its identity
        child.recv(up_link, (Kind.HELLO,), 5)
        for bad in (up(f=np.zeros(B, np.float64)), up(x=np.zeros((B, 70), np.float32))):
            up_link.send(bad)
        up_link.send(up(f=np.full(B, 4, np.uint8)))
        got = parent.recv(down_link, (Kind.UP,), 5)
        assert got.arrays["f"].tolist() == [4] * B
        assert parent.bad_frames == {("env/0", "dtype"): 1, ("env/0", "shape"): 1}
    finally:
        parent.close()
        child.close()
