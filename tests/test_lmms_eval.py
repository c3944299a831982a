"""The lmms-eval plug-in, end to end through lmms-eval's own registry, tasks and evaluator.

Nothing is mocked: the model is found through the ``lmms_eval.models`` entry-point group, the
bundled task YAMLs are loaded from ``--include_path`` with their local JSON Lines data (offline),
and lmms-eval scores the answers. On the trained shapes model when its checkpoint exists, else on
the random-weight LLaVA (mechanics only; accuracy is not asserted then).

Entry point: if the installed package metadata already declares ``visprune`` in the group (after
``pip install -e .`` with the entry point in pyproject.toml), that is used as is. Otherwise the
test writes a minimal ``*.dist-info`` with the same ``entry_points.txt`` line into a temporary
folder and puts it on ``sys.path`` (``PYTHONPATH`` for the CLI run): ``importlib.metadata`` then
finds a real entry point, and lmms-eval loads it the way it does at start-up. Nothing is installed.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (pip install --no-deps lmms-eval==0.7.3, "
                    "see docs/lmms_eval.md)")

from visprune import shapes  # noqa: E402
from visprune.integrations.lmms_tasks import DATA_DIR, TASKS_DIR  # noqa: E402

ENTRY_LINE = "visprune = visprune.integrations.lmms_eval:manifest"
TRAINED = (shapes.CHECKPOINT / "config.json").is_file()
PRETRAINED = "shapes" if TRAINED else "random"
NO_ACCURACY = "no trained shapes checkpoint: the random-weight model's accuracy means nothing"


def _declared() -> bool:
    return any(ep.name == "visprune" for ep in importlib.metadata.entry_points(group="lmms_eval.models"))


@pytest.fixture(scope="module")
def entry_point_path(tmp_path_factory):
    """A sys.path folder that declares the entry point, or None when the installed metadata does."""
    if _declared():
        return None
    folder = tmp_path_factory.mktemp("entry_point")
    info = folder / "visprune_lmms_entry_point-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: visprune-lmms-entry-point\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[lmms_eval.models]\n{ENTRY_LINE}\n")
    return folder


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "datasets"))
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)


@pytest.fixture()
def registered(entry_point_path, monkeypatch):
    """lmms-eval's global model registry with the entry points re-read (as at its start-up)."""
    if entry_point_path is not None:
        monkeypatch.syspath_prepend(str(entry_point_path))
    assert _declared()
    from lmms_eval.models import MODEL_REGISTRY_V2

    MODEL_REGISTRY_V2.load_entrypoint_manifests(overwrite=True)
    return MODEL_REGISTRY_V2


def test_entry_point_resolves_to_the_plugin(registered):
    from lmms_eval.api.model import lmms
    from lmms_eval.models import get_model

    from visprune.integrations.lmms_eval import VisPrune

    cls = get_model("visprune")
    assert cls is VisPrune and issubclass(cls, lmms) and cls.is_simple
    assert "visprune" in registered.list_canonical_model_ids()


def test_model_args_become_a_method():
    from visprune.integrations.lmms_eval import method_from_args

    m = method_from_args("atp", {"keep": 0.4, "alpha": 0.7})
    assert m.config.scorer_name == "atp" and m.config.keep == 0.4 and m.config.alpha == 0.7
    m = method_from_args("e-adaprune", {"energy": 0.9, "max_keep": "None"})
    assert m.config.budget_name == "energy" and m.config.max_keep is None
    assert method_from_args("none", {}).config is None
    with pytest.raises(ValueError, match="unknown method"):
        method_from_args("nope", {})
    with pytest.raises(ValueError, match="unknown PruneConfig fields"):
        method_from_args("atp", {"kep": 0.4})


def test_simple_evaluate_on_bundled_tasks(registered, offline):
    """Generation, multiple choice (log-likelihood) and two rounds, scored by lmms-eval itself."""
    from lmms_eval import evaluator
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager


    t0 = time.perf_counter()
    lm = get_model("visprune").create_from_arg_string(
        f"pretrained={PRETRAINED},method=atp,keep=0.5", {"batch_size": 2, "device": "cpu"})
    tasks = ["visprune_shapes", "visprune_shapes_mc", "visprune_shapes_2round"]
    tm = TaskManager("WARNING", include_path=str(TASKS_DIR))
    out = evaluator.simple_evaluate(model=lm, tasks=tasks, task_manager=tm, batch_size=2, device="cpu",
                                    log_samples=True)
    res = out["results"]
    n = sum(1 for _ in open(DATA_DIR / "test.jsonl"))
    for t in tasks:
        assert len(out["samples"][t]) == n
    assert 0.0 <= res["visprune_shapes"]["accuracy,none"] <= 1.0
    assert 0.0 <= res["visprune_shapes_mc"]["acc,none"] <= 1.0
    assert res["visprune_shapes_2round"]["rounds,none"] == 2.0

    # every image was pruned to half of its 256 tokens, in every request type
    kept = lm.kept_summary()
    assert kept["min"] == kept["max"] == 128
    mc_requests = sum(len(s["doc"]["choices"]) for s in out["samples"]["visprune_shapes_mc"])
    assert kept["images"] == n + mc_requests + 2 * n

    # the plug-in answers exactly as the library does on the same pruned model
    for s in out["samples"]["visprune_shapes"]:
        doc = s["doc"]
        from PIL import Image

        with Image.open(DATA_DIR / doc["image"]) as img:
            expected = shapes.answer(lm.model, lm.processor, img.convert("RGB"), doc["question"])
        assert shapes.normalise_answer(s["resps"][0][0]) == expected

    # multiple choice picks the lowest loss (lmms-eval's convention), one (loss, greedy) per choice
    for s in out["samples"]["visprune_shapes_mc"]:
        assert len(s["filtered_resps"]) == len(s["doc"]["choices"])
        assert all(isinstance(loss, float) and loss > 0 for loss, _ in s["filtered_resps"])
    print(f"simple_evaluate on {PRETRAINED}: {time.perf_counter() - t0:.1f}s, results "
          f"{ {t: {k: v for k, v in r.items() if k.endswith(',none')} for t, r in res.items()} }")
    if not TRAINED:
        pytest.skip(f"accuracy not checked: {NO_ACCURACY}")
    docs = [s["doc"] for s in out["samples"]["visprune_shapes"]]
    chance = sum(shapes.CHANCE[d["qtype"]] for d in docs) / len(docs)
    assert res["visprune_shapes"]["accuracy,none"] >= chance + 0.2, chance
    assert res["visprune_shapes_mc"]["acc,none"] >= chance + 0.2, chance


