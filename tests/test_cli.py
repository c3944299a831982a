"""The command line: method specs and the demo on a random-weight model."""

import json

import pytest

from visprune.apps.cli import main
from visprune.methods import method_names, parse_method


def test_method_specs():
    m = parse_method("atp:budget=energy,energy=0.9,min_keep=4")
    assert m.config.scorer == "atp" and m.config.budget == "energy" and m.config.energy == 0.9
    assert m.config.min_keep == 4
    assert parse_method("e-adaprune:energy=0.95").config.budget == "energy"
    assert parse_method("none").config is None
    assert "e-adaprune" in method_names() and "random" in method_names()
    with pytest.raises(ValueError, match="unknown method 'foo'; valid: none"):
        parse_method("foo")
    with pytest.raises(ValueError, match="key=value"):
        parse_method("atp:keep")
    with pytest.raises(ValueError, match="unknown PruneConfig fields"):
        parse_method("atp:kep=0.3")


def test_demo_on_random_model(tmp_path, capsys):
    rc = main(["demo", "--n", "3", "--model", "random", "--method", "atp:keep=0.25", "--method", "random:k=16",
               "--timing", "1", "--repeats", "1", "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "results.json").read_text())
    rows = {r["method"]: r for r in data["results"]}
    assert set(rows) == {"none", "atp:keep=0.25", "random:k=16"}
    assert rows["none"]["kept_tokens"]["mean"] == 256 and rows["none"]["flops_ratio"] == 1.0
    assert rows["atp:keep=0.25"]["kept_tokens"] == {"mean": 64, "min": 64, "max": 64}
    assert rows["random:k=16"]["flops_ratio"] < rows["atp:keep=0.25"]["flops_ratio"] < 1.0
    assert 0.0 <= rows["random:k=16"]["grounding_recall"] <= 1.0
    assert rows["atp:keep=0.25"]["config"]["keep"] == 0.25
    for name in ("results.md", "accuracy_vs_flops.png", "overlays.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "accuracy [95% CI]" in (tmp_path / "results.md").read_text()  # the eval summary's table, with intervals
    assert "| atp:keep=0.25 |" in capsys.readouterr().out


def test_bad_method_fails_before_loading(capsys):
    assert main(["demo", "--method", "nope:keep=0.2", "--model", "random"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
