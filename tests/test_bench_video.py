"""``visprune bench`` on video: Qwen2.5-VL-7B's 32-frame clip at real size (counted on the ``meta``
device, and its timed code path a few layers deep) and ``small-video``'s throughput, batches of clips
of different lengths (speed is not asserted here; BENCHMARKS.md has the measurements)."""

import json

import pytest
import torch

from visprune.apps.bench import QWEN_7B_PARAMETERS, Geometry, bench, build_geometry, markdown, qwen2_5_vl_7b
from visprune.apps.bench.command import bench_device
from visprune.apps.bench.geometries import QUESTION, batch_inputs, moving_square
from visprune.apps.bench.report import throughput_markdown
from visprune.apps.bench.throughput import throughput
from visprune.apps.cli import main
from visprune.testing import qwen_prompt

TEMPORAL = "cls:keep=0.25,temporal=0.9"


@pytest.fixture(scope="module")
def small_video():
    return build_geometry("small-video")


def test_qwen_7b_video_counted_on_meta(tmp_path):
    """Without CUDA and without --device the real-size video geometry is counted on the meta device,
    as docs/savings.md counts its Qwen2.5-VL-7B 32-frame row (82,396.0 GFLOP unpruned, 56.4% saved at
    keep 0.25); the temporal stage and image-dependent budgets cannot be sized there."""
    assert bench_device("qwen2.5-vl-7b-video", "auto") == ("cuda" if torch.cuda.is_available() else "meta")
    out, md = tmp_path / "v.json", tmp_path / "B.md"
    assert main(["bench", "--geometry", "qwen2.5-vl-7b-video", "--device", "meta", "--method", "atp:keep=0.25",
                 "--method", "e-adaprune:energy=0.9", "--method", TEMPORAL, "--json", str(out), "--markdown", str(md),
                 "--quiet"]) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["none"]["kept_tokens"] == [4096] and round(rows["none"]["flops"] / 1e9, 1) == 82396.0
    atp = rows["atp:keep=0.25"]
    assert atp["kept_tokens"] == [1024] and round(1 - atp["flops_ratio"], 3) == 0.564
    assert atp["kv_cache_ratio"] == pytest.approx((40 + 1024) / (40 + 4096))
    assert rows["e-adaprune:energy=0.9"]["flops"] is None and "temporal stage" in rows[TEMPORAL]["note"]
    assert "<!-- bench:qwen2.5-vl-7b-video -->" in md.read_text()
    assert main(["bench", "--geometry", "qwen2.5-vl-7b-video", "--device", "meta", "--compile"]) == 2


def test_qwen_7b_video_geometry_is_real_size():
    """Built on the meta device (no memory): Qwen2.5-VL-7B's parameter count in the asked dtype, one
    32-frame 448 px clip (16 x 32 x 32 patches, 4,096 video placeholders), every prompt id in the vocabulary."""
    geo = build_geometry("qwen2.5-vl-7b-video", device="meta", dtype=torch.bfloat16)
    params = list(geo.model.parameters())
    assert sum(p.numel() for p in params) == QWEN_7B_PARAMETERS
    assert {p.dtype for p in params} == {torch.bfloat16} and {p.device.type for p in params} == {"meta"}
    assert geo.inputs["pixel_values_videos"].dtype == torch.bfloat16 and geo.frames == 32
    model, proc = qwen2_5_vl_7b("meta", torch.bfloat16)
    x = proc(text=[qwen_prompt(QUESTION, 0, 1)], videos=[moving_square(32, 448)])  # the same inputs, on the host
    ids = x["input_ids"]
    assert ids.shape == geo.inputs["input_ids"].shape and x["video_grid_thw"].tolist() == [[16, 32, 32]]
    assert int((ids == model.config.video_token_id).sum()) == 4096
    assert int(ids.max()) < model.config.text_config.vocab_size


