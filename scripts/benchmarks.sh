#!/usr/bin/env bash
# Regenerate BENCHMARKS.md, benchmarks/*.json and docs/scaling.png: every CPU section, the throughput
# and scaling sections and the spectral-budget comparison (about 25 minutes on 2 cores).
# Every core by default (THREADS=N for fewer). llava-1.5-7b is counted on the meta device; WITH_7B=1
# also times it at real size on the CPU in bf16 (needs ~14 GB of free memory; 18 more minutes on 2
# cores with bf16 matrix units, AMX). The CUDA sections come from scripts/gpu_checks.sh.
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
# Video: a Qwen2.5-VL-shaped model on an 8-frame clip, with the temporal stage's own overhead
$V bench --geometry small-video --device cpu --repeats 3 --warmup 1 --method atp:keep=0.25 --method random:keep=0.25 \
  --method cls:keep=0.25 --method cls:keep=0.25,temporal=0.9 --json benchmarks/small-video.json \
  --markdown BENCHMARKS.md --quiet
$V bench --geometry llava-1.5-7b --device meta --method atp:keep=0.25 --method atp:keep=0.4 --method atp:keep=0.5 \
  --method cls:k=64 --method e-adaprune:energy=0.9 --json benchmarks/llava-1.5-7b.json --markdown BENCHMARKS.md --quiet
# Video at real size: Qwen2.5-VL-7B on a 32-frame 448 px clip (4,096 tokens), counted on the meta device
$V bench --geometry qwen2.5-vl-7b-video --device meta --method atp:keep=0.25 --method atp:keep=0.5 --method atp:keep=0.1 \
  --method cls:k=64 --method e-adaprune:energy=0.9 --method cls:keep=0.25,temporal=0.9 \
  --json benchmarks/qwen2.5-vl-7b-video.json --markdown BENCHMARKS.md --quiet
.venv/bin/python scripts/bench_energy.py --markdown BENCHMARKS.md
# Throughput: batch 8 with ragged per-sample budgets (ATP with E-AdaPrune's energy budget, about a quarter
# of the tokens on average), against the batch-1 loop and eager-attention scoring, in the same run
$V bench --geometry small --device cpu --batch-sizes 1,8 --repeats 3 --warmup 1 --method atp:keep=0.25 \
  --method atp:budget=energy,energy=0.96 --method fastv:keep=0.25 --loop bs1 --scoring eager \
  --json benchmarks/small-throughput.json --markdown BENCHMARKS.md --quiet
# Geometries that grow: several images per prompt, high resolution
for n in 2 4; do
  $V bench --geometry small --device cpu --batch-sizes 2 --images $n --repeats 3 --warmup 1 --method atp:keep=0.25 \
    --method atp:budget=energy,energy=0.96 --json benchmarks/small-images$n.json --markdown BENCHMARKS.md \
    --section small-images$n --quiet
done
$V bench --geometry small-hd --device cpu --batch-sizes 1 --repeats 3 --warmup 1 --method atp:keep=0.25 \
  --method atp:keep=0.05 --method atp:budget=energy,energy=0.96 --json benchmarks/small-hd-throughput.json \
  --markdown BENCHMARKS.md --quiet
# Video throughput: batches of clips of 8, 6, 4 and 2 frames, against the batch-1 loop
$V bench --geometry small-video --device cpu --batch-sizes 1,4 --repeats 3 --warmup 1 --method atp:keep=0.25 \
  --method random:keep=0.25 --method cls:keep=0.25,temporal=0.9 --loop bs1 \
  --json benchmarks/small-video-throughput.json --markdown BENCHMARKS.md --quiet
# Scaling: latency and throughput from every visual token down to 5%, batch 4
$V bench --geometry small --device cpu --batch-sizes 4 --repeats 3 --warmup 1 --method atp:keep=1.0 \
  --method atp:keep=0.75 --method atp:keep=0.5 --method atp:keep=0.25 --method atp:keep=0.1 --method atp:keep=0.05 \
  --json benchmarks/small-scaling.json --plot docs/scaling.png --markdown BENCHMARKS.md --section small-scaling --quiet
[ "${WITH_7B:-0}" = 1 ] || { echo "updated BENCHMARKS.md, benchmarks/*.json and docs/scaling.png (WITH_7B=1 also times llava-1.5-7b on the CPU)"; exit 0; }
$V bench --geometry llava-1.5-7b --device cpu --dtype bfloat16 --repeats 5 --warmup 2 --method atp:keep=0.25 \
  --method atp:keep=0.5 --method e-adaprune:energy=0.9 --method random:keep=0.25 \
  --json benchmarks/llava-1.5-7b-cpu.json --markdown BENCHMARKS.md --quiet
echo "updated BENCHMARKS.md and benchmarks/*.json"
