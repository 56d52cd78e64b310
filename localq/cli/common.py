"""What several commands share: the index, a yes/no question, the prompt, the generation options."""

from __future__ import annotations

import sys

import click

from localq.defaults import DEFAULT_CONTEXT
from localq.errors import LocalqError


def open_db():
    """The index, with the starter model indexed when its wheel is installed."""
    from localq.starter import ensure_starter
    from localq.store.db import open_index

    db = open_index()
    try:
        ensure_starter(db)
    except LocalqError as exc:
        # A full or read-only cache must not stop `ls` or `chat` with other models.
        click.echo(f"warning: the starter model was not indexed: {exc.one_line()}", err=True)
    return db


def confirm(question: str) -> bool:
    """Ask yes/no; no answer (closed stdin, Ctrl-C, Ctrl-D) means no."""
    try:
        return click.confirm(question, default=False)
    except click.Abort:
        click.echo()
        return False


def read_prompt(prompt: str | None) -> str:
    """The prompt: stdin when it is piped (first), then the PROMPT argument."""
    piped = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    text = "\n\n".join(part for part in (piped.strip(), prompt) if part)
    if not text.strip():
        raise click.UsageError("no prompt: give one as an argument, or pipe it on stdin")
    return text


FLASH_ATTN_OPTION = click.option(
    "--flash-attn", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
    help="Flash attention (llama.cpp): auto uses it where the device supports it.")


def generation_options(fn):
    """The sampling and loading options that `run` and `chat` share."""
    options = [
        click.option("--system", help="System prompt."),
        click.option("--temperature", type=float, help="Randomness; 0 = greedy, reproducible (default 0.8)."),
        click.option("--top-p", type=float, help="Nucleus sampling, in (0, 1]; 1 = off (default 0.95)."),
        click.option("--top-k", type=int, help="Sample among the K likeliest tokens; 0 = off (default 40)."),
        click.option("--min-p", type=float, help="Drop tokens below this share of the likeliest; 0 = off (default 0.05)."),
        click.option("--repeat-penalty", type=float, help="Penalty on the last 64 tokens; 1 = off (default 1, as llama.cpp)."),
        click.option("--seed", type=int, help="Random seed, for reproducible sampling."),
        click.option("--max-tokens", type=int,
                     help="Stop a reply after this many tokens (default 1024, at most half the context)."),
        click.option("--ctx", "n_ctx", type=int, help=f"Context size in tokens (default {DEFAULT_CONTEXT}, or the model's if smaller)."),
        click.option("--threads", type=int, help="CPU threads (default: the physical cores)."),
        FLASH_ATTN_OPTION,
        click.option("--no-history", is_flag=True, help="Do not record this chat in the history."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def generation_params(opts: dict, base: dict | None = None):
    """GenerationParams from stored ``base`` settings overridden by the options given (``chat.params``)."""
    from localq.chat.params import PARAM_NAMES, merge_params

    return merge_params(base, {k: opts[k] for k in PARAM_NAMES if opts.get(k) is not None})


def load_options(opts: dict, base: dict | None = None):
    from localq.backends.base import LoadOptions

    base = base or {}
    n_ctx = opts.get("n_ctx")
    n_ctx = base.get("n_ctx") if n_ctx is None else n_ctx   # --ctx 0 is refused below, not taken as "unset"
    options = LoadOptions(n_ctx=n_ctx, n_threads=opts.get("threads"), flash_attn=opts.get("flash_attn") or "auto")
    options.validate()
    return options
