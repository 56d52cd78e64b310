"""The commands that run a model: ``run``, ``chat`` (the line-mode REPL, ``cli.repl``), ``history``, ``bench``."""

from __future__ import annotations

import sys

import click

from localq.cli import render
from localq.cli.common import (
    FLASH_ATTN_OPTION, generation_options, generation_params, load_options, open_db, read_prompt,
)
from localq.cli.group import cli
from localq.cli.render import print_json


@cli.command("run")
@click.argument("model")
@click.argument("prompt", required=False)
@generation_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record with the reply and its stats at the end.")
@click.option("-v", "--verbose", is_flag=True, help="Print the reply's timings on stderr.")
def run_command(model: str, prompt: str | None, as_json: bool, verbose: bool, **opts) -> None:
    """Answer PROMPT with MODEL, streaming the reply to stdout.

    Without PROMPT the prompt is read from stdin (echo hi | localq run smollm2:135m);
    with both, the piped text comes first. MODEL is an installed model, a .gguf path or an MLX model directory.
    """
    import os

    from localq.backends.base import Done, TextDelta
    from localq.chat.conversation import Conversation, open_session
    from localq.cli.repl import format_stats
    from localq.errors import BackendError

    params = generation_params(opts)
    options = load_options(opts)
    text = read_prompt(prompt)
    db = open_db()
    session = open_session(db, model, options)
    done = None
    try:
        conv = Conversation(session, params, db=None if opts["no_history"] else db, system=opts["system"])
        for event in conv.send(text):
            if isinstance(event, TextDelta) and not as_json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, Done):
                done = event
    except KeyboardInterrupt:
        session.cancel()
        click.echo("\n[stopped]", err=True)
        raise click.exceptions.Exit(130)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise click.exceptions.Exit(0)
    finally:
        session.close()
    if done.finish_reason == "error":
        raise BackendError(f"the model failed: {done.error}")
    if as_json:
        print_json({
            "model": session.model_ref, "backend": session.backend_name, "chat_id": conv.chat.id,
            **done.to_dict(), "load_s": session.load_s, "n_ctx": session.n_ctx, "n_threads": session.n_threads,
            "params": params.to_dict(),
        })
    elif done.text and not done.text.endswith("\n"):
        click.echo()
    if verbose:
        click.echo(format_stats(done), err=True)


@cli.command("chat")
@click.argument("model", required=False)
@click.option("--resume", "resume_id", type=int, help="Continue the stored chat ID (see `localq history`).")
@generation_options
def chat_command(model: str | None, resume_id: int | None, **opts) -> None:
    """Chat with MODEL in the terminal: /help lists the commands, Ctrl-C stops a reply.

    MODEL defaults to the resumed chat's model, else the starter model smollm2:135m.
    """
    from localq.chat.conversation import Conversation, open_session
    from localq.chat.history import load_chat
    from localq.cli.repl import run_repl
    from localq.starter import STARTER_REF

    db = open_db()
    chat = load_chat(db, resume_id) if resume_id is not None else None
    base = chat.params if chat else None
    params = generation_params(opts, base)
    options = load_options(opts, base if chat and not model else None)
    session = open_session(db, model or (chat.model if chat else STARTER_REF), options)
    try:
        conv = Conversation(session, params, db=None if opts["no_history"] else db, system=opts["system"], chat=chat)
        run_repl(conv)
    finally:
        session.close()


@cli.group("history", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-n", "--limit", type=int, help="Show only the newest N chats.")
@click.pass_context
def history_group(ctx: click.Context, as_json: bool, limit: int | None) -> None:
    """List stored chats, newest first. `localq history export ID` writes one out."""
    if ctx.invoked_subcommand is not None:
        return
    from localq.chat.history import list_chats

    rows = list_chats(open_db(), limit)
    render.print_json(rows) if as_json else render.print_chats(rows)


@history_group.command("export")
@click.argument("chat_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str), help="Write to FILE instead of stdout.")
def history_export(chat_id: int, fmt: str, output: str | None) -> None:
    """Print a stored chat as Markdown or JSON."""
    from localq.chat.history import export_chat, load_chat

    text = export_chat(load_chat(open_db(), chat_id), fmt)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
        click.echo(f"Wrote chat {chat_id} to {output}", err=True)
    else:
        click.echo(text, nl=False)


@cli.command("bench")
@click.argument("model")
@click.option("--prompt-tokens", type=int, default=128, show_default=True, help="Prompt length.")
@click.option("--decode-tokens", type=int, default=64, show_default=True, help="Tokens to generate.")
@click.option("--ctx", "n_ctx", type=int, help="Context size (default as for `run`).")
@click.option("--threads", type=int, help="CPU threads (default: the physical cores).")
@FLASH_ATTN_OPTION
@click.option("--no-save", is_flag=True, help="Do not store the result in the index.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def bench_command(model, prompt_tokens, decode_tokens, n_ctx, threads, flash_attn, no_save, as_json) -> None:
    """Measure MODEL here: load time, prompt and decode tokens/s, first token, peak memory."""
    from localq.bench import bench

    result = bench(open_db(), model, prompt_tokens=prompt_tokens, decode_tokens=decode_tokens,
                   options=load_options({"n_ctx": n_ctx, "threads": threads, "flash_attn": flash_attn}),
                   record=not no_save)
    render.print_json(result.to_dict()) if as_json else render.print_bench(result)
