"""The conformance suite of the LevelEnv protocol: drives any process over ZeroMQ, in either role, through the
clauses of PROTOCOL.md and prints PASS/FAIL per clause (exit code 1 on any failure).

    python -m tag_actors.conformance child NAME=ENDPOINT [NAME=ENDPOINT ...] --parent l1.0 --num-envs 4
    python -m tag_actors.conformance parent NAME=ENDPOINT [NAME=ENDPOINT ...] --parent l1.0 --num-envs 4

``child``: the implementation serves the children named (it binds each ENDPOINT, as a child does, §2); the suite
is their parent: it connects, tries refused handshakes (other version, schema, batch, period, malformed fields,
garbage), opens the links, then drives ticks — lockstep or async, as ``--mode`` says — checking every UP (tick
numbers, array names/dtypes/shapes, flags, episode ends), holding back DOWN on decision ticks to check that the
child waits, sending bad DOWNs it must drop, and ends with STOP, expecting BYE.

``parent``: the implementation is the parent of the children named (it connects to each ENDPOINT); the suite
binds there, plays the children (scripted episodes ending together and apart), checks HELLO and every DOWN
(decision clock, dtype, shape, range), sends bad UPs it must drop, marks the last tick with ``stop`` and expects
STOP, then says BYE. ``--fault`` instead answers the first HELLO with a faulty WELCOME and expects a REJECT.

The model is dm_env_rpc's compliance tests; these drive a process of any language, in both roles.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import zmq

from tag_actors import protocol as P
from tag_actors.protocol import FIRST, TERMINATED, TRUNCATED, Hello, Kind, Message, Welcome
from tag_actors.spaces import Box, Discrete, MultiDiscrete, Space, space_from_dict
from tag_actors.wire import BadFrame, decode, encode


class ClauseFailed(AssertionError):
    pass


@dataclass
class Results:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def record(self, clause: str, title: str, ok: bool, detail: str = "") -> bool:
        status = "PASS" if ok else "FAIL"
        self.rows.append((status, clause, title, detail))
        print(f"{status}  {clause:<7} {title}" + (f"  -- {detail}" if detail else ""), flush=True)
        return ok

    def check(self, clause: str, title: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn``; a ClauseFailed, BadFrame or timeout is this clause's failure (the run goes on)."""
        try:
            out = fn()
        except (ClauseFailed, BadFrame, P.HandshakeError, ValueError, KeyError, TypeError) as e:
            self.record(clause, title, False, f"{type(e).__name__}: {e}")
            return None
        self.record(clause, title, True)
        return out if out is not None else True

    @property
    def failed(self) -> int:
        return sum(1 for r in self.rows if r[0] == "FAIL")


def expect(cond: bool, why: str) -> None:
    if not cond:
        raise ClauseFailed(why)


