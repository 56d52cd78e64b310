"""The cache and index commands: ``ls``, ``rm``, ``verify``, ``prune``, ``import``."""

from __future__ import annotations

import click

from localq.cli import render
from localq.cli.common import confirm, open_db
from localq.cli.group import cli
from localq.cli.render import _mb, print_json, variant_row


@cli.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls_command(as_json: bool) -> None:
    """List installed models."""
    from localq.store.evaluations import latest_quality
    from localq.store.index import list_variants

    db = open_db()
    rows = [render.variant_row(v, latest_quality(db, v.id)) for v in list_variants(db)]
    render.print_json(rows) if as_json else render.print_variants(rows)


@cli.command("rm")
@click.argument("ref")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rm_command(ref: str, yes: bool) -> None:
    """Remove a model (all its quants, unless REF names one) and free its unshared files."""
    from localq import cache
    from localq.store.index import list_variants
    from localq.units import size

    db = open_db()
    variants = cache.removable(db, ref)
    names = ", ".join(v.ref for v in variants)
    others = [v for v in list_variants(db) if v not in variants]
    freed = [cache.space_freed(v, others) for v in variants]
    note = " (hardlinked from elsewhere: that copy stays)" if any(linked for _, linked in freed) else ""
    if not yes and not confirm(f"Remove {names}, freeing {size(sum(f for f, _ in freed))}{note}?"):
        click.echo("Nothing removed.")
        return
    removed, freed = cache.remove(db, ref)
    click.echo(f"Removed {', '.join(v.ref for v in removed)}; freed {size(freed)}.")


@cli.command("verify")
@click.argument("ref", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify_command(ref: str | None, as_json: bool) -> None:
    """Re-hash installed files against their recorded sha256."""
    from localq import cache

    results = cache.verify(open_db(), ref)
    if as_json:
        print_json([{"ref": r.variant.ref, "ok": r.ok, "problems": r.bad_files} for r in results])
    else:
        for r in results:
            click.echo(f"{'ok' if r.ok else 'CORRUPT'}  {r.variant.ref}")
            for problem in r.bad_files:
                click.echo(f"    {problem}")
    failure = cache.verify_failure(results)
    if failure is not None:
        raise click.exceptions.Exit(1) if as_json else failure


@cli.command("prune")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Only show what would be freed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON of what would be (or was) freed.")
def prune_command(yes: bool, dry_run: bool, as_json: bool) -> None:
    """Delete blobs no model uses and stale partial downloads."""
    from localq import cache
    from localq.units import size

    db = open_db()
    plan = cache.plan_prune(db)
    summary = {
        "orphan_blobs": sorted(plan.orphan_blobs), "stale_files": [str(p) for p in plan.stale_files],
        "bytes": plan.bytes, "removed": False,
    }
    if plan.empty:
        return print_json(summary) if as_json else click.echo("Nothing to prune.")
    if not as_json:
        for sha, nbytes in sorted(plan.orphan_blobs.items()):
            click.echo(f"orphan blob sha256-{sha[:12]}...  {size(nbytes)}")
        for path in plan.stale_files:
            click.echo(f"stale file {path}")
    if dry_run or (not yes and not confirm(f"Free {size(plan.bytes)}?")):
        return print_json(summary) if as_json else click.echo("Nothing removed.")
    summary["bytes"] = cache.prune(db, plan)
    summary["removed"] = True
    print_json(summary) if as_json else click.echo(f"Freed {size(summary['bytes'])}.")


@cli.command("import")
@click.argument("file", required=False, type=click.Path(path_type=str))
@click.option("--name", help="Model name to index it under (default: from the file name).")
@click.option("--from", "tool", type=click.Choice(["ollama", "hf-cache", "lmstudio"]), help="Index the GGUF models another tool holds.")
@click.option("--path", "root", type=click.Path(path_type=str), help="With --from: where that tool keeps its models.")
@click.option("--blobs", "from_blobs", is_flag=True, help="Re-index GGUF blobs already in localq's store.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def import_command(file, name, tool, root, from_blobs, as_json) -> None:
    """Index a GGUF file, or the models Ollama, the HF cache or LM Studio hold (hardlinked, not copied)."""
    from localq import importer

    if sum(bool(x) for x in (file, tool, from_blobs)) != 1:
        raise click.UsageError("give a FILE, or --from TOOL, or --blobs")
    db = open_db()
    problems: list[str] = []
    if file:
        variants = [importer.import_file(db, file, name)]
    elif tool:
        variants, problems = importer.import_from(db, tool, root)
    else:
        variants, problems = importer.import_blobs(db)
    if as_json:
        return print_json({"imported": [variant_row(v) for v in variants], "problems": problems})
    for v in variants:
        click.echo(f"imported {v.ref} ({v.format}, {_mb(v.size)})")
    for p in problems:
        click.echo(f"skipped {p}", err=True)
    if not variants and not problems:
        click.echo("No GGUF models found.")
