"""PruneConfig validation and serialisation."""

import json

import pytest
import torch

import visprune
from visprune import PruneConfig
from visprune.scoring.scorers import RandomScorer


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"keep": 0.0}, "keep"),
        ({"keep": 1.5}, "keep"),
        ({"keep": float("nan")}, "keep"),
        ({"k": 0}, "k must be"),
        ({"k": 2.5}, "k must be"),
        ({"energy": 0.0}, "energy"),
        ({"energy": 1.01}, "energy"),
        ({"energy": 0.9, "min_keep": 10, "max_keep": 5}, "min_keep"),
        ({"scorer": "nope"}, "valid scorers: atp, cdpruner, cls, dart, divprune, fastv, lmtext, pdrop, pool, prumerge, "
                             "prumerge\\+, random, text, visionzip, vispruner"),
        ({"budget": "nope"}, "valid budgets: energy, fixed, iqr, ratio"),
        ({"budget": "fixed"}, "needs k"),
        ({"alpha": 1.5}, "alpha"),
        ({"norm": "zscore"}, "norm"),
        ({"layer": 0}, "layer"),
        ({"text_sign": 0.5}, "text_sign"),
        ({"cut": "middle"}, "unknown cut"),
    ],
)
def test_bad_settings_fail_with_a_message(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PruneConfig(**kwargs)


def test_wrong_types_fail():
    with pytest.raises(TypeError, match="scorer must be"):
        PruneConfig(scorer=3)


def test_budget_is_inferred_and_defaults_filled():
    assert PruneConfig().budget == "ratio" and PruneConfig().keep == 0.5
    assert PruneConfig(k=64).budget == "fixed"
    assert PruneConfig(energy=0.9).budget == "energy"
    assert PruneConfig(budget="energy").energy == 0.95
    assert PruneConfig(scorer="prumerge").budget == "iqr"  # the scorer's own default: PruMerge's outlier rule
    assert PruneConfig(scorer="prumerge+", keep=0.25).budget == "ratio"


def test_round_trip_through_json():
    cfg = PruneConfig(scorer="atp", budget="energy", energy=0.9, min_keep=8, max_keep=300, alpha=0.3, layer=-2, cut="vit")
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["version"] == 1
    assert PruneConfig.from_dict(data) == cfg


def test_from_dict_rejects_unknown_fields_and_versions():
    with pytest.raises(ValueError, match="unknown PruneConfig fields"):
        PruneConfig.from_dict({"keep": 0.5, "kep": 0.3})
    with pytest.raises(ValueError, match="version"):
        PruneConfig.from_dict({"version": 99})


def test_instances_are_accepted_and_serialised_by_name():
    cfg = PruneConfig(scorer=RandomScorer(), keep=0.3)
    assert cfg.to_dict()["scorer"] == "random"


def test_registries_are_listed():
    assert visprune.list_scorers() == ["atp", "cdpruner", "cls", "dart", "divprune", "fastv", "lmtext", "pdrop",
                                       "pool", "prumerge", "prumerge+", "random", "text", "visionzip", "vispruner"]
    assert visprune.list_budgets() == ["energy", "fixed", "iqr", "ratio"]


def test_registry_refuses_duplicates_and_uppercase():
    from visprune.scoring.scorers import register_scorer

    with pytest.raises(ValueError, match="already registered"):
        register_scorer("cls")(type("X", (), {}))
    with pytest.raises(ValueError, match="lowercase"):
        register_scorer("Cls")


@pytest.mark.parametrize("kwargs, match", [
    ({"budget": "energy", "keep": 0.25}, r"keep=0.25 does nothing with budget='energy'"),
    ({"budget": "ratio", "k": 10}, r"k=10 does nothing with budget='ratio'"),
    ({"keep": 0.25, "energy": 0.9}, r"keep=0.25 does nothing with budget='energy'"),
    ({"k": 8, "keep": 0.5}, r"keep=0.5 does nothing with budget='fixed'"),
    ({"keep": 0.5, "max_keep": 8}, r"max_keep=8 does nothing with budget='ratio'"),
    ({"k": 8, "min_keep": 4}, r"min_keep=4 does nothing with budget='fixed'"),
    ({"alpha": True}, "alpha must be a number"),
    ({"seed": True}, "seed must be a number"),
    ({"energy": 0.9, "min_keep": True}, "min_keep must be a number"),
    ({"text_sign": True}, "text_sign must be a number"),
])
def test_settings_the_budget_does_not_read_and_booleans_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PruneConfig(**kwargs)


def test_settings_the_budget_reads_are_accepted():
    assert PruneConfig(keep=0.25).budget == "ratio"
    assert PruneConfig(energy=0.9, min_keep=4, max_keep=64).budget == "energy"
    assert PruneConfig(budget="iqr", min_keep=2, max_keep=32).max_keep == 32


def test_method_specs_with_contradictory_settings_are_refused():
    from visprune.methods import parse_method

    with pytest.raises(ValueError, match="keep=0.25 does nothing with budget='energy'"):
        parse_method("e-adaprune:keep=0.25")


def test_the_config_is_frozen():
    import dataclasses

    cfg = PruneConfig(keep=0.25)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.keep = 7.0
    assert cfg.replace(keep=0.5).keep == 0.5 and cfg.keep == 0.25
    with pytest.raises(ValueError, match="keep"):
        cfg.replace(keep=7.0)


@pytest.mark.parametrize("spec,cls,options", [
    ("pdrop:k=64,layers=8/16/24", "PyramidDropScorer", {"layers": [8, 16, 24]}),
    ("dart:k=32,pivot_image=8,pivot_text=0", "DartScorer", {"pivot_image": 8, "pivot_text": 0}),
    ("lmtext:k=8,standardize=false", "LmTextScorer", {"standardize": False}),
    ("cdpruner:k=8,theta=0.5", "CDPrunerScorer", {"theta": 0.5}),
])
def test_method_strings_reach_scorer_settings_and_round_trip(spec, cls, options):
    from visprune.methods import parse_method

    cfg = parse_method(spec).config
    assert type(cfg.scorer).__name__ == cls and cfg.scorer.options() == options
    data = cfg.to_dict()
    assert data["scorer"] == spec.split(":")[0] and data["scorer_options"] == options
    again = PruneConfig.from_dict(data)
    assert again.to_dict() == data and type(again.scorer) is type(cfg.scorer)


def test_default_scorer_settings_are_not_saved_and_unknown_ones_are_named():
    from visprune.methods import parse_method

    assert "scorer_options" not in parse_method("dart:k=8,pivot_image=4").config.to_dict()  # the default
    assert parse_method("atp:k=8,text_encoder=openai/clip-vit-large-patch14-336").config.text_encoder == \
        "openai/clip-vit-large-patch14-336"  # a hub id with a slash is text, not a list
    with pytest.raises(ValueError, match="settings of scorer 'dart': pivot_image, pivot_text"):
        parse_method("dart:k=8,pivots=3")
    with pytest.raises(ValueError, match="has no setting bogus"):
        PruneConfig.from_dict({"scorer": "dart", "k": 8, "scorer_options": {"bogus": 1}})


@torch.no_grad()
def test_a_scorer_setting_from_a_method_string_selects_what_the_instance_selects():
    import visprune
    from visprune import testing as T
    from visprune.methods import parse_method
    from visprune.scoring.scorers import DartScorer

    model, proc = T.llava()
    inputs = proc(images=T.images(1), text=[T.prompt("what colour is the star ?")], return_tensors="pt")
    kept = []
    for cfg in (parse_method("dart:k=8,llm_layer=1,pivot_image=1,pivot_text=0").config,
                PruneConfig(scorer=DartScorer(pivot_image=1, pivot_text=0), k=8, llm_layer=1),
                PruneConfig(scorer="dart", k=8, llm_layer=1)):
        visprune.prune_(model, cfg, processor=proc)
        try:
            model(**inputs)
            kept.append(visprune.last_kept(model)[0].tolist())
        finally:
            visprune.unprune_(model)
    assert kept[0] == kept[1] and kept[0] != kept[2]
