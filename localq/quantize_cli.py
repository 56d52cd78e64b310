"""The ``convert`` command: between a Hugging Face directory and GGUF.

Thin, like every command: it resolves SOURCE (a path, or an installed model),
calls the converter in ``localq.quantize`` and prints what it wrote. The
converters are imported inside the command so ``localq --help`` stays fast.
``register(cli)`` adds the commands to the main group.
"""

from __future__ import annotations

from pathlib import Path

import click

from localq.errors import LocalqError

SAFETENSORS_TARGET = "safetensors"


def source_path(ref: str) -> Path:
    """SOURCE as a file or directory: a path that exists, else an installed model's file."""
    path = Path(ref).expanduser()
    if path.exists():
        return path
    from localq.cli import open_db
    from localq.store.index import find

    found = find(open_db(), ref)
    if not found:
        raise LocalqError(f"{ref!r} is neither a file, a directory nor an installed model", "check the path, or see `localq ls`")
    return found[0].main_path


def _progress_bar(label: str):
    """A rich progress bar for (done, total, what) callbacks; returns (context manager, callback)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                        transient=True)
    task = progress.add_task("", total=None)

    def update(done: int, total: int, what: str) -> None:
        progress.update(task, completed=done, total=total, description=what)

    return progress, update


@click.command("convert")
@click.argument("source")
@click.option("--to", "target", required=True, type=click.Choice([SAFETENSORS_TARGET]),
              help="safetensors: a Hugging Face directory (config, tokenizer, weights) from a GGUF.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory to write (must not exist, or be empty).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]),
              help="Weight type of the safetensors (default: float32 for a quantized GGUF, which is exact; "
                   "else the GGUF's own float type).")
def convert_command(source: str, target: str, output: Path, dtype: str | None) -> None:
    """Convert SOURCE (a GGUF file or an installed GGUF model) to another format."""
    from localq.quantize.gguf_export import gguf_to_hf

    path = source_path(source)
    if path.is_dir():
        raise LocalqError(f"{path} is not a GGUF file", "--to safetensors converts a GGUF file")
    progress, update = _progress_bar("dequantizing")
    with progress:
        result = gguf_to_hf(path, output, dtype=dtype, on_progress=update)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"wrote {result.directory} ({result.architecture}, {result.tensors} tensors, {result.dtype})")


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``localq`` group."""
    cli.add_command(convert_command)
