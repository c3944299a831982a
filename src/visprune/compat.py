"""The ``transformers`` API differences visprune meets across the versions it supports, in one place.

transformers 5.24 renamed the key/value cache from ``past_key_values`` to ``cache``: decoder layers
receive it as ``cache=``, model outputs carry it as ``.cache`` (``.past_key_values`` still works but
logs a deprecation warning). Everything in visprune reads the cache through these two functions,
so the next rename is one edit here.
"""

from __future__ import annotations

from typing import Any

import transformers

CACHE_KWARGS = ("cache", "past_key_values")  # the newest spelling first


def cache_kwarg(kwargs: dict) -> Any:
    """The KV cache a layer or model was called with, under whichever name this version uses."""
    for name in CACHE_KWARGS:
        if kwargs.get(name) is not None:
            return kwargs[name]
    return None


def output_cache(out: Any) -> Any:
    """The KV cache a model output holds (a ``ModelOutput`` only keeps the fields that are set),
    read without touching the deprecated alias; BLIP-2 and InstructBLIP nest their language model's
    output, and its cache, in ``language_model_outputs``."""
    if not hasattr(out, "items"):
        return None
    fields = dict(out.items())
    cache = cache_kwarg(fields)
    return output_cache(fields["language_model_outputs"]) if cache is None and "language_model_outputs" in fields \
        else cache


def idefics_generate_reuses_latents() -> bool:
    """IDEFICS with a perceiver resampler: before 5.24 ``generate`` resamples once and feeds the latents
    back as ``perceiver_embeddings`` at every decoding step; from 5.24 it feeds the vision tower's output
    back as ``image_encoder_embeddings`` and resamples at every step (and, given ``perceiver_embeddings``,
    would resample the latents themselves)."""
    return TRANSFORMERS < (5, 24)


def idefics_perceiver_embeddings(latents: Any) -> Any:
    """Resampler latents ``[rows, images, latents, D]`` in the layout ``IdeficsModel.forward`` reads as
    ``perceiver_embeddings``: 5.24 reads them flat, ``[rows * images, latents, D]``."""
    return latents.flatten(0, 1) if TRANSFORMERS >= (5, 24) else latents


def _version(text: str) -> tuple[int, int]:
    major, minor = (text.split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


TRANSFORMERS = _version(transformers.__version__)
