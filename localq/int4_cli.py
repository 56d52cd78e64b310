"""``localq quantize SOURCE --to int4-g128 [--awq] [--head int4] -o DIR``: a localq INT4 checkpoint.

A minimal command of its own until the general ``localq quantize`` (GGUF
targets, the store) lands; then its INT4 targets call ``quantize_int4``
here and this command steps aside (``register`` adds it only when no
``quantize`` command exists). SOURCE is a Hugging Face safetensors directory.
"""

from __future__ import annotations

from pathlib import Path

import click

from localq.errors import LocalqError

INT4_TARGETS = ("int4-g32", "int4-g64", "int4-g128")


def quantize_int4(source: Path, target: str, output: Path, awq: bool, head: str) -> Path:
    """Quantize ``source`` to ``output`` with a progress bar; the checkpoint's path."""
    from localq.quantize.int4 import quantize_model_dir
    from localq.quantize_cli import _progress_bar

    source = Path(source)
    if not (source / "config.json").is_file():
        raise LocalqError(f"{source} is not a Hugging Face safetensors directory (no config.json)",
                          "convert a GGUF first: localq convert MODEL.gguf --to safetensors -o DIR")
    progress, update = _progress_bar("quantizing" + (" (AWQ)" if awq else ""))
    with progress:
        return quantize_model_dir(source, output, target, awq=awq, head_int4=head == "int4", on_progress=update)


@click.command("quantize")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--to", "target", required=True, type=click.Choice(INT4_TARGETS),
              help="INT4 weight-only, asymmetric, one scale and zero per group of 32, 64 or 128 columns.")
@click.option("--awq", is_flag=True, help="Activation-aware scales from a short calibration text (slower, better).")
@click.option("--head", type=click.Choice(["bf16", "int4"]), default="bf16", show_default=True,
              help="Keep the output head in bf16, or quantize it too.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory to write (must not exist).")
def quantize_command(source: Path, target: str, awq: bool, head: str, output: Path) -> None:
    """Quantize SOURCE (a Hugging Face safetensors directory) to a localq INT4 checkpoint."""
    out = quantize_int4(source, target, output, awq, head)
    click.echo(f"wrote {out} ({target}{', AWQ' if awq else ''}, head {head})")


def register(cli: click.Group) -> None:
    """Add ``quantize`` unless another module already did."""
    if "quantize" not in cli.commands:
        cli.add_command(quantize_command)
