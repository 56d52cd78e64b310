"""The content-addressed blob store: ``blobs/sha256-<hex>``.

A blob's name is the sha256 of its bytes, so the same file pulled twice, or
imported from two tools, is stored once. Writes go to a temporary name in the
same directory, are fsynced and moved into place with ``os.replace``, so a
blob is either whole or absent: correctness never depends on locks. Files that
other tools already hold are hardlinked when they are on the same filesystem.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from localq.errors import BadModelFile, StoreError
from localq.paths import get_paths
from localq.units import size

CHUNK = 4 * 1024 * 1024
ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)


def blob_name(sha256: str) -> str:
    return f"sha256-{sha256}"


def blob_path(sha256: str, blobs_dir: Path | None = None) -> Path:
    """Where the blob with this digest lives (it may not exist)."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise StoreError(f"not a sha256 digest: {sha256!r}")
    return (blobs_dir or get_paths().blobs) / blob_name(sha256)


def sha256_file(path: Path, on_progress: ProgressFn | None = None) -> str:
    """The hex sha256 of a file, read in chunks into one reused buffer.

    Plain reads, not a memory map: a file cut short or a failing disk is then an
    error this process reports (``localq verify`` exists for those), not a SIGBUS.
    """
    digest = hashlib.sha256()
    total = path.stat().st_size
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    done = 0
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                digest.update(view[:n])
                done += n
                if on_progress:
                    on_progress(done, total)
    except PermissionError as exc:
        raise BadModelFile(f"cannot read {path}: permission denied", "check the file's permissions") from exc
    return digest.hexdigest()


def storage_error(exc: OSError, what: str, needed: int | None = None) -> StoreError:
    """A user-facing error for a failed write into the store."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        free = _free_bytes(get_paths().data)
        need = f"; needed {size(needed)}" if needed else ""
        return StoreError(f"disk full while writing {what}{need}, {size(free)} free", "free some space or move the cache with LOCALQ_HOME")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StoreError(f"cannot write {what}: the cache directory is read-only", "check its permissions or move the cache with LOCALQ_HOME")
    return StoreError(f"cannot write {what}: {exc.strerror or exc}", "check the cache directory")


def _free_bytes(path: Path) -> int:
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def add_file(
    src: Path,
    sha256: str | None = None,
    *,
    link: bool = True,
    move: bool = False,
    on_progress: ProgressFn | None = None,
) -> tuple[str, Path]:
    """Put ``src`` into the store and return ``(sha256, blob path)``.

    With ``move`` the source is renamed into place (a finished download); else it
    is hardlinked when ``link`` and the filesystem allow, or copied. A blob that
    already exists is kept, so adding the same bytes twice stores them once.
    """
    src = Path(src)
    if sha256 is None:
        sha256 = sha256_file(src, on_progress)
    blobs = get_paths().blobs
    dest = blob_path(sha256, blobs)
    try:
        blobs.mkdir(parents=True, exist_ok=True)
        if dest.exists() and dest.stat().st_size == src.stat().st_size:
            if move:
                src.unlink()
            return sha256, dest
        if move:
            os.replace(src, dest)
            return sha256, dest
        if link and _try_hardlink(src, dest):
            return sha256, dest
        _copy_atomic(src, dest, on_progress)
    except OSError as exc:
        raise storage_error(exc, f"blob {blob_name(sha256)}", src.stat().st_size) from exc
    return sha256, dest


def _try_hardlink(src: Path, dest: Path) -> bool:
    """Hardlink src to dest via a temp name; False where links are impossible."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.link")
    try:
        os.link(src, tmp)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            return False
        raise
    os.replace(tmp, dest)
    return True


def _copy_atomic(src: Path, dest: Path, on_progress: ProgressFn | None) -> None:
    total = src.stat().st_size
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            done = 0
            while chunk := f.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if on_progress:
                    on_progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(data: bytes) -> tuple[str, Path]:
    """Store a small in-memory file (a config, a tokenizer) as a blob."""
    sha256 = hashlib.sha256(data).hexdigest()
    dest = blob_path(sha256)
    if dest.exists():
        return sha256, dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, dest)
    except OSError as exc:
        raise storage_error(exc, f"blob {blob_name(sha256)}", len(data)) from exc
    return sha256, dest


def remove(sha256: str) -> int:
    """Delete a blob; return the bytes freed (0 if it was not there)."""
    path = blob_path(sha256)
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    return size


def list_blobs() -> dict[str, int]:
    """Every complete blob in the store: sha256 -> size."""
    blobs = get_paths().blobs
    if not blobs.is_dir():
        return {}
    found = {}
    for entry in blobs.iterdir():
        if entry.name.startswith("sha256-") and entry.is_file():
            found[entry.name[len("sha256-"):]] = entry.stat().st_size
    return found


def stale_temp_files() -> list[Path]:
    """Temp files left in the blob store by a killed process."""
    blobs = get_paths().blobs
    if not blobs.is_dir():
        return []
    return [p for p in blobs.iterdir() if p.name.startswith(".") and p.is_file()]
