"""MLX quantization: an HF safetensors model directory -> an MLX quant, through mlx-lm's convert.

``quantize_mlx(source_dir, bits, group_size, out_dir)`` runs
``mlx_lm.convert`` (affine quantization: per group of ``group_size`` weights
along a row, ``bits``-bit integers with an f16 scale and bias) and writes the
MLX model directory that mlx-lm and localq's MLX backend load. It returns
what happened, in numbers: bits per weight, and which weight matrices stayed
unquantized because their rows are not a multiple of the group size (mlx-lm
leaves those in the source's dtype; SmolLM2's 576-wide rows do that at group
size 128). ``quantize_to_store`` puts the result into the blob store and the
index with its provenance (source files' sha256, tool and versions,
parameters).

The tags are ``mlx-3bit``, ``mlx-4bit``, ``mlx-6bit`` and ``mlx-8bit``;
group sizes 32, 64 (the default, mlx-lm's) and 128. One variant per tag and
model: quantizing again with another group size replaces it (the group size
is in the provenance).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from localq.errors import LocalqError

MLX_TARGETS = {"mlx-3bit": 3, "mlx-4bit": 4, "mlx-6bit": 6, "mlx-8bit": 8}
GROUP_SIZES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 64
SKIPPED_OUTPUT = ("README.md",)     # mlx-lm's model card names the local source path; not part of the model

ProgressFn = Callable[[str, float], None]   # (stage, fraction 0..1)


@dataclass
class MLXQuantResult:
    """What a quantization made: its directory and its numbers."""

    out_dir: Path
    bits: int
    group_size: int
    bits_per_weight: float
    quantized_matrices: int
    unquantized: list[str] = field(default_factory=list)   # weight names left in the source dtype
    tool_versions: dict[str, str] = field(default_factory=dict)
    log: str = ""
    source_warnings: list[str] = field(default_factory=list)   # e.g. a quantized GGUF's compounding error

    def warnings(self) -> list[str]:
        found = list(self.source_warnings)
        if not self.unquantized:
            return found
        return found + [f"{len(self.unquantized)} of {len(self.unquantized) + self.quantized_matrices} weight matrices stay "
                f"unquantized: their rows are not a multiple of the group size {self.group_size} "
                f"(e.g. {self.unquantized[0]}); a smaller --group-size quantizes them"]


def target_bits(target: str) -> int:
    """The bits of an MLX target tag, or LocalqError naming the ones there are."""
    bits = MLX_TARGETS.get(target.strip().lower())
    if bits is None:
        raise LocalqError(f"{target!r} is not an MLX quantization localq makes",
                          f"use one of {', '.join(MLX_TARGETS)}")
    return bits


def check_group_size(group_size: int) -> int:
    if group_size not in GROUP_SIZES:
        raise LocalqError(f"group size {group_size} is not supported by MLX quantization",
                          f"use --group-size {', '.join(map(str, GROUP_SIZES))} (default {DEFAULT_GROUP_SIZE})")
    return group_size


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("mlx", "mlx-lm"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def check_source(source_dir: Path) -> dict:
    """The source's config, or LocalqError when it is not an unquantized model mlx-lm can convert."""
    from localq.backends.mlx import check_architecture
    from localq.mlx_info import read_model_dir

    config = read_model_dir(source_dir)
    if isinstance(config.get("quantization"), dict) or isinstance(config.get("quantization_config"), dict):
        raise LocalqError(f"{Path(source_dir).name} is already quantized",
                          "quantize from the unquantized safetensors model (or its GGUF F16/F32)")
    check_architecture(config, Path(source_dir).name)
    return config


def quantize_mlx(source_dir: Path, bits: int, group_size: int, out_dir: Path,
                 on_progress: ProgressFn | None = None) -> MLXQuantResult:
    """Quantize the HF safetensors model in ``source_dir`` to ``bits`` into ``out_dir`` (must not exist).

    Raises LocalqError for unsupported bits or group sizes, a source mlx-lm
    cannot convert, or mlx not installed; ``out_dir`` is removed again when
    the conversion fails.
    """
    from localq.backends.mlx import import_mlx

    if bits not in MLX_TARGETS.values():
        raise LocalqError(f"{bits}-bit is not an MLX quantization localq makes", f"use one of {', '.join(MLX_TARGETS)}")
    check_group_size(group_size)
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    if out_dir.exists():
        raise LocalqError(f"{out_dir} already exists", "name a new directory for the quant")
    check_source(source_dir)
    import_mlx()
    from mlx_lm import convert

    progress = on_progress or (lambda stage, fraction: None)
    progress("quantizing", 0.0)
    captured = io.StringIO()      # mlx-lm prints its progress; localq reports through on_progress
    try:
        with contextlib.redirect_stdout(captured):
            convert(str(source_dir), str(out_dir), quantize=True, q_bits=bits, q_group_size=group_size)
    except Exception as exc:  # mlx-lm's failures are ValueError, KeyError, RuntimeError ...: all the source's fault
        shutil.rmtree(out_dir, ignore_errors=True)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LocalqError(f"mlx-lm could not quantize {source_dir.name}: {first_line}",
                          "check that the source is a complete safetensors model") from exc
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    for name in SKIPPED_OUTPUT:
        (out_dir / name).unlink(missing_ok=True)
    progress("quantizing", 1.0)
    quantized, unquantized, bpw = _inspect(out_dir)
    return MLXQuantResult(out_dir, bits, group_size, bpw, quantized, unquantized, tool_versions(), captured.getvalue())


