"""The ``convert`` command: between a Hugging Face directory and GGUF.

Thin, like every command: it resolves SOURCE (a path, or an installed model),
calls the converter in ``localq.quantize`` and prints what it wrote. The
converters are imported inside the command so ``localq --help`` stays fast.
``register(cli)`` adds the commands to the main group.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from localq.errors import LocalqError

SAFETENSORS_TARGET = "safetensors"


def source_path(ref: str) -> Path:
    """SOURCE as a file or directory: a path that exists, else an installed model's file."""
    path = Path(ref).expanduser()
    if path.exists():
        return path
    from localq.cli.common import open_db
    from localq.store.index import find

    found = find(open_db(), ref)
    if not found:
        raise LocalqError(f"{ref!r} is neither a file, a directory nor an installed model", "check the path, or see `localq ls`")
    if found[0].format == "safetensors":
        from localq.quantize.output import variant_directory

        return variant_directory(found[0])  # a work directory: convert_to_gguf removes it
    return found[0].main_path


def _progress_bar(label: str):
    """A rich progress bar for (done, total, what) callbacks; returns (context manager, callback).

    Off a terminal there is no bar (rich would draw none, its bar being
    transient), and rich is not imported: 0.03 s of a quantization's start.
    """
    if not sys.stdout.isatty():
        return contextlib.nullcontext(), lambda done, total, what: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                        transient=True)
    task = progress.add_task("", total=None)

    def update(done: int, total: int, what: str) -> None:
        progress.update(task, completed=done, total=total, description=what)

    return progress, update


GGUF_TARGETS = ("gguf-f16", "gguf-bf16", "gguf-f32")


def model_name_for(source: str, path: Path, name: str | None) -> str:
    """The model a produced variant belongs to: --name, the installed source's model, or one made from the path."""
    from localq.importer import check_name, default_name

    if name:
        return check_name(name)
    if not Path(source).expanduser().exists():
        from localq.cli.common import open_db
        from localq.store.index import find

        found = find(open_db(), source)
        if found:
            return found[0].model
    return default_name(path)


def convert_to_gguf(source: str, out_type: str, output: Path | None, name: str | None) -> None:
    """HF directory -> GGUF, into the store (indexed, with provenance) or into ``output``."""
    path = source_path(source)
    try:
        _convert_to_gguf(source, path, out_type, output, name)
    finally:
        from localq.paths import get_paths

        if path.parent == get_paths().data / "work":  # a stored safetensors variant, linked for the conversion
            import shutil

            shutil.rmtree(path, ignore_errors=True)


def _convert_to_gguf(source: str, path: Path, out_type: str, output: Path | None, name: str | None) -> None:
    from localq.quantize import gguf_convert
    from localq.quantize import output as out

    planned = gguf_convert.plan(path, out_type)  # refuses what it cannot convert, before any work
    progress, update = _progress_bar(f"converting to {out_type.upper()}")

    def make(target: Path) -> None:
        with progress:
            gguf_convert.convert(path, target, out_type, on_progress=update)

    if output is not None:
        written = out.write_outside_store(make, output)
        click.echo(f"wrote {written} ({planned.arch.gguf}, {len(planned.tensors)} tensors, {out_type.upper()})")
        return
    from localq.cli.common import open_db

    prov = out.provenance("localq convert", f"gguf-py {out.package_version('gguf')}", path, {"to": f"gguf-{out_type}"})
    model = model_name_for(source, path, name)
    variant = out.make_into_store(open_db(), make, model=model, quant=out_type,
                                  filename=f"{model.replace(':', '-').replace('/', '-')}-{out_type.upper()}.gguf",
                                  prov=prov)
    click.echo(f"stored {variant.ref} ({planned.arch.gguf}, {len(planned.tensors)} tensors, "
               f"{variant.size / 1e6:.1f} MB)")


@click.command("convert")
@click.argument("source")
@click.option("--to", "target", required=True, type=click.Choice([*GGUF_TARGETS, SAFETENSORS_TARGET]),
              help="gguf-f16|gguf-bf16|gguf-f32: a GGUF from a Hugging Face safetensors directory; "
                   "safetensors: a Hugging Face directory (config, tokenizer, weights) from a GGUF.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write here instead of into localq's store: a .gguf file, or (required for safetensors) "
                   "a directory that does not exist or is empty.")
