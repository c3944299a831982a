"""``visprune tune``: choose ATP's ``alpha`` per model by measurement, for each question relevance
the model can run (its CLIP partner, and the weight-free ``lmtext``), and write the choice where
``prune_`` reads it (``visprune.json``, :mod:`visprune.scoring.measured`), and which of the two
relevances ATP runs with under ``text_encoder="auto"`` (the CLIP partner unless ``lmtext`` is more
accurate beyond the noise).

On the task's calibration questions (use a seed the reported numbers do not use) at ``k`` kept
tokens, ATP runs at each alpha beside its saliency term alone (scorer ``cls``, what ATP selects at
alpha 1.0). The most accurate alpha is compared with ``cls``, paired, with a 95% bootstrap
interval: ``helps`` when the interval is above 0, ``harms`` when it is below 0 (ATP then runs with
alpha 1.0, saliency alone), else ``tie``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..scoring.measured import MEASURED_FILE, model_folder
from . import results, stats
from .models import load_model
from .runner import parse_methods, run
from .settings import EvalSettings

ALPHAS = (0.25, 0.5, 0.75)


def candidates(k: int, alphas: tuple[float, ...], kinds: list[str]) -> dict[tuple[str, float], str]:
    """``(relevance kind, alpha) -> method spec``; ``(kind, 1.0)`` is the saliency term alone."""
    out = {}
    for kind in kinds:
        extra = ",text_encoder=none" if kind == "lmtext" else ""
        out.update({(kind, a): f"atp:k={k},alpha={a:g}{extra}" for a in alphas})
    return out


def choose(kind: str, specs: dict[tuple[str, float], str], saliency: str, scores: dict[str, dict]) -> dict[str, Any]:
    """The measurement of one relevance kind: its best alpha, the paired difference from saliency
    alone, the verdict and the alpha ATP is to run with."""
    acc = {a: _mean(scores[spec]) for (kd, a), spec in specs.items() if kd == kind}
    best = max(acc, key=lambda a: (acc[a], a))  # equal accuracy: the larger alpha, nearer saliency alone
    d = stats.paired_difference(scores[specs[(kind, best)]], scores[saliency])
    if d is None:
        raise ValueError("tuning needs at least 2 questions answered by every method")
    verdict = "helps" if d["ci"][0] > 0 else "harms" if d["ci"][1] < 0 else "tie"
    return {
        "alpha": 1.0 if verdict == "harms" else best,
        "measured_alpha": best,
        "verdict": verdict,
        "accuracy": acc[best],
        "saliency_accuracy": _mean(scores[saliency]),
        "vs_saliency": d,
        "accuracy_by_alpha": {f"{a:g}": v for a, v in acc.items()},
    }


def choose_relevance(atp: dict, specs: dict, scores: dict) -> dict:
    """Which question relevance ATP runs with under ``text_encoder="auto"``: the model's CLIP partner,
    unless ``lmtext`` (each at its best alpha) is more accurate beyond the noise (paired interval above 0)."""
    if "clip" not in atp:
        return {"choice": "lmtext"}
    d = stats.paired_difference(scores[specs[("lmtext", atp["lmtext"]["measured_alpha"])]],
                                scores[specs[("clip", atp["clip"]["measured_alpha"])]])
    return {"choice": "lmtext" if d is not None and d["ci"][0] > 0 else "clip", "lmtext_vs_clip": d}


def run_tune(s: EvalSettings, k: int, alphas: tuple[float, ...] = ALPHAS, into_model: bool = False,
             argv: list[str] | None = None) -> dict:
    """Measure (``s.methods`` is replaced), write ``<out>/visprune.json`` and, with ``into_model``, the
    model's folder's; returns the file's content."""
    if s.task.kind == "caption":
        raise ValueError(f"tune needs a task scored per question (accuracy); {s.task.name} is a caption task")
    if k < 1 or not alphas or any(not 0.0 <= a < 1.0 for a in alphas):
        raise ValueError(f"tune needs k >= 1 and alphas in [0, 1) (1.0 is the saliency term, always measured); "
                         f"got k={k}, alphas={alphas}")
    loaded = load_model(s.model, "cpu" if s.device == "auto" else s.device, s.dtype)
    model = loaded[0]
    folder = model_folder(model)
    if into_model and folder is None:
        raise ValueError(f"--into-model: {s.model} was not loaded from a local folder, so there is none to write to")
    kinds = (["clip"] if loaded[2] is not None else []) + ["lmtext"]
    specs = candidates(k, alphas, kinds)
    saliency = f"cls:k={k}"
    s = replace(s, methods=parse_methods([saliency, *specs.values()]), timing=0, flops=False)
    run(s, loaded=loaded)
    scores = {}
    for spec in [saliency, *specs.values()]:
        records = results.read_records(results.method_dir(Path(s.out), results.CLEAN, spec))
        scores[spec] = {i: r["score"] for i, r in records.items() if isinstance(r.get("score"), (int, float))}
    atp = {kind: dict(choose(kind, specs, saliency, scores), k=k) for kind in kinds}
    measured = {
        "atp": atp,
        "relevance": choose_relevance(atp, specs, scores),
        "task": s.task.name,
        "questions": len(s.task.examples),
        "intervals": stats.DESCRIPTION,
        "command": "visprune " + " ".join(argv) if argv else None,
    }
    text = json.dumps(measured, indent=2) + "\n"
    (Path(s.out) / MEASURED_FILE).write_text(text)
    if into_model:
        (folder / MEASURED_FILE).write_text(text)
    return measured


def report(measured: dict) -> str:
    """A few lines for the terminal."""
    lines = []
    for kind, m in measured["atp"].items():
        d = m["vs_saliency"]
        alphas = ", ".join(f"{a}: {v:.3f}" for a, v in m["accuracy_by_alpha"].items())
        lines.append(f"atp ({kind}): accuracy by alpha {alphas}; saliency alone (cls) {m['saliency_accuracy']:.3f}; "
                     f"best alpha {m['measured_alpha']:g} vs cls {d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
                     f" -> {m['verdict']}; ATP runs with alpha={m['alpha']:g}")
    return "\n".join(lines)


def _mean(scores: dict) -> float:
    return sum(scores.values()) / len(scores) if scores else float("nan")
