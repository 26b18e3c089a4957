"""The suite as the children of the implementation under test (role ``parent``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import msgpack
import numpy as np
import zmq

from tag_actors import protocol as P
from tag_actors.conformance.common import (
    Peer,
    Results,
    check_in_space,
    check_tick_arrays,
    expect,
    header_of,
    raw,
)
from tag_actors.protocol import Hello, Kind, Message, Welcome
from tag_actors.spaces import Discrete, space_from_dict
from tag_actors.wire import encode

# --- the suite as children: testing a parent implementation ---------------------------------------------------


def check_parent(args: argparse.Namespace, ctx: zmq.Context) -> Results:
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


