"""The ``localq`` command group: global options, and one line per error.

A ``LocalqError`` becomes one line on stderr and exit code 1; ``--debug`` shows
the traceback instead. With no command, ``localq`` opens the terminal app. The
commands live in the modules of this package, by area, and register on ``cli``.
"""

from __future__ import annotations

import click

from localq import __version__
from localq.errors import LocalqError


class LocalqGroup(click.Group):
    """A click group that turns LocalqError into one line and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LocalqError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc.one_line()}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=LocalqGroup, invoke_without_command=True)
@click.version_option(__version__, prog_name="localq")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """localq: run local language models, with the quant that fits your machine.

    With no command, opens the terminal app.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if ctx.invoked_subcommand is None:
        import importlib.util

        if importlib.util.find_spec("localq.tui.app") is None:
            # The terminal app lands with its own issue; until then, show the commands.
            click.echo(ctx.get_help())
            return
        from localq.tui.app import run_app

        run_app()
