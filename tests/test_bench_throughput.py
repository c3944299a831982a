"""``visprune bench --batch-sizes``: throughput figures, the batch-1 loop and eager scoring on the tiny
geometry (speed is not asserted here; BENCHMARKS.md has the measurements)."""

import json

import pytest
import torch

from visprune import PruneConfig, last_kept, prune_, unprune_
from visprune.adapters.base import hidden_index_to_layer
from visprune.apps.bench import build_geometry
from visprune.apps.bench.eager import eager_scoring, reads_attention
from visprune.apps.bench.geometries import batch_inputs, graded_images, small_hd_processor
from visprune.apps.bench.throughput import throughput
from visprune.apps.cli import main
from visprune.testing import prompt

ROW = {"batch_size", "images_per_prompt", "method", "config", "kept_tokens", "visual_tokens_per_sample", "flops",
       "flops_ratio", "flops_limit", "prefill_latency_s", "generate_latency_s", "prefill_samples_per_s",
       "generate_samples_per_s", "prefill_throughput_ratio", "throughput_ratio", "limit_share", "overhead_s",
       "overhead_fraction", "peak_bytes", "peak_memory_ratio", "kv_cache_ratio"}
LOOP = {"prefill_latency_s", "generate_latency_s", "generate_samples_per_s", "batched_over_loop",
        "batched_over_loop_prefill", "same_kept_counts"}
EAGER = {"prefill_latency_s", "generate_latency_s", "qk_over_eager", "qk_over_eager_prefill", "peak_memory_ratio",
         "maps_kept", "same_selection"}
FASTV = "fastv:keep=0.25,llm_layer=1"  # the tiny language model has 2 layers


@pytest.fixture(scope="module")
def tiny():
    return build_geometry("tiny")


def test_throughput_report_has_every_figure(tiny):
    report = throughput(tiny, ["atp:keep=0.25", "e-adaprune:energy=0.9", FASTV, "random:keep=0.5"],
                        batch_sizes=(1, 8), repeats=1, warmup=0, new_tokens=2, loop="bs1", scoring="eager",
                        progress=None)
    assert report["kind"] == "throughput" and report["setup"]["batch_sizes"] == [1, 8]
    rows = {(r["batch_size"], r["method"]): r for r in report["results"]}
    assert len(rows) == 10
    for (b, method), r in rows.items():
        assert ROW <= set(r)
        assert r["visual_tokens_per_sample"] == 16
        assert r["flops_limit"] == pytest.approx(1 / r["flops_ratio"])
        assert r["generate_samples_per_s"] == pytest.approx(b / r["generate_latency_s"])
        assert r["limit_share"] == pytest.approx(r["prefill_throughput_ratio"] / r["flops_limit"])
        if method == "none":
            assert r["kept_tokens"] is None and r["throughput_ratio"] == 1.0 and "loop_bs1" not in r
            continue
        assert len(r["kept_tokens"]) == b and r["flops_ratio"] < 1
        if b == 8:  # the loop runs where there is a batch to split
            assert LOOP <= set(r["loop_bs1"]) and r["loop_bs1"]["same_kept_counts"] is True
        else:
            assert "loop_bs1" not in r
        if method == "random:keep=0.5":  # reads no attention: nothing to run eagerly
            assert "eager_scoring" not in r
        else:
            assert EAGER <= set(r["eager_scoring"]) and r["eager_scoring"]["same_selection"] is True
    # the graded images give E-AdaPrune ragged per-sample budgets in one batch
    assert len(set(rows[(8, "e-adaprune:energy=0.9")]["kept_tokens"])) > 2
    # the official way keeps every tower layer's map (3) or FastV's ranking layer's map (1)
    assert rows[(8, "atp:keep=0.25")]["eager_scoring"]["maps_kept"] == 3
    assert rows[(8, FASTV)]["eager_scoring"]["maps_kept"] == 1
    assert rows[(8, "atp:keep=0.25")]["eager_scoring"]["peak_memory_ratio"] > 1


def test_eager_maps_select_what_visprune_selects(tiny):
    """The [CLS] row of the tower's eager map (what VisionZip / FasterVLM read) and the last prompt
    token's row of FastV's eager map rank the same tokens as visprune's q/k recompute."""
    model = tiny.model
    x = batch_inputs(tiny, 4)
    image = x["input_ids"] == model.config.image_token_id
    prune_(model, PruneConfig(scorer="cls", k=5))
    try:
        with eager_scoring(model, PruneConfig(scorer="cls", k=5)) as maps:
            model(**x)
            layer = hidden_index_to_layer(model.config.vision_feature_layer, len(maps))
            row = maps[layer][:, :, 0, 1:].mean(1)  # [CLS] to each patch, heads averaged
        expected = [r.topk(5).indices.sort().values for r in row]
        assert all(torch.equal(a, b) for a, b in zip(last_kept(model), expected))
    finally:
        unprune_(model)
    cfg = PruneConfig(scorer="fastv", k=5, llm_layer=1)
    prune_(model, cfg)
    try:
        with eager_scoring(model, cfg) as maps:
            model(**x)
            ranked = maps[0][:, :, -1].mean(1)  # [B, L]: the last prompt token's attention
        expected = [r[m].topk(5).indices.sort().values for r, m in zip(ranked, image)]
        assert all(torch.equal(a, b) for a, b in zip(last_kept(model), expected))
    finally:
        unprune_(model)


