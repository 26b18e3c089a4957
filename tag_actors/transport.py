"""Where an action crosses the network: ZeroMQ sockets for the links of the hierarchy. No torch here.

Each edge (child, parent) of the tree is one socket pair. The child *binds* a ROUTER (a level serves the level
above, as an environment serves an agent); the parent *connects* a DEALER whose identity is its own name. One
pair per edge keeps routing trivial and lets each end name its peer in every error:

- ``ChildLink``  the parent's end: DEALER to one child.
- ``ParentLink`` the child's end: ROUTER that only answers the parent's identity (ROUTER_MANDATORY, so a send to
  a vanished parent raises instead of silently dropping).
- ``Hub``        one per process: the context, a poller over the links and their socket monitors, strict
  decoding, bad-frame accounting, and ``wait``/``recv_from_all`` (the Tianshou worker shape).

The data path is blocking pyzmq on purpose: an asyncio version measured about twice the round trip.
Liveness: ZMTP heartbeats close a silent connection after ``peer_timeout_s``; the socket monitor reports the
disconnect, and the hub raises ``PeerLost`` naming the peer (on a ROUTER the disconnect could be a stray client,
so it is confirmed by probing the parent's identity).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils.monitor import parse_monitor_message

from tag_actors.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    HARD_LIMIT_FACTOR,
    QUEUE_LIMIT,
    Agreed,
    BadFrame,
    Kind,
    Message,
    VersionMismatch,
    check_tick_message,
    ping_message,
    version_reject_reason,
)
from tag_actors.wire import decode, encode

log = logging.getLogger(__name__)
# QUEUE_LIMIT (protocol.py, PROTOCOL.md §15): lockstep never queues more than a few messages; in async mode a
# parent that thinks for seconds (an LLM) lets its children's UP messages pile up, and catches up on them later.
PROBE_EVERY_S = 0.25
"""A ROUTER probes its parent at most this often, however many strangers come and go: a flood of stray
connections costs the parent a few pings a second, never one per disconnect."""
WAIT_REPORT_AFTER_S = 0.5
"""A wait longer than this is reported (``Hub.on_wait``): what a stalled process waits for, and from whom."""
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_CRYPTOGRAPHIC = getattr(zmq, "PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC", 0x11000001)
"""The value of a HANDSHAKE_FAILED_PROTOCOL event whose CURVE box did not open (the client used another key)."""
ZERO_COPY_BYTES = 256 * 1024
"""Messages at least this big are sent zero-copy. Below it a copy is cheaper than pyzmq's zero-copy bookkeeping
(each zero-copy frame is released through its garbage-collector thread), measured on the per-tick path."""


class PeerLost(RuntimeError):
    """A peer went away (process died, host unreachable); ``peer`` names it, ``link`` is this end's link to it.
    ``hello``: the HELLO a restarted parent sent on a link that was still open (PROTOCOL.md "Restarts"): the
    peer is back already, and that HELLO opens the new handshake."""

    def __init__(self, peer: str, why: str, link: Link | None = None, hello: Message | None = None):
        super().__init__(f"peer {peer!r} {why}")
        self.peer = peer
        self.link = link
        self.hello = hello


class LinkTimeout(TimeoutError):
    """Nothing arrived in time; the message names who was awaited, ``peers`` lists them."""

    def __init__(self, message: str, peers: Iterable[str] = ()):
        super().__init__(message)
        self.peers = list(peers)


class EndpointInUse(RuntimeError):
    pass


@dataclass
class Security:
    """CURVE keys ("Ironhouse"): every end has a key pair; servers admit only the listed client keys."""

    public_key: bytes
    secret_key: bytes
    server_keys: dict[str, bytes]
    """Public key of each server (child) this process connects to, by child name."""
    allowed_clients: list[bytes]
    """Public keys allowed to connect to this process's servers."""


