"""Write ``docs/savings.md``: counted FLOPs of real-size VLMs at keep ratios 1.0 / 0.5 / 0.25.

    python scripts/savings_table.py                      # all architectures -> docs/savings.md
    python scripts/savings_table.py --tiny --out -       # tiny configs, to stdout (what the tests run)
    python scripts/savings_table.py --arch qwen3_5       # only the rows of the adapter for that model_type

The rows live next to their adapters: every module under ``visprune/adapters/`` with a savings row
defines ``savings(tiny) -> list[Section]`` (published configuration, counting cut points), built on
the ``meta`` device with the helpers of :mod:`visprune.measure.savings`. This script walks the
adapter table (``visprune.adapters.ADAPTERS``, by ``model_type``), collects each module's rows once,
and renders them.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

from visprune.adapters import ADAPTERS  # noqa: E402
from visprune.evaluation.tables import markdown_table  # noqa: E402
from visprune.measure.savings import TEXT_TOKENS, Section  # noqa: E402


def savings_functions(model_types: list[str] | None = None) -> dict[str, Callable[[bool], list[Section]]]:
    """``model_type`` -> its adapter module's ``savings``, in table order, each function once (the first
    model_type naming it); adapters without savings rows are left out."""
    found: dict[str, Callable[[bool], list[Section]]] = {}
    for model_type, cls in ADAPTERS.items():
        if model_types is not None and model_type not in model_types:
            continue
        fn = getattr(inspect.getmodule(cls), "savings", None)
        if fn is not None and fn not in found.values():
            found[model_type] = fn
    return found


NOTES = """\
## Where pruning saves little, and why

- **BLIP-2 / InstructBLIP, `cut='vit'`**: the language model's input does not change (it always
  receives the Q-Former's query tokens), so pruning ViT patches saves only the key/value
  projections and attention of the Q-Former's cross-attention layers. The ViT itself runs in full
  (the patches are scored on its output). The saving is a fraction of a percent of the total:
  use `cut='query'` to shorten the language model's input.
- **BLIP-2 / InstructBLIP, `cut='query'`**: saves language-model prefill only, in proportion to
  the dropped query tokens against the prompt's text tokens; vision and Q-Former run in full.
- **IDEFICS**: visprune prunes before the perceiver resampler, which always returns its 64
  latents: the gated cross-attention layers of the language model see the same 64 latents, and
  the prefill cost does not move. Only the resampler's work shrinks, which is small against the
  ViT-H tower and the 9B language model.
- **LLaVA, LLaVA-NeXT, Qwen2-VL, Qwen3-VL, Qwen3.5, Gemma 3, InternVL, SmolVLM2**: pruning happens after
  the projector (patch merger, pool, pixel shuffle), so the vision tower and projector run in full and the
  saving is all in the language-model prefill, where visual tokens dominate the prompt. Qwen2-VL's own
  vision tower (full attention over 2304 patches) is a large share of its total, which caps the relative
  saving. Gemma 3's is more: SigLIP at 896 px attends over 4,096 patches before pooling them into 256
  tokens, 5.5 TFLOP, more than Gemma-3-4B's whole prefill, so pruning the pooled tokens saves at most the
  prefill's share. InternVL's InternViT-300M runs once per tile (0.72 TFLOP each), a sixth of InternVL3-8B's
  unpruned total at any tile count, so its savings follow the language model's share. Qwen3.5-27B's
  language model is the other way round: its 64-layer prefill is over nine tenths of the unpruned total,
  so keeping a quarter of the tokens saves nearly two thirds (its 48 Gated DeltaNet layers are linear in
  the prompt, but their projections and FFNs still run per token). SmolVLM2-2.2B splits a square image
  into 16 tiles and the global one and runs SigLIP on each, 11.3 TFLOP, over two thirds of the unpruned
  total against a 1.7B language model, so pruning saves at most the prefill's 31%.
