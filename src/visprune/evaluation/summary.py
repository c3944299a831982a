"""``summary.json`` and its Markdown table, built from the per-sample records of a run."""

from __future__ import annotations

import json
import platform
from pathlib import Path
import torch

from ..methods import Method
from . import results, stats
from .tables import fmt, markdown_table
from .settings import EvalSettings


NOTES = {
    "accuracy": "the task metric: shapes exact match, VQAv2 official accuracy, GQA exact match, or corpus CIDEr-D "
                "for captions (also under 'CIDEr', with 'BLEU-4'); over the samples not skipped",
    "flops_per_sample": "counted prefill FLOPs (torch FlopCounterMode with visprune's CPU SDPA formula), one sample "
                        "at a time so padding is not billed, mean over samples; scoring overhead included",
    "latency_s": "mean over the timing samples of the median of the timed generate calls (batch 1, fixed number "
                 "of new tokens, after a discarded warm-up); ratios are taken within this run",
    "kept_tokens": "visual tokens the language model received per image (all of them for 'none')",
    "grounding_recall": "share of the question-relevant patches kept, where the task has ground truth",
    "prefill_memory": "one prefill on the first timing sample: peak bytes of the tensors it creates (activations and "
                      "KV cache, weights excluded; CUDA: allocator peak above the weights) and the KV cache's bytes; "
                      "peak_memory_ratio / kv_cache_ratio compare them with the unpruned model",
    "peak_memory": "process-level peak (CUDA max_memory_allocated, or CPU RSS since the process started, which "
                   "cannot be split per method)",
}


def versions() -> dict[str, str]:
    import numpy
    import PIL
    import transformers

    from .. import __version__

    return {"visprune": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": numpy.__version__, "pillow": PIL.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def write_summary(s: EvalSettings, methods: list[Method], out: Path, latency: dict, ranks: list[dict],
                  device: str, world: int, prefill: dict | None = None) -> dict:
    """Merge the per-rank records, compute every method's row and write ``summary.json`` / ``summary.md``."""
    order = [e.id for e in s.task.examples]
    rows, scores = {}, {}
    for m in methods:
        folder = results.method_dir(out, results.CLEAN, m.label)
        results.merge(folder, order)
        row = {"method": m.label, "config": m.to_dict()["config"]}
        records = results.read_records(folder)
        row.update(results.summarize_method(s.task, records, s.caption_tokenizer))
        scores[m.label] = _sample_scores(records)
        row["latency_s"] = latency.get(m.label)
        peaks = [r["memory"][m.label] for r in ranks if m.label in r["memory"]]
        row["peak_memory"] = max(peaks, key=lambda p: p["peak_bytes"]) if peaks else None
        row["prefill_memory"] = (prefill or {}).get(m.label) or None
        rows[m.label] = row
    ref = rows[methods[0].label]
    for row in rows.values():
        row["flops_ratio"] = _ratio(row.get("flops_per_sample"), ref.get("flops_per_sample"))
        row["latency_ratio"] = _ratio(row.get("latency_s"), ref.get("latency_s"))
        mine, theirs = row.get("prefill_memory") or {}, ref.get("prefill_memory") or {}
        row["peak_memory_ratio"] = _ratio(mine.get("prefill_peak_bytes"), theirs.get("prefill_peak_bytes"))
        row["kv_cache_ratio"] = _ratio(mine.get("kv_cache_bytes"), theirs.get("kv_cache_bytes"))
    _intervals(rows, scores, methods, per_sample=s.task.kind != "caption")
    missing = sum(r["missing"] for r in rows.values())
    robustness = {}
    for corruption in s.corruptions:
        cond = results.condition_name(corruption)
        entry, cond_scores = {}, {}
        for m in methods:
            folder = results.method_dir(out, cond, m.label)
            results.merge(folder, order)
            records = results.read_records(folder)
            acc = results.summarize_method(s.task, records, s.caption_tokenizer)
            entry[m.label] = {"accuracy": acc["accuracy"], "n": acc["n"], "missing": acc["missing"],
                              "drop_vs_clean": _diff(rows[m.label]["accuracy"], acc["accuracy"])}
            cond_scores[m.label] = _sample_scores(records)
        missing += sum(acc["missing"] for acc in [entry[m.label] for m in methods])
        ref = methods[0].label
        for m in methods:
            entry[m.label]["drop_vs_unpruned"] = _diff(entry[ref]["accuracy"], entry[m.label]["accuracy"])
            if s.task.kind != "caption":  # intervals: per-sample metrics only, as for the clean rows
                entry[m.label]["accuracy_ci"] = stats.mean_ci(list(cond_scores[m.label].values()))
                entry[m.label]["vs_clean"] = stats.paired_difference(cond_scores[m.label], scores[m.label])
                if m.label != ref:
                    entry[m.label]["vs_unpruned"] = stats.paired_difference(cond_scores[m.label], cond_scores[ref])
        robustness[cond] = entry
    robustness_mean = {}
    for m in methods if robustness else []:
        accs = [e[m.label]["accuracy"] for e in robustness.values() if e[m.label]["accuracy"] is not None]
        drops = [e[m.label]["drop_vs_clean"] for e in robustness.values() if e[m.label]["drop_vs_clean"] is not None]
        robustness_mean[m.label] = {"accuracy": sum(accs) / len(accs) if accs else None,
                                    "drop_vs_clean": sum(drops) / len(drops) if drops else None}
    summary = {
        "task": s.task.name,
        "model": s.model,
        "n": len(s.task.examples),
        "complete": missing == 0,
        "settings": {"batch_size": s.batch_size, "device": device, "dtype": s.dtype, "processes": world,
                     "timing_samples": s.timing, "repeats": s.repeats, "timing_new_tokens": s.timing_tokens,
                     "max_new_tokens": s.max_new_tokens or s.task.max_new_tokens,
                     "corruptions": [results.condition_name(c) for c in s.corruptions], **s.task.meta},
        "notes": NOTES,
        "statistics": stats.DESCRIPTION,
        "methods": list(rows.values()),
        "robustness": robustness,
        "robustness_mean": robustness_mean,  # over all corruption conditions of this run
        "versions": versions(),
    }
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out / "summary.json")
    (out / "summary.md").write_text(table(summary) + "\n")
    return summary


