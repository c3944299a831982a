"""One builder per ``model_type`` of the adapter table, from the ``TINY`` declaration in its adapter module.

A builder ``T.<model_type>(seed=0, <options>, tok=None)`` (``blip-2``: ``T.blip2``) returns ``(model,
processor)``: a random-weight model from its real transformers config and a real processor. Its options and
docstring are those of the adapter's ``Tiny.config``; the steps are :class:`visprune.adapters.tiny.Tiny`'s.
"""

from __future__ import annotations

import inspect
from typing import Callable

from ..adapters import ADAPTERS
from ..adapters.tiny import Tiny
from .common import _finish


def tiny_specs() -> dict[str, Tiny]:
    """``model_type`` -> its adapter module's ``Tiny``, in table order; types without one are left out."""
    specs = {}
    for model_type, cls in ADAPTERS.items():
        spec = getattr(inspect.getmodule(cls), "TINY", {}).get(model_type)
        if spec is not None:
            specs[model_type] = spec
    return specs


def builder(name: str, spec: Tiny) -> Callable[..., tuple]:
    """The builder of ``spec``, named ``name``, with ``seed`` first, then ``spec.config``'s options, then ``tok``."""
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    options = list(inspect.signature(spec.config).parameters.values())[1:]
    signature = inspect.Signature([inspect.Parameter("seed", positional, default=0),
                                   *(p.replace(kind=positional) for p in options),
                                   inspect.Parameter("tok", positional, default=None)])

    def build(*args, **kwargs):
        import torch
        import transformers

        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        opts = dict(bound.arguments)
        seed, tok = opts.pop("seed"), opts.pop("tok")
        tok = spec.tokenizer() if tok is None else tok
        config = spec.config(tok, **opts)
        torch.manual_seed(seed)
        model = getattr(transformers, spec.model)(config)
        if spec.init is not None:
            spec.init(model, seed)
        return _finish(model), spec.processor(tok, config, **opts)

    build.__name__ = build.__qualname__ = name
    build.__signature__ = signature
    build.__doc__ = spec.config.__doc__
    return build


def _name(model_type: str) -> str:
    return model_type.replace("-", "")  # "blip-2" -> blip2


BUILDERS: dict[str, Callable[..., tuple]] = {_name(t): builder(_name(t), spec) for t, spec in tiny_specs().items()}
# each builder's own one-image prompt, where its template differs (gemma3_prompt, internvl_prompt)
PROMPTS: dict[str, Callable[..., str]] = {f"{_name(t)}_prompt": spec.prompt for t, spec in tiny_specs().items()
                                          if spec.prompt is not None}
