"""What pre-LLM pruners keep on crowded shapes scenes: the share of kept tokens on objects, the share
of object patches kept, and the share of objects with at least one patch kept.

    python scripts/crowded_kept.py --n 100 --methods atp:k=64,cls:k=64,divprune:k=64,cdpruner:k=64

Runs the bundled model on the first --n questions of ``shapes-vqa-crowded`` (seed --seed) as
``visprune eval`` does (one prefill per question) and reads which visual tokens each method kept
(``visprune.transform.last_kept``) against the scene generator's object patches.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main(argv: list[str] | None = None) -> None:
    from visprune import shapes
    from visprune.evaluation import build_task, parse_methods
    from visprune.evaluation.models import load_model
    from visprune.evaluation.runner import model_inputs, pad_id
    from visprune.transform import last_kept, prune_, unprune_

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--methods", default="atp:k=64,cls:k=64,divprune:k=64,cdpruner:k=64,"
                                         "atp:k=32,cls:k=32,divprune:k=32,cdpruner:k=32")
    args = ap.parse_args(argv)
    model, processor, _ = load_model("shapes")
    task = build_task("shapes-vqa-crowded", n=args.n, seed=args.seed)
    samples = shapes.make_samples(n=args.n, seed=args.seed, crowded=True)
    print("| method | kept tokens on objects | object patches kept | objects with a patch kept |")
    print("|---|---|---|---|")
    for method in parse_methods(args.methods.split(",")):
        if method.config is None:
            continue
        prune_(model, method.config, processor=processor)
        on_obj, cover, touched = [], [], []
        with torch.no_grad():
            for e, s in zip(task.examples, samples):
                inputs = model_inputs(model, processor, task, [e], [e.load_image()])
                model.generate(**inputs, max_new_tokens=1, do_sample=False, pad_token_id=pad_id(processor))
                kept = last_kept(model)[0].cpu().numpy()
                obj = s.object_patches
                on_obj.append(obj[kept].mean())
                cover.append(obj[kept].sum() / obj.sum())
                ks = set(kept.tolist())
                touched.append(np.mean([any(r * shapes.GRID + c in ks for r, c in o.cells) for o in s.objects]))
        unprune_(model)
        print(f"| `{method.label}` | {np.mean(on_obj):.3f} | {np.mean(cover):.3f} | {np.mean(touched):.3f} |", flush=True)


if __name__ == "__main__":
    main()
