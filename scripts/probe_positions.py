"""Does a shapes checkpoint care where the pruned image tokens sit? First-answer-token accuracy with
all 256 image tokens, and with 64 (every object patch plus random background, an oracle pruning)
fed either compacted (positions 0..63 of the image, what pre-LLM pruning such as ATP feeds) or at
their original positions (what FastV keeps, and pre-LLM pruning with PruneConfig(positions="original")).

    python scripts/probe_positions.py src/visprune/shapes/checkpoint [/tmp/other_checkpoint ...]

Measured 2026-11-22 (300 held-out questions, seed 12345): the bundled checkpoint (run S, trained
with compacted batches, --compact-p 0.2, and the grounding phase with --finetune-compact-p 0.2) 0.88
full, 0.80 compacted, 0.77 at original positions (count 0.75, 0.42, 0.32); a grounding phase
without compacted batches (pilot Q1) 0.88, 0.77, 0.75 (count 0.70, 0.40, 0.22); run N 0.83, 0.80,
0.76; run M 0.83, 0.79, 0.79; run K 0.78, 0.80, 0.76; run G 0.71, 0.72, 0.70; run H
(--balanced-counts, no compacted batches) 0.73, 0.46, 0.73: H reads the question's distance to the image, which compaction changes, so it fails
under pre-LLM pruning (exists 0.98 -> 0.18, colour 0.75 -> 0.40) while the same 64 tokens at their
own positions are as good as all 256. With the library's own pruning on H (`visprune eval --model
/tmp/runH --task shapes-vqa --n 200 --method atp:k=64 --method atp:k=64,positions=original`):
ATP keeping 64 tokens 0.430 compacted, 0.710 at original positions, 0.710 unpruned.
"""

from __future__ import annotations

import argparse
import collections
import sys

import numpy as np
import torch

from visprune import shapes
from visprune.shapes import scenes as S
from visprune.shapes import training as T

MODES = ("full", "compacted", "original positions")


def oracle_keep(samples, k: int, rng: np.random.Generator) -> torch.Tensor:
    """[B, k] ascending patch indices: every object patch (up to k), then random background."""
    rows = []
    for s in samples:
        occupied = np.zeros(S.NUM_PATCHES, bool)
        for o in s.objects:
            for r, c in o.cells:
                occupied[r * S.GRID + c] = True
        objects = np.flatnonzero(occupied)[:k]
        background = np.setdiff1d(np.arange(S.NUM_PATCHES), objects)
        extra = rng.choice(background, k - len(objects), replace=False)
        rows.append(np.sort(np.concatenate([objects, extra])))
    return torch.from_numpy(np.stack(rows))


@torch.no_grad()
def probe(path: str, n: int, seed: int, k: int) -> dict:
    samples = shapes.make_samples(n=n, seed=seed)
    model, processor = shapes.load(path)
    vocab = T.Vocab(processor.tokenizer)
    img_start = 1 + len(vocab.words("USER:"))
    rng = np.random.default_rng(0)
    hits = collections.defaultdict(list)
    for b in range(0, n, 50):
        chunk = samples[b : b + 50]
        feats = T.tower_features(model.model.vision_tower, [np.asarray(s.image) for s in chunk]).float()
        keep = oracle_keep(chunk, k, rng)
        for mode in MODES:
            n_image = S.NUM_PATCHES if mode == "full" else k
            seqs = [T.build_sequence(vocab, [(s.question, s.answer, None, None)], n_image) for s in chunk]
            ids, _, mask = T.collate([(i[:-2], l[:-2], g) for i, l, g in seqs], vocab.tok.pad_token_id)  # no answer
            f, pos = feats, None
            if mode != "full":
                f = torch.gather(feats, 1, keep[..., None].expand(-1, -1, feats.shape[-1]))
                if mode == "original positions":
                    pos = T.subset_positions(ids, keep, img_start)
            logits = T.lm_forward(model, ids, mask, f, pos)
            pred = logits[torch.arange(len(chunk)), mask.sum(1) - 1].argmax(-1)
            for s, p in zip(chunk, pred):
                ok = vocab.tok.convert_ids_to_tokens(int(p)) == s.answer
                hits[(mode, s.qtype)].append(ok)
                hits[(mode, "all")].append(ok)
    return {key: float(np.mean(v)) for key, v in hits.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--k", type=int, default=64, help="image tokens kept (default 64 of 256)")
    args = ap.parse_args(argv)
    for path in args.checkpoints:
        acc = probe(path, args.n, args.seed, args.k)
        for mode in MODES:
            print(f"{path}  {mode:20s} " + " ".join(f"{q} {acc[(mode, q)]:.2f}" for q in ("all", *S.QTYPES)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
