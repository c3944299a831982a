"""``visprune bench``: does latency fall as FLOPs fall, and is visprune's own work noise?

Every method runs on the same inputs as the unpruned model, batch 1, in one process. Timings are
medians of ``repeats`` runs after ``warmup`` runs, with the methods interleaved run by run so that
drift hits all of them alike; every ratio is pruned / unpruned from the same run.

Fields per method: ``flops_ratio`` (counted FLOPs of the prefill forward: vision tower, visprune's
scoring, language model), ``prefill_latency_ratio``, ``generate_latency_ratio`` (``new_tokens``
forced new tokens), ``overhead_fraction`` (visprune's own time: signal capture and alignment,
scoring, budget, selection, input rebuild; over the unpruned end-to-end ``generate`` latency; also
``overhead_fraction_prefill`` over the unpruned prefill; on CUDA taken from an extra, untimed
prefill whose clock waits for the device, :mod:`visprune.measure.clock`), ``peak_memory_ratio`` (peak bytes of
tensors created during the prefill, weights excluded: activations and KV cache; CUDA: peak
allocated above the weights), ``kv_cache_ratio`` (bytes of the KV cache after prefill),
``efficiency = flops_ratio / prefill_latency_ratio`` and ``host_reads_prefill`` (reads of tensor
data back into Python during one prefill, the model's own included: each is a host-device sync
on a GPU; see :mod:`visprune.measure.hostreads`) and, on CUDA, ``cuda_syncs_prefill`` (the operations
that made the host wait for the device during one prefill, as ``torch.cuda.set_sync_debug_mode``
reports them; ``None`` elsewhere).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..measure import clock
from ..transform import last_selection, prune_, unprune_
from ..measure.flops import count_flops
from ..measure.hostreads import count_cuda_syncs, count_host_reads
from ..measure.memory import prefill_memory
from ..methods import QUICK_METHODS, Method, parse_method

GEOMETRIES = ("tiny", "small", "llava-1.5-7b")
QUESTION = "what colour is the star ?"


@dataclass
class Geometry:
    name: str
    model: Any
    inputs: dict
    description: str


def _processor(image: int):
    from transformers import CLIPImageProcessor, LlavaProcessor

    from ..testing import tokenizer

    tok = tokenizer()
    proc = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": image}, crop_size={"height": image, "width": image}),
        tokenizer=tok, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    return tok, proc


def _llava(image: int, vision: dict, text: dict, seed: int = 0):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tok, proc = _processor(image)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=image, patch_size=14, **vision),
        text_config=LlamaConfig(
            vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, max_position_embeddings=2048, **text,
        ),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, proc


def _llava_7b(device: str, dtype: torch.dtype, seed: int = 0, layers: tuple[int, int] | None = None):
    """LLaVA-1.5-7B at its real size with random weights, made directly on ``device`` in ``dtype``
    (no float32 copy on the host first: 7 B parameters are 14 GB in bf16, 28 GB in float32).

    The vocabulary keeps Vicuna's 32,064 rows (the output head's FLOPs are real); the prompt uses
    the test tokenizer's ids, which all lie inside it. ``layers``: (vision, text) depth override,
    for a quick check of this code path at full width; the geometry itself never sets it.
    """
    from transformers import LlavaForConditionalGeneration

    tok, proc = _processor(336)
    cfg = llava_7b_config(*(layers or ()))
    text = cfg.text_config
    text.pad_token_id, text.bos_token_id, text.eos_token_id = tok.pad_token_id, tok.bos_token_id, tok.eos_token_id
    cfg.image_token_id = tok.convert_tokens_to_ids("<image>")
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(cfg, dtype=dtype).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, proc


LLAVA_7B_PARAMETERS = 7_063_427_072  # llava-hf/llava-1.5-7b-hf's count; tests/test_bench.py checks the build
LLAVA_7B_DESCRIPTION = ("LLaVA-1.5-7B at real size: CLIP ViT-L/14 at 336 px (576 visual tokens), 2-layer MLP "
                        "projector, Vicuna-7B-shaped Llama (4096 x 32 layers, 32,064-token vocabulary), random weights")


def build_geometry(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Geometry:
    """The model and inputs of a benchmark geometry (random weights; nothing is downloaded).

    ``llava-1.5-7b`` is built at its real size on ``device`` (about 14 GB of weights in bf16);
    ``device="meta"`` gives its shapes without memory (no inputs can run there).
    """
    from ..testing import images, prompt

    if name == "tiny":
        model, proc = _llava(56, dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4),
                             dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2))
        desc = "tiny LLaVA: CLIP 32-wide x 3 layers at 56 px (16 tokens), Llama 32-wide x 2 layers"
    elif name == "small":
        model, proc = _llava(
            336,
            dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
            dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                 num_key_value_heads=12),
        )
        desc = ("small LLaVA: CLIP ViT-B-like tower (768 x 12 layers) at 336 px / 14 px patches = 576 visual tokens, "
                "Llama 768 x 12 layers (~110 M parameters without embeddings), random weights")
    elif name == "llava-1.5-7b":
        model, proc = _llava_7b(device, dtype)
        desc = LLAVA_7B_DESCRIPTION
    else:
        raise ValueError(f"unknown geometry {name!r}; valid: {', '.join(GEOMETRIES)}")
    img = images(1, size=(proc.image_processor.crop_size["width"],) * 2)
    inputs = proc(images=img, text=[prompt(QUESTION)], return_tensors="pt")
    model = model.to(device=device, dtype=dtype)
    inputs = {k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
    return Geometry(name, model, inputs, desc)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


@torch.no_grad()
def bench(
    geometry: str | Geometry,
    methods: list[str] | tuple[str, ...] = QUICK_METHODS,
    repeats: int = 5,
    warmup: int = 2,
    new_tokens: int = 32,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: Callable[[str], None] | None = print,
    compile: bool | str = False,
) -> dict:
    """Run the benchmark; returns the JSON-ready report.

    ``compile``: time with the language model under ``torch.compile(dynamic=True)`` (the same
    compiled module for every method: pruned prompts only change its sequence length); a string
    names the backend (default ``inductor``). FLOPs, memory and host reads are counted before
    compiling; warm-up runs absorb the compilation.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    if compile and warmup < 1:
        raise ValueError("compile needs at least one warm-up run (it compiles there)")
    parsed = [parse_method(m) for m in methods if m != "none"]
    geo = geometry if isinstance(geometry, Geometry) else build_geometry(geometry, device, dtype)
    model, inputs = geo.model, geo.inputs
    dev = next(model.parameters()).device
    all_methods = [Method("none", None), *parsed]
    gen_kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)

    def run(method: Method, what: str) -> tuple[float, float]:
        if method.config is not None:
            prune_(model, method.config)
        try:
            if what == "prefill":
                seconds = _timed(lambda: model(**inputs), dev)
                if dev.type == "cuda" and method.config is not None:
                    with clock.synchronized():  # an untimed run whose clock waits for the device
                        model(**inputs)
            else:
                seconds = _timed(lambda: model.generate(**inputs, **gen_kwargs), dev)
            overhead = last_selection(model).overhead_seconds if method.config is not None else 0.0
        finally:
            if method.config is not None:
                unprune_(model)
        return seconds, overhead

    rows: dict[str, dict] = {}
    for m in all_methods:
        if m.config is not None:
            prune_(model, m.config)
        try:
            flops, _ = count_flops(model, **inputs)
            peak, kv = prefill_memory(model, inputs, dev)
            with torch.no_grad(), count_host_reads() as reads:
                model(**inputs)
            syncs = None
            if dev.type == "cuda":
                _sync(dev)
                with torch.no_grad(), count_cuda_syncs() as logged:
                    model(**inputs)
                syncs = len(logged)
            kept = [len(k) for k in last_selection(model).kept] if m.config is not None else None
        finally:
            if m.config is not None:
                unprune_(model)
        rows[m.label] = {"method": m.label, "config": m.to_dict()["config"], "flops": flops, "peak_bytes": peak,
                         "kv_cache_bytes": kv, "kept_tokens": kept, "host_reads": len(reads), "cuda_syncs": syncs,
                         "prefill_s": [], "generate_s": [], "overhead_s": []}
    backend = (compile if isinstance(compile, str) else "inductor") if compile else None
    eager_lm = model.model.language_model
    if backend:
        model.model.language_model = torch.compile(eager_lm, dynamic=True, backend=backend)
    try:
        _time_all(run, all_methods, rows, warmup, repeats, progress)
    finally:
        model.model.language_model = eager_lm
    ref = rows["none"]
    ref_prefill = statistics.median(ref["prefill_s"])
    ref_generate = statistics.median(ref["generate_s"])
    results = []
    for m in all_methods:
        r = rows[m.label]
        prefill, generate = statistics.median(r["prefill_s"]), statistics.median(r["generate_s"])
        overhead = statistics.median(r["overhead_s"])
        flops_ratio = r["flops"] / ref["flops"]
        prefill_ratio = prefill / ref_prefill
        results.append({
            "method": m.label,
            "config": r["config"],
            "kept_tokens": r["kept_tokens"],
            "flops": r["flops"],
            "flops_ratio": flops_ratio,
            "prefill_latency_s": prefill,
            "prefill_latency_ratio": prefill_ratio,
            "generate_latency_s": generate,
            "generate_latency_ratio": generate / ref_generate,
            "overhead_s": overhead,
            "overhead_fraction": overhead / ref_generate,
            "overhead_fraction_prefill": overhead / ref_prefill,
            "efficiency": flops_ratio / prefill_ratio,
            "peak_memory_ratio": r["peak_bytes"] / ref["peak_bytes"] if ref["peak_bytes"] else None,
            "kv_cache_ratio": r["kv_cache_bytes"] / ref["kv_cache_bytes"] if ref["kv_cache_bytes"] else None,
            "host_reads_prefill": r["host_reads"],
            "cuda_syncs_prefill": r["cuda_syncs"],
        })
    setup = _setup(dev, dtype, repeats, warmup, new_tokens)
    setup["compiled_language_model"] = backend or False
    return {"geometry": geo.name, "description": geo.description, "setup": setup, "results": results}


