"""Paths as they are shown to users."""

from __future__ import annotations

from pathlib import Path


def tilde(path: str) -> str:
    """A path with the home directory written as ``~``."""
    home = str(Path.home())
    return "~" + path[len(home):] if home != "/" and path.startswith(home + "/") else path
