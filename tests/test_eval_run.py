"""``visprune eval`` end to end on tiny random-weight models saved to disk: results, resumption, errors."""

import json

import pytest

from visprune import testing as random_models, shapes
from visprune.apps.cli import main
from visprune.evaluation import EvalSettings, build_task, parse_methods, run
from visprune.evaluation import results as res

METHODS = ["atp:keep=0.25", "random:k=16"]
COMPARED = ("n", "accuracy", "accuracy_by_type", "kept_tokens", "flops_per_sample", "flops_ratio",
            "grounding_recall", "skipped", "config")


@pytest.fixture(scope="module")
def shapes_like(tmp_path_factory):
    """A random-weight LLaVA with the shapes tokenizer, chat template and 224-px / 256-token geometry."""
    path = tmp_path_factory.mktemp("model") / "llava"
    model, proc = random_models.llava(image=shapes.IMAGE_SIZE, vision=(32, 2), text=(32, 2),
                                      tok=shapes.build_tokenizer())
    proc.chat_template = shapes.build_processor(proc.tokenizer).chat_template
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return str(path)


def _settings(model, out, n=6, **kw):
    kw.setdefault("timing", 1)
    kw.setdefault("repeats", 1)
    return EvalSettings(model=model, task=build_task("shapes-vqa", n=n, seed=7), methods=parse_methods(METHODS),
                        out=out, progress=False, **kw)


def _rows(summary):
    return {r["method"]: {k: r.get(k) for k in COMPARED} for r in summary["methods"]}


def _predictions(out, label):
    return {k: v["prediction"] for k, v in res.read_records(res.method_dir(out, "clean", label)).items()}


