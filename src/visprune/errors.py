"""The one usage-error type: what a user asked for is wrong (a setting, a file, a spec)."""


class UsageError(ValueError):
    """Wrong settings or files, reported to a user as such (the CLI's exit code 2, the viewer's 400)."""
