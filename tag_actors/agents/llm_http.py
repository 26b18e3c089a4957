"""HTTP/1.1 over asyncio streams, for the ``llm`` agent's concurrent calls and for the model-server pool.

Two pieces, both running on an asyncio loop (uvloop in the agent and in ``scripts/llm_server.py``):

* ``post_json``: one JSON POST, one connection (``Connection: close``), the whole exchange bounded by one
  wall-clock timeout. Many of them run concurrently on one loop in one thread; there is no thread pool.
* ``Dispatcher``: a reverse proxy that spreads requests over several model servers, each answering one request
  at a time (``llama_cpp.server`` serialises completions behind a lock, so one process is one slot). A request
  waits for a free slot, goes to it whole, and its answer comes back whole.

Why our own ~150 lines instead of httpx or aiohttp: the calls are small JSON POSTs to a server we start on
loopback (or a plain OpenAI-compatible endpoint); the standard library's streams do it with no new dependency.
Loopback servers are reached directly; others through the environment's HTTP proxy when one is set
(``http_proxy`` / ``https_proxy`` / ``no_proxy``, as urllib reads them; https goes through a CONNECT tunnel).
Not done: keep-alive (a loopback connect costs ~0.1 ms against a call's hundreds of milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class HTTPStatusError(Exception):
    """The server answered with a status >= 400."""

    def __init__(self, status: int, reason: str, body: bytes):
        super().__init__(f"HTTP {status} {reason}")
        self.status, self.reason, self.body = status, reason, body


class ProtocolError(OSError):
    """The peer's bytes are not HTTP/1.x as we read it (counted like a broken connection)."""


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


def split_url(url: str) -> tuple[str, int, str, bool]:
    """(host, port, path with query, tls) of an http(s) URL."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    tls = u.scheme == "https"
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    return u.hostname, u.port or (443 if tls else 80), path, tls


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    """The start line and the headers (names lower-cased) of a request or a response."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        raise ProtocolError(f"connection closed inside the HTTP head ({len(e.partial)} bytes)") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError("HTTP head too long") from None
    lines = raw.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"bad header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str], until_eof: bool) -> bytes:
    """A message body by Content-Length, chunked transfer coding, or (responses only) up to EOF."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size_line = await reader.readline()
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_line[:40]!r}") from None
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readline()
    if "content-length" in headers:
        n = int(headers["content-length"])
        if n > MAX_BODY_BYTES:
            raise ProtocolError(f"body of {n} bytes is too large")
        try:
            return await reader.readexactly(n)
        except asyncio.IncompleteReadError as e:
            raise ProtocolError(f"connection closed after {len(e.partial)} of {n} body bytes") from None
    return await reader.read(MAX_BODY_BYTES) if until_eof else b""


def proxy_for(host: str, tls: bool) -> tuple[str, int] | None:
    """(host, port) of the environment's proxy for ``host``, or None (always None for loopback)."""
    if host in LOOPBACK or urllib.request.proxy_bypass(host):
        return None
    proxy = urllib.request.getproxies().get("https" if tls else "http")
    if not proxy:
        return None
    u = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return (u.hostname, u.port or 80) if u.hostname else None


async def _connect(host: str, port: int, tls: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
    """An open connection to ``host:port`` (directly or through a proxy); True when it goes to an http proxy,
    which wants the absolute URL as request target."""
    ctx = ssl.create_default_context() if tls else None
    proxy = proxy_for(host, tls)
    if proxy is None:
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx, limit=MAX_HEADER_BYTES)
        return reader, writer, False
    reader, writer = await asyncio.open_connection(*proxy, limit=MAX_HEADER_BYTES)
    if not tls:
        return reader, writer, True
    try:
        writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode("latin-1"))
        await writer.drain()
        start, _ = await read_head(reader)
        if start.split(" ")[1:2] != ["200"]:
            raise ProtocolError(f"proxy {proxy[0]}:{proxy[1]} refused CONNECT {host}:{port}: {start[:80]!r}")
        await writer.start_tls(ctx, server_hostname=host)
    except BaseException:
        writer.close()
        raise
    return reader, writer, False


