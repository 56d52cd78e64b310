"""Cache upkeep shared by the CLI and the app: list, remove, verify, prune.

``verify`` re-hashes each variant's blobs against the sha256 the index
recorded. ``prune`` finds blobs no variant uses, temp files a killed process
left, and partial downloads untouched for a week; it reports what it would free
before anything is deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from localq.errors import LocalqError
from localq.paths import get_paths
from localq.store import blobs
from localq.store.index import (
    Variant, find, list_variants, not_installed, referenced_blobs, remove_variant, resolve,
)

STALE_PARTIAL_S = 7 * 24 * 3600


@dataclass
class VerifyResult:
    variant: Variant
    bad_files: list[str] = field(default_factory=list)  # "relpath: what is wrong"

    @property
    def ok(self) -> bool:
        return not self.bad_files


def verify(db, ref: str | None = None, on_progress=None) -> list[VerifyResult]:
    """Re-hash the blobs of one variant (``ref``) or of all; report missing or changed files."""
    variants = [resolve(db, ref)] if ref else list_variants(db)
    results = []
    for variant in variants:
        result = VerifyResult(variant)
        for f in variant.files:
            path = blobs.blob_path(f.sha256)
            if not path.is_file():
                result.bad_files.append(f"{f.relpath}: blob {path.name} is missing")
                continue
            actual = blobs.sha256_file(path, on_progress)
            if actual != f.sha256:
                result.bad_files.append(f"{f.relpath}: sha256 is {actual[:12]}..., expected {f.sha256[:12]}...")
        results.append(result)
    return results


def verify_failure(results: list[VerifyResult]) -> LocalqError | None:
    """The error for the results that failed, in the words the CLI and the app both use; None if all passed."""
    bad = [r for r in results if not r.ok]
    if not bad:
        return None
    return LocalqError(f"{len(bad)} model(s) failed verification",
                       "remove them with `localq rm REF` and pull or import them again")


def removable(db, ref: str) -> list[Variant]:
    """The installed variants ``rm REF`` removes; ModelNotFound (no pull advice) when there are none."""
    variants = find(db, ref)
    if not variants:
        raise not_installed(db, ref)
    return variants


def remove(db, ref: str) -> tuple[list[Variant], int]:
    """Remove the variants a reference names (all quants of a model if it names none); return them and bytes freed."""
    variants = removable(db, ref)
    freed = sum(remove_variant(db, v.id) for v in variants)
    return variants, freed


def space_freed(variant, variants) -> tuple[int, bool]:
    """Bytes of disk that removing ``variant`` frees, and whether some of its files are hardlinked elsewhere.

    A blob another variant also uses stays; a blob whose file has other hard
    links (the original the import linked to) frees no disk space when removed.
    """
    shared = {f.sha256 for v in variants if v.id != variant.id for f in v.files}
    freed, linked = 0, False
    for f in {f.sha256: f for f in variant.files}.values():
        if f.sha256 in shared:
            continue
        path = blobs.blob_path(f.sha256)
        try:
            if path.stat().st_nlink > 1:
                linked = True
                continue
        except OSError:
            continue
        freed += f.size
    return freed, linked


@dataclass
class PrunePlan:
    orphan_blobs: dict[str, int] = field(default_factory=dict)  # sha256 -> size
    stale_files: list[Path] = field(default_factory=list)      # temp files and old partials

    @property
    def bytes(self) -> int:
        return sum(self.orphan_blobs.values()) + sum(p.stat().st_size for p in self.stale_files if p.exists())

    @property
    def empty(self) -> bool:
        return not self.orphan_blobs and not self.stale_files


def plan_prune(db, now: float | None = None) -> PrunePlan:
    """What ``prune`` would delete. Partials newer than a week are kept: a pull may resume them."""
    from localq.store.pulls import unfinished_pull_blobs

    now = time.time() if now is None else now
    used = referenced_blobs(db) | unfinished_pull_blobs(db)
    plan = PrunePlan({sha: size for sha, size in blobs.list_blobs().items() if sha not in used})
    plan.stale_files.extend(blobs.stale_temp_files())
    partials = get_paths().partials
    if partials.is_dir():
        plan.stale_files.extend(
            p for p in partials.rglob("*") if p.is_file() and now - p.stat().st_mtime > STALE_PARTIAL_S
        )
    return plan


def prune(db, plan: PrunePlan) -> int:
    """Delete what ``plan`` lists, re-checking that no blob became used since; return bytes freed."""
    from localq.download.locks import FileLock
    from localq.store.pulls import unfinished_pull_blobs

    used = referenced_blobs(db) | unfinished_pull_blobs(db)
    freed = sum(blobs.remove(sha) for sha in plan.orphan_blobs if sha not in used)
    for path in plan.stale_files:
        # A partial (or a pull's lock) in use by a pull of another process is never deleted.
        lock = None
        if path.suffix in (".partial", ".lock") and path.parent == get_paths().partials:
            lock = FileLock(path.with_suffix(".lock"))
            if not lock.try_acquire():
                lock.release()
                continue
        try:
            size = path.stat().st_size
            path.unlink()
            freed += size
        except FileNotFoundError:
            pass
        finally:
            if lock is not None:
                if path.suffix == ".partial":
                    lock.remove()
                lock.release()
    return freed

