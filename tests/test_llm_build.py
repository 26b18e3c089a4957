"""The model server is built to run on any x86-64 CPU we support, and says why it died when it does.

A llama.cpp compiled with native CPU tuning on a machine whose CPU advertises AMX executes `tileloadd`, and the
server dies with SIGILL on its first completion wherever AMX may not be used (scripts/install_llm.sh says why).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tag_actors.procs import death_report, describe_exit

ROOT = Path(__file__).resolve().parent.parent
AMX_MNEMONICS = ("tileloadd", "tileloaddt1", "tilestored", "tdpbf16ps", "tdpbssd", "tilezero", "ldtilecfg")


def ggml_cpu_library() -> Path:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None:
        pytest.skip("llama-cpp-python is not installed (scripts/setup.sh --llm installs it)")
    libs = sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "**", "libggml-cpu*.so*"), recursive=True))
    assert libs, f"no libggml-cpu library inside {os.path.dirname(spec.origin)}"
    return Path(libs[0])


def test_installed_model_server_has_no_amx_instruction():
    lib = ggml_cpu_library()
    assert shutil.which("objdump"), "objdump (binutils) is needed to inspect the build"
    listing = subprocess.run(["objdump", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    assert "vaddps" in listing or "vfmadd" in listing, "the disassembly holds no vector code: wrong library?"
    found = {m: listing.count(f"\t{m} ") + listing.count(f"\t{m}\n") for m in AMX_MNEMONICS}
    assert not any(found.values()), f"{lib} holds AMX instructions {found}: rebuild with scripts/install_llm.sh"


def test_install_script_check_agrees():
    ggml_cpu_library()
    r = subprocess.run(["bash", str(ROOT / "scripts/install_llm.sh"), "--check"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHON=sys.executable))
    assert r.returncode == 0, r.stderr


def test_a_crashed_process_is_described_by_its_signal_and_last_words(tmp_path):
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", "import os, signal, sys; print('loading model'); "
                                 "sys.stdout.flush(); os.kill(os.getpid(), signal.SIGILL)"], stdout=out)
    proc.wait(30)
    report = death_report("model server", proc, log)
    assert "killed by SIGILL" in report and "another CPU" in report
    assert report.rstrip().endswith("loading model")


def test_exit_codes_and_shell_signals_are_told_apart():
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGKILL).startswith("killed by SIGKILL")
    assert describe_exit(128 + signal.SIGILL).startswith("killed by SIGILL")  # as a shell reports it
    assert describe_exit(None) == "still running"


@pytest.mark.slow
def test_llm_server_script_names_how_the_server_died(tmp_path):
    """A model file that is not a GGUF: the server exits while loading, and the script says how, with its log."""
    ggml_cpu_library()
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"this is not a gguf file\n" * 100)
    log = tmp_path / "server.log"
    r = subprocess.run([sys.executable, str(ROOT / "scripts/llm_server.py"), "--port", "0", "--model", str(bad),
                        "--log", str(log), "--ready-timeout", "60"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "exit code" in r.stderr or "killed by" in r.stderr, r.stderr
    assert f"last lines of {log}" in r.stderr, r.stderr
    assert log.read_text(errors="replace").strip().splitlines()[-1] in r.stderr