def test_summary_fields(shapes_like, tmp_path):
    summary = run(_settings(shapes_like, tmp_path))
    rows = {r["method"]: r for r in summary["methods"]}
    assert list(rows) == ["none", *METHODS]  # the unpruned reference is always measured, first
    none, atp, rnd = rows["none"], rows["atp:keep=0.25"], rows["random:k=16"]
    assert none["config"] is None and atp["config"]["keep"] == 0.25 and rnd["config"]["k"] == 16
    assert none["kept_tokens"] == {"mean": 256, "min": 256, "max": 256}
    # the folder ships no CLIP: ATP's relevance is the weight-free lmtext, and the records say so
    assert atp["relevance"] == "lmtext" and rnd["relevance"] is None and none["relevance"] is None
    assert atp["kept_tokens"] == {"mean": 64, "min": 64, "max": 64}
    assert none["flops_ratio"] == 1.0 and rnd["flops_ratio"] < atp["flops_ratio"] < 1.0
    assert none["grounding_recall"] == 1.0 and 0.0 <= rnd["grounding_recall"] <= 1.0
    # per-method prefill memory: fewer visual tokens, smaller activations and KV cache
    assert none["peak_memory_ratio"] == 1.0 and rnd["peak_memory_ratio"] < atp["peak_memory_ratio"] < 1.0
    assert rnd["kv_cache_ratio"] < atp["kv_cache_ratio"] < 1.0
    assert none["prefill_memory"]["kv_cache_bytes"] > atp["prefill_memory"]["kv_cache_bytes"] > 0
    for r in rows.values():
        assert r["n"] == 6 and r["missing"] == 0 and r["skipped"] == []
        assert 0.0 <= r["accuracy"] <= 1.0 and set(r["accuracy_by_type"]) <= set(shapes.QTYPES)
        assert r["latency_s"] > 0 and r["latency_ratio"] > 0 and r["peak_memory"]["peak_bytes"] > 0
        assert "RSS" in r["peak_memory"]["kind"]
        lo, hi = r["accuracy_ci"]  # paired bootstrap intervals (visprune.evaluation.stats)
        assert lo <= r["accuracy"] <= hi
    for r in (atp, rnd):
        d = r["vs_unpruned"]
        assert d["n"] == 6 and d["ci"][0] <= d["diff"] <= d["ci"][1] and d["tie"] == (d["ci"][0] <= 0 <= d["ci"][1])
        assert abs(d["diff"] - (r["accuracy"] - none["accuracy"])) < 1e-12
    best = max((atp, rnd), key=lambda r: r["accuracy"])
    other = rnd if best is atp else atp
    assert "vs_best" not in best and other["vs_best"]["best"] == best["method"]
    assert "bootstrap" in summary["statistics"] and "Intervals:" in (tmp_path / "summary.md").read_text()
    assert summary["complete"] and summary["settings"]["processes"] == 1
    assert {"torch", "transformers", "visprune"} <= set(summary["versions"])
    # per-sample records: the summary is recomputed from them, and the accuracy is their mean
    recs = res.read_records(res.method_dir(tmp_path, "clean", "atp:keep=0.25"))
    assert len(recs) == 6 and all(r["kept_tokens"] == 64 and r["flops"] > 0 for r in recs.values())
    assert atp["accuracy"] == pytest.approx(sum(r["score"] for r in recs.values()) / 6)
    merged = (tmp_path / "samples" / "clean" / f"{res.slug('atp:keep=0.25')}.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in merged] == [f"7-{i}" for i in range(6)]
    assert "| atp:keep=0.25 | 6 |" in (tmp_path / "summary.md").read_text()


def test_resume_after_stop_and_truncation(shapes_like, tmp_path):
    whole = run(_settings(shapes_like, tmp_path / "whole"))
    part = tmp_path / "part"
    first = run(_settings(shapes_like, part, stop_after=2))  # "killed" after 2 samples per method
    assert not first["complete"] and {r["n"] for r in first["methods"]} == {2}
    # a kill in the middle of a write: the last line is cut short
    f = res.method_dir(part, "clean", "random:k=16") / "part-0.jsonl"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 25])
    assert len(res.read_records(f.parent)) == 1
    second = run(_settings(shapes_like, part, stop_after=1))
    assert {r["method"]: r["n"] for r in second["methods"]} == {"none": 3, "atp:keep=0.25": 3, "random:k=16": 2}
    final = run(_settings(shapes_like, part))
    assert final["complete"]
    assert _rows(final) == _rows(whole)
    for label in ["none", *METHODS]:
        assert _predictions(part, label) == _predictions(tmp_path / "whole", label)
        lines = (res.method_dir(part, "clean", label) / "part-0.jsonl").read_text().splitlines()
        assert len(lines) == 6 and len({json.loads(x)["id"] for x in lines}) == 6  # none lost, none twice
    again = run(_settings(shapes_like, part))  # nothing left to do: same summary
    assert _rows(again) == _rows(whole)


def test_batched_run_matches_one_by_one_in_kept_tokens(shapes_like, tmp_path):
    one = run(_settings(shapes_like, tmp_path / "one", n=4, timing=0))
    batched = run(_settings(shapes_like, tmp_path / "b", n=4, timing=0, batch_size=3))
    for a, b in zip(one["methods"], batched["methods"], strict=True):
        assert a["kept_tokens"] == b["kept_tokens"] and a["flops_per_sample"] == b["flops_per_sample"]
        assert a["grounding_recall"] == pytest.approx(b["grounding_recall"])
        assert a["latency_s"] is None


