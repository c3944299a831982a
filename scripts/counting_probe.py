"""What the bundled model's count answers depend on that pruning removes, and what the cheap remedies do.

    python scripts/counting_probe.py            # writes docs/counting.md and docs/counting.json

Part 1, on count questions only (``--n-count`` of them, seed ``--count-seed``): the model answers
with oracle selections built from the scene generator's ground truth: only the counted objects'
patches, every object's patches, every object plus some random background patches, and every
object at the original positions. If the counted objects alone do not restore the answer, the
model reads the count from something else in the image.

Part 2: ATP at 64 and 32 tokens with the remedies of ``WithContextTokens`` (spatially uniform
tokens, one summary token of the dropped ones), on the count questions and on ``--n-mixed``
held-out questions of every type (seed 12345, the comparison's), with paired intervals against ATP.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from visprune.evaluation import stats
from visprune.evaluation.tables import fmt, markdown_table
from visprune.scoring.scorers.base import Scorer


class OracleScorer(Scorer):
    """Scores from the scene's ground truth, set per sample: 2 on the wanted patches, 1 on the chosen
    background ones, 0 elsewhere (top-k with k = their count keeps exactly them)."""

    name = "oracle"

    def __init__(self) -> None:
        self.current: torch.Tensor | None = None

    def __call__(self, ctx):
        return self.current.to(ctx.valid.device)[None].expand_as(ctx.valid).float()


def oracle_scores(sample, what: str, background: int, seed: int) -> tuple[torch.Tensor, int]:
    rel = torch.as_tensor(sample.relevant_patches, dtype=torch.bool)
    obj = torch.as_tensor(sample.object_patches, dtype=torch.bool)
    wanted = rel if what == "counted" else obj
    s = wanted.float() * 2
    bg = (~obj).nonzero().flatten()
    if background:
        pick = bg[torch.randperm(len(bg), generator=torch.Generator().manual_seed(seed))[:background]]
        s[pick] = 1.0
    return s, int((s > 0).sum())


ANSWERS: list[str] = []  # every prediction, in order, for the count errors


@torch.no_grad()
def answer(model, processor, sample, config=None) -> bool:
    import visprune
    from visprune import shapes

    if config is not None:
        visprune.prune_(model, config, processor=processor)
    try:
        ANSWERS.append(shapes.answer(model, processor, sample.image, sample.question))
        return ANSWERS[-1] == sample.answer
    finally:
        if config is not None:
            visprune.unprune_(model)


@torch.no_grad()
def answer_with_mass(model, processor, sample, config, weights) -> bool:
    """The first answer word from one prefill in which each kept image token, as a key, has its attention
    logit raised by ``log(weight)``: it draws the attention ``weight`` copies of itself would (ToMe's
    proportional attention, Bolya et al., ICLR 2023, Sec. 3), in every language-model layer."""
    import visprune
    from visprune import shapes

    inputs = processor(text=shapes.prompt(processor, sample.question), images=sample.image, return_tensors="pt")
    start = int((inputs["input_ids"][0] == model.config.image_token_id).nonzero()[0])
    visprune.prune_(model, config, processor=processor)
    try:
        model(**inputs)  # the selection, to weigh its tokens
        w = weights(visprune.last_selection(model)).float()

        def biased(_module, args, kwargs):
            n = kwargs["inputs_embeds"].shape[1]
            mask = torch.full((n, n), float("-inf")).triu(1)
            mask[:, start : start + len(w)] += torch.log(w)
            kwargs["attention_mask"] = mask[None, None]
            return args, kwargs

        hook = model.model.language_model.register_forward_pre_hook(biased, with_kwargs=True)
        try:
            logits = model(**inputs).logits[0, -1]
        finally:
            hook.remove()
    finally:
        visprune.unprune_(model)
    ANSWERS.append(shapes.normalise_answer(processor.tokenizer.decode([int(logits.argmax())])))
    return ANSWERS[-1] == sample.answer


def nearest_kept_sizes(sel) -> torch.Tensor:
    """1 + how many dropped tokens have each kept token as their most cosine-similar kept token."""
    feats = torch.nn.functional.normalize(sel.encoded.features[0].float(), dim=-1)
    kept = sel.kept[0]
    dropped = torch.ones(len(feats), dtype=torch.bool)
    dropped[kept] = False
    nearest = (feats[dropped] @ feats[kept].T).argmax(-1)
    return 1 + torch.bincount(nearest, minlength=len(kept)).float()


NUMBERS = {w: i for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight"])}


def count_errors(answers: list[str], samples) -> dict:
    """Signed error of the count answers: how often too high, too low, and the mean (predicted - true)."""
    pred = [NUMBERS.get(a, int(a) if a.isdigit() else None) for a in answers]
    true = [NUMBERS.get(s.answer, int(s.answer) if s.answer.isdigit() else None) for s in samples]
    pairs = [(p, t) for p, t in zip(pred, true) if p is not None and t is not None]
    return {"too_high": sum(p > t for p, t in pairs) / len(samples), "too_low": sum(p < t for p, t in pairs) / len(samples),
            "not_a_number": 1 - len(pairs) / len(samples),
            "mean_error": float(np.mean([p - t for p, t in pairs])) if pairs else None}


def main(argv: list[str] | None = None) -> None:
    import warnings

    from visprune import PruneConfig, QuestionTermWarning, shapes
    from visprune.scoring.scorers.context_tokens import WithContextTokens

    warnings.simplefilter("ignore", QuestionTermWarning)  # said once in docs/counting.md instead
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-count", type=int, default=300)
    ap.add_argument("--count-seed", type=int, default=30000)
    ap.add_argument("--n-mixed", type=int, default=400)
    ap.add_argument("--out", default="docs/counting.md")
    args = ap.parse_args(argv)
    model, processor = shapes.load()
    counts = [shapes.make_sample(args.count_seed, i, qtype="count") for i in range(args.n_count)]
    mixed = shapes.make_samples(n=args.n_mixed, seed=12345)
    oracle = OracleScorer()
    rows, scores = [], {}

    def record(label, part, samples, correct, kept=None):
        scores[(part, label)] = {str(i): float(c) for i, c in enumerate(correct)}
        rows.append({"part": part, "label": label, "accuracy": float(np.mean(correct)),
                     "ci": stats.mean_ci(correct), "kept": None if kept is None else float(np.mean(kept))})
        if part == "count":
            rows[-1]["errors"] = count_errors(ANSWERS[-len(samples):], samples)
        print(f"{part:<6} {label:<44} {np.mean(correct):.3f}" + ("" if kept is None else f"  kept {np.mean(kept):.1f}")
              + (f"  {rows[-1]['errors']}" if part == "count" else ""), flush=True)

    # part 1: oracle selections on count questions
    record("unpruned", "count", counts, [answer(model, processor, s) for s in counts], [256] * len(counts))
    for label, what, bg, positions in [("counted objects only", "counted", 0, None),
                                       ("every object", "objects", 0, None),
                                       ("every object, original positions", "objects", 0, "original"),
                                       ("every object + 32 background", "objects", 32, None),
                                       ("every object + 96 background", "objects", 96, None),
                                       ("every object + 160 background", "objects", 160, None)]:
        correct, kept = [], []
        for i, s in enumerate(counts):
            oracle.current, k = oracle_scores(s, what, bg, seed=i)
            correct.append(answer(model, processor, s, PruneConfig(scorer=oracle, k=k, positions=positions)))
            kept.append(k)
        record(label, "count", counts, correct, kept)

    # part 1b: the background's attention mass, restored on one token (one prefill, first answer word)
    for label, mass in [("every object + 1 background token (one prefill)", False),
                        ("every object + 1 background token carrying the background's attention mass", True)]:
        correct, kept = [], []
        for i, s in enumerate(counts):
            oracle.current, k = oracle_scores(s, "objects", 1, seed=i)
            n_bg = int((~torch.as_tensor(s.object_patches, dtype=torch.bool)).sum())

            def weights(sel, scores=oracle.current, n_bg=n_bg):
                return torch.where(scores[sel.kept[0]] == 1.0, float(n_bg) if mass else 1.0, 1.0)

            correct.append(answer_with_mass(model, processor, s, PruneConfig(scorer=oracle, k=k), weights))
            kept.append(k)
        record(label, "count", counts, correct, kept)

    # part 2: remedies with ATP
    variants = [("atp", dict()), ("atp + 8 uniform", dict(uniform=8)), ("atp + summary", dict(summary=True)),
                ("atp + 8 uniform + summary", dict(uniform=8, summary=True))]
    for k in (64, 32):
        for part, samples in (("count", counts), ("mixed", mixed)):
            for name, kw in variants:
                scorer = WithContextTokens("atp", **kw) if kw else "atp"
                correct = [answer(model, processor, s, PruneConfig(scorer=scorer, k=k)) for s in samples]
                record(f"{name}, k={k}", part, samples, correct, [k] * len(samples))
            if k == 64:  # the attention mass of the dropped tokens, given to their nearest kept token
                for name, w in (("atp (one prefill)", lambda sel: torch.ones(len(sel.kept[0]))),
                                ("atp + proportional attention (one prefill)", nearest_kept_sizes)):
                    correct = [answer_with_mass(model, processor, s, PruneConfig(scorer="atp", k=k), w)
                               for s in samples]
                    record(f"{name}, k={k}", part, samples, correct, [k] * len(samples))
    for row in rows:
        if row["label"].startswith("atp +"):
            k = row["label"].rsplit("k=", 1)[1]
            control = "atp (one prefill)" if "one prefill" in row["label"] else "atp"
            row["vs_atp"] = stats.paired_difference(scores[(row["part"], row["label"])],
                                                    scores[(row["part"], f"{control}, k={k}")])
        elif row["part"] == "count" and row["label"] != "unpruned" and not row["label"].startswith("atp"):
            row["vs_unpruned"] = stats.paired_difference(scores[("count", row["label"])], scores[("count", "unpruned")])

    def cell(row, key):
        d = row.get(key)
        if not d:
            return ""
        return f"{'tie: ' if d['tie'] else ''}{d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"

    def acc(row):
        return f"{fmt(row['accuracy'])} [{fmt(row['ci'][0])}, {fmt(row['ci'][1])}]"

    part1 = [r for r in rows if r["part"] == "count" and not r["label"].startswith("atp")]
    lines = [
        "# Counting under pruning",
        "",
        f"Generated by `python scripts/counting_probe.py --n-count {args.n_count} --count-seed {args.count_seed} "
        f"--n-mixed {args.n_mixed}`; do not edit by hand. Model: the bundled shapes VLM. Intervals: {stats.DESCRIPTION}.",
        "",
        f"## What the count answers read ({args.n_count} count questions, seed {args.count_seed})",
        "",
        "Oracle selections from the scene generator's ground truth: the answer is in the kept patches, "
        "so what is lost when they are all that is kept is something the model reads elsewhere.",
        "",
        markdown_table(["selection", "kept (mean)", "count accuracy [95% CI]", "vs unpruned", "too high", "too low",
                        "mean error (predicted - true)"],
                       [[r["label"], f"{r['kept']:.1f}", acc(r), cell(r, "vs_unpruned"), fmt(r["errors"]["too_high"]),
                         fmt(r["errors"]["too_low"]), fmt(r["errors"]["mean_error"], "+.3f")] for r in part1]),
        "",
        f"## Remedies with ATP (count questions; {args.n_mixed} held-out questions of every type, seed 12345)",
        "",
        markdown_table(["method", "questions", "accuracy [95% CI]", "vs ATP at the same k (the one-prefill ATP for "
                        "one-prefill rows)"],
                       [[r["label"], r["part"], acc(r), cell(r, "vs_atp")] for r in rows if r["label"].startswith("atp")]),
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
