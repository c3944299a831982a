r"""Train the shapes proving ground's VLM on CPU and write it to src/visprune/shapes/checkpoint/.

    python scripts/train_shapes.py                     # full recipe: stage 1 ~10 min, stage 2 ~65 min, grounding phase ~9 min (2 threads, jemalloc)
    python scripts/train_shapes.py --stage1-only       # stage 1 alone, then resume stage 2 with:
    python scripts/train_shapes.py --skip-stage1
    python scripts/train_shapes.py --skip-stage1 --init-from DIR --stage2-steps 0   # the grounding phase alone
    python scripts/train_shapes.py --stage1-steps 40 --stage2-steps 40 --finetune-steps 20 --pool 256 \
        --monitor-n 64 --final-n 20 --eval-every 20 --out /tmp/ck                # smoke run

Install jemalloc first (apt-get install libjemalloc2): the script re-executes itself under it.

How the bundled checkpoint was made (the runs, what each change of the recipe measured, and the
stages): docs/shapes.md, "Training runs: how the bundled checkpoint was made". The code:
src/visprune/shapes/training/ (cli.py holds the arguments and `main`).
"""

import sys

from visprune.shapes.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
