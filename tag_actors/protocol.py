"""The LevelEnv protocol in one module: constants, message builders, handshake checks and the decision clock.

PROTOCOL.md (at the repository root) is the normative text; every section here cites the clause it implements
(``§n``). ``tag_actors.wire`` is the framing layer (encode, strict decode); the transport moves frames; the actor
runtime and ``tag_actors.conformance`` build and check messages only through this module. Knows nothing of
sockets or torch.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tag_actors.spaces import Box, Space, space_difference, space_from_dict

# --- §8.3 versions, §8.4 schema hash, §8.5 capabilities -------------------------------------------------------

PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS = (2,)
"""Versions this implementation speaks; a peer with any other gets a REJECT saying so (§8.3)."""

CAPABILITIES: dict[str, str] = {
    "ts": "DOWN metadata carries 'ts', the parent's wall-clock send time (the child measures staleness)",
    "fp": "HELLO/WELCOME carry 'fp', fingerprints of the run's config and keys; a difference is refused",
}
"""Optional features (§8.5): each side announces what it supports; a feature is used on a link only if both do."""

# --- §15 size limits -----------------------------------------------------------------------------------------

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""All frames of one message together (§15); a bigger message is a bad frame ('oversized')."""
HARD_LIMIT_FACTOR = 4
"""ZMQ_MAXMSGSIZE is this many times the message limit: beyond it the socket drops the connection (§15)."""
QUEUE_LIMIT = 100_000
"""High-water mark per link, in messages (§15)."""

# --- §4 frames, §6 dtypes -------------------------------------------------------------------------------------

HEADER_FIELDS = ("k", "v", "s", "q", "t", "b", "a")
"""Required header fields (§4); 'm' (metadata) is optional."""
ALLOWED_DTYPES = frozenset(
    {"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float16", "float32", "float64"}
)
"""dtype names an array may carry (§4); little-endian, C order."""


class Kind(enum.IntEnum):
    """Message kinds (§5). Numbers are part of the protocol."""

    HELLO = 1  # parent -> child: who I am, what I will send (§5.1)
    WELCOME = 2  # child -> parent: my spaces; the link is open (§5.2)
    REJECT = 3  # either way: the handshake failed, with the reason (§5.3)
    UP = 4  # child -> parent, each tick: message, reward, flags (§5.4)
    DOWN = 5  # parent -> child, on decision ticks: the child's instruction or env action (§5.5)
    STOP = 6  # parent -> child: the run is over, finish and acknowledge (§5.6)
    BYE = 7  # child -> parent: STOP acknowledged for the whole subtree (§5.7)
    PING = 8  # liveness probe, either way; ignored by the data path (§5.8)


# §7: bits of the per-copy flags array 'f' of UP
TERMINATED, TRUNCATED, FIRST = 1, 2, 4

# §5.4 / §5.5: per-tick arrays, in this order; metadata keys
UP_ARRAYS = ("x", "r", "f")
DOWN_ARRAYS = ("a",)
TICK_ARRAYS = {Kind.UP: UP_ARRAYS, Kind.DOWN: DOWN_ARRAYS}
META_ENV_STEPS, META_STOP, META_SENT_AT = "e", "stop", "ts"
MODES = ("lockstep", "async")

HELLO_KEYS = ("schema", "caps", "child", "num_envs", "instruction_space", "period", "mode")
HELLO_TICK = "tick"
"""Optional HELLO field (PROTOCOL.md "Restarts"): a parent that re-greets a restarted child mid-run says which
tick it expects next; a restarted env continues the run's clock from it."""
WELCOME_KEYS = ("schema", "caps", "num_envs", "message_space", "instruction_space", "info")

