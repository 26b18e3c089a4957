#!/usr/bin/env bash
# Idempotent setup of BenchMARL in its own venv (outside the repo: /work/main/.gitignore
# only ignores ".venv/", so a ".venv-benchmarl" inside the repo would not be ignored).
# torch==2.13.0 (the pinned CPU wheel, as scripts/setup.sh installs it) first, then
# BenchMARL constrained to that torch, then drop torchvision (only video logging uses it).
# Usage: bash benchmarks/benchmarl/setup.sh [--with-pettingzoo]
set -euo pipefail
VENV="${BENCHMARL_VENV:-/work/benchmarl-venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
P="$VENV/bin/python"
"$P" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
CONS="$VENV/torch-constraints.txt"
echo "torch==2.13.0" > "$CONS"
"$P" -m pip install -q "torch==2.13.0"
"$P" -m pip install -q -c "$CONS" "benchmarl" "vmas"
if [ "${1:-}" = "--with-pettingzoo" ]; then
  "$P" -m pip install -q -c "$CONS" "pettingzoo[mpe]==1.24.3"  # [mpe] brings pygame (2.3.0), needed to import pettingzoo.mpe
fi
"$P" -m pip uninstall -y -q torchvision 2>/dev/null || true
"$P" - <<'PYEOF'
import importlib.metadata as m
for p in ["torch", "torchrl", "tensordict", "benchmarl", "vmas", "pettingzoo"]:
    try:
        print(f"{p}=={m.version(p)}")
    except m.PackageNotFoundError:
        print(f"{p}: not installed")
PYEOF
echo "$P"
