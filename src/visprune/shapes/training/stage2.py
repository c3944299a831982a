"""Stage 2 and the grounding phase after it.

Stage 2: a `LlavaForConditionalGeneration` whose vision tower is stage 1's, frozen (as LLaVA
does), so its penultimate-layer features are computed once for a pool of training scenes and
cached. The projector and a small Llama are trained on sequences of several question/answer
turns (sometimes a caption turn) per image, loss on the answers only, with a curriculum from
scenes of 1-3 objects to all, and a distractor curriculum (--background): every object patch
but only a rising share of the background patches, at their original positions; a fifth of the
batches (--compact-p) thinned and compacted, as pre-LLM pruning presents them; training-only
position heads (--position-weight) and an optional grounding loss (--grounding-weight; see
grounding.py).

Grounding phase (--finetune-steps, after stage 2): the same training from stage 2's weights with
a fresh optimizer and fresh position heads, all objects and all background from the start, its
own learning rate, the grounding loss on (--finetune-grounding) and its own share of compacted
batches (--finetune-compact-p): `finetune_args`.

`new_llava` builds the model, `train_stage2` runs either phase, `lm_forward` is LLaVA's forward
from cached tower features and `fast_eval` the monitor's greedy first-token accuracy.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from .. import scenes as S
from .configs import MONITOR_SEED, llava_config
from .data import Pool, make_turns, tower_features
from .grounding import PositionHeads, grounded_layers, grounding_loss, run_targets
from .runtime import Pace, cosine, log
from .sequences import (
    Vocab,
    background_share,
    build_sequence,
    check_sequence,
    collate,
    patch_subset,
    subset_positions,
)


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
