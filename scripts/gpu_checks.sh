#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: what CPU-only CI cannot check, then the GPU sections of BENCHMARKS.md.
#   1. pytest -m gpu: the syncs CUDA itself reports for a pruned prefill (at most the two reads that
#      tests/test_host_reads.py counts on CPU, the same for 1 and 4 images), every kind of method in
#      bf16 and fp16 on CUDA, and the benchmark's CUDA fields.
#   2. visprune bench at llava-1.5-7b, real size (random weights, ~14 GB in bf16), on CUDA in bf16:
#      latency against FLOPs, overhead, memory, KV cache and CUDA syncs per prefill; then `small` on CUDA;
#      then qwen2.5-vl-7b-video (Qwen2.5-VL-7B at real size, ~17 GB in bf16, on a 32-frame 448 px clip,
#      4,096 video tokens) with the temporal stage's own overhead, at batch 1 and in batches of clips.
#   3. Throughput, as scripts/benchmarks.sh measures it on the CPU: llava-1.5-7b at batch 1, 8 and 32
#      with ragged budgets against the batch-1 loop and eager-attention scoring, several images per
#      prompt, small-hd, and the scaling plot (docs/scaling-cuda.png).
# Needs a Python with a CUDA build of torch, pytest, and this package installed (PYTHON=..., default
# .venv/bin/python; scripts/setup.sh installs a CPU build, which cannot be used here). On an offline GPU
# image that already has torch, transformers and pytest: python3 -m pip install --no-deps -e . &&
# PYTHON=python3 scripts/gpu_checks.sh (the tests were written against transformers 5.23).
# Not yet run: no GPU was lent to the task that wrote it (a guess: minutes on one H100).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script is for a GPU machine')"
"$PY" -m pytest -m gpu -q tests/test_gpu.py tests/test_dtypes.py  # the files with gpu tests: no extras needed
V=("$PY" -m visprune)
"${V[@]}" bench --geometry llava-1.5-7b --device cuda --dtype bfloat16 --repeats 7 --warmup 2 \
  --method atp:keep=0.25 --method atp:keep=0.4 --method atp:keep=0.5 --method cls:k=64 \
  --method e-adaprune:energy=0.9 --method atp:budget=energy,energy=0.9 --method random:keep=0.25 \
  --method fastv:keep=0.25 --json benchmarks/llava-1.5-7b-cuda.json --markdown BENCHMARKS.md --quiet
"${V[@]}" bench --geometry small --device cuda --dtype bfloat16 --repeats 7 --warmup 2 \
  --method atp:keep=0.25 --method e-adaprune:energy=0.9 --method random:keep=0.25 \
  --json benchmarks/small-cuda.json --markdown BENCHMARKS.md --quiet
"${V[@]}" bench --geometry qwen2.5-vl-7b-video --device cuda --dtype bfloat16 --repeats 5 --warmup 2 \
  --method atp:keep=0.25 --method random:keep=0.25 --method cls:keep=0.25 --method cls:keep=0.25,temporal=0.9 \
  --json benchmarks/qwen2.5-vl-7b-video-cuda.json --markdown BENCHMARKS.md --quiet
"${V[@]}" bench --geometry qwen2.5-vl-7b-video --device cuda --dtype bfloat16 --batch-sizes 1,4 --repeats 3 --warmup 1 \
  --method atp:keep=0.25 --method cls:keep=0.25,temporal=0.9 --loop bs1 \
  --json benchmarks/qwen2.5-vl-7b-video-throughput-cuda.json --markdown BENCHMARKS.md --quiet
"${V[@]}" bench --geometry llava-1.5-7b --device cuda --dtype bfloat16 --batch-sizes 1,8,32 --repeats 5 --warmup 2 \
  --method atp:keep=0.25 --method atp:budget=energy,energy=0.96 --method fastv:keep=0.25 --loop bs1 --scoring eager \
  --json benchmarks/llava-1.5-7b-throughput-cuda.json --markdown BENCHMARKS.md --quiet
for n in 2 4; do
  "${V[@]}" bench --geometry llava-1.5-7b --device cuda --dtype bfloat16 --batch-sizes 8 --images $n --repeats 5 \
    --warmup 2 --method atp:keep=0.25 --method atp:budget=energy,energy=0.96 \
    --json benchmarks/llava-1.5-7b-images$n-cuda.json --markdown BENCHMARKS.md --section llava-1.5-7b-images$n-cuda --quiet
done
"${V[@]}" bench --geometry small-hd --device cuda --dtype bfloat16 --batch-sizes 1,8 --repeats 5 --warmup 2 \
  --method atp:keep=0.25 --method atp:keep=0.05 --method atp:budget=energy,energy=0.96 \
  --json benchmarks/small-hd-throughput-cuda.json --markdown BENCHMARKS.md --quiet
"${V[@]}" bench --geometry llava-1.5-7b --device cuda --dtype bfloat16 --batch-sizes 8 --repeats 5 --warmup 2 \
  --method atp:keep=1.0 --method atp:keep=0.75 --method atp:keep=0.5 --method atp:keep=0.25 --method atp:keep=0.1 \
  --method atp:keep=0.05 --json benchmarks/llava-1.5-7b-scaling-cuda.json --plot docs/scaling-cuda.png \
  --markdown BENCHMARKS.md --section llava-1.5-7b-scaling-cuda --quiet
echo "updated BENCHMARKS.md (the -cuda sections), benchmarks/*-cuda.json and docs/scaling-cuda.png"
