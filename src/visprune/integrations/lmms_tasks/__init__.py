"""lmms-eval tasks bundled with visprune: pass this folder to ``lmms-eval --include_path``.

    lmms-eval --model visprune --model_args pretrained=shapes,method=atp,keep=0.25 \\
        --tasks visprune_shapes --include_path "$(python -m visprune.integrations.lmms_tasks)"

``visprune_shapes`` (generation, accuracy), ``visprune_shapes_mc`` (multiple choice, scored by
log-likelihood) and ``visprune_shapes_2round`` (two rounds on one image) read the same tiny local
dataset: 10 held-out shapes scenes in ``visprune_shapes/data`` (a JSON Lines file plus PNGs),
loaded offline by lmms-eval's ``dataset_path: json``. :func:`build_data` regenerates it.
"""

from __future__ import annotations

import json
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
DATA_DIR = TASKS_DIR / "visprune_shapes" / "data"
SEED = 20261121  # an eval-split stream of its own, apart from the demo's 12345


def build_data(n: int = 10, seed: int = SEED, out: Path = DATA_DIR) -> Path:
    """Write ``test.jsonl`` and ``images/*.png`` for ``n`` shapes samples; returns the JSONL path."""
    from ... import shapes

    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for s in shapes.make_samples(n=n, seed=seed):
        name = f"images/{s.seed}_{s.index:03d}.png"
        s.image.save(out / name, optimize=True)
        rows.append({"id": f"{s.seed}-{s.index}", "image": name, "question": s.question, "answer": s.answer,
                     "qtype": s.qtype, "choices": choices(s.qtype, s.question)})
    path = out / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def choices(qtype: str, question: str) -> list[str]:
    """The answer set of a shapes question (``side`` questions are left/right or top/bottom)."""
    from ... import shapes

    if qtype == "side" and "top" in question.split():
        return ["top", "bottom"]
    return list(shapes.ANSWERS[qtype])
