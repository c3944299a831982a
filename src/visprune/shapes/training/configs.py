"""Sizes and constants of the shapes VLM's training: the stage-1 CLIP's and stage-2 LLaVA's configs,
and the seeds and settings the other modules share.

`clip_config` is stage 1's small `CLIPModel` (a 4-layer ViT over the 16 x 16 patches of a 224 x 224
scene, a 2-layer text tower); `llava_config` is stage 2's `LlavaForConditionalGeneration` on that
vision tower (its penultimate layer) with a small Llama.
"""

from __future__ import annotations

from .. import scenes as S

COUNT_TILT = 2.0  # count answers drawn with weight count**COUNT_TILT among those a scene allows
# hidden states (0: the projector's output, the language model's input; i: after layer i) whose
# image tokens the training-only position heads read (--position-weight)
POSITION_SITES = (0, 1, 2)
MONITOR_SEED = 777  # held-out samples watched during training (eval split)
FINAL_SEED = 12345  # held-out samples of metrics.json (eval split)


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
