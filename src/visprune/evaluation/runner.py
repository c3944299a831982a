"""``visprune eval``: methods side by side on one task, one model, the same samples.

For every method (``none``, the unpruned reference, always first) and every image condition (clean,
then each corruption), each example is answered with ``generate`` and one JSONL record is written:
prediction, references, score, kept visual tokens, FLOPs of the prefill counted for that sample
alone (so padding is not billed), grounding recall where the task knows the relevant patches. Then
rank 0 times every method on a small subset in the same run (median of repeats after a warm-up)
and writes ``summary.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import resource
import statistics
import sys
import zlib
from pathlib import Path
from typing import Any

import torch

from ..transform import last_kept, last_selection, prune_, unprune_
from ..measure.flops import count_flops
from ..measure.memory import prefill_memory
from ..measure.timing import in_turns, timed
from ..methods import Method, parse_method
from ..scoring.scorers.clip_text import AUTO
from . import distributed, results
from .models import (
    DTYPES,
    check_model,
    image_token_id,
    load_model,
    model_inputs,
    pad_id,
    resolve_device,
)
from .settings import EvalSettings
from .summary import write_summary
from ..errors import UsageError
from .tasks import Example, Task

TEXT_SCORERS = ("atp", "text", "cdpruner")  # scorers whose question relevance can be CLIP's


def parse_methods(specs: list[str]) -> list[Method]:
    """Parsed methods with ``none`` first (added when missing); duplicate labels are refused."""
    methods = [parse_method(s) for s in specs]
    methods = [m for m in methods if m.config is None][:1] + [m for m in methods if m.config is not None]
    if not methods or methods[0].config is not None:
        methods.insert(0, parse_method("none"))
    labels = [results.slug(m.label) for m in methods]
    if len(set(labels)) != len(labels):
        raise UsageError(f"duplicate methods: {', '.join(m.label for m in methods)}")
    return methods


def with_text_encoder(methods: list[Method], text_encoder: str | None) -> list[Method]:
    """Write the loaded model's own text encoder (``load_model``'s third value) into methods whose scorer
    reads the question in CLIP space and whose ``text_encoder`` is ``"auto"``, so the records name it.
    An explicit one, or ``text_encoder=none`` (lmtext), is left as it is."""
    if text_encoder is None:
        return methods
    return [
        Method(m.label, m.config.replace(text_encoder=text_encoder))
        if m.config is not None and m.config.scorer_name in TEXT_SCORERS and _is_auto(m.config.text_encoder) else m
        for m in methods
    ]


def _is_auto(text_encoder: Any) -> bool:
    return isinstance(text_encoder, str) and text_encoder == AUTO


def check(s: EvalSettings, model: bool = True) -> None:
    """Every usage error a run can have, raised as :class:`UsageError` before anything heavy.

    ``model=False`` skips checking ``s.model`` (for a model the caller has loaded already)."""
    if s.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if s.timing < 0 or s.repeats < 1:
        raise UsageError("--timing must be >= 0 and --repeats >= 1")
    if s.max_new_tokens is not None and s.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    if s.stop_after is not None and s.stop_after < 1:
        raise UsageError("--stop-after must be at least 1 (samples per method; leave it out for all)")
    if s.dtype not in DTYPES:
        raise UsageError(f"--dtype {s.dtype!r}; valid: {', '.join(DTYPES)}")
    resolve_device(s.device)
    if model:
        check_model(s.model)
    out = Path(s.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    ancestor = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not ancestor.is_dir():
        raise UsageError(f"--out {out}: {ancestor} is a file, so no folder can be made below it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {ancestor} is not writable")
    previous = _read_manifest(out)
    if previous is not None and previous != manifest(s):
        diff = sorted(k for k in set(previous) | set(manifest(s)) if previous.get(k) != manifest(s).get(k))
        raise UsageError(f"--out {out} holds a run with other settings ({', '.join(diff)}); its records cannot be "
                        "resumed with these: use another --out")


MANIFEST = "run.json"


def manifest(s: EvalSettings) -> dict[str, Any]:
    """What the per-sample records depend on besides the method: a resumed run must match it, the
    content of its question and annotation files included (an edited file is not the same run)."""
    hashes = {f"{k}_sha256": file_hash(s.task.meta[k]) for k in ("questions", "annotations") if k in s.task.meta}
    return {"model": s.model, "task": s.task.name, "dtype": s.dtype,
            "max_new_tokens": s.max_new_tokens or s.task.max_new_tokens, **s.task.meta, **hashes,
            **({} if s.flops else {"flops": False})}


def file_hash(path: str) -> str:
    """SHA-256 of a file's content, computed once per (path, size, modification time)."""
    st = os.stat(path)
    return _hash(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _hash(path: str, _size: int, _mtime: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive(out: Path):
    """Hold ``out/.lock`` for the run: a second process on the same ``--out`` is refused (the lock
    goes with the process, so a killed run leaves nothing to clean up)."""
    path = out / ".lock"
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise UsageError(f"--out {out} is in use by another run ({fh.read().strip() or 'pid unknown'}); wait "
                             "for it or use another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UsageError(f"--out {out}: {MANIFEST} is damaged; use another --out") from None


def load_image(example: Example, corruption: tuple[str, int] | None):
    img = example.load_image()
    if corruption is None:
        return img
    from .corruptions import corrupt_pil

    name, severity = corruption
    seed = zlib.crc32(f"{example.id}|{name}|{severity}".encode())
    return corrupt_pil(img, name, severity, seed=seed)


@torch.no_grad()
def evaluate_shard(model, processor, task: Task, method: Method, examples: list[Example], folder: Path, rank: int,
                   corruption: tuple[str, int] | None, s: EvalSettings, progress: bool) -> int:
    """Evaluate the examples of ``examples`` not yet in ``folder``; returns how many were done now."""
    from tqdm.auto import tqdm

    done = results.read_records(folder)
    todo = [e for e in examples if e.id not in done]
    if s.stop_after is not None:
        todo = todo[: s.stop_after]
    if not todo:
        return 0
    max_new = s.max_new_tokens or task.max_new_tokens
    image_token = image_token_id(model)
    label = f"{results.condition_name(corruption)} {method.label}"
    # disable=None: no bar when stderr is not a terminal (a log file, CI), as well as when asked for none
    bar = tqdm(total=len(todo), desc=f"{label[:40]:<40}", disable=None if progress else True, leave=False,
               file=sys.stderr)
    if method.config is not None:
        prune_(model, method.config, processor=processor)
    try:
        with results.RecordWriter(folder, rank) as writer:
            for start in range(0, len(todo), s.batch_size):
                batch, images = [], []
                for e in todo[start : start + s.batch_size]:
                    try:
                        images.append(load_image(e, corruption))
                        batch.append(e)
                    except (OSError, ValueError) as err:  # unreadable image: skipped, counted, named
                        writer.write({"id": e.id, "skipped": f"{type(err).__name__}: {err}"})
                        bar.update(1)
                if not batch:
                    continue
                inputs = model_inputs(model, processor, task, batch, images)
                out = model.generate(**inputs, max_new_tokens=max_new, do_sample=False, pad_token_id=pad_id(processor))
                new = out[:, inputs["input_ids"].shape[1]:]
                preds = getattr(processor, "tokenizer", processor).batch_decode(new, skip_special_tokens=True)
                total = [int((row == image_token).sum()) for row in inputs["input_ids"].cpu()]
                kept = last_kept(model) if method.config is not None else [torch.arange(t) for t in total]
                relevance = last_selection(model).relevance if method.config is not None else None
                # what the LM received: VisionZip adds [CLS], PruMerge an extra merged token, to the kept indices
                sent = last_selection(model).sent if method.config is not None else total
                for i, e in enumerate(batch):
                    flops = None  # --no-flops: no extra prefill per sample
                    if s.flops:
                        flops, _ = count_flops(model, **model_inputs(model, processor, task, [e], [images[i]]))
                    pred = preds[i].strip()
                    rec = {"id": e.id, "prediction": pred, "references": e.references,
                           "score": task.score(pred, e.references), "kept_tokens": sent[i],
                           "visual_tokens": total[i], "flops": flops, "qtype": e.qtype,
                           "grounding_recall": _recall(e, kept[i], total[i]), "relevance": relevance}
                    writer.write(rec)
                    bar.update(1)
    finally:
        bar.close()
        if method.config is not None:
            unprune_(model)
    return len(todo)


def _recall(example: Example, kept: torch.Tensor, total: int) -> float | None:
    """Share of the question-relevant patches kept; only when the tokens are the ground truth's grid."""
    if example.relevant_patches is None or len(example.relevant_patches) != total:
        return None
    rel = torch.as_tensor(example.relevant_patches, dtype=torch.bool)
    if not rel.any():
        return None
    return float(rel[kept].sum()) / float(rel.sum())


@torch.no_grad()
def time_method(model, processor, task: Task, method: Method, s: EvalSettings, device: str) -> tuple[float | None, dict]:
    """Mean over the timing subset of the median ``generate`` time (batch 1, fixed new tokens), and
    the memory of one prefill on the first timed sample (:func:`visprune.measure.memory.prefill_memory`)."""
    per_sample, memory = [], {}
    if method.config is not None:
        prune_(model, method.config, processor=processor)
    try:
        for e in task.examples:
            if len(per_sample) == s.timing:
                break
            try:
                img = e.load_image()
            except (OSError, ValueError):
                continue
            inputs = model_inputs(model, processor, task, [e], [img])
            if not memory:
                peak, kv = prefill_memory(model, dict(inputs), torch.device(device))
                memory = {"prefill_peak_bytes": peak, "kv_cache_bytes": kv, "sample": e.id}
            kw = dict(max_new_tokens=s.timing_tokens, min_new_tokens=s.timing_tokens, do_sample=False,
                      pad_token_id=pad_id(processor))
            (runs,) = in_turns([lambda: timed(lambda: model.generate(**inputs, **kw), device)], s.repeats, warmup=1)
            per_sample.append(statistics.median(runs))
    finally:
        if method.config is not None:
            unprune_(model)
    return (statistics.mean(per_sample) if per_sample else None), memory


def _memory(device: str) -> dict[str, Any]:
    if device.startswith("cuda"):
        return {"peak_bytes": int(torch.cuda.max_memory_allocated()), "kind": "cuda max_memory_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss *= 1 if sys.platform == "darwin" else 1024  # kilobytes on Linux
    return {"peak_bytes": int(rss), "kind": "cpu process RSS peak since start (resource.getrusage ru_maxrss); "
            "not separable per method, includes the model and earlier methods"}


def run(s: EvalSettings, after=None, loaded=None) -> dict | None:
    """Evaluate and write ``s.out``; returns the summary on rank 0 (``None`` on other ranks).

    ``after(model, processor, methods, summary)``, if given, runs on rank 0 while the model is loaded.
    ``loaded``: an already loaded ``(model, processor, text_encoder)`` to use instead of ``s.model``
    (which then only names it).
    """
    check(s, model=loaded is None)
    device = resolve_device(s.device)
    dist = distributed.setup(device)
    stack = contextlib.ExitStack()
    try:
        if device == "cuda" and dist.world > 1:
            device = f"cuda:{dist.local_rank}"
        out = Path(s.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"--out {out}: cannot make it ({err.strerror})") from None
        lock = exclusive(out) if dist.main else contextlib.nullcontext()
        stack.enter_context(lock)
        model, processor, text_encoder = loaded if loaded is not None else load_model(s.model, device, s.dtype)
        methods = with_text_encoder(s.methods, text_encoder)
        for m in methods:  # an unsupported model or a missing text encoder fails here, before any sample
            if m.config is not None:
                try:
                    prune_(model, m.config, processor=processor)
                except (TypeError, ValueError, OSError) as err:
                    raise UsageError(f"method {m.label!r} cannot prune --model {s.model}: {err}") from None
                unprune_(model)
        if dist.main:  # only now: a run that failed to load its model leaves no settings to refuse the next one
            tmp = out / f"{MANIFEST}.tmp"
            tmp.write_text(json.dumps(manifest(s), indent=2))
            tmp.replace(out / MANIFEST)
        shard = dist.shard(s.task.examples)
        progress = s.progress and dist.main
        memory: dict[str, dict] = {}
        for corruption in [None, *s.corruptions]:
            cond = results.condition_name(corruption)
            for m in methods:
                if device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                folder = results.method_dir(out, cond, m.label)
                evaluate_shard(model, processor, s.task, m, shard, folder, dist.rank, corruption, s, progress)
                if corruption is None:
                    memory[m.label] = _memory(device)
        rank_file = out / "ranks" / f"rank{dist.rank}.json"
        rank_file.parent.mkdir(exist_ok=True)
        rank_file.write_text(json.dumps({"memory": memory, "world": dist.world}))
        dist.barrier()
        summary = None
        if dist.main:
            timed = {m.label: time_method(model, processor, s.task, m, s, device) for m in methods}
            latency = {label: t[0] for label, t in timed.items()}
            prefill = {label: t[1] for label, t in timed.items()}
            ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in range(dist.world)]
            summary = write_summary(s, methods, out, latency, ranks, device, dist.world, prefill)
            if after is not None:
                after(model, processor, methods, summary)
        dist.barrier()
        if summary is not None and not any(r["n"] for r in summary["methods"]):
            raise UsageError(f"no sample could be evaluated (every image missing or unreadable: see 'skipped' in "
                             f"{out / 'summary.json'})")
        return summary
    finally:
        stack.close()
        distributed.teardown(dist)