def test_qwen_7b_video_code_path_runs_at_full_width():
    """The real-size geometry's code path at full widths and vocabulary, one text layer and two tower
    blocks deep, on a 4-frame clip, in bf16 on CPU: kept tokens per video, the temporal stage's count."""
    model, proc = qwen2_5_vl_7b("cpu", torch.bfloat16, layers=(2, 1))
    assert model.config.text_config.hidden_size == 3584 and model.config.text_config.vocab_size == 152064
    assert model.config.vision_config.fullatt_block_indexes == [1]
    geo = Geometry("qwen2.5-vl-7b-video", model, {}, "one layer deep", proc, (448, 448), frames=4)
    geo.inputs = batch_inputs(geo, 1)
    assert geo.inputs["video_grid_thw"].tolist() == [[2, 32, 32]]
    report = bench(geo, methods=["atp:keep=0.25", TEMPORAL], repeats=1, warmup=0, new_tokens=2, progress=None,
                   dtype=torch.bfloat16)
    rows = {r["method"]: r for r in report["results"]}
    assert rows["atp:keep=0.25"]["kept_tokens"] == [128] and 0 < rows["atp:keep=0.25"]["flops_ratio"] < 1
    assert rows["atp:keep=0.25"]["kv_cache_ratio"] < 1
    (dropped,) = rows[TEMPORAL]["temporal_dropped"]
    assert 0 <= dropped <= 256 and rows[TEMPORAL]["overhead_s"] > 0  # the first frame pair always survives
    assert "dropped as repeats" in markdown(report, "visprune bench")


def test_small_video_batches_clips_of_different_lengths(small_video):
    """A batch of clips of 8, 6 and 4 frames (256, 192, 128 video tokens): each keeps its own count,
    the same as alone (the batch-1 loop), and the temporal stage drops repeats per clip."""
    x = batch_inputs(small_video, 3)
    assert x["video_grid_thw"].tolist() == [[4, 16, 16], [3, 16, 16], [2, 16, 16]]
    assert x["input_ids"].shape[0] == 3 and x["attention_mask"][:, 0].tolist() == [1, 0, 0]  # left-padded
    report = throughput(small_video, ["atp:keep=0.25", TEMPORAL], batch_sizes=(1, 3), repeats=1, warmup=0,
                        new_tokens=2, loop="bs1", progress=None)
    assert report["unit"] == "clip" and report["setup"]["clip_frames"] == [8, 6, 4]
    rows = {(r["batch_size"], r["method"]): r for r in report["results"]}
    assert rows[(3, "none")]["visual_tokens_per_sample"] == (256 + 192 + 128) / 3
    atp, temporal = rows[(3, "atp:keep=0.25")], rows[(3, TEMPORAL)]
    assert atp["kept_tokens"] == [64, 48, 32] and atp["temporal_dropped"] is None
    assert atp["loop_bs1"]["same_kept_counts"] is True and temporal["loop_bs1"]["same_kept_counts"] is True
    assert len(temporal["temporal_dropped"]) == 3 and temporal["flops_ratio"] <= atp["flops_ratio"] < 1
    assert temporal["kv_cache_ratio"] <= atp["kv_cache_ratio"] < 1 and temporal["overhead_s"] > 0
    table = throughput_markdown(report, "visprune bench --geometry small-video --batch-sizes 1,3")
    assert "throughput, 1 clip per prompt" in table and "kept tokens per clip" in table
    assert "| 3 | atp:keep=0.25 | 32-64 (mean 48) |" in table and "dropped as repeats" in table
    assert "8, 6, 4 frames" in table


def test_small_video_throughput_command(tmp_path, capsys):
    md = tmp_path / "B.md"
    assert main(["bench", "--geometry", "small-video", "--batch-sizes", "2", "--images", "2", "--method",
                 "random:keep=0.25", "--repeats", "1", "--warmup", "0", "--new-tokens", "1", "--markdown", str(md),
                 "--quiet"]) == 0
    assert "<!-- bench:small-video-throughput -->" in md.read_text() and "2 clips per prompt" in md.read_text()
    assert main(["bench", "--geometry", "small-video", "--batch-sizes", "2", "--scoring", "eager", "--quiet"]) == 2
    assert "--scoring qk" in capsys.readouterr().err
