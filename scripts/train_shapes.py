"""Train the shapes proving ground's VLM on CPU and write it to src/visprune/shapes/checkpoint/.

    python scripts/train_shapes.py                     # full recipe: stage 1 ~10 min, stage 2 ~65 min, grounding phase ~9 min (2 threads, jemalloc)
    python scripts/train_shapes.py --stage1-only       # stage 1 alone, then resume stage 2 with:
    python scripts/train_shapes.py --skip-stage1
    python scripts/train_shapes.py --skip-stage1 --init-from DIR --stage2-steps 0   # the grounding phase alone
    python scripts/train_shapes.py --stage1-steps 40 --stage2-steps 40 --finetune-steps 20 --pool 256 \
        --monitor-n 64 --final-n 20 --eval-every 20 --out /tmp/ck                # smoke run

Install jemalloc first (apt-get install libjemalloc2): the script re-executes itself under it.

STATUS (measured 2026-11-22): the defaults made the bundled checkpoint (run S in train_log.txt):
run N's stage 2 (2 threads under jemalloc, nothing else running: 63.2 min, 64.9 with the scene
pool and the final evaluation) after the bundled stage 1 (made earlier on 1 thread; on 2 threads
under jemalloc a 100-step run measured 0.39 s per step, about 10 min for its 1,500 steps), then
the grounding phase (--finetune-steps 1000; run from N's weights with --init-from on 1 thread
beside another run, 16 min; on 2 threads alone 300 of its steps measured 0.51 s per step, about
9 min for all): about 84 minutes in all, inside the 90 aimed for. Checked after the fact:
`--skip-stage1` with the defaults in one go took 71.2 min (stage 2 60.2, phase 9.5), logged the
same stage-2 losses as N at every step and scored 0.883 (S 0.880); stage 1 was not rerun. Held-out accuracy 0.880 through from_pretrained +
generate (300 questions, seed 12345; chance 0.319): colour 0.90, shape 0.88, count 0.75 (chance
0.25), exists 0.97, side 0.90 (chance 0.50); 0.870 on 1,000 questions of seed 31337 (colour
0.895, shape 0.910, count 0.635, exists 0.975, side 0.935).
What the grounding phase changed against run N (0.833 here, 0.838 on the 1,000, side 0.740 and
count 0.670 there): 1,000 steps at lr 5e-4 on full scenes with the auxiliary grounding loss
(GROUNDING: attribute words -> their objects' patches and the answer position -> the attribute
words in layer 0, the answer position -> the question's patches in layer 2) on the full-image
batches, and a fifth of the batches compacted without it. Side rose to 0.935, count fell to
0.635. Pilots in train_log.txt, each from N's weights: the answer target in layer 1 (R1) 0.880 /
0.859, but FastV ranks tokens by that very attention map and scored 0.88 at every budget; no
answer target (S1) 0.853 / 0.817; no compacted batches (Q1) 0.880 / 0.859 but more lost when
tokens are dropped (scripts/probe_positions.py 0.88 / 0.77 / 0.75, count 0.40 with 64 compacted
tokens; S: 0.88 / 0.80 / 0.77); 0.4 of the batches compacted (R2) 0.877 / 0.839; no grounding
loss (Q0) 0.827 on the 300. ATP keeping 64 / 32 / 16 tokens scores 0.835 / 0.740 / 0.675 on S
(visprune eval --n 200; N 0.795 / 0.755 / 0.670).
What N changed against run M (0.827 here, 0.833 on the 1,000, side 0.64 there): the training-only
position heads (--position-weight, PositionHeads). Linear probes on M (scripts/probe_readout.py)
read the column of an object's patch at 1.00 from the tower, 0.57 from the projector's output and
0.08 after layer 2 (chance 0.06): stage 2 had learnt to throw position away, and side questions
sat near chance all run (monitor 0.45-0.60). On N: 1.00, 0.98, 0.94, and the monitor's side
accuracy passed 0.7 by step 2,750. Colour and shape fell a little (0.95 -> 0.91, 0.975 -> 0.895 on
the 1,000), side rose 0.64 -> 0.74 and count 0.60 -> 0.67. Fine-tuning M for 1,000 more steps, with
the usual question mix or with side and count questions weighted up, did not help (pilots P0/P1 in
train_log.txt: 0.820 and 0.813 against M's 0.827).
What M changed against the run before it (K: 0.777 here, 0.790 on the 1,000; 10,000
steps of 8-12 turns): 12-20 question turns per image (the 256 image tokens dominate the cost, so
more turns are more answers per second), 9,000 steps, and jemalloc. Run L was M under glibc's
malloc: the time per token rose step by step (70 us at step 250, 95 us at step 2,750; about 30% of
py-spy's samples inside malloc; RSS 7.6 GB), the likely reason K took 101 min; M logged identical
losses and monitor accuracies at about half the time per step. Still from K: count questions at
their fair share with answers near uniform 1..4 (--balanced-counts; before, 13% of the turns and
mostly "1") and a fifth of the batches compacted as pre-LLM pruning presents them (--compact-p
0.2). --balanced-counts alone (runs H, I) made models that read the question's distance to the
image and collapse once visual tokens are dropped (ATP keeping 64 of 256: 0.43 against 0.71
unpruned; 0.71 with positions="original"), which --compact-p prevents: scripts/probe_positions.py
gives N 0.83 with all 256 tokens, 0.80 with 64 compacted and 0.76 with the same 64 at their
original positions (M: 0.83, 0.79, 0.79).
Stage 1 reaches 1.000 held-out per-patch accuracy on object patches for every head and 0.99
caption retrieval at batch 32. Two changes took
stage 2 from the question-only prior (0.29-0.39 in every earlier run, see train_log.txt) to this:
the object-patch term of the stage-1 dense loss (--object-weight; shape per patch was 0.70
without it) and the distractor curriculum (--background). scripts/probe_shapes_lm.py measures
recipes in minutes; with --oracle-features (perfect one-hot patch features) it showed the
language model itself as the bottleneck: 0.44 on <=3-object scenes after 580 steps with all 256
tokens, 0.56 with 5% of the background; colour questions alone on such scenes reached only ~0.7
after 300-700 steps (init 0.15; 0.80 with init 0.02 and lr 1e-3). The grounding loss (heads
taught where to look) did not help those models, which could not yet read position; it is off in
stage 2 and on in the grounding phase after it.

Stage 1: a small `CLIPModel` on scene/caption pairs: the contrastive loss, plus dense per-patch
heads on the penultimate vision layer (the layer LLaVA reads) that predict colour, shape, size,
part (which quarter of a big object), row and column of the patch. The heads are thrown away;
they only make the patch tokens carry what the language model must look up.

Stage 2: a `LlavaForConditionalGeneration` whose vision tower is stage 1's, frozen (as LLaVA
does), so its penultimate-layer features are computed once for a pool of training scenes and
cached. The projector and a small Llama are trained on sequences of several question/answer
turns (sometimes a caption turn) per image, loss on the answers only, with a curriculum from
scenes of 1-3 objects to all, and a distractor curriculum (--background): every object patch
but only a rising share of the background patches (5% at the start, all of them from 45% of the
run on), at their original positions, so the language model learns to read objects before it
must find them among ~250 background tokens; and a fifth of the batches (--compact-p) thinned to
5-50% of the background and compacted, as pre-LLM pruning presents them, so the model cannot come
to depend on where the image tokens sit. Documented because both may make the model more
tolerant of dropped background tokens (what pruning does) than a model trained on full images
only. Training-only position heads (--position-weight, on by default) read every image token's
row and column from the projector's output and the hidden states after layers 1 and 2, so the
language model keeps where each patch is; they are not saved. Optional auxiliary grounding loss
(--grounding-weight, off in stage 2; documented because it shapes attention, and so what
attention-based pruners such as FastV see; see GROUNDING): the heads listed in GROUNDING are taught to look at
the patches the question is about (ground-truth masks), on the batches that show all 256 patches
in place.

Grounding phase (--finetune-steps, after stage 2): the same training from stage 2's weights with
a fresh optimizer and fresh position heads, all objects and all background from the start, lr
5e-4, the grounding loss at weight 1 (--finetune-grounding) and a fifth of the batches thinned and
compacted without it (--finetune-compact-p), so side questions learn to find the asked-about
object among look-alikes without the model coming to need all its image tokens.

Training scenes come from the "train" split (a separate random stream from every evaluation
seed); held-out numbers use `shapes.make_samples(..., split="eval")`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from visprune.shapes import model as M
from visprune.shapes import scenes as S

# Grounding loss: which attention heads are taught where to look (documented because it shapes
# attention, and so what attention-based pruners such as FastV see). Each entry is
# (layer, head, kind); every target can be met by the information the token has at that layer:
#   "attr":   in layer 0, each attribute word of the question ("red", "circle", "small") looks up
#             the patches of every object with that attribute: its own embedding suffices.
#   "words":  in layer 0, the token that predicts the answer looks up the question's attribute
#             words (a text-to-text lookup), so that after layer 0 it knows what is asked about.
#   "answer": in layer --answer-layer (default 2; 1 before run S), the token that predicts the
#             answer looks up the patches of the objects the question is about (ground-truth
#             masks): a conjunction of the words it gathered. Not layer 1: FastV with K=2 ranks
#             the image tokens by layer 1's attention from that very token, which would then be a
#             map taught from the ground truth (pilot R1: FastV at 0.88 with any budget down to 16).
#             FastV with K=3 reads layer 2's map and is such an oracle on run S (README).
# Only the distribution *within* the target region (image or question) is supervised for
# "answer", so the share of attention left on the text (which a count can be read from) stays free.


def grounding_targets(answer_layer: int | None) -> tuple:
    """The (layer, head, kind) entries of the grounding loss; `answer_layer` None drops "answer"."""
    return ((0, 0, "attr"), (0, 1, "words")) + (((answer_layer, 0, "answer"),) if answer_layer is not None else ())


def run_targets(args) -> tuple:
    """The grounding targets a run's --answer-layer names (-1: no "answer" target)."""
    return grounding_targets(None if args.answer_layer < 0 else args.answer_layer)