class Link:
    """One end of one edge."""

    def __init__(self, hub: Hub, sock: zmq.Socket, me: str, peer: str, endpoint: str):
        self.hub, self.sock, self.me, self.peer, self.endpoint = hub, sock, me, peer, endpoint
        self.monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILED)
        self.established = False
        self.agreed: dict[Kind, Agreed] | None = None
        """The per-tick arrays the handshake agreed for what this end receives (PROTOCOL.md §6)."""
        self.caps: frozenset[str] = frozenset()
        """Optional features both ends announced (PROTOCOL.md §8.5)."""
        self.send_seq = 0
        self.suspect_since: float | None = None
        self.next_probe_at = 0.0
        self.failed_handshakes = 0
        """Connections that failed their ZMTP handshake and have not yet reported their disconnect: that
        disconnect is theirs, never the peer's."""
        self._identity = peer.encode()

    def send(self, msg: Message) -> int:
        """Send; returns the bytes sent (header + arrays)."""
        msg.sender = self.me
        msg.seq = self.send_seq
        self.send_seq += 1
        frames = encode(msg)
        nbytes = len(frames[0]) + msg.nbytes()
        self._send_frames(frames, nbytes >= ZERO_COPY_BYTES)
        return nbytes

    def _send_frames(self, frames: list, zero_copy: bool) -> None:
        self.sock.send_multipart(frames, copy=not zero_copy)

    def _recv_frames(self) -> list | None:
        """The frames of one pending message, or None if it was not for us (dropped and counted)."""
        return self.sock.recv_multipart()

    def forget_peer(self) -> None:
        """The peer is gone for good or is being replaced (a restart): nothing agreed with it holds any more."""
        self.established = False
        self.agreed = None
        self.caps = frozenset()
        self.suspect_since = None

    def close(self) -> None:
        if self.sock.closed:
            return
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)
        if isinstance(self, ParentLink) and self.endpoint.startswith("ipc://"):
            # libzmq leaves the socket file of a bound ipc endpoint behind; the binder removes it
            Path(self.endpoint[len("ipc://"):]).unlink(missing_ok=True)


class ChildLink(Link):
    """The parent's end of the link to one child: a DEALER connected to the child's endpoint."""