- **Qwen2.5-VL video**: a 32-frame clip at 448x448 is 4,096 merged tokens, and the vision tower
  (window attention, full attention within each temporal patch in 4 of its 32 blocks) runs on all
  16,384 patches before anything is pruned: about a quarter of the unpruned total, which caps the
  saving as for Qwen2-VL's image. The temporal stage (`temporal=`) selects after the merger too, so
  it moves the language-model share only.

Counting notes: the language model's prefill includes the LM head on the last position only (as
`generate` computes it); IDEFICS is counted with eager attention (its forward always builds a
padding mask that the SDPA mask code inspects, which meta tensors cannot do), whose matmuls torch
counts exactly as the SDPA formula does; Qwen2-VL's vision rotary positions (and Qwen2.5-VL's window
layout, Qwen3-VL's and Qwen3.5's position-embedding interpolation) are computed from the real grid and
handed over on meta; SmolVLM2's tower runs its embeddings, encoder and final norm without the all-true
patch mask its forward would build (the mask code reads the mask's values; an all-true mask changes no
matmul). Qwen3.5's Gated DeltaNet layers are counted as transformers runs them without the
flash-linear-attention kernels, except their triangular solves (`torch.linalg.solve_triangular`, no
formula in torch's FLOP counter): under 0.1% of the prefill, given in the row's note.
"""


def render(results: list[Section], tiny: bool) -> str:
    unit, scale = ("MFLOP", 1e6) if tiny else ("GFLOP", 1e9)
    out = ["# Counted savings of visual-token pruning", "",
           "Generated by `python scripts/savings_table.py`; do not edit by hand." if not tiny else
           "Tiny configurations (`--tiny`): a smoke test of the script, not a result.", "",
           "FLOPs of one image (or the one video clip a row names) and a prompt of "
           f"{TEXT_TOKENS} text tokens, batch 1, prefill only (decoder stack over the prompt and the LM head on its "
           "last position), counted with `visprune.measure.flops.count_flops_by_module` (`torch.utils.flop_counter`, a "
           "multiply-add is 2 FLOPs) on models built on the `meta` device at their published sizes. Pruning itself "
           "cannot run on meta tensors (it reads values), so each row runs the *stock* modules at the sizes the "
           "pruned model really gives them: the vision tower on the full image, the connector and the language "
           "model on the kept counts (the `ratio` budget's rounding; protected [CLS] and newline tokens kept on "
           "top). visprune's own scoring and selection are not counted.", ""]
    for name, what, rows, source, note in results:
        base = rows[0].total
        header = ["keep", "tokens at cut", "visual tokens into LM", f"vision {unit}", f"connector {unit}",
                  f"LM prefill {unit}", f"total {unit}", "saved"]
        cells = [[f"{r.keep:g}", r.at_cut, r.lm_visual, f"{r.vision / scale:,.1f}", f"{r.connector / scale:,.1f}",
                  f"{r.lm / scale:,.1f}", f"{r.total / scale:,.1f}", f"{1 - r.total / base:.1%}"] for r in rows]
        out += [f"## {name}", "", f"Visual tokens at the cut: {what}.", "", markdown_table(header, cells, align="---:"), ""]
        out += [f"Configuration: {source}.", ""] if source and not tiny else []
        out += [f"Counting: {note}", ""] if note else []
    out.append(NOTES)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "savings.md"),
                    help="markdown file to write, '-' for stdout")
    with_rows = [t for t, cls in ADAPTERS.items() if hasattr(inspect.getmodule(cls), "savings")]
    ap.add_argument("--arch", action="append", choices=with_rows,
                    help="only the rows of these model types' adapters")
    ap.add_argument("--tiny", action="store_true", help="tiny configs (smoke test)")
    args = ap.parse_args(argv)
    results = [section for fn in savings_functions(args.arch).values() for section in fn(args.tiny)]
    text = render(results, args.tiny)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {os.path.normpath(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
