"""Loading the model to evaluate (``shapes``, ``tower``, ``random``, a local folder or a hub id) and prompting it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..scoring.scorers.clip_text import clip_partner
from .tasks import Example, Task

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"--device {device!r}: use cpu, cuda, cuda:N or auto")
    return device


def check_model(spec: str) -> None:
    from .. import shapes

    if spec == "shapes":
        if not (shapes.CHECKPOINT / "config.json").is_file():
            raise UsageError(f"--model shapes: no trained checkpoint in {shapes.CHECKPOINT} "
                            "(train one with scripts/train_shapes.py)")
        return
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UsageError(f"--model {spec}: not a model folder (no config.json)")
    elif spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise UsageError(f"--model {spec}: no such folder")


def load_model(spec: str, device: str = "cpu", dtype: str = "float32"):
    """(model, processor, text_encoder): the one loader of ``eval``, ``sweep``, the demo, the viewer and
    the lmms-eval plug-in. ``text_encoder`` is the model's CLIP partner (what ``text_encoder="auto"``
    resolves to in ``prune_``: :func:`visprune.scoring.scorers.clip_text.clip_partner`), or None.

    ``shapes``: the bundled proving-ground VLM. ``tower``: its trained stage-1 vision tower with an
    untrained language model (``shapes.load_tower_only``): which tokens are kept, and so grounding
    recall, are real; answers are not. ``random``: a random-weight LLaVA with the shapes tokenizer
    (mechanics only). Anything else: a local folder or a hub id, through ``from_pretrained``.
    """
    from .. import shapes

    torch_dtype = DTYPES[dtype]
    if spec == "shapes":
        model, processor = shapes.load(dtype=torch_dtype)
        text_encoder = clip_partner(model)  # the checkpoint folder ships its CLIP: shapes.clip_path()
    elif spec == "tower":
        model, processor = shapes.load_tower_only()
        text_encoder = str(shapes.clip_path())
    elif spec == "random":
        from .. import testing

        model, processor = testing.llava(image=shapes.IMAGE_SIZE, vision=(64, 4), text=(128, 4),
                                         tok=shapes.build_tokenizer())
        processor.chat_template = shapes.build_processor(processor.tokenizer).chat_template
        text_encoder = None
    else:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            model = AutoModelForImageTextToText.from_pretrained(spec, dtype=torch_dtype)
            processor = AutoProcessor.from_pretrained(spec)
        except (OSError, ValueError, KeyError) as err:
            raise UsageError(f"--model {spec}: cannot load it ({err})") from None
        # a folder written by scripts/train_shapes.py carries its CLIP (text tower included), as the
        # bundled one does: ATP's relevance then comes from it, not from the language model's embeddings
        text_encoder = clip_partner(model)
    model.to(device=device, dtype=torch_dtype).eval()
    tok = getattr(processor, "tokenizer", processor)
    tok.padding_side = "left"
    return model, processor, text_encoder


def prompt_text(processor, text: str, images: int = 1, model=None) -> str:
    """The model's chat prompt for ``images`` images, then ``text`` (LLaVA's ``USER: <image>`` form without a
    template; without the image tokens where ``model``'s processor places them itself, as BLIP-2's does)."""
    if getattr(processor, "chat_template", None):
        conv = [{"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}]
        return processor.apply_chat_template(conv, add_generation_prompt=True)
    if model is not None and _places_images(model):
        return f"USER: {text} ASSISTANT:"
    image_token = getattr(processor, "image_token", "<image>")
    return f"USER: {str(image_token) * images}\n{text} ASSISTANT:"


def _places_images(model) -> bool:
    from ..adapters import get_adapter

    try:
        return get_adapter(model).processor_places_images
    except TypeError:  # not a supported model: it runs unpruned only, prompted the LLaVA way
        return False


def prompt_inputs(model, processor, questions: list[str], images: list[list]) -> Any:
    """The inputs of one chat prompt per question, each about its own list of images, on the model's
    device (pixels in its dtype): how ``eval``, ``sweep`` and ``bench --model`` prompt every family."""
    texts = [prompt_text(processor, q, len(ims), model) for q, ims in zip(questions, images)]
    # images nested per prompt: the form every processor takes (Gemma 3's requires it)
    inputs = processor(text=texts, images=images, padding=True, return_tensors="pt").to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return inputs


def model_inputs(model, processor, task: Task, examples: list[Example], images: list) -> Any:
    return prompt_inputs(model, processor, [task.text(e) for e in examples], [[im] for im in images])


def pad_id(processor) -> int | None:
    return getattr(getattr(processor, "tokenizer", processor), "pad_token_id", None)


def image_token_id(model) -> int:
    tid = getattr(model.config, "image_token_id", None)
    return int(tid if tid is not None else model.config.image_token_index)
