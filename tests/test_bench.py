"""The benchmark runs on the tiny geometry and writes every field (speed is not asserted here)."""

import json

import pytest
import torch

from visprune.measure.memory import LiveBytes

from visprune.apps.bench import (LLAVA_7B_PARAMETERS, QUESTION, Geometry, bench, bench_meta, build_geometry, llava_7b,
                            markdown, write_json, write_markdown_section)
from visprune.errors import UsageError
from visprune.testing import images, prompt

FIELDS = {"method", "flops_ratio", "prefill_latency_ratio", "generate_latency_ratio", "overhead_fraction",
          "peak_memory_ratio", "kv_cache_ratio", "efficiency", "kept_tokens", "config", "host_reads_prefill",
          "cuda_syncs_prefill"}


def test_bench_tiny_writes_all_fields(tmp_path):
    report = bench("tiny", methods=["atp:keep=0.5", "e-adaprune:energy=0.9"], repeats=1, warmup=0,
                   new_tokens=2, progress=None)
    write_json(report, tmp_path / "bench.json")
    data = json.loads((tmp_path / "bench.json").read_text())
    assert {"torch", "transformers", "device", "device_name", "cpu_threads"} <= set(data["setup"])
    rows = {r["method"]: r for r in data["results"]}
    assert set(rows) == {"none", "atp:keep=0.5", "e-adaprune:energy=0.9"}
    for r in rows.values():
        assert FIELDS <= set(r)
    none, atp = rows["none"], rows["atp:keep=0.5"]
    assert none["flops_ratio"] == 1.0 and none["overhead_fraction"] == 0.0
    assert atp["kept_tokens"] == [8] and 0 < atp["flops_ratio"] < 1 and atp["overhead_fraction"] > 0
    # the KV cache holds the text tokens plus the kept image tokens
    prompt_len = build_geometry("tiny").inputs["input_ids"].shape[1]  # 16 image placeholders + text
    assert abs(atp["kv_cache_ratio"] - (prompt_len - 8) / prompt_len) < 1e-9
    assert 0 < atp["peak_memory_ratio"] < 1
    # pruning adds a few host reads per call (tests/test_host_reads.py bounds them)
    assert 0 < atp["host_reads_prefill"] - none["host_reads_prefill"] <= 6
    assert atp["cuda_syncs_prefill"] is None  # counted on CUDA only
    table = markdown(data, "visprune bench --geometry tiny")
    assert "| atp:keep=0.5 | 8 |" in table


def test_bench_counts_the_tokens_the_language_model_receives():
    """Official VisionZip sends [CLS] and its contextual tokens beside k - 1 kept patches: bench reports
    what the language model receives (Selection.sent), as eval does, and the KV cache follows it."""
    report = bench("tiny", methods=["visionzip:k=6"], repeats=1, warmup=0, new_tokens=2, progress=None)
    vz = {r["method"]: r for r in report["results"]}["visionzip:k=6"]
    prompt_len = build_geometry("tiny").inputs["input_ids"].shape[1]  # 16 image placeholders + text
    assert vz["kept_tokens"] == [6]
    assert abs(vz["kv_cache_ratio"] - (prompt_len - 16 + 6) / prompt_len) < 1e-9


