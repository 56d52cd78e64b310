"""Errors a user can act on.

Every mistake a user can make, and every bad file localq meets, raises a
``LocalqError`` (or a subclass): a one-line ``message`` saying what went wrong
and a ``hint`` saying what to do. The CLI prints ``error: MESSAGE (HINT)`` and
exits 1; the TUI shows the same words in a notification.
"""

from __future__ import annotations


class LocalqError(Exception):
    """A problem the user can fix: what went wrong, and what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint as one line, as the CLI prints it."""
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message

    def __str__(self) -> str:
        return self.one_line()

    def __reduce__(self):
        # Pickled with its hint (the model runner sends errors from its worker process).
        return type(self), (self.message, self.hint)


class InvalidReference(LocalqError):
    """A model reference that cannot be parsed: names the bad part."""


class ModelNotFound(LocalqError):
    """A reference that names no installed or known model."""


class BadModelFile(LocalqError):
    """A model file that is truncated, corrupt or not what it claims to be."""


class IndexDatabaseError(LocalqError):
    """The SQLite index is corrupt, locked or unwritable."""


class StoreError(LocalqError):
    """The blob store cannot be written: read-only, full, or unreadable."""


class HubError(LocalqError):
    """The Hugging Face Hub (or a mirror) refused or failed a request."""


class BackendError(LocalqError):
    """A backend cannot load or run a model."""
