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
        kept = _all(report) if r["kept_tokens"] is None else ", ".join(map(str, r["kept_tokens"]))
        if r.get("temporal_dropped") is not None:
            kept += f" ({', '.join(map(str, r['temporal_dropped']))} dropped as repeats)"
        rows.append([r["method"], kept, f"{r['flops_ratio']:.3f}", f"{r['prefill_latency_ratio']:.3f}",
                     f"{r['efficiency']:.2f}", f"{r['generate_latency_ratio']:.3f}",
                     f"{100 * r['overhead_fraction']:.2f}% / {100 * r['overhead_fraction_prefill']:.2f}%",
                     _or_na(r["peak_memory_ratio"]), _or_na(r["kv_cache_ratio"]),
                     r.get("host_reads_prefill", "n/a")] + ([r["cuda_syncs_prefill"]] if syncs else []))
    lines.append(markdown_table(header + (["CUDA syncs per prefill"] if syncs else []), rows))
    return "\n".join(lines + _refused(report)) + "\n"


def _all(report: dict) -> str:
    """The unpruned row's kept tokens: all of them, with their count where the report has it."""
    return f"all ({report['visual_tokens']})" if report.get("visual_tokens") is not None else "all"


def _refused(report: dict) -> list[str]:
    """Lines naming the methods the model refused, each with ``prune_``'s message (nothing if none)."""
    rows = report.get("refused") or []
    return ["", "Refused on this model (`prune_`'s message):", ""] * bool(rows) + [
        f"- `{r['method']}`: {r['refused']}" for r in rows]


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
    rows = [[r["method"], "n/a", "n/a", f"n/a ({r['note']})", "n/a"] if r["flops"] is None
            else [r["method"], r["kept_tokens"][0], f"{r['flops'] / 1e12:.2f}", f"{r['flops_ratio']:.3f}",
                  _or_na(r.get("kv_cache_ratio"))]
            for r in report["results"]]
    lines = [f"### `{report['geometry']}`: {report['description']}", "", f"Command: `{command}`", "",
             markdown_table(["method", "kept tokens", "prefill TFLOP", "FLOPs ratio", "KV-cache ratio"], rows),
             f"\nVision tower + projector: {report['vision_flops'] / 1e12:.2f} TFLOP of every row."]
    return "\n".join(lines) + "\n"


def throughput_markdown(report: dict, command: str) -> str:
    """A throughput run as a BENCHMARKS.md section: one row per batch size and method."""
    s = report["setup"]
    images, unit = s["images_per_prompt"], report.get("unit", "image")
    clips = (f" The clips of a batch have {', '.join(map(str, s['clip_frames']))} frames, in batch order (padded "
             "to the longest prompt)." if s.get("clip_frames") else "")
    lines = [
        f"### `{report['geometry']}`: throughput, {images} {unit}{'s' if images > 1 else ''} per prompt",
        "",
        f"{report['description']}.{clips} Measured on {s['device']} ({s['device_name']}, {s['cpu_threads']} threads), "
        f"{s['dtype']}, median of {s['repeats']} runs after {s['warmup']} warm-up run{'s' if s['warmup'] != 1 else ''}, "
        f"{s['new_tokens']} new tokens; torch {s['torch']}, transformers {s['transformers']}.",
        "",
        f"Command: `{command}`",
        "",
    ]
    loop = any("loop_bs1" in r for r in report["results"])
    eager = any("eager_scoring" in r for r in report["results"])
    header = ["batch", "method", f"kept tokens per {unit}", "FLOPs ratio", "FLOPs limit", "samples/s prefill",
              "samples/s generate", "throughput ratio (prefill / generate)", "share of the limit",
              "overhead per batch", "peak memory ratio"]
    header += ["batched / batch-1 loop (prefill / generate)"] if loop else []
    header += ["eager scoring / q-k (prefill / generate)"] if eager else []
    rows = []
    for r in report["results"]:
        kept = "all" if r["kept_tokens"] is None else _kept(r["kept_tokens"])
        if r.get("temporal_dropped") is not None:
            kept += f" ({_kept(r['temporal_dropped'])} dropped as repeats)"
        row = [r["batch_size"], r["method"], kept, f"{r['flops_ratio']:.3f}", f"{r['flops_limit']:.2f}x",
               f"{r['prefill_samples_per_s']:.2f}", f"{r['generate_samples_per_s']:.2f}",
               f"{r['prefill_throughput_ratio']:.2f}x / {r['throughput_ratio']:.2f}x", f"{r['limit_share']:.2f}",
               f"{1000 * r['overhead_s']:.1f} ms ({100 * r['overhead_fraction']:.2f}%)", _or_na(r["peak_memory_ratio"])]
        if loop:
            lo = r.get("loop_bs1")
            row.append("" if lo is None else f"{lo['batched_over_loop_prefill']:.2f}x / {lo['batched_over_loop']:.2f}x"
                       + ("" if lo["same_kept_counts"] else " (counts differ)"))
        if eager:
            e = r.get("eager_scoring")
            row.append("" if e is None else f"{e['qk_over_eager_prefill']:.2f}x / {e['qk_over_eager']:.2f}x"
                       + ("" if e["same_selection"] else " (selection differs)"))
        rows.append(row)
    lines.append(markdown_table(header, rows))
    return "\n".join(lines + _refused(report)) + "\n"


def _kept(counts: list[int]) -> str:
    mean = sum(counts) / len(counts)
    if len(set(counts)) == 1:
        return str(counts[0])
    return f"{min(counts)}-{max(counts)} (mean {mean:.0f})"