async def request(url: str, body: bytes, headers: dict[str, str], method: str = "POST") -> Response:
    """One HTTP/1.1 exchange on a fresh connection; no timeout of its own (wrap it in ``asyncio.wait_for``)."""
    host, port, path, tls = split_url(url)
    reader, writer, absolute = await _connect(host, port, tls)
    if absolute:
        path = url
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
                f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        start, resp_headers = await read_head(reader)
        version, _, rest = start.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise ProtocolError(f"bad status line {start[:80]!r}")
        data = await read_body(reader, resp_headers, until_eof=True)
        return Response(int(code), reason, resp_headers, data)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def post_json(url: str, payload: dict[str, Any], headers: dict[str, str], timeout_s: float) -> bytes:
    """POST ``payload`` as JSON; the response body of a 2xx answer. Raises TimeoutError (the whole exchange took
    longer than ``timeout_s``), HTTPStatusError, or OSError (refused, reset, not HTTP)."""
    hdrs = {"Content-Type": "application/json", "Accept": "application/json", **headers}
    resp = await asyncio.wait_for(request(url, json.dumps(payload).encode(), hdrs), timeout_s)
    if resp.status >= 400:
        raise HTTPStatusError(resp.status, resp.reason, resp.body)
    return resp.body


# ------------------------------------------------------------------------------------------------ dispatcher


@dataclass
class Dispatcher:
    """A reverse proxy on ``host:port`` that hands each request to a free upstream server (one request each).

    Requests queue for a slot in arrival order; ``served`` counts answers per upstream and ``max_waiting`` is the
    longest queue seen (requests that found every slot busy). A request whose caller has hung up while it waited
    is dropped: a model server cannot abort a completion, so one stale prompt would delay every call behind it.
    """

    upstreams: list[str]
    """Base addresses of the model servers, e.g. ``http://127.0.0.1:8001``."""
    host: str = "127.0.0.1"
    port: int = 0
    served: dict[str, int] = field(default_factory=dict)
    max_waiting: int = 0
    dropped: int = 0
    """Requests whose caller had hung up by the time a slot was free (never sent upstream)."""

    def __post_init__(self) -> None:
        self._free: asyncio.Queue[str] | None = None
        self._server: asyncio.base_events.Server | None = None
        self._waiting = 0

    async def start(self) -> int:
        """Listen; returns the bound port."""
        self._free = asyncio.Queue()
        for u in self.upstreams:
            self._free.put_nowait(u.rstrip("/"))
            self.served[u.rstrip("/")] = 0
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_HEADER_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            start, headers = await read_head(reader)
            method, path, _ = (start.split(" ") + ["", ""])[:3]
            body = await read_body(reader, headers, until_eof=False)
            fwd = {k: v for k, v in headers.items()
                   if k not in ("host", "connection", "content-length", "transfer-encoding", "keep-alive")}
            assert self._free is not None
            self._waiting += 1
            self.max_waiting = max(self.max_waiting, self._waiting - self._free.qsize())
            upstream = await self._free.get()
            self._waiting -= 1
            if reader.at_eof():  # the caller hung up while it waited (its timeout): do not spend a slot on it
                self._free.put_nowait(upstream)
                self.dropped += 1
                writer.close()
                return
            try:
                resp = await request(upstream + path, body, fwd, method)
                self.served[upstream] += 1
            finally:
                self._free.put_nowait(upstream)
            out_headers = {k: v for k, v in resp.headers.items()
                           if k not in ("connection", "content-length", "transfer-encoding", "keep-alive")}
            status, reason, data = resp.status, resp.reason, resp.body
        except (OSError, asyncio.IncompleteReadError) as e:
            status, reason, out_headers = 502, "Bad Gateway", {"content-type": "application/json"}
            data = json.dumps({"error": {"message": f"upstream failed: {type(e).__name__}: {e}"}}).encode()
        try:
            head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(data)}", "Connection: close"]
            head += [f"{k}: {v}" for k, v in out_headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
            await writer.drain()
        except OSError:
            pass  # the caller gave up (its timeout)
        finally:
            writer.close()


__all__ = ["Dispatcher", "HTTPStatusError", "ProtocolError", "Response", "post_json", "request", "split_url"]