def test_markdown_sections_are_replaced_in_place(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    write_markdown_section(path, "tiny", "first\n")
    write_markdown_section(path, "small", "other\n")
    write_markdown_section(path, "tiny", "second\n")
    text = path.read_text()
    assert "first" not in text and text.count("second") == 1 and "other" in text
    assert text.index("second") < text.index("other")


def test_live_bytes_tracks_created_storage_only():
    weight = torch.ones(1000)
    with LiveBytes([weight]) as tracker:
        a = weight * 2  # 4000 bytes
        b = a + 1  # 8000 live
        del a  # back to 4000
        c = b.view(10, 100)  # a view: no new storage
        d = weight.view(10, 100)  # a view of a known storage: not counted
    assert tracker.peak == 8000 and tracker.current == 4000
    assert c.shape == d.shape


def test_llava_7b_flops_on_meta():
    report = bench_meta(["atp:keep=0.25", "e-adaprune:energy=0.9"])
    rows = {r["method"]: r for r in report["results"]}
    assert round(rows["none"]["flops"] / 1e9, 1) == 8583.7  # docs/savings.md's LLaVA-1.5-7B row: the same counts
    assert rows["atp:keep=0.25"]["kept_tokens"] == [144]
    assert 0.3 < rows["atp:keep=0.25"]["flops_ratio"] < 0.35
    assert rows["atp:keep=0.25"]["kv_cache_ratio"] == pytest.approx((40 + 144) / (40 + 576))
    assert rows["e-adaprune:energy=0.9"]["flops"] is None


def test_bench_command_writes_json_and_markdown(tmp_path, capsys):
    from visprune.apps.cli import main

    out, md = tmp_path / "b.json", tmp_path / "BENCHMARKS.md"
    assert main(["bench", "--geometry", "tiny", "--method", "random:keep=0.5", "--repeats", "1", "--warmup", "0",
                 "--new-tokens", "2", "--quiet", "--json", str(out), "--markdown", str(md)]) == 0
    assert [r["method"] for r in json.loads(out.read_text())["results"]] == ["none", "random:keep=0.5"]
    assert "<!-- bench:tiny -->" in md.read_text() and "visprune bench --geometry tiny" in md.read_text()
    assert main(["bench", "--geometry", "huge"]) == 2
    assert "unknown geometry" in capsys.readouterr().err
    assert main(["bench", "--geometry", "llava-1.5-7b", "--compile"]) == 2
    assert "--compile needs timings" in capsys.readouterr().err
    assert main(["bench", "--geometry", "tiny", "--method", "random:keep=0.5", "--repeats", "1", "--warmup", "1",
                 "--new-tokens", "2", "--quiet", "--compile", "eager", "--markdown", str(md)]) == 0
    assert "<!-- bench:tiny-compiled -->" in md.read_text() and "<!-- bench:tiny -->" in md.read_text()


def test_bench_with_a_compiled_language_model(tmp_path):
    """--compile: the same compiled module serves every method (pruned prompts are shorter) and the
    eager one is back afterwards. The eager backend keeps the test free of code generation; the
    inductor numbers are in BENCHMARKS.md."""
    geo = build_geometry("tiny")
    lm = geo.model.model.language_model
    report = bench(geo, methods=["atp:keep=0.5", "e-adaprune:energy=0.9"], repeats=1, warmup=1, new_tokens=2,
                   progress=None, compile="eager")
    assert geo.model.model.language_model is lm
    assert report["setup"]["compiled_language_model"] == "eager"
    assert [r["kept_tokens"] for r in report["results"]][1] == [8]
    assert "torch.compile(dynamic=True, backend=\"eager\")" in markdown(report, "visprune bench --compile eager")


def test_llava_7b_geometry_is_real_size():
    """Built on the meta device (no memory): LLaVA-1.5-7B's parameter count, in the asked dtype,
    with 576 image placeholders in the prompt and every prompt id inside the vocabulary."""
    geo = build_geometry("llava-1.5-7b", device="meta", dtype=torch.bfloat16)
    params = list(geo.model.parameters())
    assert sum(p.numel() for p in params) == LLAVA_7B_PARAMETERS
    assert {p.dtype for p in params} == {torch.bfloat16} and {p.device.type for p in params} == {"meta"}
    assert geo.inputs["pixel_values"].dtype == torch.bfloat16
    model, proc = llava_7b("meta", torch.bfloat16)
    ids = proc(images=images(1, size=(336, 336)), text=[prompt(QUESTION)], return_tensors="pt")["input_ids"]
    assert ids.shape == geo.inputs["input_ids"].shape
    assert int((ids == model.config.image_token_id).sum()) == 576
    assert int(ids.max()) < model.config.text_config.vocab_size


def test_llava_7b_code_path_runs_at_full_width():
    """The real-size geometry's code path, one or two layers deep (full widths and vocabulary), on CPU."""
    model, proc = llava_7b("cpu", torch.float32, layers=(2, 1))  # the features come from layer -2
    assert model.config.text_config.hidden_size == 4096 and model.config.text_config.vocab_size == 32064
    inputs = dict(proc(images=images(1, size=(336, 336)), text=[prompt(QUESTION)], return_tensors="pt"))
    report = bench(Geometry("llava-1.5-7b", model, inputs, "one layer deep"), methods=["atp:keep=0.25"],
                   repeats=1, warmup=0, new_tokens=2, progress=None)
    atp = report["results"][1]
    assert atp["kept_tokens"] == [144] and 0 < atp["flops_ratio"] < 1


def test_bench_devices(capsys):
    from visprune.apps.bench.command import bench_device, check_host_memory
    from visprune.apps.cli import main

    assert bench_device("small", "cpu") == "cpu"
    assert bench_device("llava-1.5-7b", "meta") == "meta"
    assert bench_device("llava-1.5-7b", "auto") == ("cuda" if torch.cuda.is_available() else "meta")
    assert main(["bench", "--geometry", "small", "--device", "meta"]) == 2
    assert "counts FLOPs at real size only" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "--geometry", "tiny", "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    with pytest.raises(UsageError, match="GiB available"):
        check_host_memory(2**60, "float32")  # an exabyte of weights


def test_the_overhead_clock_runs_without_cuda():
    """``clock.synchronized()`` (used on CUDA by the benchmark) is a no-op without a device."""
    from visprune.measure import clock

    with clock.synchronized():
        t0 = clock.now()
        t1 = clock.now()
    assert t1 >= t0


def test_small_video_geometry_reports_kept_tokens_per_video():
    """`small-video`: a Qwen2.5-VL-shaped model on one 8-frame clip (256 merged video tokens); bench
    reports the tokens kept per video, and how many the temporal stage dropped as repeats."""
    geo = build_geometry("small-video")
    assert geo.inputs["video_grid_thw"].tolist() == [[4, 16, 16]] and "pixel_values" not in geo.inputs
    report = bench(geo, methods=["atp:keep=0.25", "cls:keep=0.25,temporal=0.9"], repeats=1, warmup=0,
                   new_tokens=2, progress=None)
    rows = {r["method"]: r for r in report["results"]}
    atp, temporal = rows["atp:keep=0.25"], rows["cls:keep=0.25,temporal=0.9"]
    assert atp["kept_tokens"] == [64] and atp["temporal_dropped"] is None
    assert rows["none"]["kept_tokens"] is None and 0 < atp["flops_ratio"] < 1
    (dropped,) = temporal["temporal_dropped"]
    assert 0 < dropped <= 192  # the first frame pair always survives: at most 3 of 4 groups dropped
    assert temporal["kept_tokens"] == [round((256 - dropped) * 0.25)] and temporal["overhead_s"] > 0
    assert temporal["kv_cache_ratio"] < atp["kv_cache_ratio"] < 1
    table = markdown(report, "visprune bench --geometry small-video")
    assert f"| cls:keep=0.25,temporal=0.9 | {temporal['kept_tokens'][0]} ({dropped} dropped as repeats) |" in table
