"""A process's two ends of the link to its parent, as its tick loop sees them: the ``Inbox`` (instructions coming
down, waited for by the decision clock or taken as they come) and the ``Outbox`` (reports going up, held until the
parent decides), plus the conversions between a node's ``Report`` and an UP message. Kept apart from
``tag_actors.actor`` (processes, handshakes, restarts) because this is the part every tick runs through.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from tag_actors import protocol
from tag_actors.node import Report
from tag_actors.protocol import HandshakeError, Kind, Message, pack_flags, unpack_flags
from tag_actors.transport import Hub, Link, ParentLink, PeerLost

if TYPE_CHECKING:
    from tag_actors.actor import Actor


def up_message(report: Report, tick: int, env_steps: int, stop: bool) -> Message:
    """A node's Report as an UP message (PROTOCOL.md §5.4)."""
    flags = pack_flags(report.terminated, report.truncated, report.first)
    return protocol.up_message(report.message, report.reward, flags, tick, env_steps, stop)


def report_of(msg: Message) -> Report:
    """An UP message as a Report (its arrays were checked on receipt against what the link agreed, §6)."""
    terminated, truncated, first = unpack_flags(msg.arrays["f"])
    return Report(msg.arrays["x"], msg.arrays["r"], terminated, truncated, first)


class Inbox:
    """A child's end of the link to its parent, as seen by the tick loop: the parent's latest instruction.

    lockstep: at a tick where the parent decides, wait for its DOWN (the decision clock of PROTOCOL.md §9.1,
    ``protocol.waits_for_down``); async: never wait, take the newest DOWN that has arrived (§9.3). Either way STOP
    is noticed, and staleness (ticks and seconds since the parent computed the instruction) is tracked for
    metrics. A REJECT (the parent refused this child's WELCOME, §8.2) ends the process with the parent's reason.
    """

    KINDS = (Kind.DOWN, Kind.STOP, Kind.REJECT)

    def __init__(self, hub: Hub, link: ParentLink, wait: bool):
        self.hub, self.link, self.wait = hub, link, wait
        self.latest: np.ndarray | None = None
        self.tick = 0
        self.sent_at = 0.0
        self.stopped = False
        self.awaiting: int | None = None
        """The tick whose DOWN this child is blocked on (a restarted parent is sent that tick's UP again)."""

    def _take(self, msg: Message) -> None:
        if msg.kind == Kind.DOWN:
            self.latest, self.tick = msg.arrays["a"], msg.tick
            self.sent_at = msg.meta.get(protocol.META_SENT_AT) or time.time()
        elif msg.kind == Kind.STOP:
            self.stopped = True
        else:
            raise HandshakeError(f"parent {self.link.peer!r} rejected {self.link.me!r}: {msg.meta.get('reason')}")

    def update(self, parent_decides: bool, tick: int) -> None:
        """Called right after sending UP for ``tick``. Lockstep, the DOWN awaited is the one for this tick (§5.5):
        one for another tick (a parent that sent DOWN where the clock says it must not) is dropped and counted,
        rather than applied late in silence."""
        if (self.wait and parent_decides) or self.latest is None:
            self.awaiting = tick
            while True:
                msg = self.hub.recv(self.link, self.KINDS, None, "DOWN")
                if self.wait and msg.kind == Kind.DOWN and msg.tick != tick:
                    self.hub.count_bad(self.link.peer, "tick", f"DOWN for tick {msg.tick} while {self.link.me!r} "
                                       f"waits for the DOWN of tick {tick} (PROTOCOL.md §9.1)")
                    continue
                self._take(msg)
                break
            self.awaiting = None
        if not self.wait:
            for msg in self.hub.drain(self.link, self.KINDS):
                self._take(msg)

    def wait_stop(self) -> None:
        while not self.stopped:
            self._take(self.hub.recv(self.link, self.KINDS, None, "STOP"))


class Outbox:
    """A child's end of the link to its parent, going up: reports held until the parent needs them.

    A parent that decides every k ticks reads its children only then, so the reports of the ticks in between
    travel together at its decision tick: one wake-up of the parent per decision instead of one per tick. The
    parent still replays every tick in order, so lockstep runs stay identical to in-process ones.
    """

    def __init__(self, actor: Actor, link: ParentLink):
        self.actor, self.link = actor, link
        self.held: list[Message] = []
        self.last_sent: Message | None = None
        self.resync = False
        """Set when the parent rejoined after a restart: the next flush sends only the newest report, the one
        the fresh parent takes its clock from (PROTOCOL.md "Restarts")."""

    def put(self, msg: Message, flush: bool) -> None:
        self.held.append(msg)
        if flush:
            self.flush()

    def flush(self) -> None:
        while True:
            try:
                batch = self.held[-1:] if self.resync else self.held
                for msg in batch:
                    self.actor.send(self.link, msg)
                    self.last_sent = msg
                self.held.clear()
                self.resync = False
                return
            except PeerLost as e:  # the parent vanished mid-send: wait for it to rejoin, then send again
                self.actor.rejoin(e)

    def rejoined(self, inbox: Inbox | None) -> None:
        """The parent is back (a new handshake). If the DOWN answering the last report sent is still owed (this
        child waits for it now, or will once it gets there), send that report again now; otherwise the next flush
        sends only the newest report."""
        self.resync = True
        owed = (not self.held and inbox is not None and self.last_sent is not None
                and inbox.tick < self.last_sent.tick)
        if owed:
            self.held.append(self.last_sent)
            self.flush()


def placeholder_up(link: Link, tick: int, like: Message | None) -> Message:
    """The UP of a tick that a restarted child's subtree never lived (its clock resumed past this one): zero
    message and reward, the flags of a sibling that did live it (none: no flags)."""
    agreed = link.agreed[Kind.UP]
    batch = agreed.batch
    arrays = {name: np.zeros(shape, dtype) for (name, _, _), shape, dtype
              in zip(agreed.specs, agreed.shapes, agreed.dtypes, strict=True)}
    if like is not None:
        arrays["f"] = like.arrays["f"]
    return Message(Kind.UP, link.peer, tick=tick, batch=batch, arrays=arrays,
                   meta={protocol.META_ENV_STEPS: like.meta.get(protocol.META_ENV_STEPS, 0) if like else 0})