def test_corruption_run(shapes_like, tmp_path):
    summary = run(_settings(shapes_like, tmp_path, n=3, timing=0, corruptions=[("contrast", 5), ("pixelate", 1)]))
    assert set(summary["robustness"]) == {"contrast-5", "pixelate-1"}
    clean = {r["method"]: r["accuracy"] for r in summary["methods"]}
    for entry in summary["robustness"].values():
        assert set(entry) == {"none", *METHODS}
        for label, v in entry.items():
            assert v["n"] == 3 and v["drop_vs_clean"] == pytest.approx(clean[label] - v["accuracy"])
            assert v["drop_vs_unpruned"] == pytest.approx(entry["none"]["accuracy"] - v["accuracy"])
            # intervals as for the clean rows: the accuracy's, and paired differences from clean and from unpruned
            assert v["accuracy_ci"][0] <= v["accuracy"] <= v["accuracy_ci"][1]
            assert v["vs_clean"]["n"] == 3 and v["vs_clean"]["diff"] == pytest.approx(-v["drop_vs_clean"])
            assert (label == "none") == ("vs_unpruned" not in v)
            if label != "none":
                assert v["vs_unpruned"]["diff"] == pytest.approx(-v["drop_vs_unpruned"])
    for label, mean in summary["robustness_mean"].items():
        accs = [summary["robustness"][c][label]["accuracy"] for c in ("contrast-5", "pixelate-1")]
        assert mean["accuracy"] == pytest.approx(sum(accs) / 2)
        assert mean["drop_vs_clean"] == pytest.approx(clean[label] - sum(accs) / 2)
    assert "contrast-5" in (tmp_path / "summary.md").read_text() and "vs clean" in (tmp_path / "summary.md").read_text()


def test_cli_eval_and_sweep(shapes_like, tmp_path, capsys):
    rc = main(["eval", "--model", shapes_like, "--task", "shapes-vqa", "--n", "2", "--method", "e-adaprune:energy=0.9",
               "--timing", "1", "--repeats", "1", "--quiet", "--out", str(tmp_path / "e")])
    assert rc == 0
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert [r["method"] for r in summary["methods"]] == ["none", "e-adaprune:energy=0.9"]
    assert "| e-adaprune:energy=0.9 | 2 |" in capsys.readouterr().out
    rc = main(["eval", "--model", shapes_like, "--task", "shapes-vqa", "--n", "2", "--method", "random:k=8",
               "--timing", "0", "--no-flops", "--quiet", "--out", str(tmp_path / "nf")])
    assert rc == 0  # no FLOPs counted: the columns stay empty, everything else is there
    summary = json.loads((tmp_path / "nf" / "summary.json").read_text())
    assert all(r["flops_per_sample"] is None and r["flops_ratio"] is None and r["n"] == 2 for r in summary["methods"])
    assert json.loads((tmp_path / "nf" / "run.json").read_text())["flops"] is False
    capsys.readouterr()
    rc = main(["eval", "--model", shapes_like, "--task", "shapes-vqa", "--n", "2", "--method", "random:k=8",
               "--timing", "0", "--quiet", "--out", str(tmp_path / "nf")])
    assert rc == 2 and "other settings (flops)" in capsys.readouterr().err  # counted and uncounted never mix
    rc = main(["sweep", "--model", shapes_like, "--task", "shapes-vqa", "--n", "2", "--methods", "atp,e-adaprune",
               "--keeps", "0.5,0.25", "--energies", "0.9", "--timing", "0", "--quiet", "--out", str(tmp_path / "s")])
    assert rc == 0
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [r["method"] for r in summary["methods"]] == ["none", "atp:keep=0.5", "atp:keep=0.25",
                                                         "e-adaprune:energy=0.9"]
    table = (tmp_path / "s" / "sweep.md").read_text()
    assert "| atp:keep=0.25 |" in table and "| none |" in table
    for name in ("accuracy_vs_flops.png", "overlays.png"):
        assert (tmp_path / "s" / name).stat().st_size > 0


