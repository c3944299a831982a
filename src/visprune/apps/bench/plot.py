"""The scaling plot: latency and throughput against the visual tokens kept, from a throughput report."""

from __future__ import annotations

from pathlib import Path


def scaling_plot(report: dict, path: str | Path) -> None:
    """Two panels for each batch size of ``report`` (:func:`.throughput.throughput`): prefill latency
    per batch and end-to-end samples per second, against the mean visual tokens kept per sample,
    with the limit the counted FLOPs allow (the unpruned figure scaled by ``flops_limit``). One line per
    batch size: the unpruned model and the rows of the first pruned method's scorer (a run of
    ``atp:keep=1.0`` ... ``atp:keep=0.05`` draws ATP's curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for b in sorted({r["batch_size"] for r in report["results"]}):
        rows = [r for r in report["results"] if r["batch_size"] == b]
        scorer = next(r["config"]["scorer"] for r in rows if r["config"] is not None)
        rows = [r for r in rows if r["config"] is None or r["config"]["scorer"] == scorer]
        ref = next(r for r in rows if r["kept_tokens"] is None)
        full = ref["visual_tokens_per_sample"]
        pts = sorted((((full if r["kept_tokens"] is None else sum(r["kept_tokens"]) / b), r) for r in rows),
                     key=lambda p: p[0])
        xs = [x for x, _ in pts]
        line, = left.plot(xs, [r["prefill_latency_s"] for _, r in pts], "o-", label=f"batch {b}")
        left.plot(xs, [ref["prefill_latency_s"] / r["flops_limit"] for _, r in pts], ":", color=line.get_color())
        line, = right.plot(xs, [r["generate_samples_per_s"] for _, r in pts], "o-", label=f"batch {b}")
        right.plot(xs, [ref["generate_samples_per_s"] * r["flops_limit"] for _, r in pts], ":", color=line.get_color())
    s = report["setup"]
    left.set(xlabel="visual tokens kept per sample", ylabel="prefill latency per batch (s)",
             title="prefill latency (dotted: FLOPs limit)")
    right.set(xlabel="visual tokens kept per sample", ylabel="samples / s (generate, end to end)",
              title="throughput (dotted: unpruned x prefill FLOPs limit)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{report['geometry']}: {s['device']}, {s['cpu_threads']} threads, {s['dtype']}, "
                 f"{s['new_tokens']} new tokens")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

