"""``visprune sweep``: methods x budgets in one run, a table, accuracy against FLOPs, overlays.

Every method name is paired with each budget: ``--keeps`` for methods that keep a share of the
tokens, ``--energies`` for methods whose budget is spectral (``e-adaprune``). All points share
the loaded model, the samples and the unpruned reference of one :func:`visprune.evaluation.run`.
"""

from __future__ import annotations

from pathlib import Path

from ..methods import parse_method
from .plots import kept_overlays, pareto_front, plot_accuracy_vs_flops
from .models import model_inputs, pad_id
from .runner import EvalSettings, run
from .tables import fmt, markdown_table
from ..errors import UsageError


def _floats(text: str, option: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected comma-separated numbers") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise UsageError(f"{option} {text!r}: values must be in (0, 1]")
    return values


def sweep_specs(methods: str, keeps: str, energies: str) -> list[str]:
    """Method specs of the grid, e.g. ``atp:keep=0.5``, ``e-adaprune:energy=0.95`` (validated)."""
    keep_values, energy_values = _floats(keeps, "--keeps"), _floats(energies, "--energies")
    specs = []
    for name in (m.strip() for m in methods.split(",") if m.strip()):
        if ":" in name:
            raise UsageError(f"--methods takes names only, got {name!r}; budgets come from --keeps / --energies")
        method = parse_method(name)
        if method.config is None:
            continue  # the unpruned reference is always measured
        if method.config.budget_name == "energy":
            specs += [f"{name}:energy={e:g}" for e in energy_values]
        else:
            specs += [f"{name}:keep={k:g}" for k in keep_values]
    if not specs:
        raise UsageError("--methods: no method to sweep")
    return specs


def sweep_table(rows: list[dict]) -> str:
    front = {r["method"] for r in pareto_front(rows)}
    families = list(dict.fromkeys(r["method"].split(":")[0] for r in rows))
    ordered = sorted(rows, key=lambda r: (families.index(r["method"].split(":")[0]), -(r.get("flops_ratio") or 0)))
    return markdown_table(
        ["method", "accuracy", "kept tokens (mean)", "FLOPs share", "latency ratio", "Pareto"],
        [[r["method"], fmt(r["accuracy"]), fmt((r.get("kept_tokens") or {}).get("mean"), ".1f"), fmt(r.get("flops_ratio")),
          fmt(r.get("latency_ratio")), "*" if r["method"] in front else ""] for r in ordered],
    )


def run_sweep(s: EvalSettings, overlays: int = 4) -> dict | None:
    """Run the grid and write ``sweep.md``, ``accuracy_vs_flops.png`` and ``overlays.png`` into ``s.out``."""
    out = Path(s.out)

    def after(model, processor, methods, summary):
        rows = summary["methods"]
        metric = "CIDEr" if s.task.kind == "caption" else "accuracy"
        title = f"{s.task.name}, n={summary['n']}, model={s.model}"
        md = sweep_table(rows)
        (out / "sweep.md").write_text(f"{title}\n\n{md}\n")
        print(md)
        plot_accuracy_vs_flops(rows, out / "accuracy_vs_flops.png", title, ylabel=metric, front=True)
        if overlays > 0:
            def run_one(image, question):
                inputs = model_inputs(model, processor, s.task, [question], [image])
                model.generate(**inputs, max_new_tokens=1, do_sample=False, pad_token_id=pad_id(processor))

            items = []
            for e in s.task.examples[:overlays]:
                try:
                    items.append((e.load_image(), e, f"{e.question}  ({e.references[0]})", e.relevant_patches))
                except (OSError, ValueError):
                    continue
            # one column per method family: its smallest budget, where pruning shows most
            by_label = {r["method"]: r for r in rows}
            smallest: dict = {}
            for m in methods[1:]:
                fam = m.label.split(":")[0]
                mean = (by_label[m.label].get("kept_tokens") or {}).get("mean") or 0
                if fam not in smallest or mean < smallest[fam][0]:
                    smallest[fam] = (mean, m)
            picked = [methods[0]] + [m for _, m in smallest.values()]
            if items and not kept_overlays(model, processor, run_one, items, picked, out / "overlays.png"):
                print(f"no overlays: the {model.config.model_type} adapter does not say where its tokens lie in the "
                      "picture (docs/overlays.md)")

    return run(s, after=after)
