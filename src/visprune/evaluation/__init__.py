"""Evaluation harness: tasks, per-sample results that resume, summaries, corruptions, sweeps.

    visprune eval --model M --task shapes-vqa --method atp:keep=0.25 --n 100 --out runs/atp
    visprune eval --model llava-hf/llava-1.5-7b-hf --task vqav2 --questions q.json \
        --annotations a.json --images val2014/ --method e-adaprune:energy=0.9 --out runs/vqav2
    visprune eval ... --corrupt all            # + 15 ImageNet-C corruptions x 5 severities
    visprune sweep --model M --task gqa ... --methods atp,e-adaprune,random --keeps 0.5,0.25,0.125
    torchrun --nproc-per-node 2 -m visprune eval ... --num-samples 1000   # shards; rank 0 merges

OUT/summary.json has one row per method (``none`` first, the reference), OUT/samples the
per-sample records (rerun the same command to resume after a kill), OUT/run.json what the records
depend on (a rerun with other settings into the same OUT is refused).

Modules: :mod:`.runner` (the run), :mod:`.tasks` (benchmarks from local files), :mod:`.models`
(loading and prompting), :mod:`.results` (JSONL records and resumption), :mod:`.summary`
(``summary.json``), :mod:`.corruptions` (ImageNet-C), :mod:`.sweep` and :mod:`.plots` (methods x
budgets, Pareto plot, overlays) and :mod:`.distributed` (``torchrun`` sharding).
"""

from .runner import EvalSettings, parse_methods, run
from ..errors import UsageError
from .tasks import TASKS, Example, Task, build_task

__all__ = ["EvalSettings", "Example", "TASKS", "Task", "UsageError", "build_task", "parse_methods", "run"]
