"""The proving ground's own small VLM: a LLaVA built from a CLIP trained on shapes scenes.

Everything is a stock `transformers` object saved with `save_pretrained` in
``shapes/checkpoint/`` (the LLaVA, its tokenizer and processor) and ``shapes/checkpoint/clip/``
(the full CLIP with its text tower, the text encoder for ATP's relevance term), and loaded back
with `from_pretrained`. `scripts/train_shapes.py` builds and trains it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .scenes import COLOUR_NAMES, COUNTS, GRID, PLURALS, SHAPES, SIZES

CHECKPOINT = Path(__file__).resolve().parent / "checkpoint"

SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<image>")
CAPTION_QUESTION = "describe the scene ."
_WORDS = (
    "user assistant : ? , . what colour shape is the object objects how many are there a "
    "on left or right at top bottom row column describe scene yes no"
).split()
VOCAB = list(
    dict.fromkeys(
        [*SPECIAL_TOKENS, *_WORDS, *SHAPES, *PLURALS.values(), *COLOUR_NAMES, *SIZES, *COUNTS]
        + [str(i) for i in range(GRID + 1)]
    )
)

# LLaVA-1.5 style conversation; content may be a string or a list of {"type": "image"|"text"}.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ 'USER: ' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for c in message['content'] -%}"
    "{%- if c['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- elif c['type'] == 'text' -%}{{ c['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{{ ' ' }}"
    "{%- else -%}{{ 'ASSISTANT: ' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for c in message['content'] -%}{{ c['text'] }}{%- endfor -%}{%- endif -%}"
    "{{ '</s> ' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)


def build_tokenizer(for_clip: bool = False):
    """Word-level `PreTrainedTokenizerFast` over the scene vocabulary.

    The LLaVA tokenizer adds "<s>" in front (like Llama); the CLIP one also appends "</s>",
    whose first occurrence is where the CLIP text tower pools.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    single = "<s> $A </s>" if for_clip else "<s> $A"
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<image>"],
        model_max_length=128 if for_clip else 1024,
        padding_side="left" if not for_clip else "right",
    )
    return fast


def build_processor(tokenizer):
    """`LlavaProcessor` with `CLIPImageProcessorPil` (torchvision is never needed)."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the [CLS] token, dropped by the "default" strategy
        chat_template=CHAT_TEMPLATE,
    )


def clip_path() -> Path:
    """Folder of the CLIP (text tower and projections included) that the LLaVA's tower came from."""
    return CHECKPOINT / "clip"


def _require_checkpoint(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no shapes checkpoint in {path}; train one with `python scripts/train_shapes.py`"
        )


def load(path: str | Path | None = None, dtype: torch.dtype = torch.float32):
    """(model, processor) of the bundled proving-ground VLM, via `from_pretrained`."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = Path(path) if path is not None else CHECKPOINT
    _require_checkpoint(path)
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype)
    model.eval()
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


def load_clip(path: str | Path | None = None):
    """(CLIPModel, tokenizer) of the CLIP the vision tower was trained in."""
    from transformers import AutoTokenizer, CLIPModel

    path = Path(path) if path is not None else clip_path()
    _require_checkpoint(path)
    return CLIPModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def prompt(processor, question: str) -> str:
    """The chat prompt for one question about one image, ready for `processor(text=..., images=...)`."""
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    ]
    return processor.apply_chat_template(conversation, add_generation_prompt=True)


def normalise_answer(text: str) -> str:
    """First word, lower case, without punctuation: the form the answers are compared in."""
    words = text.strip().lower().replace("</s>", " ").split()
    for w in words:
        w = w.strip(".,?!:;")
        if w:
            return w
    return ""


@torch.no_grad()
def answer(model, processor, image, question: str, max_new_tokens: int = 2) -> str:
    """Greedy single-word answer of the model to a question about a PIL image."""
    inputs = processor(text=prompt(processor, question), images=image, return_tensors="pt")
    inputs = inputs.to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    out = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=processor.tokenizer.pad_token_id,
    )
    new = out[0, inputs["input_ids"].shape[1] :]
    return normalise_answer(processor.tokenizer.decode(new, skip_special_tokens=True))


def load_tower_only(seed: int = 0):
    """(model, processor): a LLaVA with the trained stage-1 CLIP tower and an *untrained* language model.

    Which tokens ``cls``, ``text``, ``atp``, ``pool``, ``visionzip``, ``random`` and the energy
    budget keep depends only on the vision tower (and the CLIP), so this model measures grounding
    recall before a trained VLM exists; its answers mean nothing. (``lmtext``, ``divprune`` and
    ``fastv`` read the projector or the language model, so their selections here mean nothing too.)
    """
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    clip, _ = load_clip()
    tok = build_tokenizer()
    processor = build_processor(tok)
    cfg = LlavaConfig(
        vision_config=clip.config.vision_config,
        text_config=LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                                vocab_size=len(tok), pad_token_id=tok.pad_token_id),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).eval()
    model.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, processor
