"""How many steps the shapes LLaVA's language model needs before it reads the image at all.

A short stage-2 run from scratch (frozen stage-1 tower, cached features) on a restricted task,
printing the answer accuracy of the training batches (answer tokens only) every 20 steps and the
first step at which it stays above chance + 0.15 for 60 steps ("escape"). It isolates the plateau
that stage 2 of scripts/train_shapes.py sits on, so recipes can be compared in minutes:

    python scripts/probe_shapes_lm.py --types colour --max-objects 1 --lr 2e-3   # escapes ~220
    python scripts/probe_shapes_lm.py --types colour --max-objects 1 --lr 1e-2   # escapes ~70
    python scripts/probe_shapes_lm.py --types colour --max-objects 3 --grounding-weight 1
    python scripts/probe_shapes_lm.py --oracle-features --max-objects 3 --init 0.15 --turns 10 --lr 3e-3
    python scripts/probe_shapes_lm.py --oracle-features --background 0.05 --max-objects 3 --init 0.15 --turns 10 --lr 3e-3

--oracle-features replaces the tower's patch features by one-hot ground truth, so the language
model is measured alone; --background shows all object patches but only that share of the
background ones (the distractor curriculum of train_shapes.py --background).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from visprune.shapes import model as M
from visprune.shapes import scenes as S
from visprune.shapes import training as T


def question_first(vocab, turn):
    q, a, _, _ = turn
    ids = [vocab.tok.bos_token_id] + vocab.words("USER: " + q) + [vocab.image] * S.NUM_PATCHES + vocab.words("ASSISTANT:")
    ans = vocab.words(a) + [vocab.tok.eos_token_id]
    return ids + ans, [-100] * len(ids) + ans, []


def oracle_features(scene, width: int) -> torch.Tensor:
    """[256, width] one-hot patch labels (what a perfect tower would carry), zero-padded."""
    t = scene.patch_targets()
    rows = np.repeat(np.arange(S.GRID), S.GRID)
    parts = [np.eye(n, dtype=np.float32)[v] for v, n in (
        (t["colour"], 8), (t["shape"], 6), (t["size"], 3), (t["part"], 6),
        (rows, S.GRID), (np.tile(np.arange(S.GRID), S.GRID), S.GRID))]
    x = np.concatenate(parts, axis=1) * 3.0
    return torch.from_numpy(np.pad(x, ((0, 0), (0, width - x.shape[1]))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--types", default=",".join(S.QTYPES), help=f"comma-separated subset of {S.QTYPES}")
    p.add_argument("--max-objects", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--turns", type=int, default=4, help="question/answer turns per image")
    p.add_argument("--grounding-weight", type=float, default=0.0)
    p.add_argument("--grounding-mass", action="store_true", help="also push attention mass onto the answer's patches")
    p.add_argument("--init", type=float, default=0.02, help="initializer_range of the language model and projector")
    p.add_argument("--hidden", type=int, default=128, help="width of the Llama (heads of 32)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--scenes", type=int, default=1500)
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--background", type=float, default=1.0,
                   help="share of background patches shown (all object patches always are)")
    p.add_argument("--question-first", action="store_true",
                   help="one turn per image, the question before the image tokens")
    p.add_argument("--oracle-features", action="store_true",
                   help="replace the tower's patch features by one-hot ground truth (colour, shape, size, "
                        "part, row, column): measures the language model alone")
    args = p.parse_args(argv)
    if args.question_first and args.background < 1:
        p.error("--question-first shows all patches; leave --background at 1")
    types = args.types.split(",")
    if not set(types) <= set(S.QTYPES):
        p.error(f"--types must be a subset of {S.QTYPES}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from transformers import CLIPModel, LlavaForConditionalGeneration

    tok = M.build_tokenizer()
    clip = CLIPModel.from_pretrained(M.CHECKPOINT / "clip")
    cfg = T.llava_config(clip.config, tok, init=args.init, hidden=args.hidden, layers=args.layers)
    llava = LlavaForConditionalGeneration(cfg)
    llava.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    llava.model.vision_tower.requires_grad_(False)
    grounded = args.grounding_weight > 0
    if grounded:
        llava.model.language_model.config._attn_implementation = "eager"
    vocab = T.Vocab(tok)

    rng = np.random.default_rng([args.seed, 1])
    objects, patches, images, oracle = [], [], [], []
    for i in range(args.scenes):  # training split, its own seed namespace
        scene = S.random_scene(S.scene_rng(99, i, "train"), n_objects=int(rng.integers(1, args.max_objects + 1)))
        objects.append(scene.objects)
        patches.append(T.object_patches(scene))
        images.append(scene.image)
        if args.oracle_features:
            oracle.append(oracle_features(scene, cfg.vision_config.hidden_size))
    if args.oracle_features:
        feats = torch.stack(oracle).to(torch.bfloat16)
    else:
        feats = torch.cat([T.tower_features(llava.model.vision_tower, images[b : b + 64])
                           for b in range(0, len(images), 64)])

    captured: list[torch.Tensor] = []
    if grounded:
        for i in T.GROUNDED_LAYERS:
            llava.model.language_model.layers[i].self_attn.register_forward_hook(
                lambda mod, inp, out: captured.append(out[1]))
    params = [q for q in llava.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    img_start = 1 + len(vocab.words("USER:"))
    chance = float(np.mean([S.CHANCE[t] for t in types]))
    accs: list[float] = []
    escape = None
    t0 = time.time()
    step = 0
    while time.time() - t0 < args.seconds:
        idx = rng.choice(len(objects), args.batch, replace=False)
        turns = []
        for n, j in enumerate(idx):
            t = T.make_turns(objects[j], patches[j], rng, 1 if args.question_first else args.turns, 0.0, types)
            while not t:  # the scene supports none of the types: another scene
                j = idx[n] = rng.integers(len(objects))
                t = T.make_turns(objects[j], patches[j], rng, 1 if args.question_first else args.turns, 0.0, types)
            turns.append(t)
        keep = T.patch_subset([patches[j] for j in idx], args.background, rng)
        n_image = S.NUM_PATCHES if keep is None else keep.shape[1]
        seqs = [question_first(vocab, t[0]) if args.question_first else T.build_sequence(vocab, t, n_image)
                for t in turns]
        ids, labels, am = T.collate(seqs, tok.pad_token_id)
        x, pos = feats[torch.from_numpy(idx)], None
        if keep is not None:
            x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
            pos = T.subset_positions(ids, keep, img_start)
        captured.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = T.lm_forward(llava, ids, am, x, pos)
        logits, labels = logits[:, :-1].float(), labels[:, 1:]
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        if grounded:
            g, _ = T.grounding_loss(captured, seqs, img_start, mass_on_answer=args.grounding_mass)
            loss = loss + args.grounding_weight * g
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        answer = (labels != -100) & (labels != tok.eos_token_id)
        accs.append((logits.argmax(-1)[answer] == labels[answer]).float().mean().item())
        if escape is None and len(accs) >= 60 and min(accs[-60:]) > chance + 0.15:
            escape = step - 59
        if step % 20 == 0:
            print(f"step {step} {time.time() - t0:.0f}s loss {loss.item():.3f} "
                  f"train answer accuracy (last 20) {np.mean(accs[-20:]):.2f} (chance {chance:.2f})", flush=True)
        step += 1
    print(f"escape step: {escape if escape is not None else f'none within {step} steps'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
