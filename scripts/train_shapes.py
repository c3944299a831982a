"""Train the shapes proving ground's VLM on CPU and write it to src/visprune/shapes/checkpoint/.

    python scripts/train_shapes.py --help     # the recipe's commands (full run, stages, smoke run) and every option

The code is visprune.shapes.training (cli.py holds the arguments and `main`); how the bundled
checkpoint was made: docs/shapes.md, "Training runs: how the bundled checkpoint was made".
"""

import sys

from visprune.shapes.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
