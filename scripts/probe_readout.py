"""Where does a shapes checkpoint lose an object's position? Linear probes on side questions:

- at the referenced object's top-left patch: its column (16-way), row (16-way) and side
  (left/right), read from the tower's features, the projector's output (the language model's
  input) and the hidden state after each language-model layer;
- at the last prompt token (where the answer is produced): the answer and the object's column.

Each probe is a logistic regression fitted on 70% of the questions and scored on the rest.

    python scripts/probe_readout.py src/visprune/shapes/checkpoint [/tmp/other_checkpoint ...]

Measured 2026-11-22 (`--n 3000`, 600 side questions, seed 777) on run M (trained without position
heads): the tower reads the column at 1.00, the projector's output at 0.57, the hidden state after
layer 1 at 0.14 and after layer 2 at 0.08 (chance 0.06); left/right 0.99, 0.80, 0.64, 0.51. Stage 2
had learnt to throw position away, which is why train_shapes.py now trains with PositionHeads. On
run N, trained with them: column 1.00, 0.98, 0.98, 0.94 (0.71 after the last layer); the answer
reads from the last prompt token at 0.74 from layer 2 on (M: 0.52-0.56), though the object's
column itself does not (0.04-0.11): the model carries the side, not the column. On run S (N plus
the grounding phase, the bundled checkpoint): column 1.00, 0.99, 0.97, 0.97 (0.73 after the last
layer); the answer reads at 0.71 after layer 2, 0.92 after layer 3 and 0.96 after layer 4, the
object's column at 0.11-0.14.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from visprune import shapes
from visprune.shapes import scenes as S
from visprune.shapes import training as T


def linear_probe(x: torch.Tensor, y: torch.Tensor, classes: int, train: torch.Tensor) -> float:
    """Held-out accuracy of a logistic regression (L-BFGS, small L2) from x [N, D] to y [N]."""
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-5)
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x[train] @ w + b, y[train]) + 1e-3 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((x[~train] @ w + b).argmax(-1) == y[~train]).float().mean())


@torch.no_grad()
def states(path, samples):
    """Per side question: features at the object's top-left patch per site [N, sites, D], the
    hidden states at the last prompt token per layer [N, layers + 1, D], and the site names."""
    model, processor = shapes.load(path)
    vocab = T.Vocab(processor.tokenizer)
    img_start = 1 + len(vocab.words("USER:"))
    at_patch, at_answer = [], []
    for b in range(0, len(samples), 64):
        chunk = samples[b : b + 64]
        feats = T.tower_features(model.model.vision_tower, [np.asarray(s.image) for s in chunk])
        seqs = [T.build_sequence(vocab, [(s.question, s.answer, None, None)]) for s in chunk]
        ids, _, am = T.collate([(i[:-2], lab[:-2], g) for i, lab, g in seqs], processor.tokenizer.pad_token_id)
        _, hidden = T.lm_forward(model, ids, am, feats, hidden_states=True)
        rows = torch.arange(len(chunk))
        first = torch.tensor([int(np.flatnonzero(s.relevant_patches)[0]) for s in chunk])
        at_patch.append(torch.stack([feats[rows, first].float()] + [h[rows, img_start + first].float() for h in hidden], 1))
        at_answer.append(torch.stack([h[rows, am.sum(1) - 1].float() for h in hidden], 1))
    names = ["tower", "LM input"] + [f"after layer {i}" for i in range(1, len(hidden))]
    return torch.cat(at_patch), torch.cat(at_answer), names


def readout(path, n: int = 3000, seed: int = 777) -> dict:
    """Probe accuracies: {"patch": {site: {"col", "row", "side"}}, "answer": {layer: {"answer", "col"}}}."""
    samples = [s for s in shapes.make_samples(n=n, seed=seed) if s.qtype == "side"]
    if len(samples) < 20:
        raise ValueError(f"--n {n} gives {len(samples)} side questions; need at least 20")
    first = np.array([np.flatnonzero(s.relevant_patches)[0] for s in samples])
    col, row = torch.from_numpy(first % S.GRID), torch.from_numpy(first // S.GRID)
    answer = torch.tensor([s.answer in ("right", "bottom") for s in samples]).long()
    train = torch.arange(len(samples)) < int(0.7 * len(samples))
    at_patch, at_answer, names = states(path, samples)
    torch.manual_seed(0)
    patch = {name: {"col": linear_probe(at_patch[:, j], col, S.GRID, train),
                    "row": linear_probe(at_patch[:, j], row, S.GRID, train),
                    "side": linear_probe(at_patch[:, j], (col >= S.GRID // 2).long(), 2, train)}
             for j, name in enumerate(names)}
    ans = {name: {"answer": linear_probe(at_answer[:, j - 1], answer, 2, train),
                  "col": linear_probe(at_answer[:, j - 1], col, S.GRID, train)}
           for j, name in enumerate(names) if j > 0}
    return {"side_questions": len(samples), "patch": patch, "answer": ans}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--n", type=int, default=3000, help="held-out samples drawn; a fifth are side questions")
    p.add_argument("--seed", type=int, default=777)
    args = p.parse_args(argv)
    for path in args.checkpoints:
        r = readout(path, args.n, args.seed)
        print(f"{path}: {r['side_questions']} side questions (chance: column/row 0.06, side 0.50)")
        print("  at the object's top-left patch      column   row  left/right")
        for name, v in r["patch"].items():
            print(f"    {name:32s} {v['col']:6.2f} {v['row']:5.2f} {v['side']:6.2f}")
        print("  at the last prompt token            answer  object column")
        for name, v in r["answer"].items():
            print(f"    {name:32s} {v['answer']:6.2f} {v['col']:6.2f}")


if __name__ == "__main__":
    main()
