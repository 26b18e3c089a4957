"""The framing layer of the protocol (PROTOCOL.md §4): a message as frames and back, decoded strictly.

A message is a list of frames: one msgpack header, then one raw frame per numpy array (zero-copy on both ends)::

    header = {"k": kind, "v": protocol version, "s": sender, "q": sequence number, "t": tick,
              "b": env batch size, "a": [[name, dtype, shape], ...], "m": {small metadata}}

Decoding is strict: anything that does not match (unknown kind, other version, a dtype outside the allowlist, a
frame whose length disagrees with its shape, too many bytes, a per-tick array unlike the one the link agreed in
its handshake) raises ``BadFrame`` with a short ``reason`` that the transport counts per peer and drops (§13).
Never pickle. Constants, kinds and message builders live in ``tag_actors.protocol``; they are re-exported here
for the modules that import them from the wire.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from tag_actors.protocol import (
    ALLOWED_DTYPES,
    DEFAULT_MAX_MESSAGE_BYTES,
    FIRST,
    PROTOCOL_VERSION,
    TERMINATED,
    TICK_ARRAYS,
    TRUNCATED,
    Agreed,
    BadFrame,
    HandshakeError,
    Hello,
    Kind,
    Message,
    Welcome,
    check_hello,
    check_tick_message,
    check_welcome,
    pack_flags,
    unpack_flags,
)

__all__ = [
    "ALLOWED_DTYPES", "DEFAULT_MAX_MESSAGE_BYTES", "FIRST", "PROTOCOL_VERSION", "TERMINATED", "TICK_ARRAYS",
    "TRUNCATED", "BadFrame", "HandshakeError", "Hello", "Kind", "Message", "Welcome", "check_hello",
    "check_tick_message", "check_welcome", "decode", "encode", "pack_flags", "unpack_flags",
]

_DTYPES = {name: np.dtype(name) for name in ALLOWED_DTYPES}
_KINDS = {int(k): k for k in Kind}


def encode(msg: Message) -> list[Any]:
    """Frames for ``socket.send_multipart(frames, copy=False)``: a header, then each array's own buffer (§4)."""
    specs = []
    buffers: list[Any] = []
    for name, arr in msg.arrays.items():
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        specs.append((name, arr.dtype.name, arr.shape))
        buffers.append(arr.data if arr.ndim else arr.tobytes())  # a 0-d array has no buffer view of its own
    header = {"k": int(msg.kind), "v": msg.version, "s": msg.sender, "q": msg.seq, "t": msg.tick,
              "b": msg.batch, "a": specs}
    if msg.meta:
        header["m"] = msg.meta
    return [msgpack.packb(header, use_bin_type=True), *buffers]


def _buffer(frame: Any) -> memoryview:
    """A zero-copy view of a frame, whether it came as bytes or as a zmq.Frame (``recv(copy=False)``)."""
    buf = getattr(frame, "buffer", None)
    return buf if buf is not None else memoryview(frame)


def decode(frames: list[Any], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
           agreed: Mapping[Kind, Agreed] | None = None) -> Message:
    """Parse frames into a Message or raise BadFrame; arrays are read-only views of the frames. ``agreed``: the
    per-tick arrays this link agreed in its handshake (§6); an UP/DOWN that differs in any array's name, dtype or
    shape, or in its batch, is a BadFrame, so nothing malformed reaches the tick loop."""
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
    version = header.get("v")
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise BadFrame("version", f"protocol version {version!r}, this side speaks {PROTOCOL_VERSION}", version)
    try:
        kind = _KINDS[header["k"]]
        sender = header["s"]
        seq, tick, batch = header["q"], header["t"], header["b"]
        specs = header["a"]
    except KeyError as e:
        if e.args[0] == header.get("k"):
            raise BadFrame("kind", f"unknown message kind {header.get('k')!r}") from None
        raise BadFrame("header", f"header lacks field {e.args[0]!r}") from None
    except TypeError:
        raise BadFrame("kind", f"unknown message kind {header.get('k')!r}") from None
    if type(sender) is not str or type(seq) is not int or type(tick) is not int or type(batch) is not int:
        raise BadFrame("header", "sender must be a string and seq/tick/batch integers")
    if not isinstance(specs, list) or len(specs) != len(views) - 1:
        raise BadFrame("frames", f"header announces {len(specs) if isinstance(specs, list) else '?'} arrays, "
                       f"got {len(views) - 1} data frames")
    meta = header.get("m", {})
    if not isinstance(meta, dict):
        raise BadFrame("header", "meta must be a map")
    expected = agreed.get(kind) if agreed is not None else None
    if expected is not None:
        return Message(kind, sender, seq, tick, batch, _agreed_arrays(expected, specs, batch, meta, views), meta)
    arrays = {}
    for spec, view in zip(specs, views[1:], strict=True):
        name, dtype = _check_spec(spec, view)  # before touching the buffer
        arrays[name] = np.frombuffer(view, dtype=dtype).reshape(spec[2])
    return Message(kind, sender, seq, tick, batch, arrays, meta)


def _agreed_arrays(expected: Agreed, specs: list, batch: int, meta: dict, views: list[memoryview]) -> dict:
    """The fast path of a per-tick message: one comparison against the agreement, then zero-copy views."""
    if specs != expected.specs:
        raise expected.mismatch(specs)
    if batch != expected.batch:
        raise BadFrame("batch", f"{expected.kind.name} header says batch {batch}, the link agreed {expected.batch}")
    if meta:
        _check_tick_meta(expected.kind, meta)
    arrays = {}
    for spec, nbytes, dtype, shape, view in zip(expected.specs, expected.nbytes, expected.dtypes, expected.shapes,
                                                views[1:], strict=True):
        if view.nbytes != nbytes:
            raise BadFrame("truncated", f"array {spec[0]!r} {spec[1]}{shape} needs {nbytes} bytes, frame has "
                           f"{view.nbytes}")
        arrays[spec[0]] = np.frombuffer(view, dtype=dtype).reshape(shape)
    return arrays


def _check_tick_meta(kind: Kind, meta: dict) -> None:
    """§5.4/§5.5: 'e' an integer, 'stop' a boolean, 'ts' a number; other keys are ignored."""
    if kind == Kind.UP:
        e, stop = meta.get("e", 0), meta.get("stop", False)
        if type(e) is not int or type(stop) is not bool:
            raise BadFrame("meta", f"UP metadata e={e!r} stop={stop!r}: e must be an integer, stop a boolean")
    else:
        ts = meta.get("ts", 0.0)
        if type(ts) not in (float, int):
            raise BadFrame("meta", f"DOWN metadata ts={ts!r} must be a number")


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
