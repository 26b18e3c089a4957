"""What both roles of the conformance suite share: results per clause, one link as the suite sees it, and the
checks of per-tick arrays (PROTOCOL.md §6)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import zmq

from tag_actors import protocol as P
from tag_actors.protocol import Kind, Message
from tag_actors.spaces import Box, Discrete, MultiDiscrete, Space
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