def grounded_layers(targets) -> tuple:
    return tuple(sorted({layer for layer, _, _ in targets}))


ANSWER_LAYER = 2  # --answer-layer's default: past layer 1, whose attention FastV (K=2) ranks tokens by
GROUNDING = grounding_targets(ANSWER_LAYER)
GROUNDED_LAYERS = grounded_layers(GROUNDING)
_ATTR_WORDS = {**{c: ("colour", c) for c in S.COLOUR_NAMES}, **{s: ("shape", s) for s in S.SHAPES},
               **{p: ("shape", s) for s, p in S.PLURALS.items()}, **{z: ("size", z) for z in S.SIZES}}
COUNT_TILT = 2.0  # count answers drawn with weight count**COUNT_TILT among those a scene allows
# hidden states (0: the projector's output, the language model's input; i: after layer i) whose
# image tokens the training-only position heads read (--position-weight)
POSITION_SITES = (0, 1, 2)
MONITOR_SEED = 777  # held-out samples watched during training (eval split)
FINAL_SEED = 12345  # held-out samples of metrics.json (eval split)


def log(msg: str, fh=None) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if fh is not None:
        fh.write(line + "\n")
        fh.flush()


# ----------------------------------------------------------------------------- configs


def clip_config(vocab_size: int, tok):
    from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    vision = CLIPVisionConfig(
        hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        image_size=S.IMAGE_SIZE, patch_size=S.PATCH, projection_dim=128,
    )
    text = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=128, projection_dim=128,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=128)


