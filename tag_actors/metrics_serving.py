"""Serving Prometheus metrics and telling Prometheus where they are: a small HTTP server that knows when a
scrape has been delivered (:class:`ScrapeClock`, used by a process that stops to deliver its last state), and the
file_sd lists the launcher writes and links into monitoring/targets/. Standard library and prometheus_client only.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

__all__ = [
    "MetricsPortError",
    "ScrapeClock",
    "file_sd_target",
    "link_file_sd",
    "read_file_sd",
    "serve_registry",
    "write_file_sd",
]


class MetricsPortError(OSError):
    """The metrics HTTP port cannot be bound (already in use, or not permitted)."""


class ScrapeClock:
    """When this process's /metrics was last delivered, and how often: lets a process that stops deliver its
    last state (tag_up 0, a run's final state) to the Prometheus that scrapes it, without waiting when nobody
    does. Ticked once a response has been written to the socket, not when it is computed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0
        self.times: deque[float] = deque(maxlen=2)

    def tick(self) -> None:
        with self._cond:
            self.count += 1
            self.times.append(time.monotonic())
            self._cond.notify_all()

    def wait_next(self, max_wait_s: float = 10.0) -> bool:
        """Wait for the next scrape (at most 3 observed intervals + 1 s, and ``max_wait_s``: a loaded machine
        delays scrapes). Returns False at once when nothing ever scraped, or when none came in time."""
        with self._cond:
            if not self.count:
                return False
            interval = self.times[-1] - self.times[0] if len(self.times) == 2 else max_wait_s
            timeout = min(max_wait_s, 3 * interval + 1.0)
            seen = self.count
            return self._cond.wait_for(lambda: self.count > seen, timeout)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """No access log on stderr (a scrape every second would flood the process's log)."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Delivered:
    """A WSGI body whose ``close()`` (called by wsgiref once the body is written to the socket) reports the
    scrape, if every chunk was written: a process may exit right after, and the scraper still reads it."""

    def __init__(self, body: Iterable[bytes], on_sent: Any):
        self._body, self._on_sent = body, on_sent
        self._written = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self._body
        self._written = True  # asked for more after writing the last chunk: no write failed

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
        if self._written:
            self._on_sent()


def serve_registry(
    registry: CollectorRegistry, port: int, addr: str, who: str, on_sent: Any = None
) -> tuple[Any, Any, int]:
    """Serve ``registry`` on ``addr:port`` (0: a free port) in a daemon thread: (server, thread, bound port).
    ``on_sent()`` is called after each response has been written (the scrape delivered). A port that cannot be
    bound raises MetricsPortError naming ``who``."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict, start_response: Any) -> Any:
        body = metrics_app(environ, start_response)
        return _Delivered(body, on_sent) if on_sent is not None else body

    try:
        httpd = make_server(addr, int(port), app, _Server, handler_class=_QuietHandler)
    except OSError as exc:
        raise MetricsPortError(
            exc.errno,
            f"metrics port {port} on {addr} cannot be bound for {who}: {exc.strerror or exc}; "
            f"another process (maybe another run) is using it: choose another port, or port 0 for a free one",
        ) from exc
    thread = threading.Thread(target=httpd.serve_forever, name=f"metrics {who}", daemon=True)
    thread.start()
    return httpd, thread, int(httpd.server_address[1])


def stop_serving(httpd: Any, thread: threading.Thread | None) -> None:
    """Stop a server from ``serve_registry`` and wait for its thread (both may be None: never served)."""
    if httpd is not None:
        httpd.shutdown()
        httpd.server_close()
    if thread is not None:
        thread.join(timeout=5)


# ---------------------------------------------------------------------- file_sd
def file_sd_target(
    addr: str,
    port: int,
    *,
    run: str,
    level: int | str | None,
    agent: str,
    host: str,
    role: str,
    config: str | None = None,
) -> dict[str, Any]:
    """One Prometheus file_sd entry: ``{"targets": ["addr:port"], "labels": {run, config, level, agent, host,
    role}}`` (``config`` defaults to ``run``; ``level`` None: no level label, as for the launcher)."""
    labels = {"run": run, "config": config or run, "agent": agent, "host": host, "role": role}
    if level is not None:
        labels["level"] = str(level)
    return {"targets": [f"{addr}:{int(port)}"], "labels": labels}


def _check_targets(targets: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(targets):
        if not isinstance(entry, Mapping) or "targets" not in entry:
            raise ValueError(f"file_sd entry {i} must be a mapping with a 'targets' list, got {entry!r}")
        addrs = entry["targets"]
        if isinstance(addrs, str) or not all(isinstance(a, str) and ":" in a for a in addrs):
            raise ValueError(
                f"file_sd entry {i}: 'targets' must be a list of 'host:port' strings, got {addrs!r}"
            )
        labels = entry.get("labels", {}) or {}
        # Prometheus requires string label values (an int level would make the whole file invalid)
        out.append({"targets": list(addrs), "labels": {str(k): str(v) for k, v in labels.items()}})
    return out


def write_file_sd(path: str | Path, targets: Iterable[Mapping[str, Any]]) -> Path:
    """Write a Prometheus file_sd JSON list atomically (temporary file in the same folder, then os.replace),
    so Prometheus never reads a half-written file. Label values are written as strings. Returns the path."""
    path = Path(path)
    data = _check_targets(targets)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def read_file_sd(path: str | Path) -> list[dict[str, Any]]:
    """Read a file_sd JSON list (as written by :func:`write_file_sd`); a missing file reads as []."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    data = json.loads(text) if text.strip() else []
    if not isinstance(data, list):
        raise ValueError(f"{path}: a file_sd file holds a JSON list, got {type(data).__name__}")
    return _check_targets(data)


def link_file_sd(
    run_file: str | Path, targets_dir: str | Path | None = None, name: str | None = None
) -> Path:
    """Point ``monitoring/targets/<name>.json`` at a run's file_sd file with a *relative* symlink (works on the
    host and inside the docker-compose containers, which mount ``runs/`` beside the config). Returns the link."""
    run_file = Path(run_file).resolve()
    if targets_dir is None:
        targets_dir = Path(__file__).resolve().parent.parent / "monitoring" / "targets"
    targets_dir = Path(targets_dir).resolve()
    targets_dir.mkdir(parents=True, exist_ok=True)
    link = targets_dir / f"{name or run_file.parent.name}.json"
    rel = os.path.relpath(run_file, targets_dir)
    tmp = targets_dir / f".{link.name}.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(rel)
    os.replace(tmp, link)
    return link