class ParentLink(Link):
    """The child's end of the link to its parent: a ROUTER bound at the child's endpoint."""

    def _send_frames(self, frames: list, zero_copy: bool) -> None:
        try:
            self.sock.send_multipart([self._identity, *frames], copy=not zero_copy)
        except zmq.Again:
            raise PeerLost(self.peer, f"has not read from {self.me!r} for {self.sock.sndtimeo / 1000:.0f}s "
                           f"({QUEUE_LIMIT} messages queued)", self) from None
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:
                raise PeerLost(self.peer, f"is no longer connected to {self.me!r} ({self.endpoint})",
                               self) from None
            raise

    def _recv_frames(self) -> list | None:
        frames = self.sock.recv_multipart()
        identity = frames[0]
        if identity != self._identity:
            # one label per endpoint, never the identity a stranger chose (unbounded, and any bytes at all)
            self.hub.count_bad(f"unknown@{self.me}", "unknown_peer",
                               f"a peer other than {self.peer!r} (identity {identity[:64]!r}) sent to {self.me!r} "
                               f"on {self.endpoint}")
            return None
        return frames[1:]

    def probe(self) -> bool:
        """True if the parent is still connected (ROUTER_MANDATORY refuses a send to a gone identity)."""
        try:
            self.sock.send_multipart([self.peer.encode(), *encode(ping_message(self.me))],
                                     flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            return True  # connected but its queue is full: alive
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:
                return False
            raise


class Hub:
    """A process's sockets: creates links, waits on them, decodes strictly, counts bad frames."""

    def __init__(self, name: str, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, peer_timeout_s: float = 5.0,
                 security: Security | None = None,
                 on_bad_frame: Callable[[str, str], None] | None = None,
                 on_received: Callable[[str, int], None] | None = None,
                 on_wait: Callable[[str | None, list[str]], None] | None = None,
                 on_refused: Callable[[Link, str], None] | None = None):
        self.name = name
        self.ctx = zmq.Context()
        self.max_message_bytes = max_message_bytes
        self.peer_timeout_s = peer_timeout_s
        self.security = security
        self.on_bad_frame = on_bad_frame
        self.on_received = on_received
        self.on_wait = on_wait
        """Called with (what, peers) once a wait has lasted ``WAIT_REPORT_AFTER_S``, and with (None, []) when
        that wait ends: how a process tells its supervisor whom it waits for, at no cost to short waits."""
        self.on_refused = on_refused
        """Called with (link, 'auth' | 'crypto' | 'closed') when a connection of ``link`` fails its CURVE
        handshake: 'auth' the server refused the client's key, 'crypto' the client encrypted to another server
        key, 'closed' (client side) the server closed the connection during the handshake. May raise."""
        self.bad_frames: Counter[tuple[str, str]] = Counter()
        self.links: list[Link] = []
        self._pollers: dict[frozenset[Link], zmq.Poller] = {}
        self._by_socket: dict[zmq.Socket, Link] = {}
        self._auth = None
        self._last_log = 0.0
        self._reported_wait = False
        self.on_peer_lost: Callable[[PeerLost], bool] | None = None
        """Called instead of raising PeerLost inside a wait (``recv_from_all``, ``drain``): a process whose peers
        a supervisor restarts waits there for the peer to rejoin, then the wait goes on (or it raises)."""
        self.rejoinable: set[str] = set()
        """Peers that a supervisor restarts (PROTOCOL.md "Restarts"): a HELLO from one of them on an open link
        is its rejoin, not a stray message."""

    # --- building ------------------------------------------------------------------------------------------

    def _socket(self, kind: int) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.linger = 0
        sock.sndhwm = sock.rcvhwm = QUEUE_LIMIT
        # The hard limit disconnects a peer; keep it well above the application limit, which drops and counts.
        sock.maxmsgsize = HARD_LIMIT_FACTOR * self.max_message_bytes
        ivl = max(100, int(self.peer_timeout_s * 1000 / 5))
        sock.heartbeat_ivl = ivl
        sock.heartbeat_timeout = int(self.peer_timeout_s * 1000)
        sock.heartbeat_ttl = int(self.peer_timeout_s * 1000)
        return sock

    def _register(self, link: Link) -> Link:
        self.links.append(link)
        self._by_socket[link.sock] = link
        self._by_socket[link.monitor] = link
        self._pollers.clear()
        return link

    def _poller(self, wanted: frozenset[Link]) -> zmq.Poller:
        """A poller over the wanted links and every monitor. Polling a link we do not want now would spin:
        zmq polling is level-triggered and its pending message would wake us forever."""
        poller = self._pollers.get(wanted)
        if poller is None:
            poller = self._pollers[wanted] = zmq.Poller()
            for link in self.links:
                poller.register(link.monitor, zmq.POLLIN)
                if link in wanted:
                    poller.register(link.sock, zmq.POLLIN)
        return poller

    def serve_parent(self, endpoint: str, parent: str, me: str | None = None) -> ParentLink:
        """Bind the endpoint where ``parent`` will connect; ``me`` is the child's name on this link (default: the
        process name; the env process serves one link per env agent)."""
        sock = self._socket(zmq.ROUTER)
        sock.router_mandatory = 1
        # a restarted parent reconnects with the same identity while the dead connection may linger: it wins
        sock.router_handover = 1
        sock.sndtimeo = int(self.peer_timeout_s * 1000)
        if self.security:
            self._start_auth()
            sock.curve_server = True
            sock.curve_publickey = self.security.public_key
            sock.curve_secretkey = self.security.secret_key
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            raise EndpointInUse(f"{self.name!r} cannot listen for its parent {parent!r} on {endpoint}: {e}") from None
        return self._register(ParentLink(self, sock, me or self.name, parent, endpoint))  # type: ignore[return-value]

    def connect_child(self, endpoint: str, child: str) -> ChildLink:
        """Connect to a child's endpoint; messages queue until the child is up."""
        return self._register(ChildLink(self, self._dealer(endpoint, child), self.name, child,  # type: ignore
                                        endpoint))

    def reconnect_child(self, link: ChildLink) -> None:
        """A fresh socket for a child that is being restarted (PROTOCOL.md "Restarts"): what was queued for the
        dead process is dropped with the old socket, and the link object (held by the caller's tick loop) stays
        the same."""
        del self._by_socket[link.sock], self._by_socket[link.monitor]
        link.close()
        link.forget_peer()
        link.sock = self._dealer(link.endpoint, link.peer)
        link.monitor = link.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILED)
        link.send_seq = 0
        link.failed_handshakes = 0
        self._by_socket[link.sock] = link
        self._by_socket[link.monitor] = link
        self._pollers.clear()

    def _dealer(self, endpoint: str, child: str) -> zmq.Socket:
        sock = self._socket(zmq.DEALER)
        sock.identity = self.name.encode()
        if self.security:
            sock.curve_publickey = self.security.public_key
            sock.curve_secretkey = self.security.secret_key
            try:
                sock.curve_serverkey = self.security.server_keys[child]
            except KeyError:
                raise ValueError(f"no CURVE server key for child {child!r} of {self.name!r}") from None
        sock.connect(endpoint)
        return sock

    def _start_auth(self) -> None:
        if self._auth is not None:
            return
        from zmq.auth.thread import ThreadAuthenticator

        self._auth = ThreadAuthenticator(self.ctx)
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=_AllowList(self.security.allowed_clients))

    # --- receiving -----------------------------------------------------------------------------------------

    def count_bad(self, peer: str, reason: str, detail: str) -> None:
        self.bad_frames[(peer, reason)] += 1
        if self.on_bad_frame:
            self.on_bad_frame(peer, reason)
        now = time.monotonic()
        if now - self._last_log > 1.0:  # one line per second at most: a flood must not become a log flood
            self._last_log = now
            log.warning("%s: dropped a bad frame from %r (%s): %s [%d bad so far]", self.name, peer, reason, detail,
                        sum(self.bad_frames.values()))

    def _on_monitor(self, link: Link) -> None:
        parsed = parse_monitor_message(link.monitor.recv_multipart())
        event = parsed["event"]
        if event & _HANDSHAKE_FAILED and self.security is not None and self.on_refused is not None:
            crypto = event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and parsed["value"] == _CRYPTOGRAPHIC
            kind = ("auth" if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH else "crypto" if crypto
                    else "closed" if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL else "")
            if kind:
                self.on_refused(link, kind)
        if event & _HANDSHAKE_FAILED:
            link.failed_handshakes += 1
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH and self.security is not None:
                self.count_bad(f"unknown@{link.me}", "auth", f"a peer failed the CURVE handshake on {link.endpoint}")
            else:  # garbage on a raw connection, another protocol, or a mechanism this end does not speak
                self.count_bad(f"unknown@{link.me}", "protocol", "a connection that does not speak ZMTP "
                               f"(or not with this end's security) failed its handshake on {link.endpoint}")
        elif link.failed_handshakes:
            link.failed_handshakes -= 1
        elif link.established:
            link.suspect_since = link.suspect_since or time.monotonic()

    def check_peers(self, links: Iterable[Link]) -> None:
        """Raise PeerLost for a link whose peer disconnected and left nothing unread.

        A DEALER has exactly one peer, so its disconnect is the child's. A ROUTER may see strangers come and go,
        so the parent is probed, at most every ``PROBE_EVERY_S``; a disconnect that the probes do not confirm
        within 0.5 s is forgiven."""
        for link in links:
            if link.suspect_since is None or not link.established:
                continue
            if link.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                continue  # read what it sent before it left (a BYE, a last UP)
            now = time.monotonic()
            if isinstance(link, ParentLink):
                if now < link.next_probe_at:
                    continue
                link.next_probe_at = now + PROBE_EVERY_S
                gone = not link.probe()
            else:
                gone = True
            if gone:
                raise PeerLost(link.peer, f"disconnected from {link.me!r} ({link.endpoint})", link)
            if now - link.suspect_since > 0.5:
                link.suspect_since = None

    def _probe_due_in(self) -> float | None:
        """Seconds until a suspected peer is due for its next probe (None: nothing suspected)."""
        due = [lk.next_probe_at for lk in self.links if lk.suspect_since is not None and lk.established]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def wait(self, links: Iterable[Link], timeout_s: float | None) -> list[Link]:
        """Links among ``links`` with a message pending, waiting up to ``timeout_s`` (None: forever). Returns
        early (possibly empty) when a peer disconnects, so the caller can check its peers."""
        wanted = frozenset(links)
        poller = self._poller(wanted)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            slice_s = 0.2 if remaining is None else min(remaining, 0.2)
            probe_in = self._probe_due_in()
            if probe_in is not None:
                if probe_in == 0.0:
                    return []
                slice_s = min(slice_s, probe_in)
            events = dict(poller.poll(int(slice_s * 1000)))
            ready, alarm = [], False
            for sock in events:
                link = self._by_socket[sock]
                if sock is link.monitor:
                    self._on_monitor(link)
                    alarm = True
                elif link in wanted:
                    ready.append(link)
            if ready or alarm or self._probe_due_in() == 0.0 or (
                    deadline is not None and time.monotonic() >= deadline):
                return ready

    def try_recv(self, link: Link) -> Message | None:
        """Read one pending message of ``link``; bad frames and pings are dropped (bad ones counted)."""
        frames = link._recv_frames()
        if frames is None:
            return None
        nbytes = sum(len(f) for f in frames)
        try:
            msg = decode(frames, self.max_message_bytes, link.agreed)
        except BadFrame as e:
            self.count_bad(link.peer, e.reason, e.detail)
            if e.reason == "version" and not link.established:
                raise VersionMismatch(version_reject_reason(link.peer, link.me, e.version), e.version,
                                      link.peer) from None
            return None
        if self.on_received:
            self.on_received(link.peer, nbytes)
        if msg.kind == Kind.PING:
            return None
        if msg.sender != link.peer:
            self.count_bad(link.peer, "sender", f"message signed {msg.sender!r} on the link to {link.peer!r}")
            return None
        if msg.kind == Kind.HELLO and link.established and link.peer in self.rejoinable:
            # a restarted parent, back before its old connection's end was noticed (ROUTER_HANDOVER)
            raise PeerLost(link.peer, f"came back to {link.me!r} (restarted)", link, hello=msg)
        if link.agreed is None:
            try:
                check_tick_message(msg)
            except BadFrame as e:
                self.count_bad(link.peer, e.reason, e.detail)
                return None
        return msg

    @staticmethod
    def pending(link: Link) -> bool:
        """Whether a message is waiting on ``link`` (no system call beyond reading the socket's state)."""
        return bool(link.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN)

    def drain(self, link: Link, kinds: tuple[Kind, ...]) -> list[Message]:
        """Every message already waiting on ``link``, without blocking; other kinds are counted 'unexpected'."""
        out = []
        while self.pending(link):
            try:
                msg = self.try_recv(link)
            except PeerLost as e:
                if self.on_peer_lost is None:
                    raise
                self.on_peer_lost(e)
                continue
            if msg is None:
                continue
            if msg.kind in kinds:
                out.append(msg)
            else:
                self.count_bad(link.peer, "unexpected", f"{msg.kind.name} while draining")
        return out

    def recv(self, link: Link, kinds: tuple[Kind, ...], timeout_s: float | None, what: str = "") -> Message:
        """The next message of one of ``kinds`` from ``link``; other kinds are counted as 'unexpected'."""
        got = self.recv_from_all([link], kinds, timeout_s, what)
        return got[link]

    def recv_from_all(self, links: list[Link], kinds: tuple[Kind, ...], timeout_s: float | None,
                      what: str = "", partial_on_rejoin: bool = False) -> dict[Link, Message]:
        """One message of ``kinds`` from each link (the per-tick barrier of lockstep). Reads what is already
        there before polling: on the hot path the message has usually arrived. ``partial_on_rejoin``: return
        what has arrived so far once a peer rejoined (``on_peer_lost`` returned True), so that the caller can
        decide anew whom to wait for (a rejoined child may need an answer before the others can send)."""
        pending = list(links)
        got: dict[Link, Message] = {}
        started = time.monotonic()
        deadline = None if timeout_s is None else started + timeout_s
        try:
            return self._recv_from_all(pending, got, kinds, timeout_s, deadline, what, started, partial_on_rejoin)
        finally:
            if self.on_wait is not None and self._reported_wait:
                self._reported_wait = False
                self.on_wait(None, [])

    def _recv_from_all(self, pending: list[Link], got: dict[Link, Message], kinds: tuple[Kind, ...],
                       timeout_s: float | None, deadline: float | None, what: str,
                       started: float, partial_on_rejoin: bool = False) -> dict[Link, Message]:
        while True:
            try:
                self._read_pending(pending, got, kinds)
                if not pending:
                    return got
                self.check_peers(lk for lk in self.links if lk not in got)
            except PeerLost as e:
                if self.on_peer_lost is None:
                    raise
                if self.on_peer_lost(e) and partial_on_rejoin:  # back (a new handshake), or it raised
                    return got
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                names = ", ".join(sorted(link.peer for link in pending))
                raise LinkTimeout(f"{self.name!r} waited {timeout_s:.0f}s for {what or 'a message'} from {names}",
                                  sorted(link.peer for link in pending))
            if (not self._reported_wait and self.on_wait is not None
                    and time.monotonic() - started >= WAIT_REPORT_AFTER_S):
                self._reported_wait = True
                self.on_wait(what or "a message", sorted(link.peer for link in pending))
            if self.on_wait is not None and not self._reported_wait:
                remaining = WAIT_REPORT_AFTER_S if remaining is None else min(remaining, WAIT_REPORT_AFTER_S)
            self.wait(pending, remaining)

    def _read_pending(self, pending: list[Link], got: dict[Link, Message], kinds: tuple[Kind, ...]) -> None:
        for link in tuple(pending):
            while self.pending(link):
                msg = self.try_recv(link)
                if msg is None:
                    continue
                if msg.kind not in kinds:
                    self.count_bad(link.peer, "unexpected", f"{msg.kind.name} while awaiting "
                                   f"{'/'.join(k.name for k in kinds)}")
                    continue
                got[link] = msg
                pending.remove(link)
                break

    def close(self) -> None:
        if self.ctx.closed:
            return
        for link in self.links:
            link.close()
        if self._auth is not None:
            self._auth.stop()
        term_context(self.ctx)


