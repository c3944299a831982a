"""The test case table: one row per architecture set-up, how to build a tiny random model and its inputs.

Every behaviour that all adapters share (keep-all equals stock, exact undo, batched equals one by
one, the caller's prompt back from ``generate``, the scorer x budget contract, failure safety) is
written once and runs over ``CASES``. Adding an architecture adds one row here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from visprune import PruneConfig
from visprune import testing as T
from visprune.scoring.budgets import Budget
from visprune.scoring.scorers import VisionZipScorer

QUESTIONS = ["what colour is the star ?", "how many circle ?", "is there a dog ?"]


class PerImageBudget(Budget):
    """A budget that differs between the test images, the same in any batch (seeded by the pixels):
    ragged budgets for set-ups where the spectral budget keeps the same count for every image."""

    name = "per_image_test"

    def __call__(self, ctx, scores):
        keys = ctx.require("image_key", "per-image test budget")
        return torch.tensor([2 + 3 * (k % 2) for k in keys])


@dataclass(frozen=True)
class Case:
    build: Callable[[], tuple]          # () -> (model, processor)
    kind: str                           # "placeholder" (one token per visual token), "blip", "idefics"
    image_size: tuple[int, int] = (T.IMAGE, T.IMAGE)
    config: dict = field(default_factory=dict)  # PruneConfig fields every config of this set-up carries (BLIP-2's cut)
    scorers: tuple = ("atp", "cls", "random")  # names or Scorer instances, run with keep=1.0 against the stock model
    mixed: dict = field(default_factory=lambda: {"scorer": "atp", "energy": 0.8})  # ragged per-image budgets
    clip: str | None = None             # CLIP text partner: "own" (the tower's own CLIP), "shared" (a CLIP of T.IMAGE)
    refused: dict = field(default_factory=dict)  # scorer -> a word of the TypeError prune_ raises
    call_refused: dict = field(default_factory=dict)  # scorer -> a word of the UsageError a call with images raises
    prompt: Callable | None = None      # question -> prompt with one image, for set-ups with their own image marker

    def prune_config(self, **fields) -> PruneConfig:
        return PruneConfig(**{**self.config, **fields})

    def mixed_config(self) -> PruneConfig:
        fields = dict(self.mixed)
        if fields.get("budget") == "per_image":
            fields["budget"] = PerImageBudget()
        return self.prune_config(**fields)

    def inputs(self, processor, images, questions):
        if self.kind == "idefics":
            return processor(text=T.idefics_prompts(images, questions), return_tensors="pt", padding=True)
        if self.kind == "blip":
            text = [T.blip_prompt(q) for q in questions]
        else:
            template = self.prompt or (T.qwen_prompt if isinstance(processor, T.QwenInputs) else T.prompt)
            text = [template(q) for q in questions]
        # nested per prompt (one image each), the form every processor takes and Gemma 3's requires
        return processor(images=[[im] for im in images], text=text, return_tensors="pt", padding=True)


# in-LLM scorers (FastV, DART, PyramidDrop) need model.model.language_model.layers (LLaVA / Qwen layouts)
IN_LLM = {name: "in-LLM pruning needs" for name in ("fastv", "dart", "pdrop")}
SLIDING = {name: "sliding_attention layers" for name in ("fastv", "dart", "pdrop")}  # Gemma 3's language model
QK_NORM = {name: "QK-norm" for name in ("fastv", "dart", "pdrop")}  # Qwen3's language model
LINEAR = {name: "linear_attention layers" for name in ("fastv", "dart", "pdrop")}  # Qwen3.5's hybrid language model
# merging in the tower's hidden space (VisionZip, PruMerge as published) runs on single-crop LLaVA (and VisionZip's
# crop by crop on LLaVA-NeXT: NEXT below)
TOWER = {"visionzip": 'VisionZipScorer\\(space="projected"\\)', "prumerge": "no post-projector variant",
         "prumerge+": "no post-projector variant"}
# Queries have no [CLS] attention (vispruner) and no CLIP patches (cdpruner with the CLIP partner the contract gives it)
QUERY_REFUSED = {**TOWER, "cls": "lmtext", "atp": "lmtext", "visionzip": "lmtext", "visionzip-projected": "lmtext",
                 "pool": "patch grid", "text": "lmtext", "vispruner": "lmtext", "cdpruner": "lmtext", **IN_LLM}
VIT_REFUSED = {**TOWER, "lmtext": "cut='query'", "atp": "cut='query'", "text": "EVA-CLIP", "cdpruner": "EVA-CLIP",
               **IN_LLM}
VIT_SCORERS = ("cls", "random", VisionZipScorer(space="projected"), "vispruner", "pool", "divprune")
PACKED = {**TOWER, "pool": "one patch grid"}  # any-resolution features have no single patch grid per image
NEXT = {name: word for name, word in PACKED.items() if name != "visionzip"}  # VisionZip's official any-res path
# ... where the adapter also prunes videos, pool passes prune_ (it pools each frame of a video) and image calls are refused
PACKED_VIDEO = {"refused": TOWER, "call_refused": {"pool": "pools only videos"}}

CASES = {
    "llava": Case(T.llava, "placeholder", clip="own"),
    "llava_next": Case(T.llava_next, "placeholder", (T.IMAGE, 2 * T.IMAGE), clip="own", refused=NEXT),
    "llava_next_video": Case(T.llava_next_video, "placeholder", (T.IMAGE, 2 * T.IMAGE), clip="own", **PACKED_VIDEO),
    "llava_onevision": Case(T.llava_onevision, "placeholder", (T.IMAGE, 2 * T.IMAGE), **PACKED_VIDEO),
    "qwen2_vl": Case(T.qwen2_vl, "placeholder", (112, 168), refused=TOWER),
    "qwen2_5_vl": Case(T.qwen2_5_vl, "placeholder", (112, 168), refused=TOWER),
    "qwen3_vl": Case(T.qwen3_vl, "placeholder", (112, 168), refused={**TOWER, **QK_NORM}),
    "qwen3_vl_moe": Case(T.qwen3_vl_moe, "placeholder", (112, 168), refused={**TOWER, **QK_NORM}),
    "qwen3_5": Case(T.qwen3_5, "placeholder", (112, 168), refused={**TOWER, **LINEAR}),
    "qwen3_5_moe": Case(T.qwen3_5_moe, "placeholder", (112, 168), refused={**TOWER, **LINEAR}),
    "blip2-query": Case(T.blip2, "blip", config={"cut": "query"}, scorers=("lmtext", "random", "divprune"),
                        mixed={"scorer": "random", "budget": "per_image"}, clip="shared", refused=QUERY_REFUSED),
    "blip2-vit": Case(T.blip2, "blip", config={"cut": "vit"}, scorers=VIT_SCORERS, mixed={"scorer": "cls", "energy": 0.8},
                      clip="shared", refused=VIT_REFUSED),
    "instructblip-query": Case(T.instructblip, "blip", config={"cut": "query"}, scorers=("lmtext", "random", "divprune"),
                               mixed={"scorer": "random", "budget": "per_image"}, clip="shared", refused=QUERY_REFUSED),
    "instructblip-vit": Case(T.instructblip, "blip", config={"cut": "vit"}, scorers=VIT_SCORERS,
                             mixed={"scorer": "cls", "energy": 0.8}, clip="shared", refused=VIT_REFUSED),
    "gemma3": Case(T.gemma3, "placeholder", (112, 112), prompt=T.gemma3_prompt, refused={**TOWER, **SLIDING},
                   mixed={"scorer": "random", "budget": "per_image"}),
    "idefics3": Case(T.idefics3, "placeholder", (112, 112), refused=PACKED),
    "smolvlm": Case(T.smolvlm, "placeholder", (112, 168), refused=PACKED),
    # 2:1 test images: two tiles and a thumbnail each, joined into one image of 48 tokens
    "internvl": Case(T.internvl, "placeholder", (224, 112), prompt=T.internvl_prompt, refused=PACKED,
                     mixed={"scorer": "random", "budget": "per_image"}),
    "idefics": Case(lambda: T.idefics(resampler=True), "idefics", scorers=VIT_SCORERS,
                    mixed={"scorer": "cls", "energy": 0.8}, clip="shared",
                    refused={**TOWER, "lmtext": "embedding space", **IN_LLM}),
    "idefics-noresampler": Case(lambda: T.idefics(resampler=False), "idefics", scorers=VIT_SCORERS,
                                mixed={"scorer": "cls", "energy": 0.8}, clip="shared",
                                refused={**TOWER, "lmtext": "embedding space", **IN_LLM}),
}


def module_state(model):
    """Every module's hooks and instance attributes: what a pruned call may touch and must restore."""
    return [(dict(m._forward_hooks), dict(m._forward_pre_hooks), sorted(vars(m))) for m in model.modules()]