SCHEMA: dict[str, Any] = {
    "header": list(HEADER_FIELDS) + ["m"],
    "kinds": {k.name: int(k) for k in Kind},
    "dtypes": sorted(ALLOWED_DTYPES),
    "hello": list(HELLO_KEYS),
    "welcome": list(WELCOME_KEYS),
    "reject": ["reason", "field", "speaks"],
    "up": {"arrays": [["x", "float32", "B,*message_space.shape"], ["r", "float32", "B"], ["f", "uint8", "B"]],
           "meta": [META_ENV_STEPS, META_STOP]},
    "down": {"arrays": [["a", "box:float32|discrete:int64|multidiscrete:int64", "B,*instruction_space.shape"]],
             "meta": [META_SENT_AT]},
    "flags": {"TERMINATED": TERMINATED, "TRUNCATED": TRUNCATED, "FIRST": FIRST},
    "spaces": {"box": ["shape", "low", "high"], "discrete": ["n"], "multidiscrete": ["nvec"]},
    "modes": list(MODES),
}
"""Everything a peer must agree on to decode the other's messages (§8.4). Changing it changes SCHEMA_HASH."""
SCHEMA_HASH = hashlib.sha256(json.dumps(SCHEMA, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


class BadFrame(ValueError):
    """A message that does not decode or breaks what the link agreed (§13); ``reason`` is a short label for
    metrics (e.g. 'oversized', 'dtype')."""

    def __init__(self, reason: str, detail: str, version: Any = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.version = version
        """For reason 'version': the version the peer's header carried (a REJECT echoes it, §8.3)."""


@dataclass(slots=True)
class Message:
    """One decoded message (§4): header fields, arrays by name, metadata."""

    kind: Kind
    sender: str
    seq: int = 0
    tick: int = 0
    batch: int = 0
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = PROTOCOL_VERSION

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


# --- §6 per-tick arrays agreed in the handshake ---------------------------------------------------------------


def action_dtype(space: Space) -> str:
    """The dtype of a DOWN array for an instruction space (§6)."""
    return "float32" if isinstance(space, Box) else "int64"


@dataclass(frozen=True)
class Agreed:
    """What a link agreed for one per-tick kind (§6): the exact array specs, as they appear in a header, and the
    byte length of each frame. Decoding compares against these, so the check is one list comparison."""

    kind: Kind
    batch: int
    specs: list[list[Any]]
    nbytes: tuple[int, ...]
    dtypes: tuple[np.dtype, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, kind: Kind, batch: int, arrays: list[tuple[str, str, tuple[int, ...]]]) -> Agreed:
        specs = [[name, dtype, list(shape)] for name, dtype, shape in arrays]
        dtypes = tuple(np.dtype(d) for _, d, _ in arrays)
        shapes = tuple(tuple(s) for _, _, s in arrays)
        nbytes = tuple(int(np.prod(s, dtype=np.int64)) * d.itemsize for s, d in zip(shapes, dtypes, strict=True))
        return cls(kind, batch, specs, nbytes, dtypes, shapes)

    def mismatch(self, specs: Any) -> BadFrame:
        """Name the first array that differs from the agreement (called only once a header has disagreed)."""
        what = self.kind.name
        if not isinstance(specs, list):
            return BadFrame("array", f"{what} array list is {specs!r}")
        names = [s[0] if isinstance(s, list) and s else s for s in specs]
        if names != [s[0] for s in self.specs]:
            return BadFrame("content", f"{what} carries arrays {names}, the link agreed {[s[0] for s in self.specs]}")
        for got, want in zip(specs, self.specs, strict=True):
            if not isinstance(got, list) or len(got) != 3:
                return BadFrame("array", f"{what} array spec must be [name, dtype, shape], got {got!r}")
            if got[1] != want[1]:
                return BadFrame("dtype", f"{what} array {want[0]!r} is {got[1]!r}, the link agreed {want[1]!r}")
            if got[2] != want[2]:
                return BadFrame("shape", f"{what} array {want[0]!r} has shape {got[2]!r}, the link agreed "
                                f"{want[2]!r} (batch, *space shape)")
        return BadFrame("array", f"{what} arrays {specs!r} differ from {self.specs!r}")


def up_arrays(message_space: Box, batch: int) -> Agreed:
    """UP of a link whose child announced ``message_space`` (§5.4)."""
    return Agreed.of(Kind.UP, batch, [("x", "float32", (batch, *message_space.shape)), ("r", "float32", (batch,)),
                                      ("f", "uint8", (batch,))])


def down_arrays(instruction_space: Space, batch: int) -> Agreed:
    """DOWN of a link that agreed on ``instruction_space`` (§5.5)."""
    return Agreed.of(Kind.DOWN, batch, [("a", action_dtype(instruction_space), (batch, *instruction_space.shape))])


def check_tick_message(msg: Message) -> None:
    """For a link with no agreement yet: an UP/DOWN carries its arrays, each with the batch leading (§6)."""
    for name in TICK_ARRAYS.get(msg.kind, ()):
        arr = msg.arrays.get(name)
        if arr is None:
            raise BadFrame("content", f"{msg.kind.name} lacks array {name!r}")
        if arr.ndim == 0 or arr.shape[0] != msg.batch:
            raise BadFrame("content", f"{msg.kind.name} array {name!r} has shape {arr.shape}, batch is {msg.batch}")


# --- §7 flags -------------------------------------------------------------------------------------------------


def pack_flags(terminated: np.ndarray, truncated: np.ndarray, first: np.ndarray) -> np.ndarray:
    return (terminated * TERMINATED | truncated * TRUNCATED | first * FIRST).astype(np.uint8)


def unpack_flags(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (flags & TERMINATED) != 0, (flags & TRUNCATED) != 0, (flags & FIRST) != 0


# --- §5.4 / §5.5 per-tick builders ----------------------------------------------------------------------------


def up_message(message: np.ndarray, reward: np.ndarray, flags: np.ndarray, tick: int, env_steps: int,
               stop: bool) -> Message:
    """UP (§5.4): the child's message, reward and flags for ``tick``; ``stop`` marks the run's last tick (§11)."""
    meta: dict[str, Any] = {META_ENV_STEPS: env_steps}
    if stop:
        meta[META_STOP] = True
    return Message(Kind.UP, "", tick=tick, batch=len(reward), arrays={"x": message, "r": reward, "f": flags},
                   meta=meta)


def down_message(action: np.ndarray, tick: int, sent_at: float | None) -> Message:
    """DOWN (§5.5): the instruction for the child's decision tick ``tick``; ``sent_at`` only where the link
    agreed on capability 'ts' (§8.5)."""
    return Message(Kind.DOWN, "", tick=tick, batch=len(action), arrays={"a": action},
                   meta={META_SENT_AT: sent_at} if sent_at is not None else {})


def stop_message() -> Message:
    """STOP (§5.6, §11)."""
    return Message(Kind.STOP, "")


def bye_message() -> Message:
    """BYE (§5.7, §11)."""
    return Message(Kind.BYE, "")


def ping_message(sender: str) -> Message:
    """PING (§5.8)."""
    return Message(Kind.PING, sender)


# --- §9.1 the decision clock -----------------------------------------------------------------------------------


def waits_for_down(first_tick: bool, tick: int, period: int, all_ended: bool) -> bool:
    """§9.1: whether a child waits for its parent's DOWN after sending the UP of ``tick``: on the link's first
    tick, and on every tick that is a multiple of the parent's decision ``period``, unless every env copy ended
    at this tick (then the parent observes the ends and decides at the next decision tick). The parent decides
    (and sends DOWN) on exactly these ticks, so both ends compute the same answer and nobody waits in vain."""
    return (first_tick or tick % period == 0) and not all_ended


def decision_period(everies: list[int], level: int) -> int:
    """§9.1: the decision period of an agent of ``level`` (1-based), in ticks of the env: the product of
    ``every`` of its level and every level below it."""
    period = 1
    for e in everies[:level]:
        period *= e
    return period


# --- §8 the handshake -----------------------------------------------------------------------------------------


class HandshakeError(RuntimeError):
    """Two peers disagree; the text names both peers and the field (``field``: which one, for REJECT)."""

    def __init__(self, text: str, field: str = ""):
        super().__init__(text)
        self.field = field


class VersionMismatch(HandshakeError):
    """A handshake message in a protocol version this side does not speak (§8.3); ``version`` is the peer's."""

    def __init__(self, text: str, version: Any, peer: str = ""):
        super().__init__(text, "version")
        self.version = version
        self.peer = peer


@dataclass
class Hello:
    """Parent -> child (§5.1): who the parent is, the batch, the instruction space it will send (None: 'tell
    me'), its decision period in ticks and whether the child waits for it ('lockstep') or not ('async')."""

    parent: str
    child: str
    num_envs: int
    instruction_space: Space | None
    period: int = 1
    mode: str = "lockstep"
    caps: list[str] = field(default_factory=lambda: sorted(CAPABILITIES))
    schema: str = SCHEMA_HASH
    fp: dict[str, str] | None = None
    """§8.6: fingerprints of the parent's config and keys (sent only with capability 'fp')."""
    tick: int | None = None
    """Only when re-greeting a restarted child mid-run: the tick this parent expects next (``HELLO_TICK``)."""

    def to_message(self) -> Message:
        meta = {"schema": self.schema, "caps": list(self.caps), "child": self.child, "num_envs": self.num_envs,
                "instruction_space": self.instruction_space.to_dict() if self.instruction_space else None,
                "period": self.period, "mode": self.mode}
        if self.fp is not None and "fp" in self.caps:
            meta["fp"] = dict(self.fp)
        if self.tick is not None:
            meta[HELLO_TICK] = self.tick
        return Message(Kind.HELLO, self.parent, batch=self.num_envs, meta=meta)

    @classmethod
    def from_message(cls, msg: Message) -> Hello:
        m = _require(msg, HELLO_KEYS)
        space = m["instruction_space"]
        child, num_envs, period, mode = m["child"], m["num_envs"], m["period"], m["mode"]
        if type(child) is not str or type(num_envs) is not int or num_envs < 1:
            raise HandshakeError(f"HELLO from {msg.sender!r}: child must be a name and num_envs an integer >= 1",
                                 "num_envs")
        if type(period) is not int or period < 1:
            raise HandshakeError(f"HELLO from {msg.sender!r}: period must be an integer >= 1, got {period!r}",
                                 "period")
        if mode not in MODES:
            raise HandshakeError(f"HELLO from {msg.sender!r}: mode must be one of {MODES}, got {mode!r}", "mode")
        tick = m.get(HELLO_TICK)
        if tick is not None and (type(tick) is not int or tick < 0):
            raise HandshakeError(f"HELLO from {msg.sender!r}: tick must be an integer >= 0, got {tick!r}",
                                 HELLO_TICK)
        return cls(msg.sender, child, num_envs,
                   _space(msg, "instruction_space") if space is not None else None,
                   period, mode, _caps(msg), str(m["schema"]), _fp(msg), tick)


@dataclass
class Welcome:
    """Child -> parent (§5.2): the message space the parent will observe, the instruction space the child
    expects, capabilities it accepts, and free-form ``info`` (level 1: the env's scenario, for heuristics)."""

    child: str
    num_envs: int
    message_space: Space
    instruction_space: Space
    info: dict[str, Any] = field(default_factory=dict)
    caps: list[str] = field(default_factory=lambda: sorted(CAPABILITIES))
    schema: str = SCHEMA_HASH
    fp: dict[str, str] | None = None
    """§8.6: fingerprints of the child's config and keys (sent only with capability 'fp')."""

    def to_message(self) -> Message:
        meta = {"schema": self.schema, "caps": list(self.caps), "num_envs": self.num_envs,
                "message_space": self.message_space.to_dict(),
                "instruction_space": self.instruction_space.to_dict(), "info": self.info}
        if self.fp is not None and "fp" in self.caps:
            meta["fp"] = dict(self.fp)
        return Message(Kind.WELCOME, self.child, batch=self.num_envs, meta=meta)

    @classmethod
    def from_message(cls, msg: Message) -> Welcome:
        m = _require(msg, WELCOME_KEYS)
        if type(m["num_envs"]) is not int or not isinstance(m["info"], dict):
            raise HandshakeError(f"WELCOME from {msg.sender!r}: num_envs must be an integer and info a map",
                                 "num_envs")
        message_space = _space(msg, "message_space")
        if not isinstance(message_space, Box):
            raise HandshakeError(f"WELCOME from {msg.sender!r}: message_space must be a box", "message_space")
        return cls(msg.sender, m["num_envs"], message_space, _space(msg, "instruction_space"), dict(m["info"]),
                   _caps(msg), str(m["schema"]), _fp(msg))


def reject_message(sender: str, error: HandshakeError | str, field_name: str = "",
                   version: int = PROTOCOL_VERSION) -> Message:
    """REJECT (§5.3): ``version`` is the header version to send it with — the peer's own on a version mismatch,
    so that a peer of another version can still read why (§8.3)."""
    reason = str(error)
    field_name = field_name or getattr(error, "field", "")
    msg = Message(Kind.REJECT, sender, meta={"reason": reason, "field": field_name,
                                             "speaks": list(SUPPORTED_VERSIONS)})
    msg.version = version
    return msg


def version_reject_reason(peer: str, me: str, version: Any) -> str:
    return (f"{peer!r} speaks protocol version {version!r}, {me!r} speaks version "
            f"{'/'.join(map(str, SUPPORTED_VERSIONS))} (see PROTOCOL.md §8.3)")


def _require(msg: Message, keys: tuple[str, ...]) -> dict[str, Any]:
    missing = [k for k in keys if k not in msg.meta]
    if missing:
        raise HandshakeError(f"{msg.kind.name} from {msg.sender!r} lacks field(s) {', '.join(missing)}", missing[0])
    return msg.meta


def _space(msg: Message, key: str) -> Space:
    try:
        return space_from_dict(msg.meta[key])
    except ValueError as e:
        raise HandshakeError(f"{msg.kind.name} from {msg.sender!r}: field {key!r}: {e}", key) from None


def _caps(msg: Message) -> list[str]:
    caps = msg.meta["caps"]
    if not isinstance(caps, list) or not all(type(c) is str for c in caps):
        raise HandshakeError(f"{msg.kind.name} from {msg.sender!r}: caps must be a list of names", "caps")
    return caps


def _fp(msg: Message) -> dict[str, str] | None:
    """§8.6: the optional fingerprints, a map of str to str (absent: None, nothing to compare)."""
    fp = msg.meta.get("fp")
    if fp is None:
        return None
    if not isinstance(fp, dict) or not all(type(k) is str and type(v) is str for k, v in fp.items()):
        raise HandshakeError(f"{msg.kind.name} from {msg.sender!r}: fp must be a map of names to fingerprints", "fp")
    return fp


FP_MEANING = {"config": "config (start every host with the same config file and --set options; compare "
                        "config.json in the hosts' run folders)",
              "keys": "CURVE public keys (make keys once, on one host, and copy every *.key to every host)"}


def check_fp(theirs: dict[str, str] | None, mine: dict[str, str] | None, kind: str, peer: str, me: str) -> None:
    """§8.6: refuse a peer whose config or key fingerprint differs from this end's (either side lacking 'fp':
    nothing to compare, accepted)."""
    if theirs is None or mine is None:
        return
    for key in sorted(set(theirs) & set(mine)):
        if theirs[key] != mine[key]:
            raise HandshakeError(f"{kind} from {peer!r} has {key} fingerprint {theirs[key]!r}, {me!r} has "
                                 f"{mine[key]!r}: the two ends run with different "
                                 f"{FP_MEANING.get(key, key)} (see PROTOCOL.md §8.6)", "fp")


def _check_schema(schema: str, kind: str, peer: str, me: str) -> None:
    if schema != SCHEMA_HASH:
        raise HandshakeError(f"message schema differs: {kind} from {peer!r} has schema hash {schema!r}, {me!r} "
                             f"has {SCHEMA_HASH!r} (same version, different messages: see PROTOCOL.md §8.4)",
                             "schema")


def check_hello(hello: Hello, me: str, num_envs: int, expected_instruction: Space, period: int | None = None,
                mode: str | None = None, fp: dict[str, str] | None = None) -> None:
    """§8.2, run on the child: the parent's HELLO must match what this child serves. ``period``/``mode``: what
    the child's own configuration expects (None: take the parent's word); ``fp``: its fingerprints (§8.6)."""
    _check_schema(hello.schema, "HELLO", hello.parent, me)
    check_fp(hello.fp, fp, "HELLO", hello.parent, me)
    if hello.child != me:
        raise HandshakeError(f"{hello.parent!r} asked for child {hello.child!r} but reached {me!r}", "child")
    if hello.num_envs != num_envs:
        raise HandshakeError(f"num_envs: parent {hello.parent!r} runs {hello.num_envs}, child {me!r} runs {num_envs}",
                             "num_envs")
    if hello.instruction_space is not None:
        diff = space_difference(expected_instruction, hello.instruction_space)
        if diff:
            raise HandshakeError(f"instruction_space between parent {hello.parent!r} and child {me!r} differs: "
                                 f"{diff} (child expects, parent sends)", "instruction_space")
    if period is not None and hello.period != period:
        raise HandshakeError(f"period: parent {hello.parent!r} decides every {hello.period} ticks, child {me!r} "
                             f"expects every {period}", "period")
    if mode is not None and hello.mode != mode:
        raise HandshakeError(f"mode: parent {hello.parent!r} runs {hello.mode!r}, child {me!r} expects {mode!r}",
                             "mode")


def check_welcome(welcome: Welcome, me: str, child: str, num_envs: int, instruction: Space | None,
                  fp: dict[str, str] | None = None) -> None:
    """§8.2, run on the parent: the child's WELCOME must match what this parent will send."""
    _check_schema(welcome.schema, "WELCOME", child, me)
    check_fp(welcome.fp, fp, "WELCOME", child, me)
    if welcome.child != child:
        raise HandshakeError(f"{me!r} expected child {child!r} but {welcome.child!r} answered", "child")
    if welcome.num_envs != num_envs:
        raise HandshakeError(f"num_envs: parent {me!r} runs {num_envs}, child {child!r} runs {welcome.num_envs}",
                             "num_envs")
    if instruction is not None:
        diff = space_difference(welcome.instruction_space, instruction)
        if diff:
            raise HandshakeError(f"instruction_space between parent {me!r} and child {child!r} differs: {diff} "
                                 "(child expects, parent sends)", "instruction_space")


def agreed_caps(hello: Hello, welcome: Welcome) -> frozenset[str]:
    """§8.5: the features both ends announced (unknown names are ignored)."""
    return frozenset(hello.caps) & frozenset(welcome.caps) & frozenset(CAPABILITIES)
