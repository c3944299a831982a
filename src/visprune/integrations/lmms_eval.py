"""lmms-eval model plug-in: any supported ``transformers`` VLM, pruned by any visprune method.

    lmms-eval --model visprune \\
        --model_args pretrained=llava-hf/llava-1.5-7b-hf,method=atp,keep=0.4 --tasks gqa

``pretrained`` is a hub id or local folder (any model ``prune_`` supports), ``shapes`` (the
bundled proving-ground model) or ``random`` (a random-weight LLaVA, for mechanics only).
``method`` is a method name of :func:`visprune.methods.parse_method` (``none``, ``atp``,
``e-adaprune``, any scorer); every other model argument that is not a plug-in setting
(``device``, ``dtype`` [float32, bfloat16, float16, auto], ``batch_size``, ``max_new_tokens``)
is a :class:`visprune.PruneConfig` field: ``keep=0.4``, ``k=64``, ``budget=energy,energy=0.9``,
``alpha=0.7``... One process (no ``accelerate`` data parallelism).

lmms-eval finds the plug-in through the entry-point group ``lmms_eval.models`` (the old
``@register_model`` decorator is ignored by ``simple_evaluate``); the entry point is
:func:`manifest`. Tasks bundled with visprune live in :mod:`visprune.integrations.lmms_tasks`
(``--include_path $(python -m visprune.integrations.lmms_tasks)``). See docs/lmms_eval.md.
"""

from __future__ import annotations

import functools
import statistics
import sys
import traceback
from pathlib import Path
from typing import Any

import torch


def _check_filelock() -> None:
    """lmms-eval 0.7.3's evaluator imports ``filelock._api``, which filelock 4 removed: say so here,
    where the plug-in is loaded, instead of deep inside ``simple_evaluate``."""
    try:
        import filelock._api  # noqa: F401
    except ModuleNotFoundError:
        import filelock

        raise ImportError(
            f"lmms-eval 0.7.3 needs filelock < 4 (its evaluator imports filelock._api), found filelock "
            f"{filelock.__version__}: pip install 'filelock>=3.16,<4' (visprune's lmms extra pins it)"
        ) from None


_check_filelock()

from lmms_eval.api.model import lmms  # noqa: E402
from lmms_eval.models.registry_v2 import ModelManifest  # noqa: E402

from ..transform import last_kept, prune_  # noqa: E402
from ..methods import Method, parse_method  # noqa: E402

MODEL_ID = "visprune"
CLASS_PATH = "visprune.integrations.lmms_eval.VisPrune"
DEFAULT_IMAGE_TOKEN = "<image>"


def manifest() -> ModelManifest:
    """Entry point of the ``lmms_eval.models`` group: ``--model visprune``."""
    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)


def method_from_args(method: str, settings: dict[str, Any]) -> Method:
    """``method=atp`` plus ``keep=0.4, ...`` (model_args) as one parsed :class:`Method`."""
    extra = ",".join(f"{k}={v}" for k, v in settings.items())
    spec = str(method)
    if extra:
        spec = f"{spec},{extra}" if ":" in spec else f"{spec}:{extra}"
    return parse_method(spec)


def load_pretrained(pretrained: str, device: str, dtype: str):
    """(model, processor, text_encoder) for ``shapes``, ``random``, a local folder or a hub id."""
    from ..evaluation.models import check_model, load_model

    if pretrained != "random":
        check_model(pretrained)
    return load_model(pretrained, device, "float32" if pretrained == "random" else dtype)


def _under_lmms_eval_cli() -> bool:
    """True when the process is the ``lmms-eval`` command (``lmms-eval ...`` or ``python -m lmms_eval``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return (spec is not None and spec.name == "lmms_eval.__main__") or Path(sys.argv[0]).name == "lmms-eval"


def _fail_loudly(fn):
    """lmms-eval 0.7.3's command line catches every ``Exception`` a model raises, logs it and exits 0
    (``lmms_eval/__main__.py``, ``cli_evaluate``): a failed run looks like a finished one to a script
    or CI. Under that command a failure of the plug-in becomes ``SystemExit`` (not an ``Exception``),
    so the process exits 1 with the reason; called from Python, the exception is raised as it is."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if not _under_lmms_eval_cli():
                raise
            traceback.print_exc()
            raise SystemExit(f"visprune: the lmms-eval plug-in failed: {type(err).__name__}: {err}") from err

    return wrapped


