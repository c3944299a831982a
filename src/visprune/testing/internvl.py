"""Tiny InternVL 3."""

from __future__ import annotations

import torch
from transformers import (
    PreTrainedTokenizerFast,
)


from .qwen import qwen_tokenizer
from .common import PATCH, _finish


def internvl(seed: int = 0, image: int = 112, max_tiles: int = 2, qk_norm: bool = False):
    """InternVL 3 layout (``internvl``): InternViT tower with [CLS] (8 x 8 patches per ``image`` px tile),
    the pixel shuffle (2 x 2 patches into one token: 16 per tile), an MLP projector, a Qwen2 language model;
    ``InternVLProcessor`` with the PIL ``GotOcr2ImageProcessorPil`` cutting each image into up to
    ``max_tiles`` tiles plus a thumbnail (a 2:1 image: 2 tiles + thumbnail, 48 tokens; a square one: 1 tile),
    every image's tokens between ``<img>`` / ``</img>``. ``qk_norm``: the InternViT-6B towers' q/k RMSNorm."""
    from transformers import GotOcr2ImageProcessorPil, InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor
    from transformers.models.internvl.configuration_internvl import InternVLVisionConfig

    specials = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>"}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=qwen_tokenizer().backend_tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
        eos_token="</s>", extra_special_tokens=specials)
    tok.padding_side = "left"
    text = dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    vision = InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                  image_size=image, patch_size=PATCH, use_qk_norm=qk_norm,
                                  norm_type="rms_norm" if qk_norm else "layer_norm")
    cfg = InternVLConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
                         image_seq_length=(image // PATCH // 2) ** 2)
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(cfg)
    emb = model.model.vision_tower.embeddings  # initialised to zeros: a [CLS] and positions worth attending to
    with torch.no_grad():
        emb.cls_token.normal_(std=1.0)
        emb.position_embeddings.normal_(std=0.5)
    model = _finish(model)
    ip = GotOcr2ImageProcessorPil(size={"height": image, "width": image}, crop_to_patches=True, min_patches=1,
                                  max_patches=max_tiles)

    class NoVideoInternVLProcessor(InternVLProcessor):
        """``InternVLProcessor`` without its video processor, which needs torchvision (not installable
        here): ``ProcessorMixin`` checks every sub-processor named in ``__init__``, so this one names none."""

        def __init__(self, image_processor=None, tokenizer=None, image_seq_length=256, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, image_seq_length, chat_template, **kwargs)

    return model, NoVideoInternVLProcessor(image_processor=ip, tokenizer=tok, image_seq_length=cfg.image_seq_length)


def internvl_prompt(question: str, n_images: int = 1) -> str:
    """InternVL's chat template: ``<IMG_CONTEXT>`` per image, which the processor expands into its tiles' tokens."""
    return f"<|im_start|>user\n{'<IMG_CONTEXT>' * n_images}\n{question}<|im_end|>\n<|im_start|>assistant\n"
