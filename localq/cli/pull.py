"""``localq pull``: a model from the Hugging Face Hub into the cache, with progress."""

from __future__ import annotations

import sys

import click

from localq.cli import render
from localq.cli.common import confirm, open_db
from localq.cli.group import cli


@cli.command("pull")
@click.argument("ref")
@click.option("--revision", help="A branch, tag or commit of the Hub repository (default: main).")
@click.option("--max-rate", help="Cap the bandwidth in bytes per second: 500K, 5M (K, M, G are 1024s, as in curl).")
@click.option("--offline", is_flag=True, help="Use no network: answer from installed models, as HF_HUB_OFFLINE=1 does.")
@click.option("--retries", type=click.IntRange(0, 100), default=5, show_default=True,
              help="Retries in a row that may fail before a file gives up (0: none).")
@click.option("--json", "as_json", is_flag=True, help="Print progress events as JSON, one per line.")
@click.option("-y", "--yes", is_flag=True, help="int4- quants: pull the source and quantize it without asking.")
@click.pass_context
def pull_command(ctx: click.Context, ref: str, revision, max_rate, offline: bool, retries: int, as_json: bool,
                 yes: bool) -> None:
    """Download a model from the Hugging Face Hub into the cache.

    REF is a catalog name (smollm2:135m, qwen2.5:7b-q4_k_m) or hf.co/ORG/REPO[:QUANT].
    With no quant, the one recommended for this machine among those the repository has.
    An int4- quant (smollm2:135m-int4-g64) is not on the Hub: localq pulls the model's
    safetensors source and quantizes it here, after asking (-y: without asking).
    An interrupted pull keeps its bytes; run the same command again to resume.
    HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE work as in huggingface_hub.
    """
    from localq.download import parse_rate, pull
    from localq.quantize import pull_source

    rate = parse_rate(max_rate)
    db = open_db()
    display = render.pull_display(as_json)
    if pull_source.wanted(ref):        # int4-: the source pulled, then quantized here
        plan = pull_source.plan(ref, db, revision=revision, offline=offline)
        if not pull_source.go_ahead(plan, yes, sys.stdin.isatty(), confirm):
            return click.echo("not pulled: nothing was downloaded or made")
        with display:
            made = pull_source.run(plan, db, revision=revision, max_rate=rate, retries=retries, offline=offline,
                                   on_progress=display, say=lambda line: click.echo(line, err=as_json))
        return render.print_int4_pull_result(made, as_json)
    try:
        with display:
            result = pull(ref, db=db, revision=revision, max_rate=rate, offline=True if offline else None,
                          retries=retries, on_progress=display)
    except KeyboardInterrupt:
        click.echo(f"interrupted: the bytes downloaded so far are kept; run `localq pull {ref}` again to resume", err=True)
        ctx.exit(130)
    render.print_pull_result(result, as_json)
