"""The benchmark's reports: Markdown sections (BENCHMARKS.md) and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from ...evaluation.tables import markdown_table


def _or_na(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.3f}"


def markdown(report: dict, command: str) -> str:
    s = report["setup"]
    syncs = any(r.get("cuda_syncs_prefill") is not None for r in report["results"])
    lines = [
        f"### `{report['geometry']}`: {report['description']}",
        "",
        f"Measured on {s['device']} ({s['device_name']}, {s['cpu_threads']} threads), {s['dtype']}, batch 1, "
        + (f"language model under `torch.compile(dynamic=True, backend=\"{s['compiled_language_model']}\")`, "
           if s.get("compiled_language_model") else "")
        + f"median of {s['repeats']} runs after {s['warmup']} warm-up runs, {s['new_tokens']} new tokens; "
        f"torch {s['torch']}, transformers {s['transformers']}.",
        "",
        f"Command: `{command}`",
        "",
    ]
    header = ["method", "kept tokens", "FLOPs ratio", "prefill latency ratio", "efficiency", "generate latency ratio",
              "overhead (of e2e / of prefill)", "peak memory ratio", "KV-cache ratio", "host reads per prefill"]
    rows = []
    for r in report["results"]:
        kept = "all" if r["kept_tokens"] is None else ", ".join(map(str, r["kept_tokens"]))
        rows.append([r["method"], kept, f"{r['flops_ratio']:.3f}", f"{r['prefill_latency_ratio']:.3f}",
                     f"{r['efficiency']:.2f}", f"{r['generate_latency_ratio']:.3f}",
                     f"{100 * r['overhead_fraction']:.2f}% / {100 * r['overhead_fraction_prefill']:.2f}%",
                     _or_na(r["peak_memory_ratio"]), _or_na(r["kv_cache_ratio"]),
                     r.get("host_reads_prefill", "n/a")] + ([r["cuda_syncs_prefill"]] if syncs else []))
    lines.append(markdown_table(header + (["CUDA syncs per prefill"] if syncs else []), rows))
    return "\n".join(lines) + "\n"


def write_markdown_section(path: Path, key: str, text: str) -> None:
    """Replace (or append) the section of ``path`` between ``<!-- bench:KEY -->`` markers."""
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    block = f"{start}\n{text}{end}\n"
    old = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) + 1 :]
    else:
        new = old.rstrip("\n") + "\n\n" + block
    path.write_text(new)


def write_json(report: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2))


def meta_markdown(report: dict, command: str) -> str:
    rows = [[r["method"], "n/a", "n/a", f"n/a ({r['note']})"] if r["flops"] is None
            else [r["method"], r["kept_tokens"][0], f"{r['flops'] / 1e12:.2f}", f"{r['flops_ratio']:.3f}"]
            for r in report["results"]]
    lines = [f"### `{report['geometry']}`: {report['description']}", "", f"Command: `{command}`", "",
             markdown_table(["method", "kept tokens", "prefill TFLOP", "FLOPs ratio"], rows),
             f"\nVision tower + projector: {report['vision_flops'] / 1e12:.2f} TFLOP of every row."]
    return "\n".join(lines) + "\n"
