"""Every method at matched mean budgets on the shapes proving ground: accuracy and grounding recall.

    python scripts/shapes_comparison.py                     # writes docs/comparison.md and docs/comparison.png
    python scripts/shapes_comparison.py --budgets 64,32 --n 100 --model random   # a quick mechanical check

Fixed-budget methods keep exactly k tokens of 256 per image. The adaptive ones (E-AdaPrune, ATP
scores with the spectral budget) get an energy share tau calibrated so that their *mean* kept
count on calibration scenes (seed --calib-seed, disjoint from the evaluation seed) equals k, by
bisection over tau. The outlier budgets (cls:budget=iqr, PruMerge, PruMerge+) cannot be tuned and are
reported at their own means. Evaluation goes through ``visprune.evaluation.run`` (the same code as
``visprune eval``): the same samples for every method, the unpruned model measured alongside, and
per-sample records in --runs so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from visprune.evaluation.summary import difference_cell
from visprune.evaluation.tables import fmt, markdown_table

FIXED = ["atp", "cls", "text", "lmtext", "cdpruner", "vispruner", "visionzip", "divprune", "pool", "fastv", "dart",
         "pdrop", "random"]
IN_LLM_K = ("fastv", "dart")  # the in-LLM methods that prune at llm_layer
ADAPTIVE = {"e-adaprune": "e-adaprune", "atp+energy": "atp:budget=energy"}
VARIANTS = {"atp (lmtext)": "atp:k={k},text_encoder=none",  # ATP without its CLIP partner: the lmtext fallback
            "visionzip (projected)": "visionzip:k={k},space=projected"}  # merged after the projector, in place
#: methods with their own, untuned budget: reported at their own mean
OWN_BUDGET = {"cls:budget=iqr": "cls + iqr (PruMerge's count rule on [CLS] attention)",
              "prumerge": "PruMerge (official: last-layer score, iqr count, merge, extra token)",
              "prumerge+": "PruMerge+ (official: PruMerge plus spatially uniform samples)"}


def calibration_features(model, processor, n: int, seed: int) -> torch.Tensor:
    from visprune import shapes

    feats = []
    with torch.no_grad():
        for s in shapes.make_samples(n=n, seed=seed):
            px = processor(text=shapes.prompt(processor, s.question), images=s.image, return_tensors="pt")
            out = model.model.get_image_features(pixel_values=px["pixel_values"].to(model.dtype), return_dict=True)
            feats.append(out.pooler_output[0].float())
    return torch.stack(feats)


def calibrate_energy(features: torch.Tensor, target: float) -> float:
    """The energy share whose mean budget over ``features`` is closest to ``target`` (bisection)."""
    from visprune import ops

    lo, hi = 1e-4, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        mean = ops.energy_budget(features, mid).float().mean().item()
        if mean < target:
            lo = mid
        else:
            hi = mid
    return round(hi, 6)


def load(kind: str):
    from visprune.evaluation.models import load_model

    return load_model(kind)  # "tower": the trained stage-1 tower, an untrained language model: grounding only


def add_arguments(ap: argparse.ArgumentParser, n: int, budgets: str, runs: str) -> None:
    """The options the proving-ground comparisons share: model, questions, calibration, budgets, outputs."""
    ap.add_argument("--model", default="shapes", choices=["shapes", "tower", "random"],
                    help="shapes: the trained VLM; tower: its trained vision tower with an untrained LM "
                         "(grounding recall only); random: all random (mechanics only)")
    ap.add_argument("--n", type=int, default=n)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--calib-seed", type=int, default=777)
    ap.add_argument("--calib-n", type=int, default=100)
    ap.add_argument("--budgets", default=budgets)
    ap.add_argument("--runs", default=None, help=f"per-sample records (default runs/{runs}-MODEL)")
    ap.add_argument("--docs", default="docs")


def calibrated(args: argparse.Namespace):
    """(budgets, (model, processor, text encoder), calibration features), the seeds checked disjoint."""
    budgets = [int(b) for b in args.budgets.split(",")]
    if set(range(args.seed, args.seed + args.n)) & set(range(args.calib_seed, args.calib_seed + args.calib_n)):
        raise SystemExit("calibration and evaluation seeds overlap")
    model, processor, text_encoder = load(args.model)
    return budgets, (model, processor, text_encoder), calibration_features(model, processor, args.calib_n,
                                                                          args.calib_seed)


def main(argv: list[str] | None = None) -> None:
    from visprune.evaluation import EvalSettings, build_task, parse_methods
    from visprune.evaluation.runner import run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap, n=200, budgets="64,32,16", runs="comparison")
    args = ap.parse_args(argv)
    budgets, (model, processor, text_encoder), feats = calibrated(args)
    taus = {b: calibrate_energy(feats, b) for b in budgets}
    fastv_layer = 2 if len(model.model.language_model.layers) > 2 else 1
    specs, group = [], {}
    for b in budgets:
        for name in FIXED:
            if name == "text" and text_encoder is None:
                continue
            spec = f"{name}:k={b}" + (f",llm_layer={fastv_layer}" if name in IN_LLM_K else "")
            specs.append(spec)
            group[spec] = (name, b)
        for name, template in VARIANTS.items():
            spec = template.format(k=b)
            specs.append(spec)
            group[spec] = (name, b)
        for name, base in ADAPTIVE.items():
            spec = f"{base}:energy={taus[b]}" if ":" not in base else f"{base},energy={taus[b]}"
            specs.append(spec)
            group[spec] = (name, b)
    for spec, label in OWN_BUDGET.items():
        specs.append(spec)
        group[spec] = (label, None)

    task = build_task("shapes-vqa", n=args.n, seed=args.seed)
    settings = EvalSettings(model=args.model, task=task, methods=parse_methods(["none", *specs]), out=Path(args.runs or f"runs/comparison-{args.model}"),
                            timing=3, repeats=3)
    summary = run(settings, loaded=(model, processor, text_encoder))
    rows = {r["method"]: r for r in summary["methods"]}
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    name = "comparison" if args.model == "shapes" else f"comparison_{args.model}"
    write_table(docs / f"{name}.md", rows, group, budgets, taus, args, summary)
    plot(docs / f"{name}.png", rows, group, budgets, args)
    (docs / f"{name}.json").write_text(json.dumps({"taus": taus, "summary": summary}, indent=2))
    print(f"wrote {docs / (name + '.md')}, {docs / (name + '.png')}")


def write_table(path, rows, group, budgets, taus, args, summary) -> None:
    ref = rows["none"]
    no_acc = args.model != "shapes"
    acc = (lambda r: "n/a") if no_acc else (lambda r: f"{r['accuracy']:.3f}")
    lines = [
        "# Methods at matched budgets on the shapes proving ground",
        "",
        f"Generated by `python scripts/shapes_comparison.py --model {args.model} --n {args.n} --seed {args.seed} "
        f"--budgets {args.budgets}`; do not edit by hand. Model: `{args.model}`; {args.n} held-out questions "
        f"(seed {args.seed}); energy shares calibrated on {args.calib_n} other scenes (seed {args.calib_seed}).",
        "",
        ("**Accuracy is not measured here**: " + ("the vision tower is the trained stage-1 CLIP but the language "
         "model is untrained, so only which tokens are kept (grounding recall) means something; `lmtext`, "
         "`divprune` and `fastv` read the untrained projector or language model, so their rows mean nothing either."
         if args.model == "tower" else "random weights: a mechanical check only.")
         if no_acc else f"Unpruned: accuracy **{ref['accuracy']:.3f}** with all 256 visual tokens."),
        "",
        "Grounding recall: the share of the question-relevant patches (ground truth from the scene "
        "generator) that the method kept. For `pool` and `visionzip` it understates what survives: a pooled or "
        "merged token averages patches that are not counted as kept (only its representative position is). "
        "FLOPs share: counted prefill FLOPs (vision tower, scoring, language model) against unpruned; "
        "`divprune` pays for its N x N distance matrix, `fastv` runs its first K layers at full length.",
        "",
    ]
    types = sorted({t for r in rows.values() for t in (r.get("accuracy_by_type") or {})})
    lines += ["Rows are in a fixed order, not ranked: `vs unpruned` is the paired difference with its 95% "
              "interval (percentile bootstrap over questions); two methods whose intervals overlap are a tie. "
              "Accuracy per question type follows (about a fifth of the questions each).", ""]
    for b in budgets:
        members = [r for r in rows.values() if group.get(r["method"], (None, None))[1] == b]
        table = markdown_table(
            ["method", "spec", "kept (mean / min / max)", "accuracy", "vs unpruned [95% CI]", *types,
             "grounding recall", "FLOPs share"],
            [[group[r["method"]][0], f"`{r['method']}`",
              f"{(r.get('kept_tokens') or {}).get('mean', 0):.1f} / {(r.get('kept_tokens') or {}).get('min')} / "
              f"{(r.get('kept_tokens') or {}).get('max')}", acc(r), "n/a" if no_acc else difference_cell(r.get("vs_unpruned")),
              *("n/a" if no_acc else fmt((r.get("accuracy_by_type") or {}).get(t)) for t in types),
              fmt(r.get("grounding_recall")), fmt(r.get("flops_ratio"))]
             for r in members])
        lines += [f"## {b} of 256 tokens (mean)", "", table, ""]
    own = [rows[spec] for spec in OWN_BUDGET if spec in rows]
    if own:
        lines += ["## Untuned budgets", "",
                  "The outlier rule (`Q3 + 1.5 IQR` of the score, per image) sets its own count; kept is what the "
                  "language model receives (PruMerge adds one token summing the dropped ones, PruMerge+ also "
                  "uniform samples).", "",
                  markdown_table(["method", "spec", "kept (mean / min / max)", "accuracy", "vs unpruned [95% CI]",
                                  "grounding recall", "FLOPs share"],
                                 [[OWN_BUDGET[r["method"]], f"`{r['method']}`",
                                   f"{(r.get('kept_tokens') or {}).get('mean', 0):.1f} / "
                                   f"{(r.get('kept_tokens') or {}).get('min')} / {(r.get('kept_tokens') or {}).get('max')}",
                                   acc(r), "n/a" if no_acc else difference_cell(r.get("vs_unpruned")),
                                   fmt(r.get("grounding_recall")), fmt(r.get("flops_ratio"))] for r in own]), ""]
    lines += ["Calibrated energy shares: " + ", ".join(f"{b} tokens: tau={t}" for b, t in taus.items()), "",
              f"Versions: {json.dumps(summary.get('versions', {}))}", ""]
    path.write_text("\n".join(lines))


def plot(path, rows, group, budgets, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["accuracy", "grounding_recall"] if args.model == "shapes" else ["grounding_recall"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.6 * len(metrics), 4.2), squeeze=False)
    names = list(dict.fromkeys(g[0] for g in group.values() if g[1] is not None))
    for name in names:
        pts = sorted(((r.get("kept_tokens") or {}).get("mean", 0), r) for r in rows.values()
                     if group.get(r["method"], (None,))[0] == name)
        style = "-o" if name in ("atp", "e-adaprune", "atp+energy") else "--."
        for ax, metric in zip(axes[0], metrics):
            ax.plot([p[0] for p in pts], [p[1].get(metric) or 0 for p in pts], style, label=name)
    if "accuracy" in metrics:
        axes[0][0].axhline(rows["none"]["accuracy"], color="black", lw=0.8, ls=":", label="unpruned")
    for ax, metric in zip(axes[0], metrics):
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets)
        ax.set_xticklabels([str(b) for b in budgets])
        ax.set_xlabel("visual tokens kept (mean of 256)")
        ax.set_title(f"{metric.replace('_', ' ')}, shapes ({args.model}, n={args.n})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