class Peer:
    """One link, seen from the suite: a DEALER (suite as parent) or a ROUTER (suite as child)."""

    def __init__(self, ctx: zmq.Context, name: str, endpoint: str, me: str, bind: bool, peer_identity: str):
        self.name, self.endpoint, self.me = name, endpoint, me
        self.sock = ctx.socket(zmq.ROUTER if bind else zmq.DEALER)
        self.sock.linger = 0
        self.router = bind
        self.peer_identity = peer_identity.encode()
        if bind:
            self.sock.router_mandatory = 1
            self.sock.bind(endpoint)
        else:
            self.sock.identity = me.encode()
            self.sock.connect(endpoint)
        self.seq = 0

    def send_frames(self, frames: list[Any]) -> None:
        if self.router:
            frames = [self.peer_identity, *frames]
        self.sock.send_multipart(frames)

    def send(self, msg: Message, sender: str | None = None) -> None:
        """Send signed as this end (§3), or as ``sender`` to test that a wrongly signed message is dropped."""
        msg.sender = sender or self.me
        msg.seq, self.seq = self.seq, self.seq + 1
        self.send_frames(encode(msg))

    def recv_frames(self, timeout_s: float) -> list[bytes] | None:
        if not self.sock.poll(int(timeout_s * 1000)):
            return None
        frames = self.sock.recv_multipart()
        if self.router:
            if frames[0] != self.peer_identity:
                return self.recv_frames(timeout_s)  # a stranger: not the peer under test
            frames = frames[1:]
        return frames

    def recv(self, timeout_s: float, what: str, kinds: tuple[Kind, ...] | None = None) -> Message:
        """The next message (PINGs skipped), decoded strictly; fails the clause on silence or another kind."""
        deadline = time.monotonic() + timeout_s
        while True:
            frames = self.recv_frames(max(0.0, deadline - time.monotonic()))
            if frames is None:
                raise ClauseFailed(f"no {what} from {self.name!r} within {timeout_s:.0f}s")
            msg = decode(frames)
            if msg.kind == Kind.PING:
                continue
            if kinds is not None and msg.kind not in kinds:
                raise ClauseFailed(f"expected {what} from {self.name!r}, got {msg.kind.name}")
            return msg

    def quiet(self, seconds: float) -> bool:
        """True if nothing but PINGs arrives for ``seconds``; otherwise the message is kept for the next read."""
        if self._unread is not None:
            return False
        deadline = time.monotonic() + seconds
        while True:
            frames = self.recv_frames(max(0.0, deadline - time.monotonic()))
            if frames is None:
                return True
            try:
                if decode(frames).kind == Kind.PING:
                    continue
            except BadFrame:
                pass
            self._unread = frames
            return False

    _unread: list[bytes] | None = None

    def recv_after_quiet(self, timeout_s: float, what: str, kinds: tuple[Kind, ...]) -> Message:
        if self._unread is not None:
            frames, self._unread = self._unread, None
            msg = decode(frames)
            expect(msg.kind in kinds, f"expected {what} from {self.name!r}, got {msg.kind.name}")
            return msg
        return self.recv(timeout_s, what, kinds)


def raw(header: dict[str, Any], *frames: bytes) -> list[bytes]:
    return [msgpack.packb(header, use_bin_type=True), *frames]


def header_of(msg: Message, **over: Any) -> dict[str, Any]:
    h = msgpack.unpackb(encode(msg)[0])
    h.update(over)
    return h


def sample(space: Space, rng: np.random.Generator, batch: int) -> np.ndarray:
    return np.ascontiguousarray(space.sample(rng, batch), dtype=P.action_dtype(space))


def check_tick_arrays(msg: Message, agreed: P.Agreed) -> None:
    """§6: exactly the agreed arrays (names, order, dtypes, shapes) and batch."""
    got = [[n, a.dtype.name, list(a.shape)] for n, a in msg.arrays.items()]
    expect(got == agreed.specs, f"{msg.kind.name} arrays {got}, the link agreed {agreed.specs}")
    expect(msg.batch == agreed.batch, f"{msg.kind.name} batch {msg.batch}, agreed {agreed.batch}")


def check_in_space(action: np.ndarray, space: Space) -> None:
    """§6: an action lies in its space (finite Box bounds, Discrete/MultiDiscrete ranges)."""
    if isinstance(space, Box):
        expect(bool(np.all(np.isfinite(action))), "DOWN action has NaN/inf")
        if math.isfinite(space.low) and math.isfinite(space.high):
            expect(bool(np.all((action >= space.low - 1e-6) & (action <= space.high + 1e-6))),
                   f"DOWN action outside [{space.low}, {space.high}]")
    elif isinstance(space, Discrete):
        expect(bool(np.all((action >= 0) & (action < space.n))), f"DOWN action outside 0..{space.n - 1}")
    elif isinstance(space, MultiDiscrete):
        expect(bool(np.all((action >= 0) & (action < np.array(space.nvec)))), "DOWN action outside nvec")


# --- the suite as parent: testing a child implementation -------------------------------------------------------


