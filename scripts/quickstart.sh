#!/usr/bin/env bash
# One command on a fresh machine: install, then train the 3-level hierarchy on VMAS balance (a short run).
#   scripts/quickstart.sh [launcher options, e.g. --set run.total_env_steps=600000]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m tag_actors.launch configs/balance.toml "$@"
