"""User-facing errors.

A :class:`DereverbError` is something the user caused and can fix (a missing file, unreadable
audio, a bad flag).  The CLI prints its message as one line and exits with code 2; everything
else is a bug and keeps its traceback.
"""


class DereverbError(Exception):
    """An error the user can fix; its message names the file or option and what to do."""
