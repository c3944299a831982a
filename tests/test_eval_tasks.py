"""Benchmarks in their official file formats (tiny fixtures written here), and the metric wiring."""

import json

import pytest
from PIL import Image

from visprune import testing as random_models, shapes
from visprune.evaluation import EvalSettings, build_task, parse_methods, run
from visprune.evaluation import results as res
from visprune.errors import UsageError
from visprune.evaluation.metrics import caption_scores, gqa_accuracy, vqa_accuracy


def _image(path, colour, size=(64, 48)):
    Image.new("RGB", size, colour).save(path)


@pytest.fixture
def vqav2(tmp_path):
    tmp_path = tmp_path / "vqav2"
    tmp_path.mkdir()
    img = tmp_path / "val2014"
    img.mkdir()
    for iid, colour in ((42, (200, 30, 30)), (7, (30, 30, 200))):
        _image(img / f"COCO_val2014_{iid:012d}.jpg", colour)
    questions = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
                 "questions": [{"image_id": 42, "question": "What colour is the square?", "question_id": 420},
                               {"image_id": 7, "question": "Is there a cat?", "question_id": 70},
                               {"image_id": 42, "question": "How many dogs?", "question_id": 421}]}
    answers = {420: ["red"] * 7 + ["dark red"] * 3, 70: ["no"] * 10, 421: ["2", "two", "2"] + ["3"] * 7}
    annotations = {"info": {}, "annotations": [
        {"question_id": q, "image_id": 0, "question_type": "what", "answer_type": "other",
         "multiple_choice_answer": a[0], "answers": [{"answer": x, "answer_confidence": "yes", "answer_id": i + 1}
                                                     for i, x in enumerate(a)]} for q, a in answers.items()]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    return {"questions": str(tmp_path / "q.json"), "annotations": str(tmp_path / "a.json"), "images": str(img)}


@pytest.fixture
def gqa(tmp_path):
    tmp_path = tmp_path / "gqa"
    tmp_path.mkdir()
    img = tmp_path / "images"
    img.mkdir()
    _image(img / "n161313.jpg", (10, 200, 10))
    _image(img / "n235859.jpg", (250, 250, 250))
    qs = {"20968356": {"imageId": "n161313", "question": "Is the grass green?", "answer": "yes",
                       "fullAnswer": "Yes, the grass is green.", "isBalanced": True, "types": {}},
          "05451384": {"imageId": "n235859", "question": "What colour is the wall?", "answer": "white",
                       "fullAnswer": "The wall is white.", "isBalanced": True, "types": {}}}
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps(qs))
    return {"questions": str(tmp_path / "testdev_balanced_questions.json"), "images": str(img)}


@pytest.fixture
def coco(tmp_path):
    tmp_path = tmp_path / "coco"
    tmp_path.mkdir()
    img = tmp_path / "val2014"
    img.mkdir()
    _image(img / "COCO_val2014_000000000042.jpg", (200, 30, 30))
    _image(img / "COCO_val2014_000000000073.jpg", (30, 200, 30))
    data = {"info": {}, "licenses": [],
            "images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "height": 48, "width": 64},
                       {"id": 73, "file_name": "COCO_val2014_000000000073.jpg", "height": 48, "width": 64},
                       {"id": 99, "file_name": "COCO_val2014_000000000099.jpg", "height": 48, "width": 64}],
            "annotations": [{"id": 1, "image_id": 42, "caption": "A red square on a wall."},
                            {"id": 2, "image_id": 42, "caption": "A plain red picture."},
                            {"id": 3, "image_id": 73, "caption": "A green field."}]}
    (tmp_path / "captions_val2014.json").write_text(json.dumps(data))
    return {"annotations": str(tmp_path / "captions_val2014.json"), "images": str(img)}


def test_files_load_in_official_formats(vqav2, gqa, coco):
    t = build_task("vqav2", **vqav2)
    assert [e.id for e in t.examples] == ["420", "70", "421"] and t.kind == "vqa"
    assert t.examples[0].references == ["red"] * 7 + ["dark red"] * 3
    assert t.examples[1].image_path.name == "COCO_val2014_000000000007.jpg"
    assert t.examples[0].load_image().size == (64, 48)
    assert "single word" in t.text(t.examples[0])
    assert [e.id for e in build_task("vqav2", n=2, **vqav2).examples] == ["420", "70"]
    t = build_task("gqa", **gqa)
    assert [(e.id, e.references) for e in t.examples] == [("20968356", ["yes"]), ("05451384", ["white"])]
    assert t.examples[0].image_path.name == "n161313.jpg"
    t = build_task("coco-caption", **coco)
    assert [(e.id, len(e.references)) for e in t.examples] == [("42", 2), ("73", 1)]  # 99 has no captions
    assert t.kind == "caption" and t.examples[0].load_image().mode == "RGB"