def _time_all(run, methods: list[Method], rows: dict, warmup: int, repeats: int, progress) -> None:
    """Prefill then generate timings, methods interleaved run by run."""
    for what in ("prefill", "generate"):
        for i in range(warmup + repeats):
            for m in methods:
                seconds, overhead = run(m, what)
                if i >= warmup:
                    rows[m.label][f"{what}_s"].append(seconds)
                    if what == "prefill":
                        rows[m.label]["overhead_s"].append(overhead)
            if progress:
                progress(f"{what} round {i + 1}/{warmup + repeats}{' (warm-up)' if i < warmup else ''}")


def _cpu_name() -> str:
    """The processor's model name (Linux), with its bf16 matrix units when it has them."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    units = [u for u in ("avx512_bf16", "amx_bf16") if u in flags]
    name = name or platform.processor() or platform.machine()
    return f"{name}, {platform.machine()}" + (f", {' '.join(units)}" if units else "")


def _setup(device: torch.device, dtype: torch.dtype, repeats: int, warmup: int, new_tokens: int) -> dict:
    import transformers

    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "dtype": str(dtype).replace("torch.", ""),
        "repeats": repeats,
        "warmup": warmup,
        "new_tokens": new_tokens,
        "batch_size": 1,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import os

        info["cpu_count"] = os.cpu_count()
    except Exception:  # pragma: no cover
        pass
    return info


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
        "| method | kept tokens | FLOPs ratio | prefill latency ratio | efficiency | generate latency ratio "
        "| overhead (of e2e / of prefill) | peak memory ratio | KV-cache ratio | host reads per prefill |"
        + (" CUDA syncs per prefill |" if syncs else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if syncs else ""),
    ]
    for r in report["results"]:
        kept = "all" if r["kept_tokens"] is None else ", ".join(map(str, r["kept_tokens"]))
        mem = "n/a" if r["peak_memory_ratio"] is None else f"{r['peak_memory_ratio']:.3f}"
        kv = "n/a" if r["kv_cache_ratio"] is None else f"{r['kv_cache_ratio']:.3f}"
        lines.append(
            f"| {r['method']} | {kept} | {r['flops_ratio']:.3f} | {r['prefill_latency_ratio']:.3f} | "
            f"{r['efficiency']:.2f} | {r['generate_latency_ratio']:.3f} | "
            f"{100 * r['overhead_fraction']:.2f}% / {100 * r['overhead_fraction_prefill']:.2f}% | {mem} | {kv} | "
            f"{r.get('host_reads_prefill', 'n/a')} |" + (f" {r['cuda_syncs_prefill']} |" if syncs else "")
        )
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


def llava_7b_config(vision_layers: int = 24, text_layers: int = 32):
    """LLaVA-1.5-7B's published shapes (llava-hf/llava-1.5-7b-hf): CLIP ViT-L/14 at 336 px, Vicuna-7B."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=vision_layers, num_attention_heads=16,
            image_size=336, patch_size=14, projection_dim=768,
        ),
        text_config=LlamaConfig(
            hidden_size=4096, intermediate_size=11008, num_hidden_layers=text_layers, num_attention_heads=32,
            num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096,
        ),
        image_token_id=32000, vision_feature_layer=-2, vision_feature_select_strategy="default",
    )