def test_child(args: argparse.Namespace, ctx: zmq.Context) -> Results:
    res = Results()
    links = [Peer(ctx, name, ep, args.parent, bind=False, peer_identity=name) for name, ep in args.links]
    instruction = space_from_dict(json.loads(args.instruction)) if args.instruction else None
    b, t_out = args.num_envs, args.timeout
    first = links[0]

    def hello(peer: Peer, **over: Any) -> Message:
        h = Hello(args.parent, peer.name, b, instruction, args.period, args.mode)
        for k, v in over.items():
            setattr(h, k, v)
        return h.to_message()

    def refused(field_name: str, frames: list[bytes], version: int = P.PROTOCOL_VERSION) -> None:
        first.send_frames(frames)
        msg = first.recv_frames(t_out)
        expect(msg is not None, f"no answer within {t_out:.0f}s (a refused handshake MUST be answered by REJECT)")
        h = msgpack.unpackb(msg[0])
        expect(h.get("k") == int(Kind.REJECT), f"answer has kind {h.get('k')!r}, expected REJECT (3)")
        expect(h.get("v") == version, f"REJECT header version {h.get('v')!r}, expected {version} (the peer's own)")
        meta = h.get("m", {})
        expect(isinstance(meta.get("reason"), str) and meta["reason"], "REJECT without a reason")
        expect(meta.get("field") == field_name, f"REJECT names field {meta.get('field')!r}, expected {field_name!r}")

    def frames_of(msg: Message, **over: Any) -> list[bytes]:
        return raw(header_of(msg, **over))

    res.check("§8.3", "a HELLO in protocol version 1 is answered by a REJECT in version 1",
              lambda: refused("version", frames_of(hello(first), v=1), version=1))
    res.check("§8.4", "a HELLO with another schema hash is answered by REJECT (field schema)",
              lambda: refused("schema", encode(hello(first, schema="0" * 16))))
    res.check("§8.2", "a HELLO with the wrong batch (num_envs) is answered by REJECT",
              lambda: refused("num_envs", encode(hello(first, num_envs=b + 1))))
    if args.expects_period:
        res.check("§8.2", "a HELLO with the wrong decision period is answered by REJECT (field period)",
                  lambda: refused("period", encode(hello(first, period=args.period + 1))))
    bad = hello(first)
    del bad.meta["period"]
    res.check("§5.1", "a HELLO lacking a field (period) is answered by REJECT naming it",
              lambda: refused("period", encode(bad)))

    def garbage_is_ignored() -> None:
        first.send_frames([b"\xc1 not msgpack"])
        first.send_frames(raw({"k": 99, "v": P.PROTOCOL_VERSION, "s": args.parent, "q": 0, "t": 0, "b": b, "a": []}))
        expect(first.quiet(0.5), "answered a malformed frame (MUST drop it silently, §13)")

    res.check("§13", "malformed frames before the handshake are dropped without an answer", garbage_is_ignored)

    welcomes: dict[str, Welcome] = {}

    def handshake(peer: Peer) -> None:
        peer.send(hello(peer))
        msg = peer.recv_after_quiet(t_out, "WELCOME", (Kind.WELCOME, Kind.REJECT))
        expect(msg.kind == Kind.WELCOME, f"REJECT: {msg.meta.get('reason')}")
        w = Welcome.from_message(msg)
        expect(w.child == peer.name, f"WELCOME signed {w.child!r}, the link is to {peer.name!r} (§3)")
        expect(w.num_envs == b and msg.batch == b, f"WELCOME num_envs {w.num_envs}, HELLO said {b}")
        expect(w.schema == P.SCHEMA_HASH, f"WELCOME schema {w.schema!r}, expected {P.SCHEMA_HASH!r}")
        if instruction is not None:
            expect(w.instruction_space == instruction, f"WELCOME instruction space {w.instruction_space}")
        welcomes[peer.name] = w

    if not res.check("§8.1", "a good HELLO is answered by WELCOME on every link (spaces, schema, batch)",
                     lambda: [handshake(p) for p in links]):
        return res
    ups = {p.name: P.up_arrays(welcomes[p.name].message_space, b) for p in links}
    rng = np.random.default_rng(args.seed)
    state = {"tick": None, "first": True, "ended": np.zeros(b, bool), "all_ended_waits": 0, "held_back": 0,
             "check_next": False}

    def receive_tick() -> tuple[int, bool, bool]:
        """UP from every link for the next tick; returns (tick, all copies ended, stop marked)."""
        msgs = {p.name: p.recv_after_quiet(t_out, "UP", (Kind.UP, Kind.BYE)) for p in links}
        ticks = {m.tick for m in msgs.values()}
        expect(len(ticks) == 1, f"links disagree on the tick: { {n: m.tick for n, m in msgs.items()} }")
        tick = ticks.pop()
        expect(all(m.kind == Kind.UP for m in msgs.values()), "BYE before STOP")
        if state["tick"] is not None:
            expect(tick == state["tick"] + 1, f"UP for tick {tick} after tick {state['tick']} (§9.2: consecutive)")
        ended_any = None
        for name, m in msgs.items():
            check_tick_arrays(m, ups[name])
            f = m.arrays["f"]
            expect(not np.any(f & ~np.uint8(TERMINATED | TRUNCATED | FIRST)), "flags use undefined bits (§7)")
            first_bit = (f & FIRST) != 0
            ended = (f & (TERMINATED | TRUNCATED)) != 0
            expect(not np.any(first_bit & ended), "a copy is FIRST and ended on one tick (§10)")
            if state["first"]:
                expect(bool(first_bit.all()), "the first UP must mark every copy FIRST (§10)")
            else:
                expect(np.array_equal(first_bit, state["ended"]),
                       "FIRST must follow exactly the copies that ended on the previous tick (§10)")
            expect(bool(np.all(np.isfinite(m.arrays["r"]))), "reward NaN/inf")
            expect(type(m.meta.get("e", 0)) is int, "meta e must be an integer (§5.4)")
            ended_any = ended if ended_any is None else ended_any
        state["ended"] = ended_any
        state["tick"] = tick
        return tick, bool(ended_any.all()), any(m.meta.get("stop") for m in msgs.values())

    def send_bad_downs(peer: Peer, tick: int) -> None:
        space = welcomes[peer.name].instruction_space
        good = sample(space, rng, b)
        wrong_dtype = good.astype(np.float64 if isinstance(space, Box) else np.int32)
        for frames in (
            encode(P.down_message(wrong_dtype, tick, None)),
            encode(P.down_message(np.zeros((b, 70), good.dtype), tick, None)),
            encode(P.down_message(good[:-1] if b > 1 else np.concatenate([good, good]), tick, None)),
            encode(Message(Kind.DOWN, args.parent, tick=tick, batch=b + 1, arrays={"a": good})),
            [b"\x92\x01"],
            encode(P.down_message(good, tick, None))[:1],
        ):
            if frames[0] != b"\x92\x01":
                h = msgpack.unpackb(frames[0])
                h["s"] = args.parent
                frames = [msgpack.packb(h), *frames[1:]]
            peer.send_frames(frames)
        peer.send(P.down_message(good, tick, None), sender="someone-else")
        peer.send(P.ping_message(args.parent))

    def send_down(peer: Peer, tick: int) -> None:
        space = welcomes[peer.name].instruction_space
        peer.send(P.down_message(sample(space, rng, b), tick, time.time()))

    def drive() -> None:
        stop_sent = False
        for step in range(args.ticks + 1):
            tick, all_ended, stop = receive_tick()
            on_clock = state["first"] or tick % args.period == 0
            waits = P.waits_for_down(state["first"], tick, args.period, all_ended)
            if args.mode == "async":
                waits = state["first"]
            state["first"] = False
            state["all_ended_waits"] += all_ended and on_clock
            if stop or step == args.ticks:
                if waits or stop:
                    for p in links:
                        p.send(P.stop_message())
                    stop_sent = True
                    break
            if waits:
                bad_now = step in (1, 2) or step == args.ticks // 2
                if bad_now:
                    for p in links:
                        send_bad_downs(p, tick)
                # hold back now and then, and always on the decision tick after bad DOWNs: a child that took
                # one of them for its DOWN would run ahead here on the good one still queued
                if (step % 3 == 1 or state["check_next"]) and args.mode == "lockstep":
                    expect(all(p.quiet(args.hold) for p in links),
                           f"a child sent a message on decision tick {tick} before its DOWN (§9.1: MUST wait)")
                    state["held_back"] += 1
                state["check_next"] = bad_now
                for p in links:
                    send_down(p, tick)
            elif args.mode == "async" and step % 4 == 0:
                for p in links:
                    send_down(p, tick)
        if not stop_sent:  # the last ticks were not decision ticks: stop at the next one
            while True:
                tick, all_ended, stop = receive_tick()
                if stop or P.waits_for_down(False, tick, args.period, all_ended) or args.mode == "async":
                    for p in links:
                        p.send(P.stop_message())
                    break
        res.record("§9.1", f"decision clock followed for {state['tick']} ticks (period {args.period}, "
                   f"{args.mode}); waited for DOWN when held back {state['held_back']} times", True)
        res.record("§10", f"episode ends: FIRST follows every end ({state['all_ended_waits']} decision ticks "
                   "with every copy ended, where the child must not wait)", True)

    if not res.check("§9", "ticks: UP arrays as agreed, consecutive ticks, clock, bad DOWNs dropped", drive):
        return res

    def byes() -> None:
        for p in links:
            while True:
                msg = p.recv_after_quiet(t_out, "BYE", (Kind.UP, Kind.BYE))
                if msg.kind == Kind.BYE:
                    break

    res.check("§11", "STOP is acknowledged with BYE on every link (UPs before it are allowed)", byes)
    for p in links:
        p.sock.close(linger=0)
    return res


