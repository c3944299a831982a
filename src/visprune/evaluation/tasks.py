"""Evaluation tasks: the shapes proving ground and local copies of VQAv2, GQA and COCO captions.

A task is a list of :class:`Example` plus how to prompt and how to score. Real benchmarks are read
from the user's own files in their official formats (nothing is downloaded):

- ``vqav2``: ``--questions`` (``{"questions": [{"image_id", "question", "question_id"}]}``),
  ``--annotations`` (``{"annotations": [{"question_id", "answers": [{"answer"}]}]}``) and
  ``--images`` (COCO file names ``COCO_val2014_%012d.jpg``; ``--image-pattern`` for other splits).
  Scored with the official VQA accuracy (:func:`visprune.evaluation.metrics.vqa_accuracy`).
- ``gqa``: ``--questions`` (``{qid: {"imageId", "question", "answer"}}``) and ``--images``
  (``{imageId}.jpg``). Exact match after LLaVA's normalisation (:func:`visprune.evaluation.metrics.gqa_accuracy`).
- ``coco-caption``: ``--annotations`` (COCO captions: ``{"images": [{"id", "file_name"}],
  "annotations": [{"image_id", "caption"}]}``) and ``--images``. Corpus CIDEr-D and BLEU-4.
- ``shapes-vqa`` / ``shapes-caption``: generated scenes (``visprune.shapes``) with the ground truth
  of which patches each question is about (grounding recall).
- ``shapes-vqa-crowded``: the same questions on crowded scenes (``make_samples(..., crowded=True)``:
  17-20 mostly big objects covering more patches than a 64-token budget, so a pruner must choose
  between objects and only the question says which).

Everything is checked when the task is built, so a bad file fails before a model is loaded.
Examples keep the file's order; ``n`` takes the first ``n``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..registry import Registry

# Prompts LLaVA-1.5 uses for these benchmarks (llava/eval/*, model_vqa_loader.py conventions).
SHORT_ANSWER = "Answer the question using a single word or phrase."
CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."
VQAV2_IMAGE_PATTERN = "COCO_val2014_{image_id:012d}.jpg"


@dataclass
class Example:
    """One question (or caption request) about one image."""

    id: str
    question: str
    references: list[str]
    image_path: Path | None = None
    image: Any = None  # an in-memory PIL image (shapes)
    relevant_patches: list[bool] | None = None
    qtype: str | None = None

    def load_image(self):
        """The image as RGB PIL; raises ``OSError`` / ``ValueError`` when it cannot be read, a
        decompression bomb (more pixels than PIL's ``Image.MAX_IMAGE_PIXELS``) included, so a run
        skips and names it instead of failing on it at every resume."""
        from PIL import Image

        if self.image is not None:
            return self.image.convert("RGB")
        try:
            with Image.open(self.image_path) as img:
                return img.convert("RGB")
        except Image.DecompressionBombError as err:
            raise ValueError(f"{self.image_path}: {err}") from None


@dataclass
class Task:
    name: str
    kind: str  # "vqa" or "caption"
    examples: list[Example]
    max_new_tokens: int
    prompt_suffix: str = ""
    grid: int | None = None  # patch grid of the ground truth (shapes)
    meta: dict[str, Any] = field(default_factory=dict)

    def text(self, example: Example) -> str:
        return f"{example.question}\n{self.prompt_suffix}" if self.prompt_suffix else example.question

    def score(self, prediction: str, references: list[str]) -> float | None:
        """Per-sample score; ``None`` for captions, whose metrics are corpus-level."""
        from . import metrics

        if self.name in SHAPES_VQA_TASKS:
            from ..shapes import normalise_answer

            return float(normalise_answer(prediction) == references[0])
        if self.name == "vqav2":
            return metrics.vqa_accuracy(prediction, references)
        if self.name == "gqa":
            return metrics.gqa_accuracy(prediction, references[0])
        return None


# Scored by exact match on the shapes answer vocabulary.
SHAPES_VQA_TASKS = ("shapes-vqa", "shapes-vqa-crowded")

TASKS: Registry[Callable[..., Task]] = Registry("task")
register_task = TASKS.register


def build_task(name: str, n: int | None = None, seed: int = 12345, questions: str | None = None,
               annotations: str | None = None, images: str | None = None,
               image_pattern: str | None = None) -> Task:
    """The task ``name`` with its first ``n`` examples (``ValueError`` listing valid names)."""
    build = TASKS.get(name)
    if n is not None and n < 1:
        raise UsageError("--n must be at least 1")
    task = build(n=n, seed=seed, questions=questions, annotations=annotations, images=images,
                  image_pattern=image_pattern)
    if not task.examples:
        raise UsageError(f"task {name!r} has no examples")
    given = {"questions": questions, "annotations": annotations, "images": images}
    task.meta.update({k: str(Path(v).resolve()) for k, v in given.items() if v})
    if image_pattern:
        task.meta["image_pattern"] = image_pattern
    ids = [e.id for e in task.examples]
    if len(set(ids)) != len(ids):
        raise UsageError(f"task {name!r}: duplicate example ids")
    return task


# --- file helpers -----------------------------------------------------------------------------


def _need(path: str | None, option: str, task: str) -> Path:
    if not path:
        raise UsageError(f"task {task!r} needs {option}")
    return Path(path)


def _json(path: str | None, option: str, task: str) -> Any:
    p = _need(path, option, task)
    if not p.is_file():
        raise UsageError(f"{option} {p}: no such file")
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{option} {p}: not valid JSON ({err})") from None


def _folder(path: str | None, task: str) -> Path:
    p = _need(path, "--images", task)
    if not p.is_dir():
        raise UsageError(f"--images {p}: no such folder")
    return p


def _field(record: Any, key: str, where: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise UsageError(f"{where}: missing field {key!r}")
    return record[key]


def _no_extra_files(task: str, **given: str | None) -> None:
    extra = [f"--{k.replace('_', '-')}" for k, v in given.items() if v]
    if extra:
        raise UsageError(f"task {task!r} takes no {', '.join(extra)}")


# --- the tasks --------------------------------------------------------------------------------


def _shapes(name: str, n, seed, caption: bool, crowded: bool = False) -> Task:
    from .. import shapes
    from ..shapes.model import CAPTION_QUESTION

    samples = shapes.make_samples(n=n or 100, seed=seed, crowded=crowded)
    examples = [
        Example(
            id=f"{seed}-{i}",
            question=CAPTION_QUESTION if caption else s.question,
            references=[s.caption] if caption else [s.answer],
            image=s.image,
            relevant_patches=None if caption else [bool(x) for x in s.relevant_patches],
            qtype="caption" if caption else s.qtype,
        )
        for i, s in enumerate(samples)
    ]
    return Task(name, "caption" if caption else "vqa", examples, max_new_tokens=128 if caption else 2,
                grid=shapes.GRID, meta={"seed": seed, **({"crowded": True} if crowded else {})})


@register_task("shapes-vqa")
def _shapes_vqa(n, seed, questions, annotations, images, image_pattern) -> Task:
    _no_extra_files("shapes-vqa", questions=questions, annotations=annotations, images=images,
                    image_pattern=image_pattern)
    return _shapes("shapes-vqa", n, seed, caption=False)


@register_task("shapes-vqa-crowded")
def _shapes_vqa_crowded(n, seed, questions, annotations, images, image_pattern) -> Task:
    _no_extra_files("shapes-vqa-crowded", questions=questions, annotations=annotations, images=images,
                    image_pattern=image_pattern)
    return _shapes("shapes-vqa-crowded", n, seed, caption=False, crowded=True)


@register_task("shapes-caption")
def _shapes_caption(n, seed, questions, annotations, images, image_pattern) -> Task:
    _no_extra_files("shapes-caption", questions=questions, annotations=annotations, images=images,
                    image_pattern=image_pattern)
    return _shapes("shapes-caption", n, seed, caption=True)


@register_task("vqav2")
def _vqav2(n, seed, questions, annotations, images, image_pattern) -> Task:
    qs = _json(questions, "--questions", "vqav2")
    ann = _json(annotations, "--annotations", "vqav2")
    folder = _folder(images, "vqav2")
    qlist = _field(qs, "questions", f"--questions {questions}")
    alist = _field(ann, "annotations", f"--annotations {annotations}")
    if not isinstance(qlist, list) or not isinstance(alist, list):
        raise UsageError("vqav2: 'questions' and 'annotations' must be lists")
    answers = {}
    for a in alist:
        where = f"--annotations {annotations}"
        answers[_field(a, "question_id", where)] = [str(_field(x, "answer", where)) for x in _field(a, "answers", where)]
    pattern = image_pattern or VQAV2_IMAGE_PATTERN
    examples = []
    for q in qlist[:n] if n else qlist:
        where = f"--questions {questions}"
        qid = _field(q, "question_id", where)
        if qid not in answers or not answers[qid]:
            raise UsageError(f"vqav2: question {qid} has no answers in --annotations {annotations}")
        try:
            name = pattern.format(image_id=int(_field(q, "image_id", where)))
        except (KeyError, ValueError, IndexError) as err:
            raise UsageError(f"--image-pattern {pattern!r}: {err}") from None
        examples.append(Example(str(qid), str(_field(q, "question", where)), answers[qid], folder / name))
    return Task("vqav2", "vqa", examples, max_new_tokens=16, prompt_suffix=SHORT_ANSWER)


@register_task("gqa")
def _gqa(n, seed, questions, annotations, images, image_pattern) -> Task:
    _no_extra_files("gqa", annotations=annotations)
    qs = _json(questions, "--questions", "gqa")
    folder = _folder(images, "gqa")
    if not isinstance(qs, dict):
        raise UsageError(f"--questions {questions}: GQA questions must be a JSON object {{qid: question}}")
    pattern = image_pattern or "{image_id}.jpg"
    examples = []
    for qid, q in list(qs.items())[:n] if n else qs.items():
        where = f"--questions {questions} (question {qid})"
        try:
            path = folder / pattern.format(image_id=_field(q, "imageId", where))
        except (KeyError, ValueError, IndexError) as err:
            raise UsageError(f"--image-pattern {pattern!r}: {err}") from None
        examples.append(Example(str(qid), str(_field(q, "question", where)), [str(_field(q, "answer", where))], path))
    return Task("gqa", "vqa", examples, max_new_tokens=16, prompt_suffix=SHORT_ANSWER)


@register_task("coco-caption")
def _coco_caption(n, seed, questions, annotations, images, image_pattern) -> Task:
    _no_extra_files("coco-caption", questions=questions, image_pattern=image_pattern)
    data = _json(annotations, "--annotations", "coco-caption")
    folder = _folder(images, "coco-caption")
    where = f"--annotations {annotations}"
    refs: dict[Any, list[str]] = {}
    for a in _field(data, "annotations", where):
        refs.setdefault(_field(a, "image_id", where), []).append(str(_field(a, "caption", where)))
    examples = []
    for img in _field(data, "images", where):
        iid = _field(img, "id", where)
        if iid not in refs:
            continue  # an image without captions cannot be scored
        examples.append(Example(str(iid), CAPTION_PROMPT, refs[iid], folder / str(_field(img, "file_name", where))))
        if n and len(examples) == n:
            break
    return Task("coco-caption", "caption", examples, max_new_tokens=32)
