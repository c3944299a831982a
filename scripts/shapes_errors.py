"""Where a shapes checkpoint goes wrong on positions: side questions split by how many other objects
share the referenced object's colour or shape (a conjunction found imprecisely), and how well its
captions place the objects they name (rows and columns read from the image).

    python scripts/shapes_errors.py                              # bundled checkpoint, 300 side questions
    python scripts/shapes_errors.py --model /tmp/ck --captions runs/cap

`--captions` reads the per-sample file of a caption run (`visprune eval --task shapes-caption
--method none --out DIR`). Measured 2026-11-22 on the bundled checkpoint (run N): side 0.937 with
no partial match, 0.743 with one, 0.612 with two or more (300 questions of seed 4242); captions
(runs/cap, 100 scenes): 668 named objects match a true one, rows exact 0.33 (within one 0.46),
columns exact 0.14 (within one 0.30). Run M, without position heads: side 0.722, 0.676, 0.537;
rows exact 0.23, columns exact 0.07.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
from pathlib import Path

import numpy as np

from visprune import shapes
from visprune.shapes import scenes as S

CAPTION_OBJECT = re.compile(r"(\w+) (\w+) (\w+) at row (\d+) column (\d+)")


def partial_matches(sample: S.Sample) -> int:
    """Other objects that share exactly one of the referenced colour and shape."""
    words = sample.question.split()
    colour = next(w for w in words if w in S.COLOUR_NAMES)
    shape = next(w for w in words if w in S.SHAPES)
    return sum((o.colour == colour) != (o.shape == shape) for o in sample.objects)


def side_by_partial_matches(model, processor, n: int, seed: int) -> dict[str, tuple[int, float]]:
    groups = collections.defaultdict(list)
    for i in range(n):
        s = S.make_sample(seed, i, qtype="side")
        ok = shapes.answer(model, processor, s.image, s.question) == s.answer
        k = partial_matches(s)
        groups["0" if k == 0 else "1" if k == 1 else "2+"].append(ok)
        groups["all"].append(ok)
    return {k: (len(v), float(np.mean(v))) for k, v in sorted(groups.items())}


def caption_positions(run: Path) -> dict:
    """Row and column errors of the predicted objects that match a reference object by size,
    colour and shape (the first reference object of that description)."""
    files = sorted((run / "samples").glob("*/none/*.jsonl"))
    if not files:
        raise SystemExit(f"no per-sample captions under {run}/samples/*/none/ (run visprune eval first)")
    rows, cols, named = [], [], collections.Counter()
    for f in files:
        for line in f.read_text().splitlines():
            r = json.loads(line)
            truth = {}
            for size, colour, shape, row, col in CAPTION_OBJECT.findall(r["references"][0]):
                truth.setdefault((size, colour, shape), (int(row), int(col)))
            for size, colour, shape, row, col in CAPTION_OBJECT.findall(r["prediction"]):
                if (size, colour, shape) in truth:
                    tr, tc = truth[(size, colour, shape)]
                    rows.append(abs(int(row) - tr))
                    cols.append(abs(int(col) - tc))
                    named[int(col)] += 1
    rows, cols = np.asarray(rows), np.asarray(cols)
    return {"matched": len(rows), "row_exact": float((rows == 0).mean()), "row_within_1": float((rows <= 1).mean()),
            "col_exact": float((cols == 0).mean()), "col_within_1": float((cols <= 1).mean()),
            "most_named_columns": named.most_common(3)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="checkpoint folder (default: the bundled one)")
    p.add_argument("--n", type=int, default=300, help="side questions")
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--captions", type=Path, default=None, help="a caption run's --out folder")
    args = p.parse_args(argv)
    model, processor = shapes.load(args.model) if args.model else shapes.load()
    print("side accuracy by other objects sharing one of the referenced colour and shape:")
    for k, (n, acc) in side_by_partial_matches(model, processor, args.n, args.seed).items():
        print(f"  {k:>3}: {acc:.3f} (n={n})")
    if args.captions is not None:
        c = caption_positions(args.captions)
        print(f"captions: {c['matched']} named objects match a true one; rows exact {c['row_exact']:.2f} "
              f"(within one {c['row_within_1']:.2f}), columns exact {c['col_exact']:.2f} (within one "
              f"{c['col_within_1']:.2f}); most named columns {c['most_named_columns']}")


if __name__ == "__main__":
    main()
