"""A variant's files as a directory with their real names, for engines that load directories.

The blob store names files by their sha256; a GGUF loads from its blob
directly, but MLX (and transformers-style) models are directories that
engines read by name: ``config.json``, ``tokenizer.json``,
``model-00001-of-00002.safetensors`` and the index that names them.
``materialize`` builds such a directory of links to the blobs, under the
cache directory (it can always be rebuilt), named by a digest of the
variant's (name, sha256) list: the same files give the same directory, and a
variant whose files changed gets a new one.

The directory is built under a temporary name and renamed into place, so a
crash never leaves a half-built directory that looks complete. Links are
symbolic where the filesystem allows, else hard links, else copies.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from localq.errors import BadModelFile
from localq.paths import get_paths
from localq.store import blobs


def directory_key(files) -> str:
    """A stable name for a set of (relpath, sha256) files."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.relpath):
        digest.update(f"{f.relpath}\0{f.sha256}\n".encode())
    return digest.hexdigest()[:24]


def _safe_relpath(relpath: str) -> PurePosixPath:
    """The relative path as stored, refusing one that would leave the directory."""
    path = PurePosixPath(relpath)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BadModelFile(f"the index names a file {relpath!r} outside its model directory",
                           "remove the variant (localq rm) and pull it again")
    return path


def _link(blob: Path, dest: Path) -> None:
    try:
        os.symlink(blob, dest)
        return
    except OSError:
        pass
    try:
        os.link(blob, dest)
    except OSError:
        shutil.copyfile(blob, dest)


def materialize(variant) -> Path:
    """The directory holding ``variant``'s files under their real names (built on first use)."""
    root = get_paths().cache / "models"
    target = root / directory_key(variant.files)
    if target.is_dir():
        return target
    missing = [f.relpath for f in variant.files if not blobs.blob_path(f.sha256).is_file()]
    if missing:
        raise BadModelFile(f"{variant.ref} is missing {', '.join(missing[:3])} in the blob store",
                           f"run `localq verify {variant.ref}`, or pull it again")
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        for f in variant.files:
            dest = building.joinpath(*_safe_relpath(f.relpath).parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            _link(blobs.blob_path(f.sha256), dest)
        try:
            os.rename(building, target)
        except OSError:
            if not target.is_dir():   # another process built it first: theirs is as good
                raise
            shutil.rmtree(building, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return target