class VisPrune(lmms):
    """A visprune-pruned ``transformers`` VLM as an lmms-eval model (generation and log-likelihood)."""

    is_simple = True

    @_fail_loudly
    def __init__(
        self,
        pretrained: str = "shapes",
        method: str = "none",
        device: str | None = None,
        dtype: str = "float32",
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        max_new_tokens: int = 32,
        **settings: Any,
    ) -> None:
        super().__init__()
        from ..evaluation.models import resolve_device
        from ..evaluation.runner import with_text_encoder

        self.method = method_from_args(method, settings)  # a bad spec fails before the model loads
        self._device = torch.device(resolve_device(device or "auto"))
        if dtype == "auto":
            dtype = "bfloat16" if self._device.type == "cuda" else "float32"
        self.model, self.processor, text_encoder = load_pretrained(str(pretrained), str(self._device), dtype)
        self.method = with_text_encoder([self.method], text_encoder)[0]
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"
        self.batch_size_per_gpu = 1 if str(batch_size).startswith("auto") else int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.pretrained = str(pretrained)
        self.kept_tokens: list[int] = []  # per image, every pruned call of this run
        if self.method.config is not None:
            prune_(self.model, self.method.config, processor=self.processor)  # fails early on an unsupported model

    # lmms-eval reads these
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def clean(self) -> None:
        """Called by lmms-eval once the requests are answered: report the kept tokens, keep the model."""
        kept = self.kept_summary()
        if kept:
            from loguru import logger

            logger.info(f"visprune {self.method.label}: kept {kept['mean']:.1f} visual tokens per image on average "
                        f"(min {kept['min']}, max {kept['max']}, {kept['images']} images)")

    # --- prompting ------------------------------------------------------------------------------

    def _prompt(self, context: str, n_images: int) -> str:
        image_token = getattr(self.processor, "image_token", DEFAULT_IMAGE_TOKEN)
        if n_images and image_token in context:  # the task placed the images itself
            n_images = 0
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"}] * n_images + [{"type": "text", "text": context}]
            conv = [{"role": "user", "content": content}]
            return self.processor.apply_chat_template(conv, add_generation_prompt=True)
        images = "".join(f"{image_token}\n" for _ in range(n_images))
        return f"USER: {images}{context} ASSISTANT:"

    def _inputs(self, texts: list[str], images: list) -> Any:
        """Processor inputs; the images nested per prompt (a batch holds one image per prompt, a single
        prompt may hold several), the form every processor takes and Gemma 3's requires."""
        nested = [list(images)] if len(texts) == 1 else [[im] for im in images]
        kwargs = {"images": nested} if images else {}
        inputs = self.processor(text=texts, padding=True, return_tensors="pt", **kwargs).to(self._device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def _visuals(self, doc_to_visual, task: str, split: str, doc_id: int) -> list:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else []
        if hasattr(visuals, "convert"):  # one image rather than a list of them
            visuals = [visuals]
        visuals = [v for v in (visuals or []) if v is not None]
        for v in visuals:
            if not hasattr(v, "convert"):
                raise TypeError(f"visprune's lmms-eval model takes images only, got {type(v).__name__} ({task})")
        return [v.convert("RGB") for v in visuals]

    def _record(self, has_images: bool) -> None:
        if self.method.config is not None and has_images:
            self.kept_tokens.extend(len(k) for k in last_kept(self.model))

    def kept_summary(self) -> dict[str, Any]:
        """Mean / min / max kept visual tokens per image over this run (empty when unpruned)."""
        if not self.kept_tokens:
            return {}
        return {"mean": statistics.mean(self.kept_tokens), "min": min(self.kept_tokens),
                "max": max(self.kept_tokens), "images": len(self.kept_tokens)}

    # --- generation -----------------------------------------------------------------------------

    def _generate(self, prompts: list[str], images: list, gen_kwargs: dict) -> list[str]:
        gen = dict(gen_kwargs)
        until = gen.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(gen.pop("max_new_tokens", self.max_new_tokens))
        temperature = float(gen.pop("temperature", 0) or 0)
        do_sample = bool(gen.pop("do_sample", temperature > 0))
        kw: dict[str, Any] = {"max_new_tokens": max_new, "do_sample": do_sample,
                              "num_beams": int(gen.pop("num_beams", 1) or 1),
                              "pad_token_id": self.tokenizer.pad_token_id}
        if do_sample:
            kw["temperature"] = temperature or 1.0
            if gen.get("top_p") is not None:
                kw["top_p"] = float(gen["top_p"])
        inputs = self._inputs(prompts, images)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kw)
        self._record(bool(images))
        texts = self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return [_cut(t, until).strip() for t in texts]

    @_fail_loudly
    def generate_until(self, requests) -> list[str]:
        from tqdm.auto import tqdm

        res: list[str | None] = [None] * len(requests)
        # one batch = consecutive requests with the same generation settings and one image each
        order = sorted(range(len(requests)), key=lambda i: repr(requests[i].args[1]))
        bar = tqdm(total=len(requests), disable=None if self.rank == 0 else True, desc="visprune responding")
        i = 0
        while i < len(order):
            batch = [order[i]]
            while (len(batch) < self.batch_size and i + len(batch) < len(order)
                   and repr(requests[order[i + len(batch)]].args[1]) == repr(requests[order[i]].args[1])):
                batch.append(order[i + len(batch)])
            visuals = [self._visuals(*_visual_args(requests[j])) for j in batch]
            prompts = [self._prompt(requests[j].args[0], len(v)) for j, v in zip(batch, visuals)]
            gen_kwargs = requests[batch[0]].args[1]
            if len({len(v) for v in visuals}) == 1 and len(visuals[0]) <= 1:
                outs = self._generate(prompts, [v[0] for v in visuals if v], gen_kwargs)
            else:  # mixed image counts: one request at a time
                outs = [self._generate([p], v, gen_kwargs)[0] for p, v in zip(prompts, visuals)]
            for j, text in zip(batch, outs):
                res[j] = text
                self.cache_hook.add_partial("generate_until", (requests[j].args[0], requests[j].args[1]), text)
            bar.update(len(batch))
            i += len(batch)
        bar.close()
        return res  # type: ignore[return-value]

    @_fail_loudly
    def generate_until_multi_round(self, requests) -> list:
        """Rounds driven by the task's ``doc_to_text(doc, previous_output=..., round_idx=...)``."""
        res = []
        for req in requests:
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = req.args[:7]
            doc = self.task_dict[task][split][doc_id]
            visuals = self._visuals(doc_to_visual, task, split, doc_id)
            outputs: list[str] = []
            info, round_idx = None, 0
            while True:
                if round_idx:
                    visuals, context, terminal, updated, info = doc_to_text(
                        doc, previous_output=list(outputs), round_idx=round_idx, previous_round_info=info)
                    if updated is not None:
                        outputs = list(updated)
                    if terminal:
                        break
                    visuals = [v.convert("RGB") for v in (visuals or []) if v is not None]
                outputs.append(self._generate([self._prompt(context, len(visuals))], visuals, gen_kwargs)[0])
                round_idx += 1
            res.append(list(outputs))  # a list of strings: lmms-eval passes it through per round
        return res

    # --- log-likelihood -------------------------------------------------------------------------

    @_fail_loudly
    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """``(loss, greedy)`` of each continuation after its (pruned) prompt.

        ``loss`` is the mean negative log-likelihood of the continuation tokens, the convention of
        lmms-eval's own models (``llava_hf`` returns ``outputs.loss``) that its ``multiple_choice``
        scoring relies on (it picks the choice with the *smallest* value). Pruning removes image
        tokens only, which sit inside the prompt, so the continuation is the tail of the shortened
        sequence and its logits are read from there.
        """
        res = []
        for req in requests:
            context, target, doc_to_visual, doc_id, task, split = req.args[:6]
            doc = self.task_dict[task][split][doc_id]
            continuation = target if isinstance(target, str) else target(doc)
            visuals = self._visuals(doc_to_visual, task, split, doc_id)
            prompt = self._prompt(context, len(visuals))
            n_ctx = self._inputs([prompt], visuals)["input_ids"].shape[1]
            inputs = self._inputs([prompt + continuation], visuals)
            n_cont = inputs["input_ids"].shape[1] - n_ctx
            if n_cont < 1:
                raise ValueError(f"empty continuation {continuation!r} after tokenisation ({task}, doc {doc_id})")
            with torch.inference_mode():
                logits = self.model(**inputs).logits
            self._record(bool(visuals))
            cont = inputs["input_ids"][0, -n_cont:]
            logprobs = torch.log_softmax(logits[0, -n_cont - 1:-1].float(), dim=-1)
            loss = -float(logprobs.gather(-1, cont[:, None]).mean())
            greedy = bool((logprobs.argmax(-1) == cont).all())
            self.cache_hook.add_partial("loglikelihood", (context, continuation), (loss, greedy))
            res.append(_survive_unwrap((loss, greedy)))
        return res


def _visual_args(req) -> tuple:
    """``(doc_to_visual, task, split, doc_id)`` of a ``generate_until`` / ``loglikelihood`` request."""
    _, _, doc_to_visual, doc_id, task, split = req.args[:6]
    return doc_to_visual, task, split, doc_id


def _survive_unwrap(pair: tuple[float, bool]):
    """``pair`` in a form the evaluator hands to the task unchanged.

    lmms-eval 0.7.3 runs every model output through ``unwrap_generation_output``, which turns a
    ``(float, bool)`` tuple into its ``str`` and breaks ``multiple_choice`` scoring; a
    ``GenerationResult`` is unwrapped to its ``text`` as is, so the pair travels inside one.
    """
    try:
        from lmms_eval.api.instance import GenerationResult, unwrap_generation_output
    except ImportError:  # older lmms-eval: tuples pass through
        return pair
    if isinstance(unwrap_generation_output(pair)[0], tuple):
        return pair
    return GenerationResult(text=pair)  # type: ignore[arg-type]


def _cut(text: str, until: list[str]) -> str:
    """``text`` up to the first stop string (lmms-eval's ``until``)."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text
