"""Installed versions of the distributions localq records in provenance and evaluations."""

from __future__ import annotations


def package_version(name: str) -> str:
    """The installed version of a distribution, or "unknown"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"