@click.option("--name", help="Model name to store a GGUF under (default: the source's model, or its directory name).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]),
              help="safetensors only: the weight type (default: float32 for a quantized GGUF, which is "
                   "exact; else the GGUF's own float type).")
def convert_command(source: str, target: str, output: Path | None, name: str | None, dtype: str | None) -> None:
    """Convert SOURCE (a path, or an installed model) between Hugging Face safetensors and GGUF."""
    if target in GGUF_TARGETS:
        if dtype:
            raise click.UsageError("--dtype applies to --to safetensors; the GGUF type is in --to")
        return convert_to_gguf(source, target[len("gguf-"):], output, name)
    from localq.quantize.gguf_export import gguf_to_hf

    if output is None:
        raise click.UsageError("--to safetensors needs -o DIR, the directory to write")
    path = source_path(source)
    if path.is_dir():
        raise LocalqError(f"{path} is a directory", "--to safetensors converts a GGUF file")
    progress, update = _progress_bar("dequantizing")
    with progress:
        result = gguf_to_hf(path, output, dtype=dtype, on_progress=update)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"wrote {result.directory} ({result.architecture}, {result.tensors} tensors, {result.dtype})")


def fallback_summary(fallbacks) -> str:
    """``180 tensors: q4_K -> q5_0 x166, q6_K -> q8_0 x14 (576 columns, not a multiple of 256)``."""
    if not fallbacks:
        return "no fallbacks"
    groups: dict[tuple[str, str], int] = {}
    for f in fallbacks:
        groups[(f.wanted, f.used)] = groups.get((f.wanted, f.used), 0) + 1
    moves = ", ".join(f"{w} -> {u} x{n}" for (w, u), n in sorted(groups.items(), key=lambda kv: -kv[1]))
    why = sorted({f"{f.ncols} columns, not a multiple of {f.block}" for f in fallbacks})
    return f"{len(fallbacks)} tensors fell back: {moves} ({'; '.join(why)})"


def _prestart(source: str, wanted: list[str], threads: int | None, allow_requantize: bool) -> None:
    """From a GGUF file to llama.cpp types only: the first quantization starts now, before the index is opened.

    Opening the index (and importing what it needs) takes about a tenth of a
    second, which the quantizer then spends quantizing; the job's own
    ``Quantizer`` takes the running child, and a check that fails meanwhile
    stops it (``gguf_quant.discard_spare``).
    """
    from localq.quantize import gguf_quant

    path = Path(source).expanduser()
    if not wanted or not path.is_file() or not all(gguf_quant.wants_llamacpp([t]) for t in wanted):
        return
    from localq.quantize.output import work_path

    gguf_quant.prestart(path, work_path(".gguf"), wanted[0], threads=threads, allow_requantize=allow_requantize)


@click.command("quantize")
@click.argument("source")
@click.option("--to", "targets", required=True, multiple=True,
              help="Target type(s), repeatable or space-separated: llama.cpp's Q2_K, Q3_K_S/M/L, IQ3_S, IQ3_M, IQ4_XS, "
                   "IQ4_NL, Q4_0, Q4_1, Q4_K_S, Q4_K_M, Q5_0, Q5_1, Q5_K_S, Q5_K_M, Q6_K, Q8_0, F16, BF16, F32; "
                   "MLX's mlx-3bit, mlx-4bit, mlx-6bit, mlx-8bit (with the mlx extra); "
                   "torch INT4's int4-g32, int4-g64, int4-g128 (with the torch extra).")
@click.option("--group-size", type=click.Choice(["32", "64", "128"]), default=None,
              help="mlx- targets: weights per scale and bias (default 64).")
@click.option("--awq", is_flag=True, help="int4- targets: activation-aware scales from a short calibration text.")
@click.option("--head", type=click.Choice(["bf16", "int4"]), default="bf16", show_default=True,
              help="int4- targets: keep the output head in bf16, or quantize it too.")
@click.option("--name", help="Model name to store the results under (default: the source's model, or its name).")
@click.option("--threads", type=click.IntRange(1, 1024), help="Threads for the quantizer (default: the physical cores).")
@click.option("--allow-requantize", is_flag=True,
              help="Accept an already-quantized GGUF as source (its rounding error adds to the new one).")
