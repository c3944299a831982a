#!/usr/bin/env bash
# Regenerate BENCHMARKS.md and benchmarks/*.json: every CPU section and the spectral-budget comparison.
# Every core by default (THREADS=N for fewer). llava-1.5-7b is counted on the meta device,
# then timed at real size on the CPU in bf16 (needs ~14 GB of free memory; on a CPU with bf16 matrix
# units, AMX, that took 18 of the script's 27 minutes on 2 cores). The CUDA sections come from scripts/gpu_checks.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${THREADS:-$(nproc)}
V=.venv/bin/visprune
$V bench --geometry small --device cpu --repeats 7 --warmup 2 --method atp:keep=0.25 --method atp:keep=0.5 \
  --method e-adaprune:energy=0.9 --method atp:budget=energy,energy=0.9 --method random:keep=0.25 \
  --method fastv:keep=0.25 --json benchmarks/small.json --markdown BENCHMARKS.md --quiet
$V bench --geometry small --device cpu --repeats 5 --warmup 2 --compile --method atp:keep=0.25 --method e-adaprune:energy=0.9 \
  --method random:keep=0.25 --json benchmarks/small-compiled.json --markdown BENCHMARKS.md --quiet
$V bench --geometry tiny --device cpu --method atp:keep=0.25 --method e-adaprune:energy=0.9 \
  --method random:keep=0.25 --method cls:keep=0.5 --json benchmarks/tiny.json --markdown BENCHMARKS.md --quiet
$V bench --geometry llava-1.5-7b --device meta --method atp:keep=0.25 --method atp:keep=0.4 --method atp:keep=0.5 \
  --method cls:k=64 --method e-adaprune:energy=0.9 --json benchmarks/llava-1.5-7b.json --markdown BENCHMARKS.md --quiet
.venv/bin/python scripts/bench_energy.py --markdown BENCHMARKS.md
$V bench --geometry llava-1.5-7b --device cpu --dtype bfloat16 --repeats 5 --warmup 2 --method atp:keep=0.25 \
  --method atp:keep=0.5 --method e-adaprune:energy=0.9 --method random:keep=0.25 \
  --json benchmarks/llava-1.5-7b-cpu.json --markdown BENCHMARKS.md --quiet
echo "updated BENCHMARKS.md and benchmarks/*.json"