@torch.no_grad()
def bench_meta(methods: list[str] | tuple[str, ...] = QUICK_METHODS, text_tokens: int = 40) -> dict:
    """FLOPs at LLaVA-1.5-7B's real size, counted on the ``meta`` device (no weights, no timings).

    The pruning code reads values, which meta tensors do not have, so each method's FLOPs are
    counted on the stock model at the size the pruned model really runs: the full vision tower and
    projector, then the language-model prefill with ``k`` image tokens. Budgets that depend on the
    image (``energy``, ``iqr``) cannot be sized without weights and are reported as null.
    """
    from transformers import LlavaForConditionalGeneration
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from ..measure.flops import count_flops_by_module

    cfg = llava_7b_config()
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(cfg).eval()
    n = (336 // 14) ** 2
    pixels = torch.empty(1, 3, 336, 336, device="meta")
    vision, _ = count_flops_by_module(model.model.get_image_features, pixel_values=pixels)

    def lm_flops(k: int) -> int:
        ids = torch.tensor([[1] * (text_tokens // 2) + [cfg.image_token_id] * k + [2] * (text_tokens - text_tokens // 2)])
        feats = torch.empty(k, cfg.text_config.hidden_size, device="meta")
        enc = {"image": BaseModelOutputWithPooling(pooler_output=[feats])}
        counts, _ = count_flops_by_module(model, input_ids=ids, mm_encoder_outputs=enc)
        return counts["total"]

    full = vision["total"] + lm_flops(n)
    results = [{"method": "none", "kept_tokens": [n], "flops": full, "flops_ratio": 1.0}]
    for spec in methods:
        m = parse_method(spec)
        if m.config is None:
            continue
        budget = m.config.budget_name
        if budget == "ratio":
            k = int(n * m.config.keep + 0.5)
        elif budget == "fixed":
            k = min(m.config.k, n)
        else:
            results.append({"method": m.label, "kept_tokens": None, "flops": None, "flops_ratio": None,
                            "note": f"budget {budget!r} depends on the image; not sized on the meta device"})
            continue
        f = vision["total"] + lm_flops(k)
        results.append({"method": m.label, "kept_tokens": [k], "flops": f, "flops_ratio": f / full})
    return {
        "geometry": "llava-1.5-7b",
        "description": "LLaVA-1.5-7B shapes on the meta device: CLIP ViT-L/14-336 (576 tokens) + Vicuna-7B, "
        f"{text_tokens} text tokens; FLOPs counted per module, no weights (timings at real size: "
        "`--device cpu` or `--device cuda`)",
        "vision_flops": vision["total"],
        "results": results,
    }