# --- the suite as children: testing a parent implementation ---------------------------------------------------


def test_parent(args: argparse.Namespace, ctx: zmq.Context) -> Results:
    res = Results()
    links = [Peer(ctx, name, ep, name, bind=True, peer_identity=args.parent) for name, ep in args.links]
    b, t_out = args.num_envs, args.timeout
    message_space = space_from_dict(json.loads(args.message_space))
    instruction = space_from_dict(json.loads(args.instruction or '{"type": "box", "shape": [2], "low": -1.0, '
                                             '"high": 1.0}'))
    hellos: dict[str, Hello] = {}

    def get_hello(peer: Peer) -> None:
        msg = peer.recv(t_out, "HELLO", (Kind.HELLO,))
        h = Hello.from_message(msg)
        expect(msg.sender == args.parent, f"HELLO signed {msg.sender!r}, expected {args.parent!r} (§3)")
        expect(h.child == peer.name, f"HELLO names child {h.child!r} on the link to {peer.name!r}")
        expect(h.num_envs == b, f"HELLO num_envs {h.num_envs}, expected {b}")
        expect(h.schema == P.SCHEMA_HASH, f"HELLO schema {h.schema!r}, expected {P.SCHEMA_HASH!r}")
        if h.instruction_space is not None:
            expect(h.instruction_space == instruction, f"HELLO sends {h.instruction_space}, children expect "
                   f"{instruction}")
        hellos[peer.name] = h

    if not res.check("§8.1", "HELLO on every link: version, schema, child name, batch, period, mode",
                     lambda: [get_hello(p) for p in links]):
        return res
    period, mode = hellos[links[0].name].period, hellos[links[0].name].mode

    def welcome(peer: Peer, **over: Any) -> Message:
        w = Welcome(peer.name, b, message_space, instruction, {"conformance": True})
        for k, v in over.items():
            setattr(w, k, v)
        return w.to_message()

    if args.fault != "none":
        first = links[0]
        faulty = {"version": lambda: raw(header_of(welcome(first), v=1)),
                  "num_envs": lambda: encode(welcome(first, num_envs=b + 1)),
                  "schema": lambda: encode(welcome(first, schema="0" * 16)),
                  "space": lambda: encode(welcome(first, instruction_space=Discrete(7)))}[args.fault]
        version = 1 if args.fault == "version" else P.PROTOCOL_VERSION
        field_name = {"space": "instruction_space"}.get(args.fault, args.fault)

        def rejected() -> None:
            first.send_frames(faulty())
            for p in links[1:]:
                p.send(welcome(p))
            while True:
                frames = first.recv_frames(t_out)
                expect(frames is not None, f"no REJECT within {t_out:.0f}s of a faulty WELCOME ({args.fault})")
                h = msgpack.unpackb(frames[0])
                if h.get("k") != int(Kind.PING):
                    break
            expect(h.get("k") == int(Kind.REJECT), f"got kind {h.get('k')!r}, expected REJECT")
            expect(h.get("v") == version, f"REJECT in version {h.get('v')!r}, expected {version}")
            expect(h.get("m", {}).get("field") == field_name, f"REJECT names {h.get('m', {}).get('field')!r}, "
                   f"expected {field_name!r}")

        res.check("§8.2", f"a faulty WELCOME ({args.fault}) is answered by REJECT naming the field", rejected)
        return res

    for p in links:
        p.send(welcome(p))
    downs = {p.name: P.down_arrays(instruction, b) for p in links}
    rng = np.random.default_rng(args.seed)
    episode = max(2, args.episode)
    state = {"downs": 0, "all_ended": 0}

    next_first = np.ones(b, bool)

    def up(tick: int, start: int, stop: bool) -> tuple[Message, bool]:
        """Scripted episodes: every copy truncates together every ``episode`` ticks (a tick where every copy
        ended), and some terminate early, alone; a copy that ended is FIRST on the next tick (§10)."""
        nonlocal next_first
        k = tick - start
        first = next_first
        truncated = np.full(b, k % episode == episode - 1) & ~first
        terminated = (rng.random(b) < 0.15) & ~first & ~truncated & (k % episode < episode - 2)
        next_first = terminated | truncated
        flags = P.pack_flags(terminated, truncated, first)
        x = rng.standard_normal((b, *message_space.shape)).astype(np.float32)
        r = rng.standard_normal(b).astype(np.float32)
        return P.up_message(x, r, flags, tick, tick * b, stop), bool((terminated | truncated).all())

    def send_bad_ups(peer: Peer, tick: int) -> None:
        x = np.zeros((b, *message_space.shape), np.float32)
        r, f = np.zeros(b, np.float32), np.zeros(b, np.uint8)
        for arrays in ({"x": x, "r": r, "f": f.astype(np.float64)},
                       {"x": np.zeros((b, 70), np.float32), "r": r, "f": f},
                       {"x": x, "r": r},
                       {"x": x[:-1] if b > 1 else np.zeros((2, *message_space.shape), np.float32), "r": r, "f": f}):
            peer.send(Message(Kind.UP, peer.name, tick=tick, batch=b, arrays=arrays))
        peer.send_frames([b"\x00garbage"])
        peer.send(P.up_message(x, r, f, tick, 0, False), sender="stranger")
        peer.send(P.ping_message(peer.name))

    def drive() -> None:
        start = args.start_tick
        for tick in range(start, start + args.ticks):
            stop = tick == start + args.ticks - 1
            all_ended = False
            if tick - start in (1, 2, args.ticks // 2):
                for p in links:
                    send_bad_ups(p, tick)
            msg, all_ended = up(tick, start, stop)
            for p in links:
                p.send(msg)
            if stop:
                break
            state["all_ended"] += all_ended
            waits = P.waits_for_down(tick == start, tick, period, all_ended)
            if mode == "async" and tick != start:
                for p in links:  # async: DOWNs may come at any time; check those that are there
                    while not p.quiet(0.0):
                        msg = p.recv_after_quiet(t_out, "DOWN", (Kind.DOWN,))
                        check_tick_arrays(msg, downs[p.name])
                        expect(msg.tick <= tick, f"DOWN for tick {msg.tick}, ahead of tick {tick}")
                        state["downs"] += 1
                continue
            if waits:
                for p in links:
                    msg = p.recv_after_quiet(t_out, f"DOWN for tick {tick}", (Kind.DOWN,))
                    expect(msg.tick == tick, f"DOWN says tick {msg.tick}, the decision tick is {tick} (§9.1)")
                    check_tick_arrays(msg, downs[p.name])
                    check_in_space(msg.arrays["a"], instruction)
                    expect(type(msg.meta.get("ts", 0.0)) in (int, float), "meta ts must be a number")
                    state["downs"] += 1
            elif mode == "lockstep":
                expect(all(p.quiet(args.hold if tick % 5 == 0 else 0.0) for p in links),
                       f"a DOWN on tick {tick}, where the child does not wait (§9.1: period {period}"
                       f"{', every copy ended' if all_ended else ''})")
        res.record("§9.1", f"DOWN exactly on the decision ticks ({state['downs']} DOWNs, period {period}, {mode}; "
                   f"{state['all_ended']} ticks with every copy ended)", True)

    if not res.check("§9", "ticks: DOWN arrays as agreed and in range; bad UPs dropped", drive):
        return res

    def stop_then_bye() -> None:
        for p in links:
            while True:
                msg = p.recv_after_quiet(t_out, "STOP after the stop marker", (Kind.STOP, Kind.DOWN))
                if msg.kind == Kind.STOP:
                    break
            p.send(P.bye_message())

    res.check("§11", "the stop marker is answered by STOP on every link; BYE completes", stop_then_bye)
    return res


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tag_actors.conformance", description=__doc__.splitlines()[0])
    p.add_argument("role", choices=("child", "parent"), help="the role of the implementation under test")
    p.add_argument("links", nargs="+", metavar="NAME=ENDPOINT", help="each child the implementation serves "
                   "(child) or connects to (parent), and where its link listens")
    p.add_argument("--parent", required=True, help="the parent's name (its DEALER identity)")
    p.add_argument("--num-envs", type=int, required=True, help="the batch size the implementation runs")
    p.add_argument("--period", type=int, default=1, help="child: the decision period the suite announces")
    p.add_argument("--mode", choices=P.MODES, default="lockstep", help="child: the mode the suite announces")
    p.add_argument("--expects-period", action="store_true",
                   help="child: the implementation has its own period and must REJECT another")
    p.add_argument("--instruction", help="JSON space: child: what the suite sends (default: ask); parent: what "
                   "the suite's children expect (default box of 2 in [-1, 1])")
    p.add_argument("--message-space", default='{"type": "box", "shape": [4], "low": -Infinity, "high": Infinity}',
                   help="parent: JSON space of the suite's children's messages")
    p.add_argument("--fault", choices=("none", "version", "num_envs", "schema", "space"), default="none",
                   help="parent: answer the first HELLO with this faulty WELCOME and expect a REJECT")
    p.add_argument("--ticks", type=int, default=40)
    p.add_argument("--episode", type=int, default=5, help="parent: ticks per scripted episode")
    p.add_argument("--start-tick", type=int, default=0, help="parent: the first tick number the children send")
    p.add_argument("--hold", type=float, default=0.3, help="seconds to hold back a DOWN to see who waits")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for any expected message")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    pairs = []
    for item in args.links:
        name, sep, endpoint = item.partition("=")
        if not sep or not name or "://" not in endpoint:
            p.error(f"link {item!r}: expected NAME=ENDPOINT, e.g. env/0=tcp://127.0.0.1:5555")
        pairs.append((name, endpoint))
    args.links = pairs
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = zmq.Context()
    print(f"LevelEnv conformance, protocol version {P.PROTOCOL_VERSION}, schema {P.SCHEMA_HASH}: testing a "
          f"{args.role} ({', '.join(n for n, _ in args.links)})", flush=True)
    try:
        res = (test_child if args.role == "child" else test_parent)(args, ctx)
    finally:
        ctx.destroy(linger=0)
    passed = len(res.rows) - res.failed
    print(f"{passed} passed, {res.failed} failed", flush=True)
    return 1 if res.failed or not res.rows else 0


if __name__ == "__main__":
    sys.exit(main())
