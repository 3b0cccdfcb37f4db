"""The one exception type the CLI turns into a clean one-line error (no traceback)."""


class KneelibError(Exception):
    """A user-facing error: bad input, missing file, mismatched run. The message names the culprit."""
