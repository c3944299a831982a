"""What the viewer computes: one image, one question, several methods side by side.

For each method (the unpruned model always first, as the reference) the model answers once with
``generate``; the kept visual tokens of that call are drawn over the image; the prefill's FLOPs
are counted (:func:`visprune.measure.flops.count_flops`, the pruned forward including its scoring) and
given as a share of the unpruned prefill; latency is the median of ``repeats`` timed ``generate``
calls after that first, discarded one, the methods taking turns. One request at a time: the model
is patched in place.
"""

from __future__ import annotations

import base64
import io
import statistics
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import UsageError
from ...transform import last_kept, prune_, unprune_
from ...measure.flops import count_flops
from ...measure.timing import in_turns, timed
from ...methods import QUICK_METHODS, Method, method_names, parse_method

MAX_METHODS = 6
RANDOM_BANNER = ("No trained shapes checkpoint found: this is a RANDOM-WEIGHT LLaVA. Its answers mean nothing; "
                 "kept tokens, FLOPs and latency are real. Train one with scripts/train_shapes.py.")


@dataclass
class Loaded:
    """The served model and what the page says about it."""

    model: Any
    processor: Any
    text_encoder: str | None
    name: str
    trained: bool
    banner: str | None = None
    max_new_tokens: int = 32
    shapes_vocab: bool = False  # answers are one scene word (the shapes tokenizer)


def load(spec: str | None, device: str = "cpu", dtype: str = "float32") -> Loaded:
    """``shapes`` (random-weight fallback when no checkpoint), ``random``, a local folder or a hub id."""
    from ... import shapes
    from ...evaluation.models import check_model, load_model

    spec = spec or "shapes"
    if spec == "shapes" and (shapes.CHECKPOINT / "config.json").is_file():
        model, processor, text_encoder = load_model("shapes", device)
        return Loaded(model, processor, text_encoder, "shapes", True, max_new_tokens=2, shapes_vocab=True)
    if spec in ("shapes", "random"):
        model, processor, text_encoder = load_model("random", device)
        return Loaded(model, processor, text_encoder, "random-weight LLaVA (shapes tokenizer)", False,
                      banner=RANDOM_BANNER, max_new_tokens=2, shapes_vocab=True)
    check_model(spec)
    model, processor, text_encoder = load_model(spec, device, dtype)
    return Loaded(model, processor, text_encoder, spec, True)


@dataclass
class Example:
    id: int
    image: Any
    question: str
    answer: str
    relevant: list[bool] | None = None


def bundled_examples(n: int = 8, seed: int = 4242) -> list[Example]:
    """Held-out shapes scenes, one per question type in turn."""
    from ... import shapes

    return [Example(i, s.image, s.question, s.answer, [bool(b) for b in s.relevant_patches])
            for i, s in enumerate(shapes.make_samples(n=n, seed=seed))]


def parse_specs(specs: list[str]) -> list[Method | str]:
    """Parsed methods; a spec that does not parse stays a string (its error message)."""
    out: list[Method | str] = []
    for spec in specs:
        try:
            m = parse_method(spec)
        except (ValueError, TypeError) as err:
            out.append(f"{spec}: {err}")
            continue
        if m.config is not None:
            out.append(m)
    return out