def test_method_none_keeps_every_token_and_budgets_are_followed(registered, offline):
    """``method=none`` keeps every token; kept counts follow the budget."""
    from lmms_eval import evaluator
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager

    tm = TaskManager("WARNING", include_path=str(TASKS_DIR))
    full = get_model("visprune").create_from_arg_string(f"pretrained={PRETRAINED},method=none", {"device": "cpu"})
    evaluator.simple_evaluate(model=full, tasks=["visprune_shapes"], task_manager=tm, limit=3, device="cpu")
    assert full.kept_summary() == {}
    k16 = get_model("visprune").create_from_arg_string(
        f"pretrained={PRETRAINED},method=random,budget=fixed,k=16", {"device": "cpu"})
    evaluator.simple_evaluate(model=k16, tasks=["visprune_shapes"], task_manager=tm, limit=3, device="cpu")
    assert k16.kept_summary()["max"] == 16


def _lmms_eval_command(entry_point_path, tmp_path, model_args: str, limit: int) -> subprocess.CompletedProcess:
    """The real ``lmms-eval`` command on the bundled task, offline, with the plug-in's entry point."""
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               LMMS_EVAL_DATASETS_CACHE=str(tmp_path / "datasets"))
    if entry_point_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(entry_point_path), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "visprune", "--model_args", model_args,
           "--tasks", "visprune_shapes", "--include_path", str(TASKS_DIR), "--limit", str(limit),
           "--output_path", str(tmp_path / "out")]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.subprocess
def test_lmms_eval_command_line(entry_point_path, tmp_path):
    """The real ``lmms-eval`` command: ``--model visprune --model_args ... --tasks ... --include_path``."""
    t0 = time.perf_counter()
    proc = _lmms_eval_command(entry_point_path, tmp_path, f"pretrained={PRETRAINED},method=atp,keep=0.25,device=cpu", 4)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = list((tmp_path / "out").rglob("*results*.json"))
    assert files, proc.stdout[-2000:]
    results = json.loads(files[0].read_text())["results"]["visprune_shapes"]
    assert 0.0 <= results["accuracy,none"] <= 1.0
    assert "visprune" in json.loads(files[0].read_text())["config"]["model"]
    print(f"lmms-eval CLI: {time.perf_counter() - t0:.1f}s")


@pytest.mark.subprocess
def test_a_failing_plugin_makes_the_command_fail(entry_point_path, tmp_path):
    """lmms-eval's command line would log the error and exit 0; the plug-in makes it exit 1 with the reason."""
    proc = _lmms_eval_command(entry_point_path, tmp_path, "pretrained=/nonexistent/model,method=atp,keep=0.25,device=cpu", 2)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "visprune: the lmms-eval plug-in failed" in proc.stderr and "/nonexistent/model" in proc.stderr


@pytest.mark.parametrize("build", ["llava_next", "gemma3"])
def test_any_supported_model_folder(registered, offline, tmp_path, build):
    """``pretrained=PATH``: a LLaVA-NeXT or a Gemma 3 saved with ``save_pretrained``, loaded by the plug-in,
    pruned, with no family code in the plug-in."""
    from lmms_eval import evaluator
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager
    from PIL import Image

    from visprune import testing as random_models

    model, processor = getattr(random_models, build)()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    lm = get_model("visprune").create_from_arg_string(
        f"pretrained={tmp_path / 'model'},method=atp,keep=0.5,max_new_tokens=4", {"device": "cpu", "batch_size": 2})
    assert type(lm.model).__name__ == type(model).__name__
    out = evaluator.simple_evaluate(model=lm, tasks=["visprune_shapes"], limit=2, device="cpu", log_samples=True,
                                    task_manager=TaskManager("WARNING", include_path=str(TASKS_DIR)))
    assert len(out["samples"]["visprune_shapes"]) == 2
    with Image.open(DATA_DIR / out["samples"]["visprune_shapes"][0]["doc"]["image"]) as img:
        ids = lm._inputs([lm._prompt("q", 1)], [img.convert("RGB")])["input_ids"]
    total = int((ids == lm.model.config.image_token_id).sum())
    kept = lm.kept_summary()
    assert kept["images"] == 2 and 0 < kept["max"] < total


def test_a_filelock_without_its_api_module_is_named_with_the_fix(monkeypatch):
    from visprune.integrations import lmms_eval as plugin

    monkeypatch.setitem(sys.modules, "filelock._api", None)  # as filelock 4, which removed it
    with pytest.raises(ImportError, match=r"filelock < 4 .*pip install 'filelock>=3.16,<4'"):
        plugin._check_filelock()
