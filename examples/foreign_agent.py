"""A LevelEnv agent written from PROTOCOL.md alone: plain pyzmq + msgpack + numpy, no tag_actors import.

It takes one agent's place in a tag_actors hierarchy (e.g. a level-1 agent between the env and a manager):

    python examples/foreign_agent.py --name l1.0 --num-envs 8 \\
        --child env/0=ipc:///tmp/tag-1234/env_0 [--child ...] \\
        [--bind ipc:///tmp/tag-1234/l1.0 --parent l2.0] [--period 1]

The launcher of a run with ``[placement] external = ["l1.0"]`` prints these arguments. The policy is random
(seeded), acting every ``--period`` ticks; replace ``act`` with yours. Everything else is the protocol: the
handshake (§8), the decision clock (§9.1), episode ends (§10), STOP/BYE (§11). Section numbers are PROTOCOL.md's.
"""

from __future__ import annotations

import argparse
import sys
import time

import msgpack
import numpy as np
import zmq

VERSION = 2  # §8.3
SCHEMA = "94644e24b2395b08"  # §8.4: the schema hash of version 2 (Appendix B)
HELLO, WELCOME, REJECT, UP, DOWN, STOP, BYE, PING = range(1, 9)  # §5
TERMINATED, TRUNCATED, FIRST = 1, 2, 4  # §7
HELLO_KEYS = ("schema", "caps", "child", "num_envs", "instruction_space", "period", "mode")  # §5.1


class Curve:
    """§14 CURVE: this host's key pair, the children's server key, and the folder of admitted public keys."""

    def __init__(self, ctx: zmq.Context, keys_dir: str, host: str, children_host: str):
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        self.public, self.secret = zmq.auth.load_certificate(f"{keys_dir}/{host}.key_secret")
        self.server = zmq.auth.load_certificate(f"{keys_dir}/{children_host}.key")[0]
        self.auth = ThreadAuthenticator(ctx)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=keys_dir)  # admit the run's hosts' public keys

    def apply(self, sock: zmq.Socket, serve: bool) -> None:
        sock.curve_publickey, sock.curve_secretkey = self.public, self.secret
        if serve:
            sock.curve_server = True
        else:
            sock.curve_serverkey = self.server


class Link:
    """One link (§2): a DEALER to a child (identity = my name), or a ROUTER bound for my parent."""

    def __init__(
        self, ctx: zmq.Context, me: str, peer: str, endpoint: str, serve: bool, curve: Curve | None = None
    ):
        self.me, self.peer, self.serve = me, peer, serve
        self.sock = ctx.socket(zmq.ROUTER if serve else zmq.DEALER)
        self.sock.linger = 0
        if curve:
            curve.apply(self.sock, serve)
        if serve:
            self.sock.bind(endpoint)
        else:
            self.sock.identity = me.encode()  # §3: the parent's identity is its name
            self.sock.connect(endpoint)
        self.seq = 0
        self.expect: dict[int, list] = {}  # §6: per-tick arrays agreed in the handshake, by kind

    def send(
        self,
        kind: int,
        tick: int = 0,
        batch: int = 0,
        arrays: dict | None = None,
        meta: dict | None = None,
        version: int = VERSION,
    ) -> None:
        arrays = arrays or {}
        header = {
            "k": kind,
            "v": version,
            "s": self.me,
            "q": self.seq,
            "t": tick,
            "b": batch,
            "a": [[n, a.dtype.name, list(a.shape)] for n, a in arrays.items()],
        }
        if meta:
            header["m"] = meta
        self.seq += 1
        frames = [
            msgpack.packb(header),
            *(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes() for a in arrays.values()),
        ]
        self.sock.send_multipart([self.peer.encode(), *frames] if self.serve else frames)

    def recv(self, timeout_s: float | None = None) -> dict | None:
        """The next valid message as a dict (kind, header, arrays, meta), or None on timeout. Invalid ones are
        dropped (§13): wrong version (answered with REJECT before the handshake, §8.3), wrong sender, arrays
        unlike the agreed ones."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self.sock.poll(wait):
                return None
            frames = self.sock.recv_multipart()
            if self.serve:
                if frames[0] != self.peer.encode():
                    continue  # §3: only the parent's identity is served
                frames = frames[1:]
            try:
                h = msgpack.unpackb(frames[0])
                if h.get("v") != VERSION:
                    if h.get("k") in (HELLO, WELCOME):
                        self.send(
                            REJECT,
                            meta={
                                "reason": f"{self.peer!r} speaks protocol version {h.get('v')!r}, "
                                f"{self.me!r} speaks version {VERSION}",
                                "field": "version",
                                "speaks": [VERSION],
                            },
                            version=h.get("v"),
                        )
                    continue
                if h["k"] == PING or h["s"] != self.peer:
                    continue
                specs = h["a"]
                if h["k"] in self.expect and (
                    specs != self.expect[h["k"]] or h["b"] != specs[0][2][0] or len(frames) != len(specs) + 1
                ):
                    print(f"{self.me}: dropped a bad {h['k']} from {self.peer}: {specs}", file=sys.stderr)
                    continue
                arrays = {}
                for (name, dtype, shape), frame in zip(specs, frames[1:], strict=True):
                    arrays[name] = np.frombuffer(frame, dtype=np.dtype(dtype).newbyteorder("<")).reshape(
                        shape
                    )
            except Exception as e:  # noqa: BLE001 — any malformed frame is dropped, never fatal (§13)
                print(f"{self.me}: dropped a malformed frame from {self.peer}: {e}", file=sys.stderr)
                continue
            return {"kind": h["k"], "tick": h["t"], "batch": h["b"], "arrays": arrays, "meta": h.get("m", {})}

    def recv_kind(self, kinds: tuple[int, ...], timeout_s: float | None, what: str) -> dict:
        msg = self.recv(timeout_s)
        while msg is not None and msg["kind"] not in kinds:
            msg = self.recv(timeout_s)
        if msg is None:
            sys.exit(f"{self.me}: no {what} from {self.peer!r} within {timeout_s}s")
        return msg


def space_shape_dtype(space: dict) -> tuple[tuple[int, ...], str]:
    """§6: the per-copy shape and dtype of a space's values."""
    if space["type"] == "box":
        return tuple(space["shape"]), "float32"
    if space["type"] == "discrete":
        return (), "int64"
    return (len(space["nvec"]),), "int64"


