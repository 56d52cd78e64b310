"""How localq writes sizes and counts, everywhere: the CLI, the app, errors, hints.

One convention: binary units with their IEC names (KiB, MiB, GiB, TiB), because
the numbers that decide what runs (RAM, VRAM, the recommender's budgets, the
weights' bits per weight) are powers of two, and a file size written in the same
unit can be compared with them at a glance. The rate option follows it too:
``--max-rate 5M`` is 5 MiB/s (as curl's ``--limit-rate``).

Counts of parameters are written as people write them: ``134.5M``, ``8.0B``.
"""

from __future__ import annotations

KiB = 2**10
MiB = 2**20
GiB = 2**30
TiB = 2**40

_UNITS = (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB))


def size(n: int | float | None) -> str:
    """Bytes as a short string: ``512 B``, ``98.4 MiB``, ``320 MiB``, ``4.6 GiB`` (``?`` when unknown).

    One decimal below 100 of a unit, whole numbers above, and the next unit
    from 1000 on (``1005 MiB`` reads as ``1.0 GiB``): three significant figures
    at most, which is what a table column has room for.
    """
    if n is None:
        return "?"
    for unit, scale in _UNITS:
        if abs(n) >= scale * 1000 / 1024:
            value = n / scale
            return f"{value:.1f} {unit}" if abs(value) < 100 else f"{value:.0f} {unit}"
    return f"{n:.0f} B"


def rate(bytes_per_s: float | None) -> str:
    """A transfer rate: ``12.3 MiB/s`` (``?`` when unknown)."""
    return f"{size(bytes_per_s)}/s"


def count(n: int | None) -> str:
    """A large count as people write it: ``134.5M``, ``8.0B``, ``950`` (``?`` when unknown)."""
    if n is None:
        return "?"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)
