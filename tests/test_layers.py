"""The import-layer contract (pyproject.toml [tool.importlinter]) holds, and it does catch an upward import."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(src: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


@pytest.mark.subprocess
def test_the_tree_keeps_its_layers(tmp_path):
    run = _lint(ROOT / "src", tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.subprocess
def test_an_upward_import_breaks_the_contract(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "visprune", src / "visprune", ignore=shutil.ignore_patterns("checkpoint", "__pycache__"))
    ops = src / "visprune" / "ops.py"
    ops.write_text(ops.read_text() + "\nfrom .transform import prune_  # upward: ops is the bottom layer\n")
    run = _lint(src, tmp_path)
    assert run.returncode != 0
    assert "BROKEN" in run.stdout and "visprune.ops -> visprune.transform" in run.stdout, run.stdout
