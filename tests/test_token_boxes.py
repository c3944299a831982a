"""Where each visual token lies in the picture (``Adapter.token_boxes``), for every architecture with one,
and the overlays drawn from it (``kept_overlays``) on any-resolution, variable-grid and tiled models and
BLIP-2's ViT cut."""

import numpy as np
import pytest
import torch
from PIL import Image

import visprune
from visprune import prune_, unprune_
from visprune import testing as T
from visprune.adapters import get_adapter
from visprune.evaluation.plots import kept_overlays
from visprune.methods import Method

from cases import CASES, QUESTIONS

# BLIP-2 / InstructBLIP's query cut prunes Q-Former queries, which lie nowhere in the picture
PICTURED = [name for name, case in CASES.items() if case.config.get("cut") != "query"]


@pytest.fixture(scope="module", params=PICTURED)
def built(request):
    case = CASES[request.param]
    model, proc = case.build()
    return request.param, case, model, proc


@torch.no_grad()
def _entry(case, model, proc, picture):
    """The image's entry as the pruned model's pipeline sees it (keep-all): its tokens and the protected ones."""
    prune_(model, case.prune_config(scorer="random", keep=1.0), processor=proc)
    try:
        model(**case.inputs(proc, [picture], QUESTIONS[:1]))
        enc = visprune.last_selection(model).encoded
    finally:
        unprune_(model)
    return enc, 0


def _check_tiling(boxes: torch.Tensor) -> tuple[float, float, float, float]:
    """The boxes lie in the picture, overlap nowhere and leave no gap in their bounding box (returned)."""
    assert bool(((boxes >= 0) & (boxes <= 1)).all()) and bool((boxes[:, 2:] > boxes[:, :2]).all())
    x0, y0 = boxes[:, 0].min().item(), boxes[:, 1].min().item()
    x1, y1 = boxes[:, 2].max().item(), boxes[:, 3].max().item()
    wide = (boxes[:, None, 2].minimum(boxes[None, :, 2]) - boxes[:, None, 0].maximum(boxes[None, :, 0])).clamp(min=0)
    tall = (boxes[:, None, 3].minimum(boxes[None, :, 3]) - boxes[:, None, 1].maximum(boxes[None, :, 1])).clamp(min=0)
    overlap = (wide * tall).fill_diagonal_(0)
    assert overlap.max().item() < 1e-9
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum().item()
    assert area == pytest.approx((x1 - x0) * (y1 - y0), abs=1e-9)
    return x0, y0, x1, y1


@pytest.mark.parametrize("turn", [False, True])
def test_token_boxes_tile_each_view_of_the_picture(built, turn):
    name, case, model, proc = built
    size = case.image_size[::-1] if turn else case.image_size
    picture = T.images(1, size=size)[0]
    laid = get_adapter(model).token_boxes(model, proc, picture, case.prune_config())
    enc, i = _entry(case, model, proc, picture)
    # one box per token the language model receives for this picture; none for structure tokens
    assert len(laid) == enc.features[i].shape[0]
    structure = torch.isnan(laid.boxes).any(-1)
    assert torch.equal(structure, laid.panel < 0)
    assert torch.equal(structure, enc.protected[i].cpu())  # newlines, [CLS]: what the adapter protects
    if enc.crops is not None:  # LLaVA-NeXT: the base image is panel 0, its crops panel 1
        crop = enc.crops[i].cpu()
        assert torch.equal(structure, crop < 0) and torch.equal(laid.panel == 0, crop == 0)
    for panel in laid.panel[~structure].unique().tolist():
        x0, y0, x1, y1 = _check_tiling(laid.boxes[laid.panel == panel])
        if name == "llava" and size[0] != size[1]:  # the centre square the processor crops
            w, h = size
            assert (x1 - x0) * w == pytest.approx(min(w, h), abs=1) and (y1 - y0) * h == pytest.approx(min(w, h), abs=1)
        else:  # the whole picture
            assert (x0, y0, x1, y1) == pytest.approx((0, 0, 1, 1), abs=1e-9)


