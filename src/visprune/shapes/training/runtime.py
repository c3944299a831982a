"""The training process itself: the log, the allocator and the clock.

`log` prints a timestamped line and appends it to the run's train_log.txt; `use_jemalloc`
re-executes the process under jemalloc when it is installed; `Pace` says where each logging
interval's step time went; `cosine` is the warm-up + cosine learning-rate schedule of both stages.
"""

from __future__ import annotations

import math
import os
import sys
import time

import torch


def log(msg: str, fh=None) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if fh is not None:
        fh.write(line + "\n")
        fh.flush()


JEMALLOC = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib64/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2")
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"  # keep freed pages: no page faults to get them back


def reexec_argv() -> list[str]:
    """The command line that starts this process again: ``python scripts/train_shapes.py ARGS``
    (sys.argv as it came), or ``python -m MODULE ARGS`` when it was started with ``-m`` (there
    sys.argv[0] is the module's file, which cannot run as a plain script)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        name = spec.name.removesuffix(".__main__")
        return [sys.executable, "-m", name, *sys.argv[1:]]
    return [sys.executable, *sys.argv]


def use_jemalloc(choice: str) -> str:
    """Run the training process under jemalloc when it is installed (``apt-get install libjemalloc2``):
    the process re-executes itself with it preloaded (`reexec_argv`: the same script, or the same
    ``-m`` module, with the same arguments). Measured (see docs/shapes.md, "Training runs: how the
    bundled checkpoint was made"): under glibc's malloc a
    long stage 2 slowed down step by step (about 30% of the samples of an aged process inside
    malloc's internals; RSS 7.6 GB after 3000 steps), while a fresh process of the same
    configuration ran 0.60-0.64 s per step; under jemalloc without page purging, 0.46-0.48 s.
    Returns the allocator in use, for the log."""
    if "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return "jemalloc (LD_PRELOAD)"
    if choice == "system":
        return "system malloc (--allocator system)"
    lib = next((p for p in JEMALLOC if os.path.exists(p)), None)
    if lib is None:
        print("note: libjemalloc2 is not installed (apt-get install libjemalloc2); glibc's malloc makes long runs "
              "slower step by step (see docs/shapes.md, \"Training runs\")", file=sys.stderr)
        return "system malloc (no libjemalloc2)"
    env = dict(os.environ, LD_PRELOAD=lib, MALLOC_CONF=os.environ.get("MALLOC_CONF", JEMALLOC_CONF))
    sys.stdout.flush()
    os.execve(sys.executable, reexec_argv(), env)
    raise AssertionError("unreachable")


class Pace:
    """Where the time of the training steps goes, per logging interval (evaluation excluded):
    wall seconds per step, this process's CPU seconds per step (user and system), the host's
    steal time (CPU taken by other guests of a virtual machine) and the share of subnormal
    values in the optimizer state (slow arithmetic on x86). Logged because long runs measured
    slower per step than short runs of the same recipe; it showed glibc's malloc as the cause
    (see use_jemalloc)."""

    def __init__(self):
        self.mark = None
        self.restart()

    @staticmethod
    def _cpu():
        t = os.times()
        return t.user, t.system

    @staticmethod
    def _steal() -> float:
        try:
            with open("/proc/stat") as f:
                fields = f.readline().split()
            return int(fields[8]) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def start(self):
        self.mark = time.perf_counter()

    def stop(self):
        self.wall += time.perf_counter() - self.mark
        self.steps += 1

    def report(self, opt) -> str:
        user, system = self._cpu()
        steal = self._steal()
        n = max(self.steps, 1)
        cpu = user - self.cpu0[0] + system - self.cpu0[1]
        states = [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v) and v.numel() > 1]
        sub = sum(int(((v != 0) & (v.abs() < torch.finfo(v.dtype).tiny)).sum()) for v in states)
        total = sum(v.numel() for v in states) or 1
        line = (f"pace {self.wall / n:.3f} s/step, process cpu {cpu / n:.3f} s/step "
                f"(system {(system - self.cpu0[1]) / n:.3f}), host steal {(steal - self.steal0) / n:.3f} s/step, "
                f"subnormal optimizer state {sub / total:.2%}")
        self.restart()
        return line

    def restart(self):
        """Start a new interval (after the monitor, whose time is not counted)."""
        self.steps, self.wall = 0, 0.0
        self.cpu0, self.steal0 = self._cpu(), self._steal()


def cosine(opt, warmup: int, total: int):
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)
