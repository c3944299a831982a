"""Random-weight VLMs built from real ``transformers`` configs, with real processors.

For tests, the benchmark geometries and demos on machines that cannot download weights. Nothing
is downloaded: the tokenizer is a word-level ``tokenizers`` model wrapped in
``PreTrainedTokenizerFast``; image processors are the PIL ones (no torchvision). Accuracy measured
on these models means nothing; use them for mechanics, FLOPs and latency only.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPImageProcessorPil,
    CLIPTextConfig,
    CLIPVisionConfig,
    CLIPConfig,
    CLIPModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)

WORDS = (
    "USER : ASSISTANT what colour is the red green blue star circle square left right of a an how many "
    "there ? . , yes no one two three shape big small top bottom cat dog"
).split()
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
IMAGE = 56
PATCH = 14


def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    fast.padding_side = "left"
    return fast


def _text_config(tok, hidden: int = 32, layers: int = 2) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tok),
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )


def _clip_vision(image: int = IMAGE, hidden: int = 32, layers: int = 3) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
        image_size=image, patch_size=PATCH, projection_dim=16,
    )


def _finish(model):
    model.eval()
    model.generation_config.pad_token_id = model.config.text_config.pad_token_id
    return model


def llava_processor(image: int = IMAGE, tok=None) -> LlavaProcessor:
    """LLaVA-1.5's processor for ``image``-pixel square crops, 14-px patches, with the test tokenizer."""
    ip = CLIPImageProcessorPil(size={"shortest_edge": image}, crop_size={"height": image, "width": image})
    return LlavaProcessor(
        image_processor=ip, tokenizer=tok or tokenizer(), patch_size=PATCH, vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def llava(
    seed: int = 0, image: int = IMAGE, vision: tuple[int, int] | dict = (32, 3), text: tuple[int, int] | dict = (32, 2),
    tok=None,
):
    """LLaVA-1.5 layout: CLIP tower, Llama, 14-px patches. ``vision`` / ``text``: (hidden, layers) of the
    tiny default shapes, or a dict of ``CLIPVisionConfig`` / ``LlamaConfig`` fields (the benchmark's sizes)."""
    tok = tok or tokenizer()
    if isinstance(vision, dict):
        vision_config = CLIPVisionConfig(image_size=image, patch_size=PATCH, **vision)
    else:
        vision_config = _clip_vision(image, *vision)
    if isinstance(text, dict):
        text_config = LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, max_position_embeddings=2048, **text)
    else:
        text_config = _text_config(tok, *text)
    cfg = LlavaConfig(
        vision_config=vision_config, text_config=text_config, image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = _finish(LlavaForConditionalGeneration(cfg))
    return model, llava_processor(image, tok)


def llava_next(seed: int = 0):
    tok = tokenizer()
    pinpoints = [[IMAGE, IMAGE], [IMAGE, 2 * IMAGE], [2 * IMAGE, IMAGE]]
    cfg = LlavaNextConfig(
        vision_config=_clip_vision(), text_config=_text_config(tok), image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default", image_grid_pinpoints=pinpoints,
    )
    torch.manual_seed(seed)
    model = _finish(LlavaNextForConditionalGeneration(cfg))
    ip = LlavaNextImageProcessorPil(
        size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}, image_grid_pinpoints=pinpoints
    )
    proc = LlavaNextProcessor(
        image_processor=ip, tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return model, proc


def llava_onevision(seed: int = 0):
    tok = tokenizer()
    pinpoints = [[IMAGE, IMAGE], [IMAGE, 2 * IMAGE], [2 * IMAGE, IMAGE]]
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=IMAGE,
        patch_size=PATCH, vision_use_head=False,
    )
    cfg = LlavaOnevisionConfig(
        vision_config=vision, text_config=_text_config(tok), image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1, vision_feature_select_strategy="full", image_grid_pinpoints=pinpoints,
    )
    torch.manual_seed(seed)
    model = _finish(LlavaOnevisionForConditionalGeneration(cfg))
    ip = LlavaOnevisionImageProcessorPil(
        size={"height": IMAGE, "width": IMAGE}, image_grid_pinpoints=pinpoints, do_pad=True
    )
    # LlavaOnevisionProcessor insists on a video processor, which needs torchvision (not installable
    # here); LlavaNextProcessor expands image placeholders by the same any-resolution rule.
    proc = LlavaNextProcessor(
        image_processor=ip, tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
    )
    return model, proc


BUILDERS = {"llava": llava, "llava_next": llava_next, "llava_onevision": llava_onevision}