def term_context(ctx: zmq.Context, timeout_s: float = 5.0) -> bool:
    """``ctx.term()`` blocks for as long as any socket of the context is open; bound it, so a socket leaked by
    a bug costs this process a warning at exit, never a hang. True if the context terminated in time."""
    done = threading.Event()

    def term() -> None:
        ctx.term()
        done.set()

    threading.Thread(target=term, daemon=True, name="zmq-term").start()
    if not done.wait(timeout_s):
        log.warning("zmq context did not terminate within %.0fs: a socket was left open", timeout_s)
        return False
    return True


class _AllowList:
    """ZAP credentials provider: admit a CURVE client only if its public key is listed."""

    def __init__(self, keys: list[bytes]):
        self.keys = set(keys)

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


def generate_keys(directory: Path, name: str) -> tuple[bytes, bytes]:
    """Write ``name.key`` (public) and ``name.key_secret`` into ``directory``; returns (public, secret)."""
    import os

    import zmq.auth

    directory.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0o077)  # the secret is written 0600 from its first byte: never readable by other users
    try:
        public_file, secret_file = zmq.auth.create_certificates(str(directory), name)
    finally:
        os.umask(umask)
    Path(secret_file).chmod(0o600)  # an existing file keeps its old mode when overwritten
    Path(public_file).chmod(0o644)  # the public key is meant to be copied and read
    return zmq.auth.load_certificate(secret_file)