def _sample_scores(records: dict[str, dict]) -> dict[str, float]:
    """Each answered sample's score, by id (skipped images left out)."""
    return {i: r["score"] for i, r in records.items()
            if not r.get("skipped") and isinstance(r.get("score"), (int, float))}


def _with_ci(value, ci) -> str:
    return fmt(value) if not ci else f"{fmt(value)} [{ci[0]:.3f}, {ci[1]:.3f}]"


def difference_cell(d) -> str:
    """``-0.050 [-0.090, -0.010]``; a difference whose interval contains 0 is marked a tie."""
    if not d:
        return "-"
    cell = f"{d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
    return f"tie: {cell}" if d["tie"] else cell


def _corrupted_cell(e: dict) -> str:
    if "vs_clean" not in e:  # a corpus metric (CIDEr): the difference without an interval
        return f"{fmt(e['accuracy'])} ({fmt(e['drop_vs_clean'], '+.3f')})"
    return f"{_with_ci(e['accuracy'], e.get('accuracy_ci'))}; vs clean {difference_cell(e['vs_clean'])}"


def _intervals(rows: dict, scores: dict, methods: list[Method], per_sample: bool) -> None:
    """Each row's ``accuracy_ci``, and its paired difference from the unpruned reference and from the
    most accurate pruned method (``vs_unpruned``, ``vs_best``: diff, ci, n, tie). Per-sample metrics
    only: a corpus metric (CIDEr) is not a mean of per-sample scores, and gets none."""
    if not per_sample:
        return
    ref = methods[0].label
    pruned = [m.label for m in methods[1:] if rows[m.label].get("accuracy") is not None]
    best = max(pruned, key=lambda label: rows[label]["accuracy"], default=None)
    for label, row in rows.items():
        row["accuracy_ci"] = stats.mean_ci(list(scores[label].values()))
        if label != ref:
            row["vs_unpruned"] = stats.paired_difference(scores[label], scores[ref])
        if best is not None and label not in (ref, best):
            row["vs_best"] = {"best": best, **(stats.paired_difference(scores[label], scores[best]) or {})}


def _ratio(a, b):
    return a / b if a is not None and b else None


def _diff(a, b):
    return a - b if a is not None and b is not None else None


def table(summary: dict) -> str:
    """The summary as a Markdown table (one row per method)."""
    text = markdown_table(
        ["method", "n", "accuracy [95% CI]", "vs unpruned [95% CI]", "kept tokens (mean)", "FLOPs share",
         "latency ratio", "grounding recall"],
        [[r["method"], r["n"], _with_ci(r["accuracy"], r.get("accuracy_ci")), difference_cell(r.get("vs_unpruned")),
          fmt((r.get("kept_tokens") or {}).get("mean"), ".1f"), fmt(r.get("flops_ratio")),
          fmt(r.get("latency_ratio")), fmt(r.get("grounding_recall"))]
         for r in summary["methods"]],
    )
    if any(r.get("accuracy_ci") for r in summary["methods"]):
        text += f"\n\nIntervals: {summary.get('statistics', stats.DESCRIPTION)}."
    if summary.get("robustness"):
        labels = [r["method"] for r in summary["methods"]]
        text += ("\n\nUnder each corruption: accuracy [95% CI], then its paired difference from the same method "
                 "on clean images (\"tie\": the interval contains 0).\n\n") + markdown_table(
            ["corruption", *labels],
            [[cond, *(_corrupted_cell(entry[m]) for m in labels)] for cond, entry in summary["robustness"].items()],
        )
    return text
