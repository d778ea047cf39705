"""User-facing errors.

A :class:`UserError` is a mistake the user can fix (a bad flag, a missing dataset, a malformed
file). The CLI prints its message on one line and exits with status 2; it never shows a traceback.
"""

from __future__ import annotations

__all__ = ["UserError", "DataError", "EvaluationFailed"]


class UserError(Exception):
    """A problem in the user's input, with a message that names the problem and the fix."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep it to one line: the CLI prints exactly this.
        super().__init__(" ".join(str(message).split()))


class DataError(UserError):
    """A dataset file is missing, corrupt or not what the official release contains."""


class EvaluationFailed(UserError):
    """An evaluation raised (out of memory, a driver error, anything) after the epoch's
    checkpoint was written; the message says where it is and the command that resumes.

    Not the user's mistake, but the same one-line report: exit status 1, not 2."""

    exit_code = 1
