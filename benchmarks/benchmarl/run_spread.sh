#!/usr/bin/env bash
# Sequential BenchMARL MAPPO then IPPO on PettingZoo MPE simple_spread_v3 (N=4, max_cycles 100,
# continuous actions, local_ratio 0.5), seed 0, then merge. Needs setup.sh --with-pettingzoo.
# Usage: bash benchmarks/benchmarl/run_spread.sh [FRAMES]   (run from the repo root)
set -euo pipefail
FRAMES="${1:-60000}"
PY="${BENCHMARL_PY:-/work/benchmarl-venv/bin/python}"
R=benchmarks/results/benchmarl_runs
mkdir -p "$R" /work/benchmarl-runs/logs
for ALGO in ${ALGOS:-mappo ippo}; do
  nice -n 5 "$PY" benchmarks/benchmarl/run.py run --algorithm "$ALGO" --task pettingzoo/simple_spread \
    --n-agents 4 --max-steps 100 --seed 0 --frames "$FRAMES" --threads 1 \
    --out "$R/spread_${ALGO}_s0" > "/work/benchmarl-runs/logs/spread_${ALGO}_s0.log" 2>&1
done
INPUTS=(); for ALGO in ${ALGOS:-mappo ippo}; do INPUTS+=("$R/spread_${ALGO}_s0"); done
"$PY" benchmarks/benchmarl/run.py merge --inputs "${INPUTS[@]}" \
  --out-csv benchmarks/results/benchmarl_spread.csv --out-json benchmarks/results/benchmarl_spread.json \
  --extra "{\"frames_budget\": $FRAMES, \"driver\": \"bash benchmarks/benchmarl/run_spread.sh $FRAMES\"}"
