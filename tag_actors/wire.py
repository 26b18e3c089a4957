"""The wire: message kinds, framing, strict decoding and the handshake. Knows nothing of sockets or torch.

A message is a list of frames: one msgpack header, then one raw frame per numpy array (zero-copy on both ends)::

    header = {"k": kind, "v": protocol version, "s": sender, "q": sequence number, "t": tick,
              "b": env batch size, "a": [[name, dtype, shape], ...], "m": {small metadata}}

Decoding is strict: anything that does not match (unknown kind, wrong version, a dtype outside the allowlist, a
frame whose length disagrees with its shape, too many bytes) raises ``BadFrame`` with a short ``reason`` that
the transport counts per peer and drops. Never pickle.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from tag_actors.spaces import Space, space_difference, space_from_dict

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
ALLOWED_DTYPES = frozenset(
    {"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float16", "float32", "float64"}
)
_DTYPES = {name: np.dtype(name) for name in ALLOWED_DTYPES}

# Bits of the per-env flags array carried by UP messages.
TERMINATED, TRUNCATED, FIRST = 1, 2, 4


class Kind(enum.IntEnum):
    HELLO = 1  # parent -> child: who I am, what I will send
    WELCOME = 2  # child -> parent: my spaces; the link is open
    REJECT = 3  # child -> parent: the handshake failed, with the reason
    UP = 4  # child -> parent, each tick: message, reward, flags
    DOWN = 5  # parent -> child, each tick: the child's action (an instruction, or an env action at level 1)
    STOP = 6  # parent -> child: the run is over, finish and acknowledge
    BYE = 7  # child -> parent: STOP acknowledged
    PING = 8  # liveness probe; ignored by the data path


_KINDS = {int(k): k for k in Kind}


class BadFrame(ValueError):
    """A message that does not decode; ``reason`` is a short label for metrics (e.g. 'oversized')."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Message:
    kind: Kind
    sender: str
    seq: int = 0
    tick: int = 0
    batch: int = 0
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def encode(msg: Message) -> list[Any]:
    """Frames for ``socket.send_multipart(frames, copy=False)``: a header, then each array's own buffer."""
    specs = []
    buffers: list[Any] = []
    for name, arr in msg.arrays.items():
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        specs.append((name, arr.dtype.name, arr.shape))
        buffers.append(arr.data if arr.ndim else arr.tobytes())  # a 0-d array has no buffer view of its own
    header = {"k": int(msg.kind), "v": PROTOCOL_VERSION, "s": msg.sender, "q": msg.seq, "t": msg.tick,
              "b": msg.batch, "a": specs}
    if msg.meta:
        header["m"] = msg.meta
    return [msgpack.packb(header, use_bin_type=True), *buffers]


def _buffer(frame: Any) -> memoryview:
    """A zero-copy view of a frame, whether it came as bytes or as a zmq.Frame (``recv(copy=False)``)."""
    buf = getattr(frame, "buffer", None)
    return buf if buf is not None else memoryview(frame)