def clip_model(vision_config: CLIPVisionConfig, seed: int = 0) -> CLIPModel:
    tok = tokenizer()
    text = CLIPTextConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=len(tok),
        max_position_embeddings=64, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, projection_dim=16,
    )
    torch.manual_seed(seed)
    cfg = CLIPConfig(text_config=text.to_dict(), vision_config=vision_config.to_dict(), projection_dim=16)
    return CLIPModel(cfg).eval()


def images(n: int, size: tuple[int, int] = (IMAGE, IMAGE), seed: int = 0) -> list[Image.Image]:
    """Images from plain to busy, so spectral budgets differ between them."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = size[1], size[0]
        if i % 2 == 0:
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        else:
            arr = np.zeros((h, w, 3), dtype=np.uint8)
            arr[:, : w // 2] = (200, 30, 30)
        out.append(Image.fromarray(arr))
    return out


def prompt(question: str, n_images: int = 1) -> str:
    return "USER: " + "<image>\n" * n_images + question + " ASSISTANT:"


QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def qwen_tokenizer() -> PreTrainedTokenizerFast:
    tok = tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>", *QWEN_SPECIALS]})
    return tok


def _qwen(kind: str, seed: int):
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    tok = qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    text = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tok), max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    vision = dict(depth=3, embed_dim=32, num_heads=4, patch_size=PATCH, spatial_merge_size=2, temporal_patch_size=2,
                  in_channels=3)
    common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if kind == "qwen2_vl":
        cfg = Qwen2VLConfig(text_config=text, vision_config=dict(vision, hidden_size=32, mlp_ratio=2), **common)
        cls = Qwen2VLForConditionalGeneration
    elif kind == "qwen3_vl":  # interleaved M-RoPE, QK-norm language model, DeepStack after tower blocks 0 and 1
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        text = dict(text, head_dim=8, rope_parameters=dict(text["rope_parameters"], mrope_interleaved=True))
        vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=PATCH, spatial_merge_size=2,
                      temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=64,
                      deepstack_visual_indexes=[0, 1])
        cfg = Qwen3VLConfig(text_config=text, vision_config=vision, **common)
        cls = Qwen3VLForConditionalGeneration
    elif kind == "qwen3_5":  # hybrid language model: a linear-attention (Gated DeltaNet) layer, then a full one
        from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

        text = dict(text, head_dim=8, layer_types=["linear_attention", "full_attention"], linear_conv_kernel_dim=4,
                    linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
                    rope_parameters=dict(text["rope_parameters"], mrope_interleaved=True, partial_rotary_factor=1.0))
        vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=PATCH, spatial_merge_size=2,
                      temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=64)
        cfg = Qwen3_5Config(text_config=text, vision_config=vision, **common)
        cls = Qwen3_5ForConditionalGeneration
    elif kind == "qwen3_vl_moe":  # the same, with a mixture-of-experts language model (4 experts, 2 per token)
        from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

        text = dict(text, head_dim=8, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                    rope_parameters=dict(text["rope_parameters"], mrope_interleaved=True))
        vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=PATCH, spatial_merge_size=2,
                      temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=64,
                      deepstack_visual_indexes=[0, 1])
        cfg = Qwen3VLMoeConfig(text_config=text, vision_config=vision, **common)
        cls = Qwen3VLMoeForConditionalGeneration
    else:
        vision = dict(vision, hidden_size=32, intermediate_size=64, out_hidden_size=32, window_size=56,
                      fullatt_block_indexes=[1])
        cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
        cls = Qwen2_5_VLForConditionalGeneration
    torch.manual_seed(seed)
    model = _finish(cls(cfg))
    ip = Qwen2VLImageProcessorPil(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28, patch_size=PATCH,
                               merge_size=2, temporal_patch_size=2)
    return model, QwenInputs(ip, tok)


class QwenInputs:
    """Builds Qwen2-VL inputs the way ``Qwen2VLProcessor`` does (which cannot be built here: it
    insists on a video processor, which needs torchvision): each ``<|image_pad|>`` becomes
    ``t*h*w / merge**2`` placeholders, and ``mm_token_type_ids`` marks them."""

    def __init__(self, image_processor, tok):
        self.image_processor, self.tokenizer = image_processor, tok

    def __call__(self, images, text, return_tensors="pt", padding=True):
        pix = self.image_processor(images=images, return_tensors="pt")
        merge = self.image_processor.merge_size**2
        counts = iter((pix["image_grid_thw"].prod(-1) // merge).tolist())
        expanded = []
        for t in text:
            parts = t.split("<|image_pad|>")
            expanded.append(parts[0] + "".join("<|image_pad|>" * next(counts) + p for p in parts[1:]))
        enc = self.tokenizer(expanded, return_tensors="pt", padding=True)
        image_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        enc["mm_token_type_ids"] = (enc["input_ids"] == image_id).int()
        enc["pixel_values"], enc["image_grid_thw"] = pix["pixel_values"], pix["image_grid_thw"]
        return enc


def qwen2_vl(seed: int = 0):
    return _qwen("qwen2_vl", seed)


def qwen2_5_vl(seed: int = 0):
    return _qwen("qwen2_5_vl", seed)


def qwen3_vl(seed: int = 0):
    return _qwen("qwen3_vl", seed)


def qwen3_vl_moe(seed: int = 0):
    return _qwen("qwen3_vl_moe", seed)


def qwen3_5(seed: int = 0):
    return _qwen("qwen3_5", seed)


def qwen_prompt(question: str, n_images: int = 1) -> str:
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    return f"<|im_start|>user\n{image * n_images}{question}<|im_end|>\n<|im_start|>assistant\n"


# --- BLIP-2, InstructBLIP, IDEFICS -------------------------------------------------------------


def _blip_parts(tok, query_tokens: int, lm: str):
    """Vision / Q-Former / language-model configs of a tiny BLIP-2 or InstructBLIP."""
    from transformers import OPTConfig

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  image_size=IMAGE, patch_size=PATCH, initializer_range=0.02)  # the default 1e-10 gives a dead tower
    qformer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   vocab_size=len(tok), pad_token_id=tok.pad_token_id, max_position_embeddings=64)
    if lm == "opt":
        text = OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                         word_embed_proj_dim=32, vocab_size=len(tok), max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    elif lm == "t5":  # FLAN-T5 variants: encoder-decoder language model
        from transformers import T5Config

        text = T5Config(d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4, vocab_size=len(tok),
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                        decoder_start_token_id=tok.pad_token_id)
    else:
        text = _text_config(tok)
    return vision, qformer, text


def _blip_finish(model, query_tokens_seed: int):
    # transformers initialises the learned queries to zeros (a trained model has distinct ones); with
    # identical queries every Q-Former output would be the same token, so draw them at random.
    g = torch.Generator().manual_seed(query_tokens_seed)
    with torch.no_grad():
        model.query_tokens.copy_(torch.randn(model.query_tokens.shape, generator=g))
    model.eval()
    model.generation_config.pad_token_id = model.config.text_config.pad_token_id
    return model


def _blip_image_processor():
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    return BlipImageProcessorPil(size={"height": IMAGE, "width": IMAGE})


def blip2(seed: int = 0, query_tokens: int = 8, lm: str = "opt"):
    """BLIP-2 layout (``blip-2``): ViT with fused qkv and [CLS], Q-Former, OPT (``lm="llama"``: Llama,
    ``lm="t5"``: an encoder-decoder T5 as in the FLAN-T5 checkpoints)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    tok = tokenizer()
    vision, qformer, text = _blip_parts(tok, query_tokens, lm)
    cfg = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(),
                      num_query_tokens=query_tokens, image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = _blip_finish(Blip2ForConditionalGeneration(cfg), seed)
    proc = Blip2Processor(image_processor=_blip_image_processor(), tokenizer=tok, num_query_tokens=query_tokens)
    return model, proc