@click.option("--keep-intermediate", is_flag=True,
              help="From a Hugging Face directory: keep the GGUF made on the way (in the checkpoint's own type: "
                   "F32, F16 or BF16), as the model's f32, f16 or bf16 variant.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.argument("more_targets", nargs=-1)
def quantize_command(source, targets, group_size, awq, head, name, threads, allow_requantize, keep_intermediate, as_json,
                     more_targets) -> None:
    """Quantize SOURCE (a Hugging Face directory, a GGUF file or an installed model) into the store.

    Each result is indexed with its provenance (the source's sha256, the tool and
    its version, the parameters) and the tensors llama.cpp had to give another
    type. llama.cpp's log goes to a file in localq's log directory.

    A Hugging Face directory is first converted to a GGUF of its own float type
    (F32, F16 or BF16; F32 if its weights mix types), so nothing is rounded
    before quantizing; it is removed afterwards unless --keep-intermediate.
    Example: localq quantize ./SmolLM2-135M-Instruct --to Q4_K_M Q8_0
    """
    from localq.quantize import gguf_quant

    wanted = [t for group in (*targets, *more_targets) for t in group.replace(",", " ").split()]
    if gguf_quant.wants_llamacpp(wanted):
        gguf_quant.warm_up()   # the quantizer child loads llama.cpp while this process opens the index
    try:
        _prestart(source, wanted, threads, allow_requantize)
        from localq.cli.common import open_db
        from localq.quantize.jobs import Options, quantize, resolve_source

        db = open_db()
        src = resolve_source(db, source, name)
        progress, update = _progress_bar("quantizing")
        with progress:
            produced = quantize(db, src, wanted, Options(threads, allow_requantize, keep_intermediate,
                                                         int(group_size) if group_size else None, awq, head),
                                on_progress=lambda stage, d, n, w: update(d, n, f"{stage} {w}"))
    except KeyboardInterrupt:  # before a quantizer took over (it says which type); a prestarted child included
        raise gguf_quant.QuantizeInterrupted("quantization interrupted; nothing was kept") from None
    finally:
        gguf_quant.discard_spare()
    from localq.cli.render import print_json

    if as_json:
        return print_json([{"target": p.target, "ref": p.variant.ref, "size": p.variant.size,
                            "bits_per_weight": p.bits_per_weight,
                            "seconds": round(p.seconds, 2), "fallbacks": [vars(f) for f in p.fallbacks],
                            "log": str(p.log_path) if p.log_path else None, "notes": p.notes} for p in produced])
    for p in produced:
        detail = f", {p.bits_per_weight:.2f} bits/weight" if p.bits_per_weight else ""
        click.echo(f"stored {p.variant.ref} ({p.variant.size / 1e6:.1f} MB{detail}, {p.seconds:.1f} s)")
        click.echo(f"  {fallback_summary(p.fallbacks)}")
        for note in p.notes:
            click.echo(f"  {note}")


def _gguf_to_evaluate(db, ref: str):
    """(path, installed variant or None) for an eval MODEL or --against SOURCE given as a ref or a GGUF path."""
    from localq.store.index import find

    path = Path(ref).expanduser()
    if path.is_file():
        return path, None
    if path.is_dir():
        return path, None
    found = find(db, ref)
    if not found:
        raise LocalqError(f"{ref!r} is neither a file nor an installed model", "check the path, or see `localq ls`")
    v = found[0]
    if v.format in ("mlx", "safetensors", "int4"):      # a model directory: its files under their names
        from localq.store.materialize import materialize

        return materialize(v), v
    if v.format != "gguf":
        raise LocalqError(f"{v.ref} is {v.format}: localq eval measures GGUF, MLX and INT4 models",
                          "pick another variant")
    return v.main_path, v


@click.command("eval")
@click.argument("model")
@click.option("--against", "against", metavar="SOURCE",
              help="The unquantized model (installed, a GGUF file, or a Hugging Face directory, compared in its own "
                   "float type): adds its perplexity, the mean KL divergence from it and the top-1 agreement with it, "
                   "on the same tokens.")
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="UTF-8 text to measure on. Default: the values of the standard library's "
                   "pydoc_data.topics.topics in sorted key order, joined by a blank line (present offline on "
                   "every Python install).")
@click.option("--ctx", type=click.IntRange(8, 1 << 20), default=512, show_default=True,
              help="Tokens per chunk; the second half of each chunk is scored (llama-perplexity's definition).")
@click.option("--chunks", type=click.IntRange(0, None), default=24, show_default=True,
              help="Chunks to evaluate, from the start of the text; 0 for all of it.")
