#!/usr/bin/env bash
# Regenerate everything in the repo that describes the bundled shapes model, after a retrain
# (python scripts/train_shapes.py): its held-out and caption numbers, the demo pictures, the
# all-methods comparison, the tuned defaults, the lmms-eval table's runs and the viewer picture.
# About 13 minutes with THREADS=2 on a 2-core CPU (2026-11-22). The README's tables and
# docs/lmms_eval.md are then edited by hand from the files named at the end (every number there
# comes from one of these commands).
#
#     ./scripts/shapes_docs.sh            # 1 thread (THREADS=2 for both cores); the demo uses torch's default
#
# The position probe runs first: a checkpoint that needs its image tokens at their original
# positions fails under every pre-LLM pruning method (see the README), so it must not be bundled.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
V=.venv/bin/visprune
CK=src/visprune/shapes/checkpoint
export OMP_NUM_THREADS=${THREADS:-1}

step() { echo; echo "== $*"; }

step "position probe (full / compacted / original positions should agree)"
$PY scripts/probe_positions.py "$CK"

step "position readout (column at the object's patch: tower, language-model input, each layer)"
$PY scripts/probe_readout.py "$CK"

step "held-out accuracy, 1,000 questions of seed 31337 -> runs/heldout1000/summary.md"
rm -rf runs/heldout1000
$V eval --model shapes --task shapes-vqa --n 1000 --seed 31337 --method none --no-flops --timing 0 \
  --out runs/heldout1000 --quiet

step "captions, 100 held-out scenes -> runs/cap/summary.md"
rm -rf runs/cap
$V eval --model shapes --task shapes-caption --n 100 --method none --timing 0 --out runs/cap --quiet

step "demo -> docs/demo/ (README demo table: visprune-demo/results.md)"
rm -rf visprune-demo
env -u OMP_NUM_THREADS $V demo --quiet
cp visprune-demo/results.md visprune-demo/overlays.png visprune-demo/accuracy_vs_flops.png docs/demo/

step "all methods at matched budgets -> docs/comparison.*"
rm -rf runs/comparison-shapes
$PY scripts/shapes_comparison.py

step "tuned defaults -> docs/defaults.* (README 'Choices')"
$PY scripts/tune_defaults.py --n 150 --seed 20000 --k 32

step "lmms-eval, three bundled tasks -> runs/lmms-*/ (docs/lmms_eval.md table)"
tasks="$($PY -m visprune.integrations.lmms_tasks)"
for args in "method=none" "method=atp,keep=0.25"; do
  out="runs/lmms-${args//[=,.]/-}"
  rm -rf "$out" && mkdir -p "$out"
  HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 .venv/bin/lmms-eval --model visprune \
    --model_args "pretrained=shapes,$args" \
    --tasks visprune_shapes,visprune_shapes_mc,visprune_shapes_2round \
    --include_path "$tasks" --output_path "$out/" > "$out/log.txt" 2>&1 \
    || { tail -20 "$out/log.txt"; exit 1; }
  echo "$args:"; grep -E "^\|" "$out/log.txt"
done

step "viewer picture -> docs/viewer.png"
$PY scripts/screenshot_viewer.py || echo "viewer picture skipped (see scripts/install_browser.sh)"

echo
echo "Now update from these files: the README status table ($CK/metrics.json), the 1,000-question"
echo "line (runs/heldout1000/summary.md), CIDEr (runs/cap/summary.md), the demo table"
echo "(docs/demo/results.md), the comparison table (docs/comparison.md), 'Choices' (docs/defaults.md)"
echo "and docs/lmms_eval.md (the tables printed above)."
