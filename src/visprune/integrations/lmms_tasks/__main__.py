"""``python -m visprune.integrations.lmms_tasks``: print the folder for ``--include_path``.

``--build`` regenerates the bundled shapes data first.
"""

import sys

from . import TASKS_DIR, build_data

if "--build" in sys.argv[1:]:
    print(f"wrote {build_data()}", file=sys.stderr)
print(TASKS_DIR)
