"""Putting a file localq made (a converted or quantized GGUF) into the store, with its provenance.

The maker writes into a temporary file inside the store's data directory (the
same filesystem as the blobs, so the finished file is renamed, not copied),
then it is hashed, moved into ``blobs/`` and indexed in one transaction. A
failure at any point, a full disk or Ctrl-C included, removes the temporary
file: nothing half-written stays in the store or the index.

Every produced variant records where it came from: the source's sha256 (for a
directory, the digest of its files' digests, with the list), the tool and its
version, and the parameters it ran with.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from localq import __version__
from localq.errors import LocalqError
from localq.paths import get_paths
from localq.store import blobs
from localq.store.index import FileEntry, Variant, add_variant
from localq.versions import package_version  # noqa: F401  (output.package_version, for the converters)

SOURCE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                "special_tokens_map.json", "chat_template.jinja", "model.safetensors.index.json")


def source_digest(path: Path) -> tuple[str, dict[str, str]]:
    """The sha256 of a source file, or of a directory's manifest; with the per-file digests."""
    path = Path(path)
    if path.is_file():
        if path.name.startswith("sha256-") and path.parent == get_paths().blobs:
            sha = path.name[len("sha256-"):]  # a blob's name is its digest
        else:
            sha = blobs.sha256_file(path)
        return sha, {path.name: sha}
    names = sorted({*(n for n in SOURCE_FILES if (path / n).is_file()), *(p.name for p in path.glob("*.safetensors"))})
    files = {name: blobs.sha256_file(path / name) for name in names}
    manifest = "".join(f"{sha}  {name}\n" for name, sha in files.items())
    return hashlib.sha256(manifest.encode()).hexdigest(), files


def provenance(tool: str, engine: str, source: Path, parameters: dict, source_sha: tuple[str, dict] | None = None) -> dict:
    """The record of how a file was made, as the index keeps it."""
    sha, files = source_sha or source_digest(source)
    return {
        "tool": tool,
        "localq_version": __version__,
        "engine": engine,
        "source": str(Path(source).resolve()),
        "source_sha256": sha,
        "source_files": files,
        "parameters": parameters,
    }


def work_path(suffix: str) -> Path:
    """A fresh temporary path beside the blobs, for a file being made."""
    work = get_paths().data / "work"
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise blobs.storage_error(exc, "a work file") from exc
    return work / f".make-{os.getpid()}-{os.urandom(4).hex()}{suffix}"


def variant_directory(variant) -> Path:
    """A Hugging Face directory for a stored safetensors variant: symlinks to its blobs under their names.

    Made in the work directory; the caller removes it (``shutil.rmtree``) when done.
    """
    from localq.store.blobs import blob_path

    folder = work_path("")
    try:
        folder.mkdir()
        for f in variant.files:
            target = folder / f.relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(blob_path(f.sha256))
    except OSError as exc:
        raise blobs.storage_error(exc, "a work directory") from exc
    return folder


def make_into_store(
    db,
    make: Callable[[Path], None],
    *,
    model: str,
    quant: str,
    filename: str,
    prov: dict,
    source_kind: str = "quantized",
    on_hash: Callable[[int, int], None] | None = None,
    tmp: Path | None = None,
    known: tuple[str | None, int | None] | None = None,
) -> Variant:
    """Run ``make(tmp)``, then store and index the GGUF it wrote under ``model`` / ``quant``.

    ``tmp`` is a ``work_path`` the caller chose (default: a new one); ``known``
    gives the output's (architecture, parameter count) when the caller knows
    them (a quant has its source's), else they are read from the file.
    """
    tmp = tmp or work_path(".gguf")
    try:
        try:
            make(tmp)
        except OSError as exc:
            raise blobs.storage_error(exc, f"{model} {quant}") from exc
        if known is None:
            from localq.gguf_info import read_gguf_info

            info = read_gguf_info(tmp)
            known = (info.architecture, info.parameter_count)
        size = tmp.stat().st_size
        sha, _ = blobs.add_file(tmp, move=True, on_progress=on_hash)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        return add_variant(
            db, model=model, source_kind=source_kind, quant=quant, format="gguf",
            files=[FileEntry(filename, sha, size)], architecture=known[0],
            parameters=known[1], source=prov.get("source"), provenance=prov,
        )
    except BaseException:
        if not db.execute("SELECT 1 FROM files WHERE sha256 = ?", [sha]).fetchone():
            blobs.remove(sha)
        raise


def make_directory_into_store(
    db,
    make: Callable[[Path], None],
    *,
    model: str,
    quant: str,
    fmt: str,
    prov: dict,
    architecture: str | None = None,
) -> Variant:
    """Run ``make(folder)``, then store every file it wrote there and index them as one variant.

    For outputs that are directories (an INT4 checkpoint: safetensors, metadata,
    tokenizer files). The files keep their relative names in the index; on any
    failure the work folder and the blobs no variant references are removed.
    """
    import shutil

    folder = work_path("")
    added: list[str] = []
    try:
        try:
            make(folder)
            entries = []
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                existed = blobs.blob_path(blobs.sha256_file(path)).exists()
                sha, _ = blobs.add_file(path, move=True)
                if not existed:
                    added.append(sha)
                entries.append(FileEntry(path.relative_to(folder).as_posix(), sha, blobs.blob_path(sha).stat().st_size))
        except OSError as exc:
            raise blobs.storage_error(exc, f"{model} {quant}") from exc
        return add_variant(db, model=model, source_kind="quantized", quant=quant, format=fmt, files=entries,
                           architecture=architecture, source=prov.get("source"), provenance=prov)
    except BaseException:
        for sha in added:
            if not db.execute("SELECT 1 FROM files WHERE sha256 = ?", [sha]).fetchone():
                blobs.remove(sha)
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_outside_store(make: Callable[[Path], None], out: Path) -> Path:
    """Run ``make`` into ``out`` (a user-given file), via a temporary name beside it."""
    out = Path(out)
    if out.is_dir():
        raise LocalqError(f"{out} is a directory", "give a file name ending in .gguf")
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        make(tmp)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise blobs.storage_error(exc, str(out)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