def instructblip(seed: int = 0, query_tokens: int = 8):
    """InstructBLIP layout (``instructblip``): as BLIP-2, the Q-Former also reads the instruction; Llama (Vicuna)."""
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration, InstructBlipProcessor

    tok = tokenizer()
    vision, qformer, text = _blip_parts(tok, query_tokens, "llama")
    cfg = InstructBlipConfig(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(),
                             num_query_tokens=query_tokens, image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = _blip_finish(InstructBlipForConditionalGeneration(cfg), seed)
    qtok = tokenizer()
    qtok.padding_side = "right"  # BERT-style, as the real Q-Former tokenizer
    proc = InstructBlipProcessor(image_processor=_blip_image_processor(), tokenizer=tok, qformer_tokenizer=qtok,
                                 num_query_tokens=query_tokens)
    return model, proc


def blip_prompt(question: str) -> str:
    return f"Question: {question} Answer:"


def idefics(seed: int = 0, resampler: bool = True, latents: int = 4):
    """IDEFICS layout (``idefics``, open Flamingo): CLIP-style ViT with [CLS], perceiver resampler
    (``resampler=False``: the language model cross-attends to the patches), Llama with gated
    cross-attention. The gates start open (``alpha_initializer="ones"``; transformers' default of zeros
    would make the images invisible to the language model)."""
    from transformers import IdeficsConfig, IdeficsForVisionText2Text, IdeficsProcessor
    from transformers.models.idefics.image_processing_pil_idefics import IdeficsImageProcessorPil

    tok = tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<fake_token_around_image>"]})
    cfg = IdeficsConfig(
        vocab_size=len(tok), additional_vocab_size=0, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, cross_layer_interval=1, use_resampler=resampler, alpha_initializer="ones",
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, freeze_text_layers=False, freeze_vision_layers=False,
        vision_config=dict(embed_dim=32, image_size=IMAGE, intermediate_size=64, patch_size=PATCH,
                           num_attention_heads=4, num_hidden_layers=3),
        perceiver_config=dict(use_resampler=resampler, resampler_n_latents=latents, resampler_depth=2,
                              resampler_n_heads=4, resampler_head_dim=8),
    )
    torch.manual_seed(seed)
    model = IdeficsForVisionText2Text(cfg).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    proc = IdeficsProcessor(image_processor=IdeficsImageProcessorPil(image_size=IMAGE), tokenizer=tok,
                            image_size=IMAGE)
    return model, proc


def idefics_prompts(images, questions):
    """IDEFICS prompts: one list per sample, ``User:``, the image, the question, ``Assistant:``."""
    return [["USER:", img, f"{q} ASSISTANT:"] for img, q in zip(images, questions)]


def gemma3(seed: int = 0, image: int = 112, tokens: int = 16):
    """Gemma 3 layout (``gemma3``): SigLIP tower without [CLS] (8 x 8 patches at 112 px), the projector's
    average pool into ``tokens`` (4 x 4: 2 x 2 windows), a Gemma 3 language model (sliding-window layers),
    ``Gemma3Processor`` with ``<start_of_image>`` / ``<end_of_image>`` around each image's tokens."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, Gemma3TextConfig
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tok = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer().backend_tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
        eos_token="</s>", extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                "image_token": "<image>"})
    tok.padding_side = "left"
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in
           (("image_token_id", "<image>"), ("boi_token_id", "<start_of_image>"), ("eoi_token_id", "<end_of_image>"))}
    text = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=64,
                            max_position_embeddings=512, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                image_size=image, patch_size=PATCH)
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=tokens, **ids)
    torch.manual_seed(seed)
    model = _finish(Gemma3ForConditionalGeneration(cfg))
    ip = Gemma3ImageProcessorPil(size={"height": image, "width": image})
    return model, Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=tokens)


def gemma3_prompt(question: str, n_images: int = 1) -> str:
    return "user " + "<start_of_image> " * n_images + question + " model"


def _idefics3_tokenizer() -> PreTrainedTokenizerFast:
    """The test tokenizer with Idefics3's image markers: ``<fake_token_around_image>`` (special, as its
    processor adds it), ``<global-img>`` and ``<row_i_col_j>`` (plain added tokens, so they survive
    decoding with ``skip_special_tokens`` and the question has to be found after them)."""
    tok = tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<fake_token_around_image>", "<end_of_utterance>"]})
    tok.add_tokens(["<global-img>"] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)])
    return tok


def _idefics3(kind: str, seed: int, image: int, scale: int, tiles: bool):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tok = _idefics3_tokenizer()
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=image,
                  patch_size=PATCH)
    if kind == "smolvlm":
        from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMVisionConfig

        config_cls, model_cls, vision_config = SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMVisionConfig(**vision)
    else:
        config_cls, model_cls, vision_config = Idefics3Config, Idefics3ForConditionalGeneration, Idefics3VisionConfig(**vision)
    cfg = config_cls(vision_config=vision_config, text_config=_text_config(tok), scale_factor=scale,
                     image_token_id=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = _finish(model_cls(cfg))
    ip = Idefics3ImageProcessorPil(size={"longest_edge": 2 * image}, max_image_size={"longest_edge": image},
                                   do_image_splitting=tiles)
    tokens = (image // PATCH // scale) ** 2
    return model, Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=tokens)


def idefics3(seed: int = 0, image: int = 112, tiles: bool = True):
    """Idefics3 layout (``idefics3``): SigLIP tower without [CLS] (8 x 8 patches per 112 px tile), the
    connector's 2 x 2 pixel shuffle (16 tokens per tile), Llama; ``Idefics3Processor`` splitting a
    picture into up to 2 x 2 tiles plus the global one (``tiles=False``: the global one only)."""
    return _idefics3("idefics3", seed, image, 2, tiles)


def smolvlm(seed: int = 0, image: int = 224, tiles: bool = True):
    """SmolVLM layout (``smolvlm``): Idefics3's with a 4 x 4 pixel shuffle (16 x 16 patches, 16 tokens per
    224 px tile). The processor is ``Idefics3Processor``: ``SmolVLMProcessor`` writes the same image
    prompt but needs ``num2words`` and a video processor, neither a visprune dependency."""
    return _idefics3("smolvlm", seed, image, 4, tiles)


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
