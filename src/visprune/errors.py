"""The one usage-error type: what a user asked for is wrong (a setting, a file, a spec)."""


class UsageError(ValueError):
    """Wrong settings or files, reported to a user as such (the CLI's exit code 2, the viewer's 400)."""


def warn_caller(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the first frame outside visprune and torch's decorators: the
    user's own call (``prune_``), whatever depth inside visprune the warning is raised at."""
    import os
    import sys
    import warnings

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    wrappers = os.sep + os.path.join("torch", "utils") + os.sep
    level, frame = 2, sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith(package) or wrappers in frame.f_code.co_filename):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)
