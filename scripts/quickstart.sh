#!/usr/bin/env bash
# One command on a fresh machine: install (with the plot and tensorboard extras), then train the 3-level hierarchy
# on VMAS balance (a short run) with TensorBoard logging; the run ends with its summary and a learning-curve PNG.
#   scripts/quickstart.sh [launcher options, e.g. --set run.total_env_steps=600000]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
"${PYTHON:-python3}" -m pip install --quiet -e ".[dev,plot,tensorboard]"
exec "${PYTHON:-python3}" -m tag_actors.launch balance --set 'run.loggers=["csv","tensorboard","plot"]' "$@"
