"""scripts/train_shapes.py and scripts/probe_shapes_lm.py run end to end at toy size."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from visprune import shapes

ROOT = Path(__file__).resolve().parents[1]
needs_clip = pytest.mark.skipif(
    not (shapes.clip_path() / "config.json").is_file(), reason="no bundled shapes CLIP"
)


def _run(args, tmp_path):
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


@needs_clip
def test_stage2_runs_saves_and_reloads_with_the_grounding_loss(tmp_path):
    shutil.copytree(shapes.clip_path(), tmp_path / "clip")
    _run(["scripts/train_shapes.py", "--skip-stage1", "--out", str(tmp_path), "--stage2-steps", "3",
          "--pool", "64", "--batch2", "4", "--monitor-n", "8", "--final-n", "5", "--eval-every", "2",
          "--grounding-weight", "1", "--init", "0.1"], tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["heldout"]["n"] == 5 and 0.0 <= metrics["heldout"]["overall"] <= 1.0
    assert metrics["args"]["init"] == 0.1 and metrics["grounding_loss"]["weight"] == 1.0
    assert [h["step"] for h in metrics["stage2"]["history"]] == [0, 2]  # every 2nd step, the last included
    log = (tmp_path / "train_log.txt").read_text()
    assert "grounding" in log and "held-out acc" in log
    model, processor = shapes.load(tmp_path)  # the real loading path on what the script wrote
    assert model.config.text_config.initializer_range == 0.1
    s = shapes.make_samples(n=1, seed=5)[0]
    assert isinstance(shapes.answer(model, processor, s.image, s.question), str)


@needs_clip
def test_probe_reports_an_escape_step_or_none(tmp_path):
    out = _run(["scripts/probe_shapes_lm.py", "--types", "colour", "--max-objects", "1", "--scenes", "32",
                "--seconds", "2", "--batch", "4"], tmp_path)
    assert "train answer accuracy" in out and "escape step:" in out
