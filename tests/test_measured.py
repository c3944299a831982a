"""ATP's alpha chosen per model by measurement: ``visprune tune`` writes ``visprune.json`` into a model's
folder, ``prune_`` reads it for ``PruneConfig(alpha=None)`` (the default), and says once, naming the better
setting, when the measured question term does not help."""

import json
import warnings

import pytest
import torch

import visprune
from visprune import PruneConfig, QuestionTermWarning, prune_, unprune_
from visprune import testing as T
from visprune.apps.cli import main
from visprune.scoring.measured import MEASURED_FILE, VERDICTS

from helpers import load_llava, save_llava

QUESTION = "what colour is the star ?"


def _entry(alpha, verdict, measured_alpha=None):
    return {"alpha": alpha, "measured_alpha": alpha if measured_alpha is None else measured_alpha, "verdict": verdict,
            "accuracy": 0.70, "saliency_accuracy": 0.80, "k": 8,
            "vs_saliency": {"diff": -0.10, "ci": [-0.15, -0.05], "n": 200, "tie": False}}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A saved tiny LLaVA (no CLIP partner: ATP's relevance is lmtext)."""
    root = tmp_path_factory.mktemp("measured") / "llava"
    save_llava(root)
    return root


@torch.no_grad()
def _kept(model, proc, config):
    inputs = proc(images=T.images(2), text=[T.prompt(QUESTION)] * 2, return_tensors="pt", padding=True)
    prune_(model, config, processor=proc)
    try:
        model(**inputs)
        return [k.tolist() for k in visprune.last_kept(model)], visprune.last_selection(model).relevance
    finally:
        unprune_(model)


def _write(folder, atp):
    (folder / MEASURED_FILE).write_text(json.dumps({"atp": atp}))


def test_a_harmful_question_term_is_not_mixed_in_and_prune_says_so_once(folder):
    _write(folder, {"lmtext": _entry(1.0, "harms", measured_alpha=0.5)})
    model, proc = load_llava(folder)
    with pytest.warns(QuestionTermWarning) as caught:
        kept, relevance = _kept(model, proc, PruneConfig(scorer="atp", k=8))
    assert len(caught) == 1 and relevance == "lmtext"
    assert caught[0].filename == __file__  # attributed to the caller's prune_, not to visprune's insides
    message = str(caught[0].message)
    assert "lowers accuracy" in message and "scorer='cls'" in message and "-0.100 [-0.150, -0.050]" in message
    assert kept == _kept(model, proc, PruneConfig(scorer="cls", k=8))[0]  # alpha 1.0: saliency alone


def test_a_measured_alpha_is_used_silently_where_the_term_helps_and_an_explicit_one_wins(folder):
    _write(folder, {"lmtext": dict(_entry(0.25, "helps"), vs_saliency={"diff": 0.1, "ci": [0.05, 0.15], "n": 200})})
    model, proc = load_llava(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuestionTermWarning)
        measured = _kept(model, proc, PruneConfig(scorer="atp", k=8))[0]
        assert measured == _kept(model, proc, PruneConfig(scorer="atp", k=8, alpha=0.25))[0]
        _write(folder, {"lmtext": _entry(1.0, "harms")})
        explicit = _kept(model, proc, PruneConfig(scorer="atp", k=8, alpha=0.25))[0]  # given: no warning
    assert explicit == measured
    # a measurement of another relevance (the CLIP partner) does not apply to lmtext: the default 0.75
    _write(folder, {"clip": _entry(1.0, "harms")})
    assert _kept(model, proc, PruneConfig(scorer="atp", k=8))[0] == _kept(model, proc, PruneConfig(scorer="atp", k=8,
                                                                                                     alpha=0.75))[0]


def test_a_tie_warns_and_keeps_the_measured_alpha(folder):
    _write(folder, {"lmtext": dict(_entry(0.5, "tie"), vs_saliency={"diff": -0.01, "ci": [-0.04, 0.02], "n": 400})})
    model, proc = load_llava(folder)
    with pytest.warns(QuestionTermWarning, match="does not measurably help.*a tie.*alpha=0.5"):
        kept = _kept(model, proc, PruneConfig(scorer="atp", k=8))[0]
    assert kept == _kept(model, proc, PruneConfig(scorer="atp", k=8, alpha=0.5))[0]


@pytest.mark.parametrize("content", ["{not json", json.dumps({"atp": {"lmtext": {"alpha": 2.0, "verdict": "tie"}}}),
                                     json.dumps({"atp": {"lmtext": {"alpha": 0.5, "verdict": "maybe"}}})])
def test_a_malformed_measurement_is_refused_with_its_path(folder, content):
    (folder / MEASURED_FILE).write_text(content)
    model, proc = load_llava(folder)
    with pytest.raises(ValueError, match=f"{MEASURED_FILE}"):
        prune_(model, PruneConfig(scorer="atp", k=8), processor=proc)
    assert not visprune.is_pruned(model)


def test_tune_measures_each_relevance_and_writes_what_prune_reads(tmp_path, capsys):
    """``visprune tune`` on the bundled shapes model (CLIP partner and lmtext), a few calibration questions."""
    out = tmp_path / "tune"
    rc = main(["tune", "--model", "shapes", "--task", "shapes-vqa", "--n", "6", "--k", "16", "--alphas", "0.5,0.75",
               "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    measured = json.loads((out / MEASURED_FILE).read_text())
    assert set(measured["atp"]) == {"clip", "lmtext"} and measured["questions"] == 6
    choice = measured["relevance"]
    assert choice["choice"] == ("lmtext" if choice["lmtext_vs_clip"]["ci"][0] > 0 else "clip")
    summary = {r["method"]: r for r in json.loads((out / "summary.json").read_text())["methods"]}
    for kind, m in measured["atp"].items():
        extra = ",text_encoder=none" if kind == "lmtext" else ""
        assert m["verdict"] in VERDICTS and m["k"] == 16
        assert m["saliency_accuracy"] == pytest.approx(summary["cls:k=16"]["accuracy"])
        for a in ("0.5", "0.75"):
            assert m["accuracy_by_alpha"][a] == pytest.approx(summary[f"atp:k=16,alpha={a}{extra}"]["accuracy"])
        assert m["accuracy"] == max(m["accuracy_by_alpha"].values())
        assert m["alpha"] == (1.0 if m["verdict"] == "harms" else m["measured_alpha"])
    assert "-> " in capsys.readouterr().out
    # a rerun into the same folder resumes from its records and measures the same
    assert main(["tune", "--model", "shapes", "--task", "shapes-vqa", "--n", "6", "--k", "16", "--alphas", "0.5,0.75",
                 "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    assert json.loads((out / MEASURED_FILE).read_text())["atp"] == measured["atp"]


def test_tune_refuses_bad_settings_before_loading(tmp_path, capsys):
    for extra, message in [(["--alphas", "0.5,x"], "--alphas"), (["--alphas", "1.0"], "alphas in"),
                           (["--task", "shapes-caption"], "caption task")]:
        args = ["tune", "--model", "shapes", "--task", "shapes-vqa", "--n", "2", "--out", str(tmp_path / "t"), *extra]
        if "--task" in extra:
            args[3:5] = []
        assert main(args) == 2
        assert message in capsys.readouterr().err
