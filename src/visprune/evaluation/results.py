"""Per-sample JSONL records that survive a kill at any moment, and the summary built from them.

Layout of a run folder::

    OUT/samples/<condition>/<method>/part-<rank>.jsonl   what each process wrote (appended, flushed)
    OUT/samples/<condition>/<method>.jsonl               all parts merged in task order (rank 0)
    OUT/summary.json                                      per method: metric, tokens, FLOPs, latency, ...

A record is one JSON line ending in a newline, written with a single ``write`` and flushed (and
``fsync``-ed), so a kill leaves at most one truncated last line. Readers ignore a line that does not
parse; a writer first cuts its own part back to its last complete line. On resume every process
reads all parts and skips the ids found there, so no sample is lost or counted twice (records are
also deduplicated by id, first one wins).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

CLEAN = "clean"


def slug(label: str) -> str:
    """A file-name-safe form of a method label (``atp:keep=0.25`` -> ``atp_keep-0.25``)."""
    s = label.replace(":", "_").replace("=", "-").replace(",", "_")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s)


def condition_name(corruption: tuple[str, int] | None) -> str:
    return CLEAN if corruption is None else f"{corruption[0]}-{corruption[1]}"


def method_dir(out: Path, condition: str, label: str) -> Path:
    return Path(out) / "samples" / condition / slug(label)


def read_records(folder: Path) -> dict[str, dict]:
    """All complete records under ``folder`` (``part-*.jsonl``), by id, first one wins."""
    out: dict[str, dict] = {}
    for part in sorted(Path(folder).glob("part-*.jsonl")):
        with open(part, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # truncated last line of a killed run
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(rec, dict) and "id" in rec:
                    out.setdefault(str(rec["id"]), rec)
    return out


class RecordWriter:
    """Appends records to ``folder/part-<rank>.jsonl``, one flushed line each."""

    def __init__(self, folder: Path, rank: int = 0):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"part-{rank}.jsonl"
        _cut_to_last_line(self.path)
        self._f = open(self.path, "ab")

    def write(self, record: dict) -> None:
        self._f.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _cut_to_last_line(path: Path) -> None:
    if not path.exists():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as f:
            f.truncate(end)


def merge(folder: Path, order: Iterable[str]) -> Path:
    """Write ``<folder>.jsonl``: the records of all parts, once each, in task order."""
    records = read_records(folder)
    target = Path(str(folder) + ".jsonl")
    tmp = target.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i in order:
            if i in records:
                f.write(json.dumps(records[i], ensure_ascii=False) + "\n")
    os.replace(tmp, target)
    return target


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def summarize_method(task, records: dict[str, dict], caption_tokenizer: str = "auto") -> dict[str, Any]:
    """Metric, kept tokens, FLOPs and grounding of one method over the task's examples (task order)."""
    done = [records[e.id] for e in task.examples if e.id in records]
    scored = [r for r in done if not r.get("skipped")]
    skipped = [{"id": r["id"], "reason": r["skipped"]} for r in done if r.get("skipped")]
    row: dict[str, Any] = {"n": len(scored), "missing": len(task.examples) - len(done), "skipped": skipped}
    if not scored:
        row["accuracy"] = None
        return row
    if task.kind == "caption":
        from .metrics import caption_scores

        scores = caption_scores({r["id"]: r["prediction"] for r in scored},
                                {r["id"]: r["references"] for r in scored}, tokenizer=caption_tokenizer)
        row["accuracy"] = scores["CIDEr"]
        row["CIDEr"] = scores["CIDEr"]
        row["BLEU-4"] = scores["BLEU-4"]
    else:
        row["accuracy"] = sum(r["score"] for r in scored) / len(scored)
        by_type: dict[str, list[float]] = {}
        for r in scored:
            if r.get("qtype"):
                by_type.setdefault(r["qtype"], []).append(r["score"])
        if by_type:
            row["accuracy_by_type"] = {k: sum(v) / len(v) for k, v in sorted(by_type.items())}
    row["kept_tokens"] = _stats([r["kept_tokens"] for r in scored])
    flops = [r["flops"] for r in scored if r.get("flops") is not None]
    row["flops_per_sample"] = sum(flops) / len(flops) if flops else None
    recalls = [r["grounding_recall"] for r in scored if r.get("grounding_recall") is not None]
    row["grounding_recall"] = sum(recalls) / len(recalls) if recalls else None
    # which question relevance ran ("clip:<path>", "lmtext", None); a list if the records disagree
    relevance = list(dict.fromkeys(r.get("relevance") for r in scored))
    row["relevance"] = relevance[0] if len(relevance) == 1 else relevance
    return row
