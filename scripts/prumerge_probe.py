"""Why PruMerge answers worse than the same outlier count on [CLS] attention: each step of it ablated.

    python scripts/prumerge_probe.py            # writes docs/prumerge_probe.md and docs/prumerge_probe.json

On the bundled shapes VLM and the held-out questions of docs/comparison.md (``shapes-vqa``, seed
12345, the first ``--n``), through the evaluation code ``visprune eval`` runs (``evaluate_shard``:
the same prompts, greedy answers and scoring), batch 1 as the comparison: ``cls:budget=iqr``, the
official ``prumerge``, and PruMerge with one step changed at a time (:class:`Ablation`, defined here,
not a library setting): its score (the last tower layer's full-width [CLS] row) or ``cls``'s (the
feature layer's head-averaged [CLS] row); its merge (``x_i + sum_j a_j x_j`` over 32 key
neighbours), none, or normalised (``(x_i + sum_j a_j x_j) / (1 + sum_j a_j)``, the extra token
``sum a_j x_j / sum a_j``); with or without the extra token; the kept tokens in descending score
order (the official) or ascending (the picture's). Every row is paired with ``cls:budget=iqr`` and
with ``prumerge`` on the same questions. The script checks that :class:`Ablation` at the official
settings answers every question as the registered ``prumerge`` does.

Then one prefill per question for what the rows do not show: how much the two scores' kept sets
overlap (Jaccard), and what the merge does to the tokens the projector receives (norms, cosine to the
unmerged token, where the 32 neighbours lie: the same object, another object, background).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from visprune.evaluation import stats
from visprune.evaluation.tables import fmt, markdown_table
from visprune.scoring.context import SALIENCY
from visprune.scoring.scorers.prumerge import NEIGHBOURS, PruMergeScorer


class Ablation(PruMergeScorer):
    """PruMerge (:class:`PruMergeScorer`, the official code) with one step changed.

    score: ``"last"`` (the official last-layer full-width [CLS] row) or ``"cls"`` (the ``cls`` scorer's
    saliency: the feature layer's [CLS] row, heads averaged); it is also the merge's weight ``a``.
    merging: ``"official"``, ``"none"`` (kept tower tokens projected as they are) or ``"normalised"``.
    extra: send the extra token. order: ``"descending"`` (score, the official) or ``"ascending"``.
    neighbours: how many key neighbours each kept token merges (the official 32).
    ``log``: a list that receives one dict of merge statistics per image, or None.
    """

    def __init__(self, score: str = "last", merging: str = "official", extra: bool = True,
                 order: str = "descending", neighbours: int = NEIGHBOURS) -> None:
        self.score, self.merging, self.extra, self.order = score, merging, extra, order
        self.neighbours = neighbours
        self.needs = PruMergeScorer.needs | ({SALIENCY} if score == "cls" else set())
        self.log: list[dict] | None = None

    def __call__(self, ctx):
        return ctx.require(SALIENCY, "probe").float() if self.score == "cls" else super().__call__(ctx)

    def _order(self, ctx, scores, i, k):
        top = super()._order(ctx, scores, i, k)
        return torch.sort(top).values if self.order == "ascending" else top

    def merge(self, ctx, kept):
        orders, scores = ctx.extras[self.name]
        tower, out = ctx.tower, []
        for i, order in enumerate(orders):
            x, a, near, rest = self.neighbourhood(ctx, scores, i, order, self.neighbours)
            summed, weight = (x[near] * a[near, None]).sum(1), a[near].sum(1, keepdim=True)
            merged = {"official": x[order] + summed, "none": x[order],
                      "normalised": (x[order] + summed) / (1 + weight)}[self.merging]
            extra = None
            if self.extra and rest.any():
                extra = (x[rest] * a[rest, None]).sum(0, keepdim=True)
                extra = extra / a[rest].sum() if self.merging == "normalised" else extra
            feats = torch.cat([merged] if extra is None else [merged, extra])
            out.append(tower.project(feats.to(tower.hidden[i].dtype)))
            if self.log is not None:
                plain = tower.project(x[order].to(tower.hidden[i].dtype)).float()
                self.log.append({"order": order, "near": near, "weight": weight[:, 0], "x": x[order], "merged": merged,
                                 "extra": extra, "x_norm": x.norm(dim=-1).mean(), "plain_proj": plain,
                                 "merged_proj": out[-1][: len(order)].float(),
                                 "extra_proj": None if extra is None else out[-1][-1].float()})
        return out


#: (label, what it changes, the method: a spec or an Ablation's settings)
ROWS = [
    ("cls:budget=iqr", ("reference: feature-layer [CLS] attention (heads averaged), outlier count, ascending, "
                       "no merge"), "cls:budget=iqr"),
    ("prumerge", "(a) official: last-layer full-width score, outlier count, merge, extra token, descending",
     "prumerge"),
    ("last, no merge, extra, desc", "(b) PruMerge's selection and order, kept tokens as they are, extra token",
     {"merging": "none"}),
    ("last, no merge, desc", "(b) as above without the extra token", {"merging": "none", "extra": False}),
    ("last, no merge, asc", "(b) as above, ascending: a plain top-k of PruMerge's score",
     {"merging": "none", "extra": False, "order": "ascending"}),
    ("last, merge, asc", "merge alone: official merge, no extra token, ascending",
     {"extra": False, "order": "ascending"}),
    ("last, merge, desc", "official merge and order, no extra token", {"extra": False}),
    ("last, normalised, extra, desc", "(c) merge and extra token normalised (weights sum to 1)",
     {"merging": "normalised"}),
    ("last, normalised, desc", "(c) normalised merge, no extra token", {"merging": "normalised", "extra": False}),
    ("cls, merge, extra, desc", "(d) `cls` score with PruMerge's merge, extra token and order",
     {"score": "cls"}),
    ("cls, no merge, desc", "(d) `cls` score, no merge, descending (order alone)",
     {"score": "cls", "merging": "none", "extra": False}),
    ("last, merge 4, extra, desc", "(e) official, but 4 neighbours merged instead of 32", {"neighbours": 4}),
    ("last, merge 1, extra, desc", "(e) official, but 1 neighbour merged", {"neighbours": 1}),
    ("cls:budget=iqr,layer=-1", "(e) `cls` on the last layer (heads averaged): the layer alone",
     "cls:budget=iqr,layer=-1"),
]


def config(method):
    from visprune import PruneConfig
    from visprune.methods import parse_method

    return parse_method(method).config if isinstance(method, str) else PruneConfig(scorer=Ablation(**method),
                                                                                  budget="iqr")


def evaluate(model, processor, task, label, cfg) -> dict[str, dict]:
    """Per-question records of one method, through the evaluation runner's own loop."""
    from visprune.evaluation import results
    from visprune.evaluation.runner import evaluate_shard
    from visprune.evaluation.settings import EvalSettings
    from visprune.methods import Method

    with tempfile.TemporaryDirectory() as folder:
        s = EvalSettings(model="shapes", task=task, methods=[], out=Path(folder), flops=False, progress=False)
        evaluate_shard(model, processor, task, Method(label, cfg), task.examples, Path(folder), 0, None, s, False)
        return results.read_records(Path(folder))


def object_ids(sample) -> np.ndarray:
    """Per patch (256, row-major): the index of the object whose footprint covers it, -1 for none."""
    from visprune.shapes import scenes as S

    ids = np.full(S.GRID * S.GRID, -1)
    for k, o in enumerate(sample.objects):
        for r, c in o.cells:
            ids[r * S.GRID + c] = k
    return ids


@torch.no_grad()
def diagnostics(model, processor, task, samples) -> dict:
    """Kept-set overlap of the scores and the merge's effect on the tokens, one prefill per question."""
    import visprune
    from visprune.evaluation.models import model_inputs

    kept: dict[str, list[set]] = {}
    for label, method in [("cls:budget=iqr", "cls:budget=iqr"), ("cls:budget=iqr,layer=-1", "cls:budget=iqr,layer=-1"),
                          ("prumerge", {})]:
        cfg = config(method)
        if isinstance(method, dict):
            cfg.scorer.log = log = []
        visprune.prune_(model, cfg, processor=processor)
        try:
            kept[label] = []
            for e in task.examples:
                model(**model_inputs(model, processor, task, [e], [e.load_image()]))
                kept[label].append(set(visprune.last_kept(model)[0].tolist()))
        finally:
            visprune.unprune_(model)
    per = {key: [] for key in ("jaccard", "jaccard_last_layer", "pm_only", "cls_only", "pm_background", "cls_background",
                               "weight", "norm_ratio", "cos", "proj_norm_ratio", "proj_cos", "extra_norm",
                               "extra_proj_norm", "near_same", "near_other", "near_background", "unmerged_proj_norm")}
    for i, s in enumerate(samples):
        pm, cl, cl1 = kept["prumerge"][i], kept["cls:budget=iqr"][i], kept["cls:budget=iqr,layer=-1"][i]
        obj = np.asarray(s.object_patches, dtype=bool)
        ids = object_ids(s)
        per["jaccard"].append(len(pm & cl) / len(pm | cl))
        per["jaccard_last_layer"].append(len(pm & cl1) / len(pm | cl1))
        per["pm_only"].append(len(pm - cl))
        per["cls_only"].append(len(cl - pm))
        per["pm_background"].append(float(np.mean([not obj[j] for j in pm])))
        per["cls_background"].append(float(np.mean([not obj[j] for j in cl])))
        g = log[i]
        per["weight"].append(float(g["weight"].mean()))
        per["norm_ratio"].append(float((g["merged"].norm(dim=-1) / g["x"].norm(dim=-1)).mean()))
        per["cos"].append(float(torch.nn.functional.cosine_similarity(g["merged"], g["x"], dim=-1).mean()))
        per["proj_norm_ratio"].append(float((g["merged_proj"].norm(dim=-1) / g["plain_proj"].norm(dim=-1)).mean()))
        per["unmerged_proj_norm"].append(float(g["plain_proj"].norm(dim=-1).mean()))
        per["proj_cos"].append(float(torch.nn.functional.cosine_similarity(g["merged_proj"], g["plain_proj"],
                                                                           dim=-1).mean()))
        if g["extra"] is not None:
            per["extra_norm"].append(float(g["extra"].norm() / g["x"].norm(dim=-1).mean()))
            per["extra_proj_norm"].append(float(g["extra_proj"].norm() / g["plain_proj"].norm(dim=-1).mean()))
        own = ids[g["order"].numpy()]  # the kept token's object, -1 background
        nb = ids[g["near"].numpy()]
        on_object = own >= 0
        if on_object.any():  # the neighbours of kept tokens that lie on an object
            same = nb[on_object] == own[on_object, None]
            per["near_same"].append(float(same.mean()))
            per["near_other"].append(float(((nb[on_object] >= 0) & ~same).mean()))
            per["near_background"].append(float((nb[on_object] < 0).mean()))
    return {key: {"mean": float(np.mean(v)), "ci": stats.mean_ci(v), "n": len(v)} for key, v in per.items() if v}


def main(argv: list[str] | None = None) -> None:
    from visprune import shapes
    from visprune.evaluation import build_task
    from visprune.evaluation.models import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--out", default="docs/prumerge_probe.md")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model, processor, _ = load_model("shapes")
    task = build_task("shapes-vqa", n=args.n, seed=args.seed)
    samples = shapes.make_samples(n=args.n, seed=args.seed)
    records = {}
    for label, _, method in ROWS:
        records[label] = evaluate(model, processor, task, label, config(method))
        r = records[label]
        print(f"{label:<32} {np.mean([x['score'] for x in r.values()]):.3f}  kept "
              f"{np.mean([x['kept_tokens'] for x in r.values()]):.1f}", flush=True)
    check = evaluate(model, processor, task, "ablation at the official settings", config({}))
    same = all(check[i]["prediction"] == records["prumerge"][i]["prediction"] for i in check)
    if not same:
        raise SystemExit("Ablation() at the official settings does not answer as the registered prumerge")
    diag = diagnostics(model, processor, task, samples)
    write(args, records, diag)


def write(args, records, diag) -> None:
    scores = {label: {i: float(r["score"]) for i, r in recs.items()} for label, recs in records.items()}
    types = sorted({r["qtype"] for r in records["prumerge"].values()})
    rows, out = [], []
    for label, what, method in ROWS:
        recs = records[label]
        acc = [float(r["score"]) for r in recs.values()]
        ci = stats.mean_ci(acc)
        by_type = {t: float(np.mean([r["score"] for r in recs.values() if r["qtype"] == t])) for t in types}
        vs_cls = stats.paired_difference(scores[label], scores["cls:budget=iqr"])
        vs_pm = stats.paired_difference(scores[label], scores["prumerge"])
        recall = [r["grounding_recall"] for r in recs.values() if r["grounding_recall"] is not None]
        out.append({"label": label, "what": what, "method": method if isinstance(method, str) else {**method},
                    "accuracy": float(np.mean(acc)), "ci": ci, "by_type": by_type, "vs_cls": vs_cls, "vs_prumerge": vs_pm,
                    "kept": float(np.mean([r["kept_tokens"] for r in recs.values()])),
                    "grounding_recall": float(np.mean(recall))})
        rows.append([f"`{label}`", what, f"{out[-1]['kept']:.1f}", f"{fmt(out[-1]['accuracy'])} [{fmt(ci[0])}, {fmt(ci[1])}]",
                     cell(vs_cls), cell(vs_pm), *(fmt(by_type[t]) for t in types), fmt(out[-1]["grounding_recall"])])

    def d(key, spec=".3f"):
        v = diag[key]
        return f"{v['mean']:{spec}} [{v['ci'][0]:{spec}}, {v['ci'][1]:{spec}}]"

    lines = [
        "# PruMerge on the shapes proving ground, step by step",
        "",
        f"Generated by `python scripts/prumerge_probe.py --n {args.n} --seed {args.seed}`; do not edit by hand. "
        f"Model: the bundled shapes VLM; the first {args.n} held-out `shapes-vqa` questions (seed {args.seed}), the "
        "ones docs/comparison.md answers, through the evaluation runner (batch 1). Intervals: " + stats.DESCRIPTION + ".",
        "",
        ("Rows other than `cls:budget=iqr`, `prumerge` and `cls:budget=iqr,layer=-1` are PruMerge with one step changed "
        "(`Ablation` in the script): `last` / `cls` is the score (and the merge's weights), then the merge "
        "(official `x_i + sum a_j x_j`, none, or normalised), the extra token, and the order the language model "
        "receives the kept tokens in (`desc`: by score, the official; `asc`: the picture's). Every row uses the "
        "outlier count (`Q3 + 1.5 IQR` of its score); kept is what the language model receives. At the official "
        "settings `Ablation` answers every question as `prumerge` does (checked by the script). The accuracy per "
         "question type (a fifth of the questions each) has no interval."),
        "",
        markdown_table(["row", "what changes", "kept (mean)", "accuracy [95% CI]", "vs `cls:budget=iqr`",
                        "vs `prumerge`", *types, "grounding recall"], rows),
        "",
        f"## The kept sets and the merged tokens ({args.n} questions, one prefill each; mean [95% CI] over questions)",
        "",
        markdown_table(["measure", "value"], [
            ["Jaccard of the kept patches, `prumerge` vs `cls:budget=iqr`", d("jaccard")],
            ["Jaccard, `prumerge` vs `cls:budget=iqr,layer=-1`", d("jaccard_last_layer")],
            ["patches only `prumerge` keeps / only `cls:budget=iqr` keeps (per image)",
             f"{d('pm_only', '.2f')} / {d('cls_only', '.2f')}"],
            ["share of kept patches on the background, `prumerge` / `cls:budget=iqr`",
             f"{d('pm_background')} / {d('cls_background')}"],
            ["sum of the 32 neighbours' weights `sum a_j` per kept token", d("weight")],
            ["tower space: norm of the merged token / of the unmerged one", d("norm_ratio")],
            ["tower space: cosine of the merged token to the unmerged one", d("cos")],
            ["projected: norm of the merged token / of the unmerged one", d("proj_norm_ratio")],
            ["projected: cosine of the merged token to the unmerged one", d("proj_cos")],
            ["extra token's norm / the mean patch norm (tower space)", d("extra_norm")],
            ["extra token's norm / the mean unmerged kept token's norm (projected)", d("extra_proj_norm")],
            ["neighbours of a kept object patch on the same object", d("near_same")],
            ["... on another object", d("near_other")],
            ["... on the background", d("near_background")],
        ]),
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    Path(args.out).with_suffix(".json").write_text(json.dumps({"rows": out, "diagnostics": diag}, indent=2))
    print(f"wrote {args.out}")


def cell(d) -> str:
    if not d:
        return ""
    return f"{'tie: ' if d['tie'] else ''}{d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"


if __name__ == "__main__":
    main()
