"""The command line of scripts/train_shapes.py: its arguments, the order of the stages, and what a
run writes to --out (clip/, stage1.json, the LLaVA checkpoint, train_log.txt, metrics.json with
`final_eval`'s held-out accuracy through from_pretrained and generate).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from .. import model as M
from .. import scenes as S
from .configs import FINAL_SEED
from .grounding import ANSWER_LAYER, run_targets
from .runtime import log, use_jemalloc
from .stage1 import clip_retrieval, train_stage1
from .stage2 import finetune_args, new_llava, train_stage2

# what --help shows above the arguments (scripts/train_shapes.py's docstring)
DESCRIPTION = r"""Train the shapes proving ground's VLM on CPU and write it to src/visprune/shapes/checkpoint/.

    python scripts/train_shapes.py                     # full recipe: stage 1 ~10 min, stage 2 ~65 min, grounding phase ~9 min (2 threads, jemalloc)
    python scripts/train_shapes.py --stage1-only       # stage 1 alone, then resume stage 2 with:
    python scripts/train_shapes.py --skip-stage1
    python scripts/train_shapes.py --skip-stage1 --init-from DIR --stage2-steps 0   # the grounding phase alone
    python scripts/train_shapes.py --stage1-steps 40 --stage2-steps 40 --finetune-steps 20 --pool 256 \
        --monitor-n 64 --final-n 20 --eval-every 20 --out /tmp/ck                # smoke run

Install jemalloc first (apt-get install libjemalloc2): the script re-executes itself under it.