def test_eager_scoring_restores_the_model(tiny):
    model = tiny.model
    vision, text = model.config.vision_config, model.config.text_config
    before = (vision._attn_implementation, text._attn_implementation)
    hooks = [dict(m._forward_hooks) for m in model.modules()]
    with pytest.raises(RuntimeError):
        with eager_scoring(model, PruneConfig(scorer="atp")):
            assert vision._attn_implementation == "eager" and text._attn_implementation == before[1]
            raise RuntimeError("boom")
    with eager_scoring(model, PruneConfig(scorer="fastv", llm_layer=1)):
        assert text._attn_implementation == "eager" and vision._attn_implementation == before[0]
    assert (vision._attn_implementation, text._attn_implementation) == before
    assert [dict(m._forward_hooks) for m in model.modules()] == hooks
    assert reads_attention(PruneConfig(scorer="random")) is None


def test_eager_scoring_follows_each_in_llm_method(tiny):
    """FastV's official code reads layer K-1's map; DART needs no attention and PyramidDrop's official
    code recomputes its row from q and k: those two are left as they are."""
    model, x = tiny.model, batch_inputs(tiny, 2)
    assert reads_attention(PruneConfig(scorer="dart", llm_layer=1), 2) is None
    assert reads_attention(PruneConfig(scorer="pdrop"), 2) is None
    cfg = PruneConfig(scorer="fastv", llm_layer=1)
    assert reads_attention(cfg, 2) == "language_model"
    prune_(model, cfg)
    try:
        with eager_scoring(model, cfg) as maps:
            model(**x)
            assert len(maps) == 1 and maps[0].shape[-1] == x["input_ids"].shape[1]  # layer K-1 = 0, full length
    finally:
        unprune_(model)


def test_several_images_per_prompt(tiny):
    report = throughput(tiny, ["atp:keep=0.25"], batch_sizes=(2,), images=2, repeats=1, warmup=0, new_tokens=2,
                        progress=None)
    atp = next(r for r in report["results"] if r["method"] == "atp:keep=0.25")
    assert atp["kept_tokens"] == [4, 4, 4, 4] and atp["visual_tokens_per_sample"] == 32


def test_high_resolution_geometry_has_five_crops():
    proc = small_hd_processor()
    x = proc(images=graded_images(1, (672, 672)), text=[prompt("what colour is the star ?")], return_tensors="pt")
    assert x["pixel_values"].shape[1] == 5  # the 2 x 2 grid and the whole image
    image_id = proc.tokenizer.convert_tokens_to_ids("<image>")
    # the whole image's 24 x 24 patches, the grid's 48 x 48 and one newline per grid row
    assert int((x["input_ids"] == image_id).sum()) == 576 + 48 * 48 + 48


def test_throughput_command(tmp_path, capsys):
    md, js, png = tmp_path / "B.md", tmp_path / "t.json", tmp_path / "s.png"
    argv = ["bench", "--geometry", "tiny", "--batch-sizes", "1,2", "--method", "atp:keep=1.0", "--method",
            "atp:keep=0.25", "--repeats", "1", "--warmup", "0", "--new-tokens", "2", "--loop", "bs1", "--json", str(js),
            "--markdown", str(md), "--plot", str(png), "--quiet"]
    assert main(argv) == 0
    assert "<!-- bench:tiny-throughput -->" in md.read_text() and "--batch-sizes 1,2" in md.read_text()
    assert len(json.loads(js.read_text())["results"]) == 6 and png.stat().st_size > 10_000
    assert main([*argv, "--section", "tiny-scaling"]) == 0 and "<!-- bench:tiny-scaling -->" in md.read_text()
    for bad in (["--batch-sizes", "0,2"], ["--batch-sizes", "a"], ["--loop", "bs1"], ["--images", "2"],
                ["--batch-sizes", "1", "--images", "0"], ["--batch-sizes", "1", "--compile"]):
        assert main(["bench", "--geometry", "tiny", *bad]) == 2
    assert main(["bench", "--geometry", "llava-1.5-7b", "--device", "meta", "--batch-sizes", "1"]) == 2
    err = capsys.readouterr().err
    assert "needs --batch-sizes" in err and "integers >= 1" in err
