"""The ``localq`` command line: thin commands grouped by area, one module each.

Commands parse their options, import the service they need inside the function
(so ``localq --help`` stays fast) and hand the result to ``render``, which
draws every table, progress display and ``--json`` output. ``group`` is the
click group and its error handling; ``common`` what several commands share.

- ``cache``: ls, rm, verify, prune, import
- ``catalog``: catalog, search, show
- ``machine``: probe, recommend
- ``pull``: pull
- ``chat``: run, chat (with ``repl``), history, bench
- ``serve``: serve, ps, stop (the server, ``localq.serve``)
- ``quantize``: convert, quantize, eval (``localq.quantize``, ``localq.evaluate``)
"""

from __future__ import annotations

from localq.cli import cache, catalog, chat, machine, pull  # noqa: F401  (they register their commands)
from localq.cli.group import cli
from localq.cli.quantize import register as _register_quantize
from localq.cli.serve import register as _register_serve

_register_serve(cli)
_register_quantize(cli)

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="localq")
