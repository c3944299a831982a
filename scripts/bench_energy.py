"""Which spectrum for the E-AdaPrune budget: speed and exactness of the alternatives.

    python scripts/bench_energy.py                          # prints a Markdown table (median of 7 runs after a warm-up)
    python scripts/bench_energy.py --markdown BENCHMARKS.md  # and replaces its section there

For a [N, D] feature matrix the squared singular values are the eigenvalues of the smaller Gram
matrix. Compared: Gram + eigvalsh in float64 (what visprune.ops.energy_budget does), Gram in
float32 + eigvalsh in float64, everything in float32, svdvals in float32, and a randomized low-rank
SVD (torch.svd_lowrank with q = N, which must reach all components the budget may need). "k equal"
counts the matrices where the budget k at tau in {0.5, 0.9, 0.95, 0.99} matches the float64 SVD.
"""

from __future__ import annotations

import statistics

import torch

from visprune.evaluation.tables import markdown_table
from visprune.measure.timing import in_turns, timed


def budget_from(eig: torch.Tensor, tau: float) -> int:
    eig = eig.double().clamp_min(0).sort(descending=True).values
    share = eig.cumsum(0) / eig.sum()
    return int((share >= tau - 1e-9).nonzero()[0]) + 1


def methods():
    def gram(x):
        return x @ x.T if x.shape[1] > x.shape[0] else x.T @ x

    return {
        "gram64 + eigvalsh64 (visprune)": lambda x: torch.linalg.eigvalsh(gram(x.double())),
        "gram32 + eigvalsh64": lambda x: torch.linalg.eigvalsh(gram(x.float()).double()),
        "gram32 + eigvalsh32": lambda x: torch.linalg.eigvalsh(gram(x.float())),
        "svdvals32 (squared)": lambda x: torch.linalg.svdvals(x.float()) ** 2,
        "svd_lowrank32, q=N (squared)": lambda x: torch.svd_lowrank(x.float(), q=min(x.shape), niter=2)[1] ** 2,
    }


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="speed and exactness of the spectral budget's alternatives")
    ap.add_argument("--markdown", help="replace the 'energy' section of this Markdown file")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    lines = [f"Measured with torch {torch.__version__}, {torch.get_num_threads()} threads. "
             "Command: `python scripts/bench_energy.py --markdown BENCHMARKS.md`", "",
             markdown_table(["N x D", "method", "median ms", "k equal to float64 SVD"], [])]
    for n, d in [(576, 768), (576, 4096), (2880, 4096)]:
        mats = [torch.randn(n, d) @ torch.diag(torch.logspace(0, -s, d)) for s in (1.0, 2.0, 3.0)]
        refs = [[budget_from(torch.linalg.svdvals(m.double()) ** 2, t) for t in (0.5, 0.9, 0.95, 0.99)] for m in mats]
        for name, fn in methods().items():
            (times,) = in_turns([lambda: timed(lambda: fn(mats[0]))], 7, warmup=1)
            equal = sum(
                [budget_from(fn(m), t) for t in (0.5, 0.9, 0.95, 0.99)] == ref for m, ref in zip(mats, refs)
            )
            lines.append(f"| {n} x {d} | {name} | {1000 * statistics.median(times):.1f} | {equal}/{len(mats)} |")
            print(lines[-1], flush=True)
    if args.markdown:
        from pathlib import Path

        from visprune.apps.bench import write_markdown_section

        write_markdown_section(Path(args.markdown), "energy", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