@dataclass
class Engine:
    loaded: Loaded
    repeats: int = 3
    examples: list[Example] = field(default_factory=bundled_examples)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _warm: bool = False
    _clips: dict = field(default_factory=dict)  # text encoder path -> (CLIPModel, tokenizer)

    def _special_tokens(self) -> list[str]:
        """The tokenizer's special tokens (``<image>``, ``<|image_pad|>``, ...): typed into a question they
        would add image placeholders or end the turn."""
        proc = self.loaded.processor
        tok = getattr(proc, "tokenizer", proc)
        names = {*getattr(tok, "all_special_tokens", []), getattr(proc, "image_token", None)}
        return sorted(t for t in names if isinstance(t, str) and len(t) > 1)

    def info(self) -> dict[str, Any]:
        return {"model": self.loaded.name, "trained": self.loaded.trained, "banner": self.loaded.banner,
                "methods": [m for m in method_names() if m != "none"], "defaults": list(QUICK_METHODS),
                "max_methods": MAX_METHODS, "repeats": self.repeats,
                "examples": [{"id": e.id, "question": e.question, "answer": e.answer} for e in self.examples]}

    def run(self, image, question: str, specs: list[str], relevant: list[bool] | None = None,
            source: str = "image") -> dict[str, Any]:
        """Every method on ``image``; ``relevant``: ground-truth patches to outline; ``source``: a label for it."""
        question = " ".join(question.split())
        if not question:
            raise UsageError("type a question first")
        if len(question) > 500:
            raise UsageError("the question is too long (at most 500 characters)")
        special = [t for t in self._special_tokens() if t in question]
        if special:
            raise UsageError(f"the question may not contain the model's special tokens ({', '.join(special)})")
        if len(specs) > MAX_METHODS:
            raise UsageError(f"pick at most {MAX_METHODS} methods at a time")
        todo = [self._with_text_encoder(m) if isinstance(m, Method) else m for m in parse_specs(specs)]
        with self.lock, torch.no_grad():
            inputs = self._inputs(image, question)
            if not self._warm:  # the process's first calls are slow (allocations, lazy set-up): not billed to anyone
                self._generate(inputs)
                self._warm = True
            measured = [(None, self._one(None, "none (unpruned)", inputs, image, relevant))]
            for m in todo:
                if isinstance(m, str):
                    measured.append((None, {"label": m.split(":")[0], "error": m}))
                else:
                    measured.append((m, self._one(m, m.label, inputs, image, relevant)))
            self._time([(m, r) for m, r in measured if "error" not in r], inputs)
        rows = [r for _, r in measured]
        ref = rows[0]
        for r in rows:
            if r.get("flops") and ref.get("flops"):
                r["flops_share"] = r["flops"] / ref["flops"]
        return {"question": question, "source": source, "size": list(image.size), "results": rows}

    # --- one method -----------------------------------------------------------------------------

    def _with_text_encoder(self, method: Method) -> Method:
        """The model's text encoder for CLIP-space scorers, loaded once and shared (not on every ``prune_``)."""
        from ...evaluation.runner import TEXT_SCORERS, with_text_encoder
        from ...scoring.scorers.clip_text import AUTO

        method = with_text_encoder([method], self.loaded.text_encoder)[0]
        enc = method.config.text_encoder
        if not isinstance(enc, str) or enc == AUTO or method.config.scorer_name not in TEXT_SCORERS:
            return method  # "auto" without a partner: prune_ finds none either, so ATP runs lmtext
        if enc not in self._clips:
            from transformers import AutoTokenizer, CLIPModel

            self._clips[enc] = (CLIPModel.from_pretrained(enc).eval(), AutoTokenizer.from_pretrained(enc))
        clip, tok = self._clips[enc]
        return Method(method.label, method.config.replace(text_encoder=clip,
                                                          text_tokenizer=method.config.text_tokenizer or tok))

    def _inputs(self, image, question: str):
        from ...evaluation.models import prompt_inputs

        return prompt_inputs(self.loaded.model, self.loaded.processor, [question], [[image]])

    def _generate(self, inputs):
        tok = getattr(self.loaded.processor, "tokenizer", self.loaded.processor)
        return self.loaded.model.generate(**inputs, max_new_tokens=self.loaded.max_new_tokens, do_sample=False,
                                          pad_token_id=tok.pad_token_id)

    def _one(self, method: Method | None, label: str, inputs, image, relevant) -> dict[str, Any]:
        """Answer, kept tokens, counted prefill FLOPs and overlay of one method (latency: :meth:`_time`)."""
        model, processor = self.loaded.model, self.loaded.processor
        from ...evaluation.models import image_token_id

        total = int((inputs["input_ids"][0] == image_token_id(model)).sum())
        if method is not None:
            try:
                prune_(model, method.config, processor=processor)
            except (TypeError, ValueError, OSError) as err:
                return {"label": label, "error": f"cannot prune this model with {label}: {err}"}
        try:
            out = self._generate(inputs)  # the answer; also this method's warm-up for the timing
            kept = last_kept(model)[0] if method is not None else torch.arange(total)
            flops, _ = count_flops(model, **inputs)
        finally:
            if method is not None:
                unprune_(model)
        config = None if method is None else method.config
        return {"label": label, "answer": self._decode(out, inputs), "kept": len(kept), "total": total,
                "flops": int(flops), "overlay": self._overlay(image, kept, relevant, config),
                "config": None if config is None else config.to_dict()}

    def _time(self, measured: list[tuple[Method | None, dict]], inputs) -> None:
        """``latency_ms``: median of ``repeats`` timed ``generate`` calls per method, taken in turns.

        Round-robin, so a load that drifts over the request (other processes on a shared CPU) is
        spread over every method instead of falling on whichever ran first.
        """
        model, processor = self.loaded.model, self.loaded.processor

        def one(method: Method | None) -> float:
            if method is not None:
                prune_(model, method.config, processor=processor)
            try:
                return timed(lambda: self._generate(inputs), model.device)
            finally:
                if method is not None:
                    unprune_(model)

        times = in_turns([lambda m=method: one(m) for method, _ in measured], self.repeats)
        for (_, row), t in zip(measured, times):
            row["latency_ms"] = 1000 * statistics.median(t)

    def _decode(self, out, inputs) -> str:
        tok = getattr(self.loaded.processor, "tokenizer", self.loaded.processor)
        text = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        if self.loaded.shapes_vocab:
            from ...shapes import normalise_answer

            return normalise_answer(text)
        return text

    def _overlay(self, image, kept, relevant, config) -> str | None:
        """PNG data URL of the kept tokens over the picture, one panel per view the model has of it (the
        adapter's ``token_boxes`` under the method's ``config``), or None where the adapter cannot say
        where tokens lie (BLIP-2's query cut, and its unpruned reference)."""
        from ...adapters import get_adapter
        from ...evaluation.plots import tower_side
        from ...evaluation.viz import overlay

        model = self.loaded.model
        boxes = get_adapter(model).token_boxes(model, self.loaded.processor, image, config)
        if boxes is None:
            return None
        pic = overlay(image, boxes, kept, relevant, max(224, tower_side(model)))
        buf = io.BytesIO()
        pic.save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
