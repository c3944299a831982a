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

With ``--batch-sizes``, :func:`throughput` measures samples per second at each batch size instead,
with several images per prompt, the batch-1 loop of the pruning toolkits and the official code's
eager-attention scoring beside visprune's own (:mod:`.throughput`, :mod:`.eager`); :func:`scaling_plot`
draws latency and throughput against the tokens kept.

The real-size geometries (``llava-1.5-7b``, and ``qwen2.5-vl-7b-video``: Qwen2.5-VL-7B on a 32-frame
clip) are counted on the ``meta`` device where there is no GPU (:func:`bench_meta`, with the same
counts as ``docs/savings.md``); the video geometries batch clips of different lengths for
``--batch-sizes``.

With ``--model DIR`` (:func:`folder_geometry`) any saved model folder of a supported family is the
geometry: loaded and prompted as ``visprune eval`` does, with one synthetic picture. Methods the
model refuses are listed under ``refused`` with ``prune_``'s message instead of ending the run.
"""

from .folder import folder_geometry
from .geometries import (GEOMETRIES, LLAVA_7B_PARAMETERS, QUESTION, QWEN_7B_PARAMETERS, Geometry, batch_inputs,
                         build_geometry, llava_7b, llava_7b_config, qwen2_5_vl_7b)
from .meta import bench_meta
from .plot import scaling_plot
from .report import markdown, meta_markdown, throughput_markdown, write_json, write_markdown_section
from .run import bench
from .throughput import throughput

__all__ = ["GEOMETRIES", "LLAVA_7B_PARAMETERS", "QUESTION", "QWEN_7B_PARAMETERS", "Geometry", "batch_inputs", "bench", "bench_meta",
           "folder_geometry",
           "build_geometry", "llava_7b", "llava_7b_config", "markdown", "qwen2_5_vl_7b", "meta_markdown", "scaling_plot", "throughput",
           "throughput_markdown", "write_json", "write_markdown_section"]