@pytest.mark.parametrize("size", [(2 * T.IMAGE, T.IMAGE), (T.IMAGE, 2 * T.IMAGE), (100, 70)])
def test_llava_next_crop_tokens_lie_in_the_crop_the_model_packed_them_from(size):
    """Each crop token's box, put back on the processor's padded canvas, falls in the crop that
    ``pack_image_features`` took it from (``Encoded.crops``, read through the model's own packing)."""
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

    from visprune.adapters.boxes import fit_and_pad

    case = CASES["llava_next"]
    model, proc = case.build()
    picture = T.images(1, size=size)[0]
    laid = get_adapter(model).token_boxes(model, proc, picture)
    enc, i = _entry(case, model, proc, picture)
    tile = model.config.vision_config.image_size
    tall, wide = get_anyres_image_grid_shape(size[::-1], model.config.image_grid_pinpoints, tile)
    x0, y0, x1, y1 = fit_and_pad(size, (wide * tile, tall * tile))
    crops = laid.panel == 1
    assert crops.any()
    cx = (laid.boxes[crops, 0] + laid.boxes[crops, 2]) / 2 * (x1 - x0) + x0
    cy = (laid.boxes[crops, 1] + laid.boxes[crops, 3]) / 2 * (y1 - y0) + y0
    assert torch.equal((cy // tile).long() * wide + (cx // tile).long() + 1, enc.crops[i].cpu()[crops])


def test_query_cut_has_no_boxes():
    case = CASES["blip2-query"]
    model, proc = case.build()
    picture = T.images(1)[0]
    assert get_adapter(model).token_boxes(model, proc, picture, case.prune_config()) is None
    assert get_adapter(model).token_boxes(model, proc, picture) is None  # the default cut is "query"
    assert not kept_overlays(model, proc, None, [(picture, "q", "q", None)], [Method("none", None)], None)


def test_onevision_boxes_follow_its_interpolation_to_the_token_cap():
    """Past its token cap (``vision_aspect_ratio``), OneVision resamples the crops' grid: fewer, larger boxes."""
    case = CASES["llava_onevision"]
    model, proc = case.build()
    picture = T.images(1, size=(2 * T.IMAGE, T.IMAGE))[0]
    before = get_adapter(model).token_boxes(model, proc, picture)
    model.config.vision_aspect_ratio = "anyres_max_1"
    adapter = get_adapter(model)
    laid = adapter.token_boxes(model, proc, picture)
    assert len(laid) < len(before)
    # the test processor (LLaVA-NeXT's, for want of torchvision) does not count tokens past the cap, so
    # the model's own image features are compared directly
    pixels = proc.image_processor(images=[picture], return_tensors="pt")
    with torch.no_grad():
        enc = adapter.encode(model, dict(pixels), frozenset(), visprune.PruneConfig(scorer="random", keep=1.0))
    i = 0
    assert len(laid) == enc.features[i].shape[0]
    structure = torch.isnan(laid.boxes).any(-1)
    assert torch.equal(structure, enc.protected[i].cpu())
    for panel in (0, 1):
        assert _check_tiling(laid.boxes[laid.panel == panel]) == pytest.approx((0, 0, 1, 1), abs=1e-9)


@pytest.mark.parametrize("name,panels", [("qwen2_vl", 1), ("llava_next", 2), ("internvl", 2), ("blip2-vit", 1)])
def test_kept_overlays_draw_any_resolution_and_tiled_models(tmp_path, name, panels):
    case = CASES[name]
    model, proc = case.build()
    pictures = T.images(2, size=case.image_size)

    @torch.no_grad()
    def run_one(image, question):
        model(**case.inputs(proc, [image], [question]))

    items = [(im, q, q, None) for im, q in zip(pictures, QUESTIONS)]
    methods = [Method("none", None), Method("random", case.prune_config(scorer="random", keep=0.25))]
    path = tmp_path / "overlays.png"
    assert kept_overlays(model, proc, run_one, items, methods, path)
    sheet = Image.open(path).convert("L")
    panel = 224
    assert sheet.size[0] >= 2 * panels * panel  # two methods, each one panel per view
    # the pruned column is darker than the unpruned one: three quarters of its tokens are dimmed
    top = 30  # the column captions
    width = panels * (panel + 4) - 4
    left = np.asarray(sheet.crop((6, top, 6 + width, top + panel)), dtype=float)
    right = np.asarray(sheet.crop((6 + width + 6, top, 6 + 2 * width + 6, top + panel)), dtype=float)
    picture = left < 255  # not the white margin around a picture that is not square
    assert picture.mean() > 0.4 and right[picture].mean() < 0.6 * left[picture].mean()