def act(space: dict, rng: np.random.Generator, batch: int) -> np.ndarray:
    """The policy: a random action of ``space`` for every env copy. Replace with yours."""
    if space["type"] == "box":
        lo = space["low"] if np.isfinite(space["low"]) else -1.0
        hi = space["high"] if np.isfinite(space["high"]) else 1.0
        return rng.uniform(lo, hi, (batch, *space["shape"])).astype(np.float32)
    if space["type"] == "discrete":
        return rng.integers(0, space["n"], batch, dtype=np.int64)
    return np.stack([rng.integers(0, n, batch, dtype=np.int64) for n in space["nvec"]], axis=1)


def waits_for_down(first: bool, tick: int, period: int, all_ended: bool) -> bool:
    """§9.1, the decision clock: a child waits for DOWN (and the parent sends it) on the link's first tick and on
    every multiple of the parent's period, unless every env copy ended at this tick."""
    return (first or tick % period == 0) and not all_ended


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--num-envs", type=int, required=True)
    p.add_argument("--child", action="append", required=True, metavar="NAME=ENDPOINT")
    p.add_argument("--bind", help="the endpoint this agent's parent connects to")
    p.add_argument("--parent", help="the parent's name")
    p.add_argument("--period", type=int, default=1, help="decide every this many ticks (§9.1)")
    p.add_argument("--instruction", default="box:2", help="what to ask for if the parent says 'tell me'")
    p.add_argument("--timeout", type=float, default=60.0, help="start-up timeout, seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--curve-keys", help="CURVE (§14): the folder of the run's HOST.key / HOST.key_secret files"
    )
    p.add_argument("--host", help="CURVE: this process's host (its key pair)")
    p.add_argument("--children-host", help="CURVE: the host of its children (their server key)")
    args = p.parse_args()
    b, rng, ctx = args.num_envs, np.random.default_rng(args.seed), zmq.Context()
    curve = Curve(ctx, args.curve_keys, args.host, args.children_host) if args.curve_keys else None

    # §8: HELLO to every child, then its WELCOME (or REJECT)
    children = [Link(ctx, args.name, *c.split("=", 1), serve=False, curve=curve) for c in args.child]
    for link in children:
        link.send(
            HELLO,
            batch=b,
            meta={
                "schema": SCHEMA,
                "caps": [],
                "child": link.peer,
                "num_envs": b,
                "instruction_space": None,
                "period": args.period,
                "mode": "lockstep",
            },
        )
    spaces = []
    for link in children:
        msg = link.recv_kind((WELCOME, REJECT), args.timeout, "WELCOME")
        m = msg["meta"]
        if msg["kind"] == REJECT:
            sys.exit(f"{args.name}: child {link.peer!r} rejected us: {m['reason']}")
        if m["schema"] != SCHEMA or m["num_envs"] != b or m["message_space"]["type"] != "box":
            link.send(
                REJECT, meta={"reason": f"cannot accept the WELCOME of {link.peer!r}: {m}", "field": "schema"}
            )
            sys.exit(f"{args.name}: bad WELCOME from {link.peer!r}")
        shape = tuple(m["message_space"]["shape"])
        link.expect = {UP: [["x", "float32", [b, *shape]], ["r", "float32", [b]], ["f", "uint8", [b]]]}
        spaces.append((int(np.prod(shape)), m["instruction_space"]))

    # §8: the parent's HELLO, answered with WELCOME (or REJECT, then wait for a better one)
    parent, parent_period, parent_mode = None, 1, "lockstep"
    if args.bind:
        parent = Link(ctx, args.name, args.parent, args.bind, serve=True, curve=curve)
        while True:
            m = parent.recv_kind((HELLO,), args.timeout, "HELLO")["meta"]
            missing = [k for k in HELLO_KEYS if k not in m]
            problem = (
                missing[0]
                if missing
                else "schema"
                if m["schema"] != SCHEMA
                else "num_envs"
                if m["num_envs"] != b
                else "child"
                if m["child"] != args.name
                else "period"
                if not (isinstance(m["period"], int) and m["period"] >= 1)
                else "mode"
                if m["mode"] not in ("lockstep", "async")
                else ""
            )
            if not problem:
                break
            parent.send(
                REJECT,
                meta={
                    "reason": f"{problem}: HELLO says {m.get(problem)!r}",
                    "field": problem,
                    "speaks": [VERSION],
                },
            )
        parent_period, parent_mode = m["period"], m["mode"]
        size = args.instruction.partition(":")[2]
        instruction = m["instruction_space"] or {
            "type": "box",
            "shape": [int(size)],
            "low": -1.0,
            "high": 1.0,
        }
        ishape, idtype = space_shape_dtype(instruction)
        parent.expect = {DOWN: [["a", idtype, [b, *ishape]]]}
        parent.send(
            WELCOME,
            batch=b,
            meta={
                "schema": SCHEMA,
                "caps": [],
                "num_envs": b,
                "instruction_space": instruction,
                "info": {},
                "message_space": {
                    "type": "box",
                    "shape": [sum(d for d, _ in spaces)],
                    "low": -np.inf,
                    "high": np.inf,
                },
            },
        )

    # §9: ticks until the run stops (§11)
    first, stopped_by_parent = True, False
    while True:
        ups = [link.recv_kind((UP,), None, "UP") for link in children]
        tick, meta = ups[0]["tick"], ups[0]["meta"]
        stop = any(u["meta"].get("stop") for u in ups)
        x = np.concatenate([u["arrays"]["x"].reshape(b, -1) for u in ups], axis=1).astype(np.float32)
        r = np.sum([u["arrays"]["r"] for u in ups], axis=0).astype(np.float32)
        f = ups[0]["arrays"]["f"]
        all_ended = bool(np.all(f & (TERMINATED | TRUNCATED)))
        if parent:
            parent.send(
                UP,
                tick,
                b,
                {"x": x, "r": r, "f": f},
                {"e": meta.get("e", 0), **({"stop": True} if stop else {})},
            )
            wait = (
                waits_for_down(first, tick, parent_period, all_ended) if parent_mode == "lockstep" else first
            )
            if not stop and wait:  # the instruction itself is ignored by this random policy
                msg = parent.recv_kind((DOWN, STOP), None, "DOWN")
                while msg["kind"] == DOWN and msg["tick"] != tick:  # §9.1: a DOWN of another tick is dropped
                    msg = parent.recv_kind((DOWN, STOP), None, "DOWN")
                stopped_by_parent = msg["kind"] == STOP
            elif not stop:  # §9.3 async: take whatever has arrived, never wait
                while (msg := parent.recv(0)) is not None:
                    stopped_by_parent |= msg["kind"] == STOP
            stop = stop or stopped_by_parent
        if stop:
            for link in children:
                link.send(STOP)
            for link in children:
                link.recv_kind((BYE,), 60, "BYE")
            if parent:
                if not stopped_by_parent:
                    parent.recv_kind((STOP,), None, "STOP")
                parent.send(BYE)
            print(f"{args.name}: stopped at tick {tick}", file=sys.stderr)
            if curve:
                curve.auth.stop()
            ctx.destroy(linger=0)
            return 0
        if waits_for_down(first, tick, args.period, all_ended):  # my decision ticks: DOWN to every child
            for link, (_, space) in zip(children, spaces, strict=True):
                link.send(DOWN, tick, b, {"a": act(space, rng, b)})
        first = False


if __name__ == "__main__":
    sys.exit(main())