def llava_config(clip_cfg, tok, init: float = 0.02, hidden: int = 128, layers: int = 4):
    from transformers import LlamaConfig, LlavaConfig

    text = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=hidden // 32, num_key_value_heads=hidden // 32, max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False, initializer_range=init,
    )
    return LlavaConfig(initializer_range=init,
        vision_config=clip_cfg.vision_config, text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default",
        projector_hidden_act="gelu", pad_token_id=tok.pad_token_id,
    )


# ----------------------------------------------------------------------------- data


MEAN = np.asarray([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.asarray([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def pixels(images: list[np.ndarray]) -> torch.Tensor:
    """What CLIPImageProcessor gives for a 224 x 224 image (checked in tests), without PIL."""
    x = (np.stack(images).astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def object_patches(scene: S.Scene) -> list[np.ndarray]:
    return [
        S.Scene.patch_mask(scene.pixel_mask([k])) for k in range(len(scene.objects))
    ]


# ----------------------------------------------------------------------------- stage 1


class DenseHeads(nn.Module):
    SIZES = {"colour": 8, "shape": 6, "size": 3, "part": 6, "row": S.GRID, "col": S.GRID}

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, n) for k, n in self.SIZES.items()})

    def forward(self, h):
        h = self.norm(h)
        return {k: head(h) for k, head in self.heads.items()}


def stage1_batch(step: int, batch: int, seed: int, tok_clip):
    scenes = [S.random_scene(S.scene_rng(seed, step * batch + j, "train")) for j in range(batch)]
    pix = pixels([s.image for s in scenes])
    text = tok_clip([s.caption() for s in scenes], padding=True, truncation=True, max_length=128,
                    return_tensors="pt")
    targets = {k: [] for k in DenseHeads.SIZES}
    rows = np.repeat(np.arange(S.GRID), S.GRID)
    cols = np.tile(np.arange(S.GRID), S.GRID)
    for s in scenes:
        t = s.patch_targets()
        for k in ("colour", "shape", "size", "part"):
            targets[k].append(t[k])
        targets["row"].append(rows)
        targets["col"].append(cols)
    targets = {k: torch.from_numpy(np.stack(v)) for k, v in targets.items()}
    return pix, text, targets


def dense_heads_loss(logits, targets, object_weight: float) -> torch.Tensor:
    """Cross-entropy of every dense head over all patches, plus `object_weight` times the same
    over object patches only for the object heads (objects cover ~3% of the patches, so without
    it the background class dominates and shape is learnt slowly)."""
    obj = targets["shape"].flatten() > 0
    loss = torch.zeros(())
    for k, lg in logits.items():
        lg, t = lg.float().flatten(0, 1), targets[k].flatten()
        loss = loss + F.cross_entropy(lg, t)
        if object_weight and k in ("colour", "shape", "size", "part") and obj.any():
            loss = loss + object_weight * F.cross_entropy(lg[obj], t[obj])
    return loss


@torch.no_grad()
def patch_accuracy(clip, heads, n: int = 128) -> dict:
    """Per-patch accuracy of the dense heads on object patches of held-out scenes."""
    clip.eval()
    hits = {k: [] for k in DenseHeads.SIZES}
    for b in range(0, n, 32):
        scenes = [S.random_scene(S.scene_rng(MONITOR_SEED, i, "eval")) for i in range(b, b + 32)]
        out = clip.vision_model(pixel_values=pixels([s.image for s in scenes]), output_hidden_states=True)
        logits = heads(out.hidden_states[-2][:, 1:])
        for i, s in enumerate(scenes):
            t = s.patch_targets()
            t["row"] = np.repeat(np.arange(S.GRID), S.GRID)
            t["col"] = np.tile(np.arange(S.GRID), S.GRID)
            obj = t["shape"] > 0
            for k in hits:
                hits[k].append((logits[k][i].argmax(-1).numpy() == t[k])[obj])
    clip.train()
    return {k: float(np.concatenate(v).mean()) for k, v in hits.items()}


def train_stage1(args, tok_clip, fh):
    from transformers import CLIPModel

    torch.manual_seed(args.seed)
    clip = CLIPModel(clip_config(len(tok_clip), tok_clip))
    heads = DenseHeads(clip.config.vision_config.hidden_size)
    params = list(clip.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=args.stage1_lr, weight_decay=0.01)
    steps = args.stage1_steps
    sched = cosine(opt, warmup=min(100, steps // 10), total=steps)
    seed = 10 * args.seed + 1
    t0 = time.time()
    clip.train()
    acc = {}
    for step in range(steps):
        pix, text, targets = stage1_batch(step, args.batch1, seed, tok_clip)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out = clip(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                       pixel_values=pix, output_hidden_states=True, return_loss=True)
            dense = out.vision_model_output.hidden_states[-2][:, 1:]
            logits = heads(dense)
        dense_loss = dense_heads_loss(logits, targets, args.object_weight)
        loss = out.loss.float() + dense_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == steps - 1:
            obj = targets["shape"] > 0
            acc = {k: (logits[k].argmax(-1) == targets[k])[obj].float().mean().item() for k in logits}
            log(f"stage1 step {step}/{steps} {time.time() - t0:.0f}s loss {loss.item():.3f} "
                f"contrastive {out.loss.item():.3f} object-patch acc "
                + " ".join(f"{k} {v:.2f}" for k, v in acc.items()), fh)
        if args.save_every and step % args.save_every == args.save_every - 1:
            clip.save_pretrained(args.out / "clip")  # lets a slow run be cut short and resumed
        if step % 250 == 249 or step == steps - 1:
            held = patch_accuracy(clip, heads)
            log("stage1 held-out object-patch acc " + " ".join(f"{k} {v:.3f}" for k, v in held.items()), fh)
    return clip, {"seconds": time.time() - t0, "steps": steps,
                  "object_patch_accuracy_last_batch": acc, "object_patch_accuracy_heldout": held}


def clip_retrieval(clip, tok_clip, n: int = 256) -> float:
    """In-batch image->caption retrieval accuracy on held-out scenes, batches of 32."""
    clip.eval()
    hits = 0
    with torch.no_grad():
        for b in range(0, n, 32):
            scenes = [S.random_scene(S.scene_rng(MONITOR_SEED, i, "eval")) for i in range(b, b + 32)]
            text = tok_clip([s.caption() for s in scenes], padding=True, truncation=True,
                            max_length=128, return_tensors="pt")
            out = clip(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                       pixel_values=pixels([s.image for s in scenes]))
            hits += (out.logits_per_image.argmax(-1) == torch.arange(32)).sum().item()
    return hits / n


# ----------------------------------------------------------------------------- stage 2


class Vocab:
    def __init__(self, tok):
        self.tok = tok
        self.ids = {w: tok.convert_tokens_to_ids(w) for w in M.VOCAB}
        self.image = self.ids["<image>"]

    def words(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]


def attribute_targets(question: str, objects, patches) -> list[tuple[int, np.ndarray]]:
    """(word index, patches of every object with that word's attribute) per attribute word."""
    out = []
    for i, w in enumerate(question.split()):
        if w not in _ATTR_WORDS:
            continue
        key, value = _ATTR_WORDS[w]
        mask = np.zeros(S.NUM_PATCHES, dtype=bool)
        for o, m in zip(objects, patches):
            if getattr(o, key) == value:
                mask |= m
        out.append((i, mask))
    return out


def build_sequence(vocab: Vocab, turns, n_image: int = S.NUM_PATCHES):
    """Token ids, labels and grounding targets of one image with several turns.

    A turn is (question, answer, relevant patches or None, attribute targets or None). Equal to
    tokenizing the chat template's text (checked at start-up by `check_sequence`). Grounding
    targets are (kind, position, target): a bool patch mask for "attr"/"answer", a list of
    token positions for "words". `n_image` < 256 leaves room for a subset of the patches only
    (see `patch_subset`).
    """
    ids = [vocab.tok.bos_token_id] + vocab.words("USER:") + [vocab.image] * n_image
    labels = [-100] * len(ids)
    grounding = []
    for t, (q, a, rel, attrs) in enumerate(turns):
        lead = vocab.words("USER:") if t > 0 else []
        q_start = len(ids) + len(lead)
        prefix = lead + vocab.words(q + " ASSISTANT:")
        ids += prefix
        labels += [-100] * len(prefix)
        answer_pos = len(ids) - 1
        for i, mask in attrs or ():
            if mask.any():
                grounding.append(("attr", q_start + i, mask))
        if attrs:
            grounding.append(("words", answer_pos, [q_start + i for i, _ in attrs]))
        if rel is not None and rel.any():
            grounding.append(("answer", answer_pos, rel))
        ans = vocab.words(a) + [vocab.tok.eos_token_id]
        ids += ans
        labels += ans
    return ids, labels, grounding


def check_sequence(vocab: Vocab, processor) -> None:
    turns = [("what colour is the circle ?", "red", None, None),
             ("describe the scene .", "big red circle at row 1 column 2 .", None, None)]
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": turns[0][0]}]},
            {"role": "assistant", "content": turns[0][1]},
            {"role": "user", "content": turns[1][0]},
            {"role": "assistant", "content": turns[1][1]}]
    text = processor.apply_chat_template(conv)
    ref = processor(text=text, images=np.zeros((224, 224, 3), np.uint8), return_tensors="pt")
    ids, _, _ = build_sequence(vocab, turns)
    assert ref["input_ids"][0].tolist() == ids, (ref["input_ids"][0].tolist(), ids)


class Pool:
    """Training scenes of stage 2: objects, per-object patch masks and cached tower features."""

    def __init__(self, n: int, seed: int, tower, batch: int = 64, fh=None):
        self.objects, self.patches, feats = [], [], []
        t0 = time.time()
        tower.eval()
        for b in range(0, n, batch):
            scenes = [S.random_scene(S.scene_rng(seed, i, "train")) for i in range(b, min(n, b + batch))]
            self.objects += [s.objects for s in scenes]
            self.patches += [object_patches(s) for s in scenes]
            feats.append(tower_features(tower, [s.image for s in scenes]))
            if b % (batch * 50) == 0:
                log(f"caching tower features {b}/{n} {time.time() - t0:.0f}s", fh)
        self.features = torch.cat(feats)
        self.n_objects = np.asarray([len(o) for o in self.objects])


@torch.no_grad()
def tower_features(tower, images) -> torch.Tensor:
    """Penultimate-layer patch features without [CLS]: what LLaVA's projector receives."""
    out = tower(pixel_values=pixels(images), output_hidden_states=True)
    return out.hidden_states[-2][:, 1:].to(torch.bfloat16)


def count_answer(objects, rng: np.random.Generator) -> int:
    """The answer of a count question for this scene: one of the counts (1..4) that some shape or
    colour of the scene has, larger ones favoured (weight count**COUNT_TILT) because a scene
    allows 1 far more often than 4. Drawing 1..4 blindly, as the held-out samples do (they
    redraw the *scene* until it fits), would mostly fail on a fixed training scene and leave
    count questions rare and mostly "1" (13% of the questions, 37% "1" and 10% "4" on scenes of
    up to 12 objects) against a uniform 1..4 in every evaluation."""
    counts = {sum(getattr(o, attr) == getattr(p, attr) for o in objects)
              for p in objects for attr in ("shape", "colour")}
    options = np.asarray(sorted(c for c in counts if 1 <= c <= S.MAX_PER_ATTRIBUTE))
    weights = options.astype(float) ** COUNT_TILT
    return int(rng.choice(options, p=weights / weights.sum()))


def make_turns(objects, patches, rng: np.random.Generator, n_q: int, caption_p: float, types=S.QTYPES,
               balanced_counts: bool = False):
    scene = SimpleNamespace(objects=objects)
    turns = []
    if rng.random() < caption_p:
        cap = S.Scene(objects=objects, background="plain",
                      image=np.zeros((1, 1, 3), np.uint8), object_pixels=np.zeros((1, 1), np.int16))
        turns.append((M.CAPTION_QUESTION, cap.caption(), None, None))
    tries = 0
    while len(turns) < n_q and tries < 4 * n_q:
        tries += 1
        qtype = types[int(rng.integers(len(types)))]
        count = count_answer(objects, rng) if qtype == "count" and balanced_counts else None
        q = S.make_question(scene, qtype, rng, count=count)
        if q is None:
            continue
        rel = np.zeros(S.NUM_PATCHES, dtype=bool)
        for k in q.objects:
            rel |= patches[k]
        turns.append((q.question, q.answer, rel, attribute_targets(q.question, objects, patches)))
    return turns


def collate(seqs, pad_id: int):
    L = max(len(s[0]) for s in seqs)
    B = len(seqs)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    labels = torch.full((B, L), -100, dtype=torch.long)
    am = torch.zeros((B, L), dtype=torch.long)
    for b, (i, l, _) in enumerate(seqs):
        ids[b, : len(i)] = torch.tensor(i)
        labels[b, : len(l)] = torch.tensor(l)
        am[b, : len(i)] = 1
    return ids, labels, am


def lm_forward(llava, ids, am, feats, position_ids=None, hidden_states: bool = False):
    """LLaVA's forward from cached tower features (the stock path minus the frozen tower).
    Returns the logits, and with `hidden_states` also the language model's hidden states."""
    inner = llava.model
    emb = inner.get_input_embeddings()(ids)
    img = inner.multi_modal_projector(feats.to(emb.dtype))
    mask = (ids == llava.config.image_token_index).unsqueeze(-1).expand_as(emb)
    emb = emb.masked_scatter(mask, img.to(emb.dtype))
    out = inner.language_model(inputs_embeds=emb, attention_mask=am, position_ids=position_ids,
                               output_hidden_states=hidden_states)
    logits = llava.lm_head(out.last_hidden_state)
    return (logits, out.hidden_states) if hidden_states else logits


class PositionHeads(nn.Module):
    """Training-only linear heads that read each image token's row and column from the hidden
    states at POSITION_SITES; they are not part of the saved model.

    Why: linear probes on run M (the tower's features read the column of an object's patch at
    1.00, its projector's output at 0.57 and the language model after layer 2 at 0.08) showed
    that stage 2 learnt to throw position away before the language model could use it, so side
    questions stayed near chance. The heads make the projector and the first layers keep it."""

    def __init__(self, hidden: int, sites=POSITION_SITES):
        super().__init__()
        self.sites = tuple(sites)
        self.heads = nn.ModuleList(nn.Linear(hidden, 2 * S.GRID) for _ in self.sites)

    def forward(self, hidden_states, image_mask: torch.Tensor, patch_index: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of row and column over the image tokens (`image_mask` [B, T]) whose
        patch numbers are `patch_index` [B, K], in the order they appear."""
        index = patch_index.flatten()
        loss = torch.zeros(())
        for site, head in zip(self.sites, self.heads):
            logits = head(hidden_states[site][image_mask]).float()
            loss = loss + F.cross_entropy(logits[:, : S.GRID], index // S.GRID)
            loss = loss + F.cross_entropy(logits[:, S.GRID :], index % S.GRID)
        return loss / (2 * len(self.sites))


def background_share(step: int, steps: int, start: float, until: float) -> float:
    """Share of background patches the language model sees at this step: `start` at step 0,
    rising linearly to all of them at `until` (a fraction of the run)."""
    if until <= 0 or start >= 1:
        return 1.0
    return min(1.0, start + (1.0 - start) * step / (until * steps))


def patch_subset(patches_of: list[list[np.ndarray]], share: float, rng: np.random.Generator):
    """Distractor curriculum: per image, every object patch plus a random `share` of the
    background patches, the same count for every image of the batch (padded with more
    background), in ascending order. Returns int64 [B, K] patch indices, or None for all 256.

    The image tokens keep their original positions (see `subset_positions`), so the model never
    sees a compacted ("pruned-looking") sequence; the last part of training shows all patches.
    """
    if share >= 1.0:
        return None
    objs = [np.flatnonzero(np.any(p, axis=0)) if p else np.zeros(0, np.int64) for p in patches_of]
    k = max(max(len(o) for o in objs) + 1, int(round(share * S.NUM_PATCHES)))
    k = min(k, S.NUM_PATCHES)
    rows = []
    for o in objs:
        bg = np.setdiff1d(np.arange(S.NUM_PATCHES), o)
        rows.append(np.sort(np.concatenate([o, rng.choice(bg, k - len(o), replace=False)])))
    return torch.from_numpy(np.stack(rows))


def subset_positions(ids: torch.Tensor, keep: torch.Tensor, img_start: int) -> torch.Tensor:
    """position_ids of sequences built with K = keep.shape[1] image tokens, equal to those of the
    full 256-token sequence for every token present."""
    B, L = ids.shape
    k = keep.shape[1]
    pos = torch.arange(L).repeat(B, 1)
    pos[:, img_start : img_start + k] = img_start + keep
    pos[:, img_start + k :] += S.NUM_PATCHES - k
    return pos


def grounding_loss(captured, seqs, img_start: int, mass_on_answer: bool = False, targets=GROUNDING):
    """Cross-entropy between each GROUNDING head's attention, renormalised over its target region
    (the image for "attr"/"answer", the tokens before it for "words"), and the uniform
    distribution on the targets; "attr" and "words" (and "answer" if mass_on_answer) also pay
    -log(attention mass on the targets). Returns (mean loss, {kind: loss})."""
    terms, parts = [], {}
    layers = grounded_layers(targets)
    for layer, head, kind in targets:
        att = captured[layers.index(layer)]  # [B, H, L, L]
        targets = [(b, p, t) for b, (_, _, g) in enumerate(seqs) for k, p, t in g if k == kind]
        if not targets:
            continue
        b_idx = torch.tensor([b for b, _, _ in targets])
        pos = torch.tensor([p for _, p, _ in targets])
        rows = att[b_idx, head, pos].float()  # [T, L]
        if kind == "words":
            tgt = torch.zeros_like(rows)
            for j, (_, _, where) in enumerate(targets):
                tgt[j, where] = 1.0
            region = torch.arange(rows.shape[-1]) >= img_start + S.NUM_PATCHES  # the text after the image
        else:
            tgt = torch.zeros_like(rows)
            tgt[:, img_start : img_start + S.NUM_PATCHES] = torch.from_numpy(
                np.stack([t for _, _, t in targets])).float()
            region = torch.zeros(rows.shape[-1], dtype=torch.bool)
            region[img_start : img_start + S.NUM_PATCHES] = True
        inside = rows * region
        dist = inside / inside.sum(-1, keepdim=True).clamp_min(1e-6)
        ce = -(torch.log(dist + 1e-6) * tgt).sum(-1) / tgt.sum(-1)
        loss = ce
        if kind != "answer" or mass_on_answer:
            loss = loss - torch.log((rows * tgt).sum(-1) + 1e-6)
        terms.append(loss.mean())
        parts[kind] = loss.mean().item()
    return (torch.stack(terms).mean() if terms else torch.zeros(())), parts


@torch.no_grad()
def fast_eval(llava, vocab, samples, feats) -> dict:
    """Greedy first-token answers through lm_forward (the monitor; final numbers use generate)."""
    llava.eval()
    correct = {q: [] for q in S.QTYPES}
    easy = []  # scenes of at most 3 objects, where the curriculum starts
    for b in range(0, len(samples), 64):
        chunk = samples[b : b + 64]
        seqs = [build_sequence(vocab, [(s.question, s.answer, None, None)]) for s in chunk]
        prompts = [(i[: len(i) - 2], l[: len(l) - 2], g) for i, l, g in seqs]  # drop answer, </s>
        ids, _, am = collate(prompts, vocab.tok.pad_token_id)
        logits = lm_forward(llava, ids, am, feats[b : b + 64])
        last = am.sum(1) - 1
        pred = logits[torch.arange(len(chunk)), last].argmax(-1)
        for s, p in zip(chunk, pred):
            ok = vocab.tok.convert_ids_to_tokens(int(p)) == s.answer
            correct[s.qtype].append(ok)
            if len(s.objects) <= 3:
                easy.append(ok)
    llava.train()
    per = {q: float(np.mean(v)) for q, v in correct.items() if v}
    per["overall"] = float(np.mean([x for v in correct.values() for x in v]))
    per["few_objects"] = float(np.mean(easy)) if easy else float("nan")
    return per


def new_llava(args, clip, tok, fh):
    """Stage 2's model: stage 1's vision tower (frozen), a fresh projector and Llama, or those of
    --init-from."""
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(args.seed + 1)
    cfg = llava_config(clip.config, tok, init=args.init, hidden=args.lm_hidden, layers=args.lm_layers)
    llava = LlavaForConditionalGeneration(cfg)
    missing = llava.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    log(f"vision tower loaded from stage 1: {missing}", fh)
    llava.model.vision_tower.requires_grad_(False)
    if args.init_from is not None:  # projector and language model of a saved checkpoint
        trained = LlavaForConditionalGeneration.from_pretrained(args.init_from)
        keep = {k: v for k, v in trained.state_dict().items() if "vision_tower" not in k}
        llava.load_state_dict(keep, strict=False)
        log(f"projector and language model initialised from {args.init_from}", fh)
    return llava


def finetune_args(args) -> argparse.Namespace:
    """The grounding phase's settings: stage 2's, with all objects and all background from the
    start, its own steps, learning rate, grounding weight and share of compacted batches."""
    return argparse.Namespace(**{**vars(args), "stage2_steps": args.finetune_steps, "stage2_lr": args.finetune_lr,
                                 "grounding_weight": args.finetune_grounding, "compact_p": args.finetune_compact_p,
                                 "curriculum": (0.0, 0.0), "background": (1.0, 0.0)})


def train_stage2(args, llava, tok, processor, fh, pool=None, phase: str = "stage2"):
    """Train the projector and language model of `llava` in place. `phase` is "stage2" or
    "finetune" (the grounding phase after it: its own random stream). Returns (llava, info, pool);
    pass the pool on to the next phase so the tower features are cached once."""
    grounded = args.grounding_weight > 0
    vocab = Vocab(tok)
    check_sequence(vocab, processor)
    cfg = llava.config
    lm_config = llava.model.language_model.config

    if pool is None:
        pool = Pool(args.pool, 10 * args.seed + 2, llava.model.vision_tower, fh=fh)
    monitor = S.make_samples(args.monitor_n, MONITOR_SEED)
    monitor_feats = torch.cat([tower_features(llava.model.vision_tower, [np.asarray(s.image) for s in monitor[b : b + 64]])
                               for b in range(0, len(monitor), 64)])

    captured: list[torch.Tensor] = []
    targets = run_targets(args)

    def hook():
        if not grounded:
            return []
        return [llava.model.language_model.layers[i].self_attn.register_forward_hook(
            lambda mod, inp, out: captured.append(out[1])) for i in grounded_layers(targets)]

    hooks = hook()

    position_heads = PositionHeads(cfg.text_config.hidden_size) if args.position_weight > 0 else None
    params = [p for p in llava.parameters() if p.requires_grad]
    params += list(position_heads.parameters()) if position_heads is not None else []
    opt = torch.optim.AdamW(params, lr=args.stage2_lr, weight_decay=0.01)
    steps = args.stage2_steps
    sched = cosine(opt, warmup=min(150, steps // 10), total=steps)
    rng = np.random.default_rng([10 * args.seed + 3] + ([1] if phase == "finetune" else []))
    img_start = 1 + len(vocab.words("USER:"))
    t0 = time.time()
    history = []
    pace = Pace()
    llava.train()
    for step in range(steps):
        pace.start()
        frac = step / steps
        max_obj = 3 if frac < args.curriculum[0] else 6 if frac < args.curriculum[1] else S.MAX_OBJECTS
        candidates = np.flatnonzero(pool.n_objects <= max_obj)
        idx = rng.choice(candidates, size=args.batch2, replace=False)
        share = background_share(step, steps, *args.background)
        # this batch pruned-looking (thinned and compacted)? No draw at 0, so the default stream is unchanged
        compact = args.compact_p > 0 and rng.random() < args.compact_p
        if compact:
            share = min(share, float(rng.uniform(0.05, 0.5)))
        keep = patch_subset([pool.patches[i] for i in idx], share, rng)
        n_image = S.NUM_PATCHES if keep is None else keep.shape[1]
        # caption turns are long: give them to whole batches, so other batches stay short
        caption_p = float(rng.random() < args.caption_p)
        seqs = [build_sequence(vocab, make_turns(pool.objects[i], pool.patches[i], rng,
                                                 int(rng.integers(args.turns[0], args.turns[1] + 1)), caption_p,
                                                 balanced_counts=args.balanced_counts),
                               n_image)
                for i in idx]
        ids, labels, am = collate(seqs, tok.pad_token_id)
        feats = pool.features[torch.from_numpy(idx)]
        pos = None
        if keep is not None:
            feats = torch.gather(feats, 1, keep[..., None].expand(-1, -1, feats.shape[-1]))
            pos = None if compact else subset_positions(ids, keep, img_start)
        captured.clear()
        # the grounding loss needs attention maps (eager attention) and all 256 patches in place
        ground_now = grounded and keep is None
        lm_config._attn_implementation = "eager" if ground_now else "sdpa"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            p_loss = torch.zeros(())
            if position_heads is None:
                logits = lm_forward(llava, ids, am, feats, pos)
            else:
                logits, hidden = lm_forward(llava, ids, am, feats, pos, hidden_states=True)
                patch_index = torch.arange(S.NUM_PATCHES).expand(len(idx), -1) if keep is None else keep
                p_loss = position_heads(hidden, ids == llava.config.image_token_index, patch_index)
        lm_loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten())
        g_loss, g_parts = grounding_loss(captured, seqs, img_start, targets=targets) if ground_now else (torch.zeros(()), {})
        loss = lm_loss + args.grounding_weight * g_loss + args.position_weight * p_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        pace.stop()
        if step % args.eval_every == 0 or step == steps - 1:
            captured.clear()
            for h in hooks:
                h.remove()
            pace_line = pace.report(opt)
            t_eval = time.time()
            acc = fast_eval(llava, vocab, monitor, monitor_feats)
            t_eval = time.time() - t_eval
            hooks = hook()
            elapsed = time.time() - t0
            history.append({"step": step, "seconds": round(elapsed), "max_objects": int(max_obj), **acc})
            log(f"{phase} step {step}/{steps} {elapsed:.0f}s loss {lm_loss.item():.3f} position {p_loss.item():.3f} grounding "
                f"{g_loss.item():.3f} (" + " ".join(f"{k} {v:.2f}" for k, v in g_parts.items()) + f") held-out acc {acc['overall']:.3f} ("
                + " ".join(f"{q} {acc[q]:.2f}" for q in S.QTYPES)
                + f"; <=3 objects {acc['few_objects']:.2f}) max objects {max_obj} background {share:.2f} "
                f"lr {sched.get_last_lr()[0]:.2e}", fh)
            log(f"  {pace_line} (monitor {t_eval:.1f}s)", fh)
            pace.restart()
        if args.save_every2 and step % args.save_every2 == args.save_every2 - 1:
            llava.save_pretrained(args.out)  # a snapshot, so a long run can be cut short
            processor.save_pretrained(args.out)
    for h in hooks:
        h.remove()
    lm_config._attn_implementation = "sdpa"
    llava.config.text_config._attn_implementation = "sdpa"
    return llava, {"seconds": time.time() - t0, "steps": steps, "history": history}, pool


# ----------------------------------------------------------------------------- main


JEMALLOC = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib64/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2")
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"  # keep freed pages: no page faults to get them back


def use_jemalloc(choice: str) -> str:
    """Run this script under jemalloc when it is installed (``apt-get install libjemalloc2``): the
    process re-executes itself with it preloaded. Measured (see STATUS): under glibc's malloc a
    long stage 2 slowed down step by step (about 30% of the samples of an aged process inside
    malloc's internals; RSS 7.6 GB after 3000 steps), while a fresh process of the same
    configuration ran 0.60-0.64 s per step; under jemalloc without page purging, 0.46-0.48 s.
    Returns the allocator in use, for the log."""
    if "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return "jemalloc (LD_PRELOAD)"
    if choice == "system":
        return "system malloc (--allocator system)"
    lib = next((p for p in JEMALLOC if os.path.exists(p)), None)
    if lib is None:
        print("note: libjemalloc2 is not installed (apt-get install libjemalloc2); glibc's malloc makes long runs "
              "slower step by step (see STATUS in this script)", file=sys.stderr)
        return "system malloc (no libjemalloc2)"
    env = dict(os.environ, LD_PRELOAD=lib, MALLOC_CONF=os.environ.get("MALLOC_CONF", JEMALLOC_CONF))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
    raise AssertionError("unreachable")


class Pace:
    """Where the time of the training steps goes, per logging interval (evaluation excluded):
    wall seconds per step, this process's CPU seconds per step (user and system), the host's
    steal time (CPU taken by other guests of a virtual machine) and the share of subnormal
    values in the optimizer state (slow arithmetic on x86). Logged because long runs measured
    slower per step than short runs of the same recipe; it showed glibc's malloc as the cause
    (see use_jemalloc)."""

    def __init__(self):
        self.mark = None
        self.restart()

    @staticmethod
    def _cpu():
        t = os.times()
        return t.user, t.system

    @staticmethod
    def _steal() -> float:
        try:
            with open("/proc/stat") as f:
                fields = f.readline().split()
            return int(fields[8]) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def start(self):
        self.mark = time.perf_counter()

    def stop(self):
        self.wall += time.perf_counter() - self.mark
        self.steps += 1

    def report(self, opt) -> str:
        user, system = self._cpu()
        steal = self._steal()
        n = max(self.steps, 1)
        cpu = user - self.cpu0[0] + system - self.cpu0[1]
        states = [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v) and v.numel() > 1]
        sub = sum(int(((v != 0) & (v.abs() < torch.finfo(v.dtype).tiny)).sum()) for v in states)
        total = sum(v.numel() for v in states) or 1
        line = (f"pace {self.wall / n:.3f} s/step, process cpu {cpu / n:.3f} s/step "
                f"(system {(system - self.cpu0[1]) / n:.3f}), host steal {(steal - self.steal0) / n:.3f} s/step, "
                f"subnormal optimizer state {sub / total:.2%}")
        self.restart()
        return line

    def restart(self):
        """Start a new interval (after the monitor, whose time is not counted)."""
        self.steps, self.wall = 0, 0.0
        self.cpu0, self.steal0 = self._cpu(), self._steal()


def cosine(opt, warmup: int, total: int):
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def final_eval(out: Path, n: int, fh) -> dict:
    """Held-out accuracy of the saved checkpoint, through from_pretrained and generate."""
    from visprune import shapes

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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
                        "measured to let a model depend on them, see STATUS)")
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
    sys.exit(main())
