"""``visprune bench --model DIR``: any saved model folder of a supported family as a benchmark geometry.

The model and its processor come from ``visprune eval``'s one loader
(:func:`visprune.evaluation.models.load_model`), and the prompt is built the way ``eval`` builds it
(:func:`visprune.evaluation.models.prompt_inputs`: the processor's own chat template, a synthetic
picture from :func:`.geometries.graded_images` and :data:`.geometries.QUESTION`), so nothing here
knows a family: what differs between them is the adapter's business.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from ...evaluation.models import check_model, load_model, prompt_inputs
from .geometries import Geometry, batch_inputs

IMAGE_SIZE = (640, 480)  # width, height: a typical COCO picture


def model_name(folder: str, model_type: str) -> str:
    """The name of a folder's benchmark (its report heading and BENCHMARKS.md section): ``MODEL_TYPE-FOLDER``."""
    return f"{model_type}-{Path(folder).expanduser().resolve().name}"


def folder_geometry(folder: str, device: str = "cpu", dtype: str = "float32",
                    image_size: tuple[int, int] = IMAGE_SIZE) -> Geometry:
    """The model saved in ``folder`` (``save_pretrained`` of a model and its processor, or a hub id),
    on ``device`` in ``dtype``, with the inputs of one prompt about one ``image_size`` picture."""
    check_model(folder)
    model, processor, _ = load_model(folder, device, dtype)
    n = sum(p.numel() for p in model.parameters())
    w, h = image_size
    size = f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"
    description = (f"{type(model).__name__} from `{folder}` ({size} parameters), its own processor and "
                   f"chat prompt, one synthetic {w} x {h} picture (noise over a red-and-black field)")
    geo = Geometry(model_name(folder, model.config.model_type), model, {}, description, processor, image_size,
                   encode=partial(prompt_inputs, model, processor), prune_processor=processor)
    geo.inputs = batch_inputs(geo, 1)
    return geo