def _inspect(out_dir: Path) -> tuple[int, list[str], float]:
    """(quantized matrices, unquantized 2-D weights, bits per weight) from the written files."""
    import mlx.core as mx

    quantization = json.loads((out_dir / "config.json").read_text("utf-8"))["quantization"]

    def bits_of(prefix: str) -> int:
        layer = quantization.get(prefix)
        return int(layer["bits"]) if isinstance(layer, dict) else int(quantization["bits"])

    quantized, unquantized = 0, []
    stored_bits = weights = 0
    for path in sorted(out_dir.glob("model*.safetensors")):
        tensors = mx.load(str(path))
        for name, array in tensors.items():
            stored_bits += array.nbytes * 8
            if name.endswith((".scales", ".biases")):
                continue
            prefix = name.removesuffix(".weight")
            if name.endswith(".weight") and f"{prefix}.scales" in tensors:
                quantized += 1
                weights += array.size * 32 // bits_of(prefix)     # packed into uint32 words
            else:
                if name.endswith(".weight") and array.ndim == 2:
                    unquantized.append(name)
                weights += array.size
    return quantized, unquantized, (stored_bits / weights if weights else 0.0)


# --- into the store ---------------------------------------------------------------------


def quantize_to_store(db, source_dir: Path, target: str, *, model: str, group_size: int = DEFAULT_GROUP_SIZE,
                      source: str | None = None, source_files: dict[str, str] | None = None,
                      catalog_ref: str | None = None, extra_provenance: dict | None = None,
                      on_progress: ProgressFn | None = None):
    """Quantize ``source_dir`` to ``target`` and index it as a variant of ``model``; returns (Variant, result).

    ``source_files`` maps the source's file names to their sha256 (computed
    here when not given). The quant is built in a temporary directory beside
    the blob store; its files are moved into the store and indexed in one
    transaction. On any failure nothing stays: neither the directory, nor
    blobs the index does not reference.
    """
    from localq.paths import get_paths
    from localq.store import blobs
    from localq.store.index import FileEntry, add_variant
    from localq.store.migrations import now

    bits = target_bits(target)
    check_group_size(group_size)
    source_dir = Path(source_dir)
    config = check_source(source_dir)
    if source_files is None:
        source_files = {p.name: blobs.sha256_file(p) for p in sorted(source_dir.iterdir()) if p.is_file()}
    data = get_paths().data
    data.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".quantize-", dir=data))
    added: list[str] = []
    try:
        result = quantize_mlx(source_dir, bits, group_size, work / "model", on_progress)
        files = []
        for path in sorted(p for p in result.out_dir.rglob("*") if p.is_file()):
            existed = blobs.blob_path(blobs.sha256_file(path)).exists()
            sha, _ = blobs.add_file(path, move=True)
            if not existed:
                added.append(sha)
            files.append(FileEntry(path.relative_to(result.out_dir).as_posix(), sha, blobs.blob_path(sha).stat().st_size))
        provenance = {
            "quantized": now(), "tool": "mlx-lm convert", "tool_versions": result.tool_versions,
            "source": source or str(source_dir), "source_sha256": source_files,
            "parameters": {"bits": bits, "group_size": group_size, "mode": "affine"},
            "bits_per_weight": round(result.bits_per_weight, 3), "unquantized": result.unquantized,
            "warnings": result.warnings(), **(extra_provenance or {}),
        }
        variant = add_variant(db, model=model, source_kind="quantized", catalog_ref=catalog_ref, quant=target,
                              format="mlx", files=files, architecture=config.get("model_type"),
                              source=source or str(source_dir), provenance=provenance)
    except BaseException:
        referenced = {row[0] for row in db.execute("SELECT DISTINCT sha256 FROM files").fetchall()}
        for sha in added:
            if sha not in referenced:
                blobs.remove(sha)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return variant, result


