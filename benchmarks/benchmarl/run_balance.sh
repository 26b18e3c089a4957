#!/usr/bin/env bash
# Sequential BenchMARL MAPPO then IPPO on VMAS balance (4 agents, max_steps 100), seed 0, then merge.
# Usage: bash benchmarks/benchmarl/run_balance.sh [FRAMES]   (run from the repo root)
set -euo pipefail
FRAMES="${1:-300000}"
PY="${BENCHMARL_PY:-/work/benchmarl-venv/bin/python}"
R=benchmarks/results/benchmarl_runs
mkdir -p "$R" /work/benchmarl-runs/logs
for ALGO in mappo ippo; do
  nice -n 5 "$PY" benchmarks/benchmarl/run.py run --algorithm "$ALGO" --task vmas/balance \
    --n-agents 4 --max-steps 100 --seed 0 --frames "$FRAMES" --threads 1 \
    --out "$R/balance_${ALGO}_s0" > "/work/benchmarl-runs/logs/balance_${ALGO}_s0.log" 2>&1
done
"$PY" benchmarks/benchmarl/run.py merge --inputs "$R/balance_mappo_s0" "$R/balance_ippo_s0" \
  --out-csv benchmarks/results/benchmarl_balance.csv --out-json benchmarks/results/benchmarl_balance.json \
  --extra "{\"frames_budget\": $FRAMES, \"driver\": \"bash benchmarks/benchmarl/run_balance.sh $FRAMES\"}"