How the bundled checkpoint was made (the runs, what each change of the recipe measured, and the
stages): docs/shapes.md, "Training runs: how the bundled checkpoint was made". The code:
visprune.shapes.training.
"""


def final_eval(out: Path, n: int, fh) -> dict:
    """Held-out accuracy of the saved checkpoint, through from_pretrained and generate."""
    from ... import shapes

    model, processor = shapes.load(out)
    samples = shapes.make_samples(n, FINAL_SEED)
    correct = {q: [] for q in S.QTYPES}
    t0 = time.time()
    for s in samples:
        correct[s.qtype].append(shapes.answer(model, processor, s.image, s.question) == s.answer)
    res = {"n": n, "seed": FINAL_SEED, "split": "eval",
           "overall": float(np.mean([x for v in correct.values() for x in v])),
           "chance_overall": float(np.mean([S.CHANCE[s.qtype] for s in samples])),
           "per_type": {q: {"accuracy": float(np.mean(v)), "chance": S.CHANCE[q], "n": len(v)}
                        for q, v in correct.items()},
           "seconds": time.time() - t0}
    log(f"final held-out accuracy {res['overall']:.3f} (chance {res['chance_overall']:.3f}) "
        + " ".join(f"{q} {d['accuracy']:.2f}/{d['chance']:.2f}" for q, d in res["per_type"].items()), fh)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=M.CHECKPOINT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads (default 2, both cores; 1 is faster when other work shares them)")
    p.add_argument("--stage1-steps", type=int, default=1500)
    p.add_argument("--stage1-lr", type=float, default=1e-3)
    p.add_argument("--batch1", type=int, default=32)
    p.add_argument("--object-weight", type=float, default=1.0,
                   help="stage 1: extra weight of the dense heads' loss on object patches")
    p.add_argument("--stage2-steps", type=int, default=9000)
    p.add_argument("--stage2-lr", type=float, default=2e-3)
    p.add_argument("--batch2", type=int, default=16)
    p.add_argument("--init", type=float, default=0.15,
                   help="initializer_range of the projector and language model (Llama's is 0.02; "
                        "0.15 climbed fastest in probe_shapes_lm.py)")
    p.add_argument("--lm-hidden", type=int, default=128, help="width of the Llama (heads of 32)")
    p.add_argument("--lm-layers", type=int, default=4)
    p.add_argument("--save-every2", type=int, default=1000, help="stage-2 snapshots to OUT")
    p.add_argument("--pool", type=int, default=12000, help="training scenes cached for stage 2")
    p.add_argument("--turns", type=int, nargs=2, default=(12, 20),
                   help="question/answer turns per image, drawn in [min, max]: the 256 image tokens "
                        "dominate the cost, so more turns give more answers per second")
    p.add_argument("--background", type=float, nargs=2, default=(0.05, 0.45), metavar=("START", "UNTIL"),
                   help="distractor curriculum: share of background patches shown at the start, rising "
                        "to all at this fraction of the run (default 0.05 0.45; 1 0: all patches throughout)")
    p.add_argument("--caption-p", type=float, default=0.25)
    p.add_argument("--compact-p", type=float, default=0.2,
                   help="share of stage-2 batches shown as pre-LLM pruning shows them: background thinned to "
                        "5-50%% and the image tokens compacted (default 0.2; 0: positions always kept, "
                        "measured to let a model depend on them, see docs/shapes.md)")
    p.add_argument("--balanced-counts", action=argparse.BooleanOptionalAction, default=True,
                   help="count questions at a fifth of the turns with answers near uniform 1..4 (count_answer; "
                        "default on; --no-balanced-counts: as the scenes allow, 13%% of turns, mostly 1)")
    p.add_argument("--position-weight", type=float, default=1.0,
                   help="weight of the training-only heads that read each image token's row and column from "
                        "the projector's output and the first two layers (PositionHeads; 0: off, as before run N)")
    p.add_argument("--grounding-weight", type=float, default=0.0,
                   help="stage 2: weight of the auxiliary grounding loss, on batches with all 256 patches in "
                        "place (off by default: it did not help before the position heads)")
    p.add_argument("--finetune-steps", type=int, default=1000,
                   help="grounding phase after stage 2: all objects and all background from the start, "
                        "fresh optimizer and position heads (0: none, as before run S)")
    p.add_argument("--finetune-lr", type=float, default=5e-4)
    p.add_argument("--answer-layer", type=int, default=ANSWER_LAYER,
                   help="layer whose head 0 the grounding loss teaches to look from the answer position at the "
                        "question's patches (-1: none); FastV ranks tokens by layer K-1's attention from there")
    p.add_argument("--finetune-grounding", type=float, default=1.0,
                   help="grounding phase: weight of the grounding loss (on its full-image batches)")
    p.add_argument("--finetune-compact-p", type=float, default=0.2,
                   help="grounding phase: share of batches thinned and compacted as in stage 2 (no grounding "
                        "loss on them); 0 made a model that loses more when tokens are dropped (pilot Q1)")
    p.add_argument("--curriculum", type=float, nargs=2, default=(0.2, 0.4),
                   help="fractions of stage 2 at which scenes grow from <=3 to <=6 to all objects")
    p.add_argument("--init-from", type=Path, default=None, metavar="DIR",
                   help="start stage 2 from the projector and language model of a saved checkpoint "
                        "(same sizes; with --stage2-steps 0 only the grounding phase runs on it)")
    p.add_argument("--allocator", choices=("jemalloc", "system"), default="jemalloc",
                   help="memory allocator: jemalloc when installed (default; the script re-executes itself "
                        "with it preloaded), or the system's malloc, measured to slow long runs down")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--monitor-n", type=int, default=300)
    p.add_argument("--final-n", type=int, default=300)
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.add_argument("--skip-stage1", action="store_true", help="reuse OUT/clip from an earlier run")
    p.add_argument("--stage1-only", action="store_true")
    p.add_argument("--save-every", type=int, default=100, help="stage-1 snapshots to OUT/clip")
    args = p.parse_args(argv)
    if not 0.0 <= args.compact_p <= 1.0:
        p.error("--compact-p must be in [0, 1]")
    if not 0.0 <= args.finetune_compact_p <= 1.0:
        p.error("--finetune-compact-p must be in [0, 1]")
    if not -1 <= args.answer_layer < args.lm_layers:
        p.error(f"--answer-layer must be -1 (none) or a layer of the language model, 0..{args.lm_layers - 1}")
    if args.finetune_steps < 0 or args.stage2_steps < 0:
        p.error("step counts must be >= 0")
    if args.stage2_steps == 0 and args.init_from is None:
        p.error("--stage2-steps 0 needs --init-from (a trained projector and language model to fine-tune)")

    allocator = use_jemalloc(args.allocator)
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    fh = open(args.out / "train_log.txt", "a" if args.skip_stage1 else "w")
    log(f"args: {vars(args)}", fh)
    log(f"allocator: {allocator}", fh)
    t_all = time.time()

    tok = M.build_tokenizer()
    tok_clip = M.build_tokenizer(for_clip=True)
    processor = M.build_processor(tok)

    from transformers import CLIPModel

    clip_dir = args.out / "clip"
    if args.skip_stage1:
        clip = CLIPModel.from_pretrained(clip_dir)
        s1_file = args.out / "stage1.json"
        s1 = json.loads(s1_file.read_text()) if s1_file.exists() else {"note": "snapshot"}
    else:
        clip, s1 = train_stage1(args, tok_clip, fh)
        s1["heldout_retrieval_at_32"] = clip_retrieval(clip, tok_clip)
        log(f"stage 1 done in {s1['seconds']:.0f}s, held-out in-batch retrieval@32 "
            f"{s1['heldout_retrieval_at_32']:.2f}", fh)
        clip.save_pretrained(clip_dir)
        tok_clip.save_pretrained(clip_dir)
        processor.image_processor.save_pretrained(clip_dir)
        (args.out / "stage1.json").write_text(json.dumps(s1, indent=1))
    clip.eval()
    if args.stage1_only:
        return

    llava = new_llava(args, clip, tok, fh)
    llava, s2, pool = train_stage2(args, llava, tok, processor, fh)
    s3 = None
    if args.finetune_steps > 0:
        llava, s3, _ = train_stage2(finetune_args(args), llava, tok, processor, fh, pool=pool, phase="finetune")
    llava.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    log(f"saved to {args.out}", fh)

    res = final_eval(args.out, args.final_n, fh)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    metrics = {
        "heldout": res,
        "stage1": s1,
        "stage2": s2,
        "finetune": s3,
        "train_seconds_total": time.time() - t_all,
        "checkpoint_bytes": size,
        "device": "cpu",
        "threads": args.threads,
        "allocator": allocator,
        "grounding_loss": {"targets": run_targets(args), "weight": args.grounding_weight,
                           "finetune_weight": args.finetune_grounding},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__,
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log(f"total {metrics['train_seconds_total'] / 60:.1f} min, checkpoint {size / 1e6:.1f} MB", fh)
    fh.close()


if __name__ == "__main__":
    import sys

    sys.exit(main())
