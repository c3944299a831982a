"""Token sequences of stage 2: one image and several question/answer turns, as the chat template
writes them.

`Vocab` holds the tokenizer and the ids of the closed vocabulary; `build_sequence` gives the token
ids, labels (answers only) and grounding targets of one image with its turns, and `check_sequence`
checks it against the processor's chat template; `collate` pads a batch. The distractor curriculum
and the compacted batches show a subset of the 256 image tokens: `background_share` is the share of
background patches at a step, `patch_subset` draws the patches, `subset_positions` gives the kept
tokens the position ids they have in the full sequence.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import model as M
from .. import scenes as S


class Vocab:
    def __init__(self, tok):
        self.tok = tok
        self.ids = {w: tok.convert_tokens_to_ids(w) for w in M.VOCAB}
        self.image = self.ids["<image>"]

    def words(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]


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
