"""The suite as the parent of the implementation under test (role ``child``)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import msgpack
import numpy as np
import zmq

from tag_actors import protocol as P
from tag_actors.conformance.common import (
    Peer,
    Results,
    check_tick_arrays,
    expect,
    header_of,
    raw,
    sample,
)
from tag_actors.protocol import FIRST, TERMINATED, TRUNCATED, Hello, Kind, Message, Welcome
from tag_actors.spaces import Box, space_from_dict
from tag_actors.wire import encode

# --- the suite as parent: testing a child implementation -------------------------------------------------------


def check_child(args: argparse.Namespace, ctx: zmq.Context) -> Results:
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
            encode(P.down_message(good, tick - 1, None)),  # a DOWN of another tick (§9.1: never applied late)
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


