#!/usr/bin/env bash
# Regenerate BENCHMARKS.md and benchmarks/*.json: every geometry's section and the spectral-budget
# comparison. One CPU thread by default (set THREADS=2 for both cores); about 25 minutes on CPU.
# llava-1.5-7b is counted on the meta device here; on a GPU run it with --device cuda --dtype bfloat16.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${THREADS:-1}
V=.venv/bin/visprune
$V bench --geometry small --repeats 7 --warmup 2 --method atp:keep=0.25 --method atp:keep=0.5 \
  --method e-adaprune:energy=0.9 --method atp:budget=energy,energy=0.9 --method random:keep=0.25 \
  --method fastv:keep=0.25 --json benchmarks/small.json --markdown BENCHMARKS.md --quiet
$V bench --geometry small --repeats 5 --warmup 2 --compile --method atp:keep=0.25 --method e-adaprune:energy=0.9 \
  --method random:keep=0.25 --json benchmarks/small-compiled.json --markdown BENCHMARKS.md --quiet
$V bench --geometry tiny --json benchmarks/tiny.json --markdown BENCHMARKS.md --quiet
$V bench --geometry llava-1.5-7b --method atp:keep=0.25 --method atp:keep=0.4 --method atp:keep=0.5 \
  --method cls:k=64 --method e-adaprune:energy=0.9 --json benchmarks/llava-1.5-7b.json --markdown BENCHMARKS.md --quiet
.venv/bin/python scripts/bench_energy.py --markdown BENCHMARKS.md
echo "updated BENCHMARKS.md and benchmarks/*.json"