@click.option("--threads", type=click.IntRange(1, 1024), help="CPU threads (default: the physical cores).")
@click.option("--no-save", is_flag=True, help="Do not store the result in the index.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def eval_command(model, against, text_file, ctx, chunks, threads, no_save, as_json) -> None:
    """Measure MODEL's quality here: perplexity, and KL divergence and top-1 agreement against a source.

    Results of an installed MODEL are stored and shown by `localq ls`, `localq show`, the app, and used
    by `localq recommend` in place of the published tables.
    """

    from localq.cli.common import open_db
    from localq.cli.render import print_json
    from localq.evaluate import DEFAULT_TEXT_NAME, evaluate

    db = open_db()
    path, variant = _gguf_to_evaluate(db, model)
    # A model directory (MLX, or a localq INT4 checkpoint): measured in its engine against a safetensors source.
    mlx = path.is_dir()
    source_path = source_variant = None
    temp_source = None
    if against:
        source_path, source_variant = _gguf_to_evaluate(db, against)
    if text_file is not None:
        try:
            text = text_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise LocalqError(f"{text_file} is not UTF-8 text", "give a UTF-8 text file") from exc
        text_name = text_file.name
    else:
        text, text_name = None, DEFAULT_TEXT_NAME
    try:
        if mlx and source_path is not None and not source_path.is_dir():
            raise LocalqError("an MLX or INT4 model is measured against its safetensors source (a directory or "
                              "installed model)",
                              "give --against the Hugging Face directory it was quantized from")
        if mlx:
            from localq.quantize import output

            source_digest = output.source_digest(source_path)[0] if source_path is not None else None
            source_path_used = source_path
        elif source_path is not None and source_path.is_dir():
            # an HF directory: compared as a GGUF of its own float type, so the reference is its exact values
            from localq.quantize import gguf_convert, output

            planned = gguf_convert.lossless(gguf_convert.plan(source_path))
            temp_source = output.work_path(".gguf")
            gguf_convert.convert(source_path, temp_source, planned.out_type.lower(), planned=planned, durable=False)
            source_digest = output.source_digest(source_path)[0]
            source_path_used = temp_source
        else:
            source_digest = None
            source_path_used = source_path
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), transient=True) as progress:
            task = progress.add_task("", total=None)
            names = (variant.ref if variant else path.name,
                     source_variant.ref if source_variant else Path(source_path).name if source_path else "")
            result = evaluate(path, against=source_path_used, text=text, text_name=text_name, ctx=ctx,
                              chunks=chunks or None, threads=threads, names=names,
                              on_progress=lambda d, n: progress.update(task, completed=d, total=n))
    finally:
        if temp_source is not None:
            temp_source.unlink(missing_ok=True)
    stored = False
    if variant is not None and not no_save:
        from localq.store.evaluations import record

        if source_path is not None and source_digest is None:
            from localq.store.blobs import sha256_file

            source_digest = (source_variant.files[0].sha256 if source_variant is not None
                             else sha256_file(source_path))  # in chunks: a source GGUF may be larger than memory
        src = {"ref": source_variant.ref if source_variant else str(source_path), "sha256": source_digest} if against else None
        record(db, variant.id, result, src)
        stored = True
    if as_json:
        data = result.to_dict()
        data["stored"] = stored
        return print_json(data)
    name = variant.ref if variant else path.name
    click.echo(f"{name}: perplexity {result.perplexity:.4f} +/- {result.perplexity_stderr:.4f} "
               f"({result.tokens_scored} tokens scored in {result.chunks} chunks of {result.ctx}, {text_name})")
    if result.source_perplexity is not None:
        click.echo(f"  source perplexity {result.source_perplexity:.4f}: {result.ppl_increase * 100:+.2f} %")
        click.echo(f"  KL divergence {result.kl_divergence:.4f}, top-1 agreement {result.top1_agreement * 100:.1f} %")
    click.echo(f"  {result.tokens_per_second:.0f} tokens/s on {result.threads} threads")
    if variant is not None and not stored:
        click.echo("  not stored (--no-save)")
    elif variant is None:
        click.echo("  not stored: MODEL is a file, not an installed model (localq import it first)")


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``localq`` group."""
    cli.add_command(convert_command)
    cli.add_command(quantize_command)
    cli.add_command(eval_command)
