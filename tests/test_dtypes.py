"""Pruning runs in half precision (the GPU dtypes); scores are computed in float32 or float64."""

import pytest
import torch

from helpers import on

import visprune
from visprune import testing as T
from visprune.methods import parse_method

SPECS = ["atp:keep=0.5", "e-adaprune:energy=0.9", "visionzip:k=6", "divprune:k=6", "fastv:keep=0.5,llm_layer=1",
         "pool:k=4", "dart:k=6,llm_layer=1", "pdrop:keep=0.25"]


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu,
                                   pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@torch.no_grad()
def test_methods_run_in_half_precision(dtype, device):
    model, proc = T.llava()
    model = model.to(device, dtype)
    inputs = proc(images=T.images(2), text=[T.prompt("what colour is the star ?"), T.prompt("how many circle ?")],
                  return_tensors="pt", padding=True)
    inputs = on(inputs, device, dtype)
    for spec in SPECS:
        visprune.prune_(model, parse_method(spec).config, processor=proc)
        try:
            out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
            sel = visprune.last_selection(model)
        finally:
            visprune.unprune_(model)
        assert out.shape[1] == inputs["input_ids"].shape[1] + 3
        assert all(f.dtype == dtype and f.device.type == device for f in sel.kept_features)
        assert all(0 < len(k) <= 16 for k in sel.kept)
