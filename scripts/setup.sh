#!/usr/bin/env bash
# Install tag_actors and what it needs into the current Python (use a venv first if you want one).
#
#   scripts/setup.sh                 # torch (CPU, pinned) + tag_actors with its test tools
#   scripts/setup.sh --llm           # + the local model server for llm agents (a portable llama.cpp build: ~5 min)
#   scripts/setup.sh --prometheus    # + Debian's prometheus/promtool (root or sudo)
#   scripts/setup.sh --slurm         # + Debian's slurm-wlm and munge, for scripts/slurm_local.sh (root or sudo)
#   scripts/setup.sh --ray           # + Ray (the `ray` extra: the Ray backend and its tests)
#
# torch goes first and pinned: an unpinned torch (or one pulled in by another package) is a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
extras="dev"
llm=0
for arg in "$@"; do
    case "$arg" in
        --llm) llm=1 ;;
        --ray) extras="$extras,ray" ;;
        --prometheus) bash scripts/install_prometheus.sh ;;
        --slurm) bash scripts/install_slurm.sh ;;
        *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done
"$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q -e ".[$extras]"
if [[ "$llm" == 1 ]]; then
    # Not the `llm` extra: pip would compile llama.cpp tuned to this CPU (see scripts/install_llm.sh).
    PYTHON="$PY" bash scripts/install_llm.sh
fi
"$PY" -c "import tag_actors, torch, vmas, zmq; print(f'tag_actors ready: torch {torch.__version__}, pyzmq {zmq.__version__}')"
