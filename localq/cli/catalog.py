"""The commands about models themselves: ``catalog``, ``search`` (the known models) and ``show`` (a file's facts)."""

from __future__ import annotations

import click

from localq.cli.common import open_db
from localq.cli.group import cli
from localq.cli.render import print_catalog, print_gguf_info, print_json


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print every field of every entry as JSON.")
def catalog(as_json: bool) -> None:
    """List the models localq knows by name (* marks a family's default size)."""
    from localq.catalog import load_catalog

    print_catalog(load_catalog(), as_json)


@cli.command()
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="Print every field of every match as JSON.")
@click.pass_context
def search(ctx: click.Context, text: str, as_json: bool) -> None:
    """List catalog models whose name, title, architecture or description contain TEXT.

    Case-insensitive. Like grep, exits 1 when nothing matches (after saying so
    on stderr; with --json it prints an empty list first), so scripts can test it.
    """
    from localq.catalog import search as search_catalog

    found = search_catalog(text)
    if found:
        print_catalog(found, as_json)
        return
    if as_json:
        print_json([])
    click.echo(f"no models match {text!r} (run `localq catalog` to list them all)", err=True)
    ctx.exit(1)


@cli.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print every field as JSON.")
def show(model: str, as_json: bool) -> None:
    """Show a model's metadata: architecture, size, quant mix, context, template.

    MODEL is an installed model (``smollm2:135m``) or the path of a .gguf file.
    """
    from localq.gguf_info import read_gguf_info
    from localq.names import parse

    ref = parse(model)
    variant = benchmark = quality = None
    if ref.kind == "path":
        info = read_gguf_info(ref.path)
    else:
        from localq.bench import latest_benchmark
        from localq.store.evaluations import latest_quality
        from localq.store.index import resolve

        db = open_db()
        variant = resolve(db, ref)
        info = read_gguf_info(variant.main_path)
        benchmark = latest_benchmark(db, variant.id)
        quality = latest_quality(db, variant.id)
    if as_json:
        data = info.to_dict()
        if variant is not None:
            data["installed"] = variant.to_dict()
            data["benchmark"] = benchmark
            data["quality"] = quality.__dict__ if quality else None
        print_json(data)
        return
    print_gguf_info(info, variant)
    if variant is not None and (variant.provenance or {}).get("quant_warning"):
        click.echo(f"warning: {variant.provenance['quant_warning']}", err=True)
    for problem in info.load_problems:   # shown, not refused: show is how a user finds out why
        click.echo(f"warning: llama.cpp cannot load this file: {problem}", err=True)
    if variant is not None:
        if benchmark:
            click.echo(
                f"benchmark ({benchmark['created']}, {benchmark['backend']}, {benchmark['threads']} threads): "
                f"prompt {benchmark['prompt_tps']:.1f} tokens/s, decode {benchmark['decode_tps']:.1f} tokens/s, "
                f"first token {benchmark['ttft_s'] * 1000:.0f} ms, load {benchmark['load_s']:.2f} s"
            )
        else:
            click.echo(f"benchmark: none yet (run `localq bench {variant.ref}`)")
        if quality:
            click.echo(f"quality ({quality.created}, {quality.dataset}, ctx {quality.ctx}, {quality.tokens} tokens): "
                       f"{quality.summary()}, perplexity {quality.perplexity:.3f}")
        else:
            click.echo(f"quality: not measured yet (run `localq eval {variant.ref} --against SOURCE`)")