def quantize_source(db, source: str, target: str, *, group_size: int = DEFAULT_GROUP_SIZE, name: str | None = None,
                    on_progress: ProgressFn | None = None):
    """``localq quantize SOURCE --to mlx-...``: SOURCE is a path or an installed model; returns (Variant, result).

    - an HF safetensors directory: quantized as it is, indexed under ``name``
      (default: made from the directory's name);
    - an installed safetensors variant: its files, materialized under their
      names; the quant joins the same model;
    - a GGUF file or installed GGUF variant: first converted to safetensors
      (``localq.quantize.gguf_export``) in a temporary directory; when the
      GGUF is itself quantized, the result carries its rounding error plus
      MLX's, and the warning says so (``result.source_warnings``).
    """
    from localq.importer import check_name, default_name
    from localq.store.index import find

    target_bits(target)
    check_group_size(group_size)
    path = Path(source).expanduser()
    variant = None
    if not path.exists():
        found = find(db, source)
        if not found:
            raise LocalqError(f"{source!r} is neither a directory, a GGUF file nor an installed model",
                              "check the path, or see `localq ls`")
        variant = found[0]
    model = check_name(name) if name else (variant.model if variant else default_name(path))
    catalog_ref = None
    if variant is not None:
        row = db.execute("SELECT catalog_ref FROM models WHERE name = ?", [variant.model]).fetchone()
        catalog_ref = row[0] if row else None

    if variant is not None and variant.format in ("safetensors", "mlx"):
        from localq.store.materialize import materialize

        files = {f.relpath: f.sha256 for f in variant.files}
        return quantize_to_store(db, materialize(variant), target, model=model, group_size=group_size,
                                 source=variant.ref, source_files=files, catalog_ref=catalog_ref,
                                 on_progress=on_progress)
    gguf = variant.main_path if variant is not None else path
    if variant is None and path.is_dir():
        return quantize_to_store(db, path, target, model=model, group_size=group_size, on_progress=on_progress)
    if variant is not None and variant.format != "gguf":
        raise LocalqError(f"{variant.ref} is a {variant.format} model; MLX quantizes safetensors or GGUF sources")
    return _from_gguf(db, gguf, target, model=model, group_size=group_size, catalog_ref=catalog_ref,
                      source=variant.ref if variant is not None else str(path), on_progress=on_progress,
                      sha256=(variant.files[0].sha256 if variant is not None and len(variant.files) == 1 else None))


def _from_gguf(db, gguf: Path, target: str, *, model: str, group_size: int, catalog_ref, source: str,
               on_progress, sha256: str | None):
    """GGUF -> safetensors (temporary) -> MLX quant, with the compounding warning."""
    from localq.paths import get_paths
    from localq.quantize.gguf_export import gguf_to_hf
    from localq.store import blobs

    data = get_paths().data
    data.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".gguf-to-hf-", dir=data))
    try:
        exported = gguf_to_hf(gguf, work / "hf")
        digest = sha256 or blobs.sha256_file(Path(gguf))
        variant, result = quantize_to_store(
            db, exported.directory, target, model=model, group_size=group_size, source=source,
            source_files={Path(gguf).name: digest}, catalog_ref=catalog_ref,
            extra_provenance={"via": f"GGUF -> safetensors ({exported.dtype}) by localq", "source_warnings": exported.warnings},
            on_progress=on_progress)
        result.source_warnings = list(exported.warnings)
        return variant, result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_mlx(db, source, targets: list[str], options, on_progress=None) -> list:
    """The maker ``localq quantize`` dispatches ``mlx-`` targets to (``jobs.register_target``).

    ``source`` is the command's resolved source (an HF directory or a GGUF
    file, with the model name results go under); ``options.group_size`` is
    ``--group-size`` (default 64). Every target is checked before any is made.
    """
    import time

    from localq.quantize.jobs import Produced

    group_size = check_group_size(getattr(options, "group_size", None) or DEFAULT_GROUP_SIZE)
    for target in targets:
        target_bits(target)

    def progress(stage: str, fraction: float, target: str) -> None:
        if on_progress:
            on_progress(target, int(fraction * 100), 100, stage)

    produced = []
    for target in (t.lower() for t in targets):
        started = time.perf_counter()
        report = lambda stage, fraction, target=target: progress(stage, fraction, target)  # noqa: E731
        if source.kind == "hf":
            variant, result = quantize_to_store(db, source.path, target, model=source.model, group_size=group_size,
                                                on_progress=report)
        else:
            variant, result = _from_gguf(db, source.path, target, model=source.model, group_size=group_size,
                                         catalog_ref=None, source=str(source.path), on_progress=report, sha256=None)
        made = Produced(target, variant, [], time.perf_counter() - started, None, result.warnings())
        if hasattr(made, "bits_per_weight"):
            made.bits_per_weight = round(result.bits_per_weight, 3)
        produced.append(made)
    return produced
