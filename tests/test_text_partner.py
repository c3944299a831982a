"""No silent downgrade: ``text_encoder="auto"`` (the default) gives ATP and ``text`` the CLIP partner a model's
folder ships, in the Python API as on the command line; ``last_selection(model).relevance`` says which ran."""

import json

import pytest
import torch

import visprune
from visprune import PruneConfig, prune_, shapes, unprune_
from visprune import testing as T
from visprune.apps.cli import main
from visprune.evaluation import build_task
from visprune.evaluation import results as res
from visprune.evaluation.models import load_model
from visprune.scoring.scorers.clip_text import clip_partner

from helpers import load_llava, pruned_selection, save_llava

QUESTION = "what colour is the star ?"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two saved tiny LLaVAs, the bundled layout: ``with_clip/`` ships ``clip/`` (CLIP text tower,
    projections, tokenizer) next to its config.json, ``without_clip/`` does not."""
    root = tmp_path_factory.mktemp("models")
    for name in ("with_clip", "without_clip"):
        model = save_llava(root / name)
    T.clip_model(model.config.vision_config).save_pretrained(root / "with_clip" / "clip")
    T.tokenizer().save_pretrained(root / "with_clip" / "clip")
    return root




@torch.no_grad()
def _selection(model, proc, config):
    return pruned_selection(model, proc, proc(images=T.images(1), text=[T.prompt(QUESTION)], return_tensors="pt"), config)


def test_auto_is_the_default_and_bad_values_are_refused():
    assert PruneConfig().text_encoder == "auto" and PruneConfig().to_dict()["text_encoder"] == "auto"
    assert PruneConfig(text_encoder=None).text_encoder is None
    for bad, message in [(3, "text_encoder must be 'auto'"), ("", "names no CLIP"), ("lmtext", "text_encoder=None"),
                         ("AUTO", "lower case"), (["a"], "text_encoder must be")]:
        with pytest.raises(ValueError, match=message):
            PruneConfig(scorer="atp", text_encoder=bad)


def test_auto_gives_atp_and_text_the_partner_the_folder_ships(folders):
    model, proc = load_llava(folders / "with_clip")
    clip = str(folders / "with_clip" / "clip")
    assert clip_partner(model) == clip
    auto = _selection(model, proc, PruneConfig(scorer="atp", keep=0.25))
    explicit = _selection(model, proc, PruneConfig(scorer="atp", keep=0.25, text_encoder=clip))
    assert auto.relevance == explicit.relevance == f"clip:{clip}"
    assert torch.equal(auto.kept[0], explicit.kept[0]) and torch.equal(auto.scores, explicit.scores)
    # the weight-free relevance is still there, explicitly, and it selects differently here
    lm = _selection(model, proc, PruneConfig(scorer="atp", keep=0.25, text_encoder=None))
    assert lm.relevance == "lmtext" and not torch.equal(lm.scores, auto.scores)
    assert _selection(model, proc, PruneConfig(scorer="text", keep=0.25)).relevance == f"clip:{clip}"
    assert _selection(model, proc, PruneConfig(scorer="cls", keep=0.25)).relevance is None
    # the command line's loader finds the same partner, through the same lookup
    assert load_model(str(folders / "with_clip"))[2] == clip


def test_auto_falls_back_to_lmtext_where_no_partner_exists(folders):
    model, proc = load_llava(folders / "without_clip")
    assert clip_partner(model) is None and load_model(str(folders / "without_clip"))[2] is None
    auto = _selection(model, proc, PruneConfig(scorer="atp", keep=0.25))
    lm = _selection(model, proc, PruneConfig(scorer="atp", keep=0.25, text_encoder=None))
    assert auto.relevance == lm.relevance == "lmtext" and torch.equal(auto.kept[0], lm.kept[0])
    with pytest.raises(ValueError, match="folder ships none"):  # 'text' has nothing to fall back to
        prune_(model, PruneConfig(scorer="text", keep=0.25), processor=proc)
    assert not visprune.is_pruned(model)
    in_memory, proc = T.llava()  # built in memory: no folder, no partner
    assert _selection(in_memory, proc, PruneConfig(scorer="atp", keep=0.25)).relevance == "lmtext"


@pytest.mark.skipif(not (shapes.CHECKPOINT / "config.json").is_file(),
                    reason=f"no trained shapes checkpoint in {shapes.CHECKPOINT} (train it with scripts/train_shapes.py)")
@torch.no_grad()
def test_python_api_and_cli_run_the_same_atp_on_the_bundled_model(tmp_path, capsys):
    """The bundled shapes model: ``PruneConfig(scorer="atp")`` in Python and ``visprune eval --model shapes``
    answer the same held-out questions with the same CLIP relevance, selections and accuracy."""
    n, seed, spec = 6, 12345, "atp:keep=0.25"
    rc = main(["eval", "--model", "shapes", "--task", "shapes-vqa", "--n", str(n), "--seed", str(seed),
               "--method", spec, "--timing", "0", "--no-flops", "--quiet", "--out", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    row = {r["method"]: r for r in summary["methods"]}[spec]
    clip = f"clip:{shapes.clip_path()}"
    assert row["relevance"] == clip and row["config"]["text_encoder"] == str(shapes.clip_path())
    records = res.read_records(res.method_dir(tmp_path / "out", "clean", spec))

    task = build_task("shapes-vqa", n=n, seed=seed)
    model, proc = shapes.load()
    prune_(model, PruneConfig(scorer="atp", keep=0.25), processor=proc)  # the Python API, defaults only
    try:
        scores = []
        for e in task.examples:
            pred = shapes.answer(model, proc, e.image, e.question)
            sel = visprune.last_selection(model)
            kept = sel.kept[0].cpu()
            rel = torch.tensor(e.relevant_patches)
            rec = records[e.id]
            assert sel.relevance == rec["relevance"] == clip
            # the question alone, though the shapes tokenizer decodes the prompt lower-cased ("user : ...")
            assert sel.questions == [" ".join(e.question.lower().replace("?", " ?").split())]
            assert len(kept) == rec["kept_tokens"]
            assert float(rel[kept].sum()) / float(rel.sum()) == pytest.approx(rec["grounding_recall"])
            assert shapes.normalise_answer(rec["prediction"]) == pred
            scores.append(task.score(pred, e.references))
    finally:
        unprune_(model)
    assert sum(scores) / len(scores) == pytest.approx(row["accuracy"])


def test_a_measured_relevance_choice_replaces_the_models_own_clip(folders):
    """``visprune tune`` found lmtext better than the folder's CLIP: ATP runs lmtext under ``"auto"`` and
    with the partner named (as the command line names it), and keeps a CLIP the caller chose otherwise."""
    from visprune.scoring.measured import MEASURED_FILE

    model, proc = load_llava(folders / "with_clip")
    clip = str(folders / "with_clip" / "clip")
    measured = folders / "with_clip" / MEASURED_FILE
    try:
        measured.write_text(json.dumps({"relevance": {"choice": "lmtext"}}))
        assert _selection(model, proc, PruneConfig(scorer="atp", keep=0.25)).relevance == "lmtext"
        assert _selection(model, proc, PruneConfig(scorer="atp", keep=0.25, text_encoder=clip)).relevance == "lmtext"
        assert _selection(model, proc, PruneConfig(scorer="text", keep=0.25)).relevance == f"clip:{clip}"  # needs CLIP
        measured.write_text(json.dumps({"relevance": {"choice": "clip"}}))
        assert _selection(model, proc, PruneConfig(scorer="atp", keep=0.25)).relevance == f"clip:{clip}"
    finally:
        measured.unlink(missing_ok=True)
