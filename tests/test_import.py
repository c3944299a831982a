"""`import visprune` needs torch and transformers only, and does not initialise CUDA."""

import subprocess
import sys

import pytest


@pytest.mark.subprocess
def test_import_pulls_no_extras_and_no_cuda():
    code = (
        "import sys, torch, visprune\n"
        "extras = ['matplotlib', 'pycocoevalcap', 'lmms_eval', 'selenium', 'datasets', 'visprune.evaluation',\n"
        "          'visprune.shapes', 'visprune.apps.serve', 'visprune.apps.bench']\n"
        "loaded = [m for m in extras if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "assert not torch.cuda.is_initialized()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
