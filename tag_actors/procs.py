"""Saying why a process died (its exit code or signal, and the last lines of its log), and reading this
machine's /proc (a process's state letter, the live processes' argv).

Shared by the launcher, the model-server script and the tests' server fixtures, so that a server that dies under
a test (the model server on its first completion, Prometheus on a bad flag) is reported as "killed by SIGILL"
with its own last words, never as the "Remote end closed connection" its client saw.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

_SIGNAL_HINTS = {
    signal.SIGILL: "an instruction this CPU does not allow: a build tuned to another CPU",
    signal.SIGSEGV: "a memory fault",
    signal.SIGKILL: "killed from outside, or by the out-of-memory killer",
    signal.SIGBUS: "a bus error",
}


def describe_exit(returncode: int | None) -> str:
    """'exit code 3', 'killed by SIGILL (…)', or 'still running'. Shells report a signal as 128 + N."""
    if returncode is None:
        return "still running"
    signum = -returncode if returncode < 0 else returncode - 128 if 128 < returncode < 160 else 0
    if not signum:
        return f"exit code {returncode}"
    try:
        sig = signal.Signals(signum)
    except ValueError:
        return f"exit code {returncode}"
    hint = _SIGNAL_HINTS.get(sig)
    return f"killed by {sig.name}" + (f" ({hint})" if hint else "")


def log_tail(path: Path | str | None, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, or a note saying why there are none."""
    if path is None:
        return "(no log kept)"
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        return f"(no log at {path}: {e.strerror})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def death_report(what: str, proc: subprocess.Popen, log_path: Path | str | None, lines: int = 20) -> str:
    """One message for a process that stopped when it should not have: who, how, and its last log lines."""
    proc.poll()
    return f"{what} (pid {proc.pid}) {describe_exit(proc.returncode)}; last lines of {log_path}:\n" + log_tail(
        log_path, lines)


def process_state(pid: int) -> str:
    """The one-letter state of a process in /proc (R, S, D, T, t, Z, ...); '' when it is gone or unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def process_argv(pid: int) -> list[str] | None:
    """The argv of a live (not zombie) process; None when it is gone, a zombie or unreadable."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return None
    return argv if process_state(pid) not in ("", "Z") else None


def live_processes() -> dict[int, list[str]]:
    """pid -> argv of every live, not zombie, process of this machine but the caller's own."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and (argv := process_argv(int(entry))) is not None:
            out[int(entry)] = argv
    return out