def decode(frames: list[Any], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Parse frames into a Message or raise BadFrame; arrays are read-only views of the frames."""
    if not frames:
        raise BadFrame("empty", "no frames")
    views = [_buffer(f) for f in frames]
    total = sum(v.nbytes for v in views)
    if total > max_bytes:
        raise BadFrame("oversized", f"{total} bytes exceeds the limit of {max_bytes}")
    try:
        header = msgpack.unpackb(views[0], raw=False, strict_map_key=True, max_bin_len=0, max_ext_len=0)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise BadFrame("header", f"header is not msgpack: {type(e).__name__}: {e}") from None
    if not isinstance(header, dict):
        raise BadFrame("header", f"header must be a map, got {type(header).__name__}")
    try:
        kind = _KINDS[header["k"]]
        version, sender = header["v"], header["s"]
        seq, tick, batch = header["q"], header["t"], header["b"]
        specs = header["a"]
    except KeyError as e:
        if e.args[0] == header.get("k"):
            raise BadFrame("kind", f"unknown message kind {header.get('k')!r}") from None
        raise BadFrame("header", f"header lacks field {e.args[0]!r}") from None
    except TypeError:
        raise BadFrame("kind", f"unknown message kind {header.get('k')!r}") from None
    if version != PROTOCOL_VERSION:
        raise BadFrame("version", f"protocol version {version!r}, this side speaks {PROTOCOL_VERSION}")
    if type(sender) is not str or type(seq) is not int or type(tick) is not int or type(batch) is not int:
        raise BadFrame("header", "sender must be a string and seq/tick/batch integers")
    if not isinstance(specs, list) or len(specs) != len(views) - 1:
        raise BadFrame("frames", f"header announces {len(specs) if isinstance(specs, list) else '?'} arrays, "
                       f"got {len(views) - 1} data frames")
    meta = header.get("m", {})
    if not isinstance(meta, dict):
        raise BadFrame("header", "meta must be a map")
    arrays = {}
    for spec, view in zip(specs, views[1:], strict=True):
        name, dtype = _check_spec(spec, view)  # before touching the buffer
        arrays[name] = np.frombuffer(view, dtype=dtype).reshape(spec[2])
    return Message(kind, sender, seq, tick, batch, arrays, meta)


def _check_spec(spec: Any, view: memoryview) -> tuple[str, np.dtype]:
    if type(spec) is not list or len(spec) != 3 or type(spec[0]) is not str:
        raise BadFrame("array", f"array spec must be [name, dtype, shape], got {spec!r}")
    name, dtype_name, shape = spec
    dtype = _DTYPES.get(dtype_name) if type(dtype_name) is str else None
    if dtype is None:
        raise BadFrame("dtype", f"array {name!r} has dtype {dtype_name!r}, not in the allowlist")
    if type(shape) is not list or not all(type(s) is int and s >= 0 for s in shape):
        raise BadFrame("array", f"array {name!r} has a bad shape {shape!r}")
    expected = math.prod(shape) * dtype.itemsize
    if view.nbytes != expected:
        raise BadFrame("truncated", f"array {name!r} {dtype_name}{tuple(shape)} needs {expected} bytes, frame has "
                       f"{view.nbytes}")
    return name, dtype


# --- the handshake -------------------------------------------------------------------------------------------


class HandshakeError(RuntimeError):
    """Two peers disagree; the text names both peers and the field."""


@dataclass
class Hello:
    """Parent -> child: the parent's name, batch size, and the instruction space it will send (None: 'tell me')."""

    parent: str
    child: str
    num_envs: int
    instruction_space: Space | None

    def to_message(self) -> Message:
        meta = {"child": self.child, "num_envs": self.num_envs,
                "instruction_space": self.instruction_space.to_dict() if self.instruction_space else None}
        return Message(Kind.HELLO, self.parent, batch=self.num_envs, meta=meta)

    @classmethod
    def from_message(cls, msg: Message) -> Hello:
        m = _require(msg, ("child", "num_envs", "instruction_space"))
        space = m["instruction_space"]
        return cls(msg.sender, str(m["child"]), int(m["num_envs"]),
                   _space(msg, "instruction_space") if space is not None else None)


@dataclass
class Welcome:
    """Child -> parent: the message space the parent will observe and the instruction space the child expects."""

    child: str
    num_envs: int
    message_space: Space
    instruction_space: Space
    info: dict[str, Any] = field(default_factory=dict)

    def to_message(self) -> Message:
        meta = {"num_envs": self.num_envs, "message_space": self.message_space.to_dict(),
                "instruction_space": self.instruction_space.to_dict(), "info": self.info}
        return Message(Kind.WELCOME, self.child, batch=self.num_envs, meta=meta)

    @classmethod
    def from_message(cls, msg: Message) -> Welcome:
        m = _require(msg, ("num_envs", "message_space", "instruction_space", "info"))
        return cls(msg.sender, int(m["num_envs"]), _space(msg, "message_space"), _space(msg, "instruction_space"),
                   dict(m["info"]))


def _require(msg: Message, keys: tuple[str, ...]) -> dict[str, Any]:
    missing = [k for k in keys if k not in msg.meta]
    if missing:
        raise HandshakeError(f"{msg.kind.name} from {msg.sender!r} lacks field(s) {', '.join(missing)}")
    return msg.meta


def _space(msg: Message, key: str) -> Space:
    try:
        return space_from_dict(msg.meta[key])
    except ValueError as e:
        raise HandshakeError(f"{msg.kind.name} from {msg.sender!r}: field {key!r}: {e}") from None


def check_hello(hello: Hello, me: str, num_envs: int, expected_instruction: Space) -> None:
    """Run on the child: the parent's HELLO must match what this child serves."""
    if hello.child != me:
        raise HandshakeError(f"{hello.parent!r} asked for child {hello.child!r} but reached {me!r}")
    if hello.num_envs != num_envs:
        raise HandshakeError(f"num_envs: parent {hello.parent!r} runs {hello.num_envs}, child {me!r} runs {num_envs}")
    if hello.instruction_space is not None:
        diff = space_difference(expected_instruction, hello.instruction_space)
        if diff:
            raise HandshakeError(f"instruction_space between parent {hello.parent!r} and child {me!r} differs: "
                                 f"{diff} (child expects, parent sends)")


def check_welcome(welcome: Welcome, me: str, child: str, num_envs: int, instruction: Space | None) -> None:
    """Run on the parent: the child's WELCOME must match what this parent will send."""
    if welcome.child != child:
        raise HandshakeError(f"{me!r} expected child {child!r} but {welcome.child!r} answered")
    if welcome.num_envs != num_envs:
        raise HandshakeError(f"num_envs: parent {me!r} runs {num_envs}, child {child!r} runs {welcome.num_envs}")
    if instruction is not None:
        diff = space_difference(welcome.instruction_space, instruction)
        if diff:
            raise HandshakeError(f"instruction_space between parent {me!r} and child {child!r} differs: {diff} "
                                 "(child expects, parent sends)")


# --- per-tick messages ----------------------------------------------------------------------------------------

TICK_ARRAYS = {Kind.UP: ("x", "r", "f"), Kind.DOWN: ("a",)}


def check_tick_message(msg: Message) -> None:
    """A well-formed UP/DOWN carries its arrays, each with the batch as its leading dimension."""
    for name in TICK_ARRAYS.get(msg.kind, ()):
        arr = msg.arrays.get(name)
        if arr is None:
            raise BadFrame("content", f"{msg.kind.name} lacks array {name!r}")
        if arr.ndim == 0 or arr.shape[0] != msg.batch:
            raise BadFrame("content", f"{msg.kind.name} array {name!r} has shape {arr.shape}, batch is {msg.batch}")


def pack_flags(terminated: np.ndarray, truncated: np.ndarray, first: np.ndarray) -> np.ndarray:
    return (terminated * TERMINATED | truncated * TRUNCATED | first * FIRST).astype(np.uint8)


def unpack_flags(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (flags & TERMINATED) != 0, (flags & TRUNCATED) != 0, (flags & FIRST) != 0
