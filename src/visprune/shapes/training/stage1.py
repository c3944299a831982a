"""Stage 1: a small `CLIPModel` on scene/caption pairs: the contrastive loss, plus dense per-patch
heads on the penultimate vision layer (the layer LLaVA reads) that predict colour, shape, size,
part (which quarter of a big object), row and column of the patch. The heads are thrown away;
they only make the patch tokens carry what the language model must look up.

`train_stage1` trains it; `patch_accuracy` and `clip_retrieval` measure it on held-out scenes.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import scenes as S
from .configs import MONITOR_SEED, clip_config
from .data import pixels
from .runtime import cosine, log


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
