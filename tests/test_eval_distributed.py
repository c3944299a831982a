"""``torchrun --nproc-per-node 2 -m visprune eval`` (gloo, CPU) gives the one-process results."""

import json
import os
import subprocess
import sys

import pytest

from visprune import testing as random_models
from visprune.evaluation import results as res
from visprune.apps.cli import main

COMPARED = ("n", "accuracy", "accuracy_by_type", "kept_tokens", "flops_per_sample", "flops_ratio",
            "grounding_recall", "skipped", "config", "missing")


@pytest.mark.subprocess
def test_two_processes_equal_one(tmp_path):
    model_dir = tmp_path / "m"
    model, proc = random_models.llava()
    model.save_pretrained(model_dir)
    proc.save_pretrained(model_dir)
    args = ["eval", "--model", str(model_dir), "--task", "shapes-vqa", "--num-samples", "5", "--method",
            "random:keep=0.5", "--method", "e-adaprune:energy=0.9", "--timing", "1", "--repeats", "1", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "visprune",
           *args, "--out", str(tmp_path / "two")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["settings"]["processes"] == 2 and one["settings"]["processes"] == 1
    assert [{k: r[k] for k in COMPARED} for r in two["methods"]] == [{k: r[k] for k in COMPARED} for r in one["methods"]]
    for row in one["methods"]:
        folder = res.method_dir(tmp_path / "two", "clean", row["method"])
        parts = sorted(p.name for p in folder.glob("part-*.jsonl"))
        assert parts == ["part-0.jsonl", "part-1.jsonl"]  # both ranks did work
        merged = [json.loads(x) for x in (folder.parent / f"{folder.name}.jsonl").read_text().splitlines()]
        single = [json.loads(x) for x in (res.method_dir(tmp_path / "one", "clean", row["method"]).parent /
                                           f"{folder.name}.jsonl").read_text().splitlines()]
        assert merged == single  # same records, same (task) order