def test_unreadable_image_is_skipped_and_named(tmp_path, monkeypatch):
    from PIL import Image

    model_dir = tmp_path / "m"
    model, proc = random_models.llava()
    model.save_pretrained(model_dir)
    proc.save_pretrained(model_dir)
    images = tmp_path / "img"
    images.mkdir()
    for i in (1, 2):
        Image.new("RGB", (60, 50), (40 * i, 90, 200)).save(images / f"{i}.jpg")
    (images / "3.jpg").write_bytes(b"not a jpeg at all")
    Image.new("RGB", (200, 200)).save(images / "5.jpg")  # a decompression bomb under the limit set below
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # PIL refuses more than twice this: 200 x 200, not 60 x 50
    qs = {str(q): {"imageId": str(q), "question": "what colour is it ?", "answer": "blue"} for q in (1, 2, 3, 4, 5)}
    (tmp_path / "q.json").write_text(json.dumps(qs))
    rc = main(["eval", "--model", str(model_dir), "--task", "gqa", "--questions", str(tmp_path / "q.json"),
               "--images", str(images), "--method", "random:keep=0.5", "--max-new-tokens", "2", "--timing", "1",
               "--repeats", "1", "--quiet", "--out", str(tmp_path / "out")])
    assert rc == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    for row in summary["methods"]:
        assert row["n"] == 2 and row["missing"] == 0
        assert [s["id"] for s in row["skipped"]] == ["3", "4", "5"]  # unreadable, missing, a bomb
        assert "3.jpg" in row["skipped"][0]["reason"] or "identify" in row["skipped"][0]["reason"]
        assert "decompression bomb" in row["skipped"][2]["reason"]
    assert summary["methods"][0]["latency_s"] > 0  # timing skips unreadable images too


@pytest.mark.skipif(not (shapes.CHECKPOINT / "config.json").is_file(),
                    reason=f"no trained shapes checkpoint in {shapes.CHECKPOINT} (train it with scripts/train_shapes.py)")
def test_trained_shapes_model(tmp_path):
    """The bundled model loads by name and ATP gets its CLIP text encoder."""
    s = EvalSettings(model="shapes", task=build_task("shapes-vqa", n=8, seed=7),
                     methods=parse_methods(["atp:keep=0.25", "cls:keep=0.25"]), out=tmp_path, timing=1, repeats=1,
                     progress=False)
    rows = {r["method"]: r for r in run(s)["methods"]}
    assert rows["atp:keep=0.25"]["config"]["text_encoder"] == str(shapes.clip_path())
    assert rows["atp:keep=0.25"]["relevance"] == f"clip:{shapes.clip_path()}"
    assert rows["cls:keep=0.25"]["config"]["text_encoder"] == "auto" and rows["cls:keep=0.25"]["relevance"] is None
    assert rows["none"]["grounding_recall"] == 1.0 and rows["atp:keep=0.25"]["kept_tokens"]["mean"] == 64
    # the same checkpoint given as a folder (as scripts/train_shapes.py --out writes one) brings its CLIP too
    by_path = EvalSettings(model=str(shapes.CHECKPOINT), task=build_task("shapes-vqa", n=8, seed=7),
                           methods=parse_methods(["atp:keep=0.25"]), out=tmp_path / "by_path", timing=0, repeats=1,
                           progress=False)
    same = {r["method"]: r for r in run(by_path)["methods"]}["atp:keep=0.25"]
    assert same["config"]["text_encoder"] == str(shapes.CHECKPOINT / "clip")
    assert same["accuracy"] == rows["atp:keep=0.25"]["accuracy"]
    assert same["grounding_recall"] == rows["atp:keep=0.25"]["grounding_recall"]


@pytest.mark.parametrize("arch", ["llava_next", "llava_onevision"])
def test_any_resolution_models(tmp_path, arch):
    """LLaVA-NeXT / OneVision (tiles and row-end tokens) through the same harness, batched."""
    model, proc = random_models.BUILDERS[arch]()
    model.save_pretrained(tmp_path / "m")
    proc.save_pretrained(tmp_path / "m")
    s = EvalSettings(model=str(tmp_path / "m"), task=build_task("shapes-vqa", n=3, seed=1),
                     methods=parse_methods(["e-adaprune:energy=0.9"]), out=tmp_path / "o", batch_size=2, timing=0,
                     progress=False)
    none, pruned = run(s)["methods"]
    assert pruned["kept_tokens"]["max"] < none["kept_tokens"]["min"] and pruned["flops_ratio"] < 1.0
    assert none["grounding_recall"] is None  # the tiles are not the ground truth's 16 x 16 grid
    recs = res.read_records(res.method_dir(tmp_path / "o", "clean", "none"))
    assert all(r["visual_tokens"] == r["kept_tokens"] for r in recs.values())