def test_metric_wiring(vqav2, gqa):
    t = build_task("vqav2", **vqav2)
    for pred in ("red", "Red.", "dark red", "two", "blue"):
        for e in t.examples:
            assert t.score(pred, e.references) == vqa_accuracy(pred, e.references)
    assert t.score("two", t.examples[2].references) == pytest.approx(0.6)  # "two" -> "2": 2 of the 10 answers
    g = build_task("gqa", **gqa)
    assert g.score("Yes.", ["yes"]) == gqa_accuracy("Yes.", "yes") == 1.0
    s = build_task("shapes-vqa", n=2, seed=3)
    e = s.examples[0]
    assert s.score(e.references[0] + " .", e.references) == 1.0 and s.score("zebra", e.references) == 0.0
    c = build_task("shapes-caption", n=2, seed=3)
    from visprune.shapes.model import CAPTION_QUESTION

    assert c.kind == "caption" and c.examples[0].question == CAPTION_QUESTION
    assert c.examples[0].references == [shapes.make_samples(1, seed=3)[0].caption]
    assert c.score("anything", ["x"]) is None


def test_summary_metrics_from_records(tmp_path, vqav2, coco):
    """Run a random model on the fixtures; the summary metrics equal the metrics of the written predictions."""
    model_dir = tmp_path / "m"
    model, proc = random_models.llava()
    model.save_pretrained(model_dir)
    proc.save_pretrained(model_dir)
    for name, files in (("vqav2", vqav2), ("coco-caption", coco)):
        out = tmp_path / name
        task = build_task(name, **files)
        s = EvalSettings(model=str(model_dir), task=task, methods=parse_methods(["random:keep=0.5"]), out=out,
                         timing=0, max_new_tokens=4, caption_tokenizer="simple", progress=False)
        summary = run(s)
        for row in summary["methods"]:
            recs = res.read_records(res.method_dir(out, "clean", row["method"]))
            assert row["n"] == len(task.examples) == len(recs)
            if name == "vqav2":
                expect = sum(vqa_accuracy(r["prediction"], r["references"]) for r in recs.values()) / len(recs)
                assert row["accuracy"] == pytest.approx(expect)
                assert row["kept_tokens"]["mean"] == (16 if row["config"] is None else 8)
            else:
                scores = caption_scores({k: r["prediction"] for k, r in recs.items()},
                                        {k: r["references"] for k, r in recs.items()}, tokenizer="simple")
                assert row["accuracy"] == row["CIDEr"] == pytest.approx(scores["CIDEr"])
                assert row["BLEU-4"] == pytest.approx(scores["BLEU-4"])
                assert all(r["score"] is None for r in recs.values())


@pytest.mark.parametrize("name, files, message", [
    ("vqav2", {}, "needs --questions"),
    ("vqav2", {"questions": "/nonexistent/q.json", "annotations": "x", "images": "y"}, "no such file"),
    ("gqa", {"questions": "BAD", "images": "."}, "not valid JSON"),
    ("gqa", {"questions": "LIST", "images": "."}, "must be a JSON object"),
    ("gqa", {"questions": "NOIMAGEID", "images": "."}, "missing field 'imageId'"),
    ("gqa", {"questions": "OK", "images": "/nonexistent"}, "no such folder"),
    ("coco-caption", {"annotations": "NOANN", "images": "."}, "missing field 'annotations'"),
    ("shapes-vqa", {"images": "."}, "takes no --images"),
    ("mmbench", {}, "unknown task 'mmbench'; valid tasks: coco-caption, gqa, shapes-caption"),
])
def test_bad_task_files(tmp_path, name, files, message):
    contents = {"BAD": "{not json", "LIST": "[1, 2]", "NOIMAGEID": '{"1": {"question": "q", "answer": "a"}}',
                "OK": '{"1": {"imageId": "a", "question": "q", "answer": "a"}}', "NOANN": '{"images": []}'}
    for key, value in list(files.items()):
        if value in contents:
            (tmp_path / f"{value}.json").write_text(contents[value])
            files[key] = str(tmp_path / f"{value}.json")
    with pytest.raises(UsageError, match=message):
        build_task(name, **files)
