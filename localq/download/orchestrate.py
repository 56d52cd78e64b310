"""A whole pull: resolve the reference, fetch every file the plan names, index the variant.

Checks the free space first, records the pull in the ``pulls`` table
(``store.pulls``), fetches the files on a few threads (``transfer.Fetcher``)
and writes the index in one transaction once every file is in place. Offline
(or with the Hub unreachable), an installed model is answered from the index.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from localq.download.events import ProgressCallback, Progress, PullEvent
from localq.download.locks import FileLock
from localq.download.rate import RateLimiter, parse_rate
from localq.download.transfer import Cancelled, Fetcher, _mb, blob_present, partial_path
from localq.errors import BadModelFile, HubError, InvalidReference, LocalqError, StoreError
from localq.hub import PullPlan, offline_mode, resolve
from localq.names import ModelRef, parse
from localq.paths import get_paths
from localq.store import blobs
from localq.store import pulls as pulls_table
from localq.store.index import FileEntry, Variant, add_variant, find, list_variants
from localq.store.migrations import now
from localq.units import size

DEFAULT_RETRIES = 5          # retries in a row that may fail before a file gives up
PARALLEL_FILES = 4           # files (split parts, safetensors shards) fetched at once


@dataclass
class PullResult:
    """What a pull did."""

    variant: Variant
    status: str                   # "pulled", "up to date", "installed" (offline)
    plan: PullPlan | None = None
    downloaded: int = 0           # bytes fetched by this process
    reused: int = 0               # bytes found in the store or the HF cache
    elapsed: float = 0.0
    files: dict[str, str] = field(default_factory=dict)  # path -> downloaded/present/linked
    note: str = "offline: not checked against the Hub"  # for "installed": why the Hub was not asked

    def to_dict(self) -> dict:
        return {
            "ref": self.variant.ref, "status": self.status, "model": self.variant.model,
            "quant": self.variant.quant, "format": self.variant.format, "size": self.variant.size,
            "revision": self.variant.revision, "downloaded": self.downloaded, "reused": self.reused,
            "elapsed": round(self.elapsed, 3), "files": self.files, "path": str(self.variant.main_path),
        }


def recommended_quant(model, quants: dict[str, int]) -> tuple[str, str, str] | None:
    """The quant a pull takes when none is named: the recommender's choice for this machine.

    ``model`` is the catalog entry (None for a repository the catalog does not
    know: then None, and the Hub's fallback decides). The recommender's errors,
    such as no offered quant fitting this machine, or no quant it can size among
    those offered, stop the pull.
    """
    if model is None:
        return None
    from localq.calibration import local_speeds
    from localq.machine import machine_profile
    from localq.recommend import choose_quant_for_pull

    profile = machine_profile()   # what localq bench measured here counts, as in `localq recommend`
    chosen = choose_quant_for_pull(profile, model, sorted(quants, key=lambda q: quants[q]),
                                   speeds=local_speeds(profile, model.ref))
    if not isinstance(chosen, str) or not chosen:
        from localq.hub import fallback_quant

        raise HubError(f"the recommender found no quant of {model.ref} among {', '.join(sorted(quants))}",
                       f"name one, e.g. {model.ref}-{fallback_quant(quants)}")
    quant = chosen.lower()
    return quant, "recommended", f"{quant.upper()}: the best fit for this machine (see `localq recommend {model.ref}`)"


def check_free_space(plan: PullPlan) -> int:
    """Bytes this plan still needs on disk; StoreError when the disk has less free."""
    needed = 0
    for remote in plan.files:
        if blob_present(remote):
            continue
        partial = partial_path(remote)
        needed += remote.size - (partial.stat().st_size if partial.is_file() else 0)
    where = get_paths().data
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise StoreError(
            f"not enough disk space for {plan.ref}: it needs {size(needed)}, {size(free)} free in {where}",
            "free some space, or move the cache with LOCALQ_HOME",
        )
    return needed


def pull(
    ref: ModelRef | str,
    *,
    db=None,
    revision: str | None = None,
    max_rate: float | str | None = None,
    offline: bool | None = None,
    retries: int = DEFAULT_RETRIES,
    on_progress: ProgressCallback | None = None,
    choose_quant: Callable | None = None,
) -> PullResult:
    """Download a model (every file its quant needs) into the store and index it.

    ``offline`` (default: ``HF_HUB_OFFLINE``) answers from the index only.
    ``max_rate`` caps the bandwidth (bytes/s, or text like ``5M``).
    When ``ref`` names no quant, ``choose_quant`` picks it (see ``hub.resolve``);
    by default the recommender does, for this machine (``recommended_quant``).
    Raises LocalqError subclasses with what to do; KeyboardInterrupt leaves the
    partial downloads for the next pull and the index as it was.
    """
    started = time.monotonic()
    ref = parse(ref) if isinstance(ref, str) else ref
    if db is None:
        from localq.store.db import open_index

        db = open_index()
    if offline is None:
        offline = offline_mode()
    if offline:
        return _pull_offline(db, ref, on_progress)
    rate = parse_rate(max_rate)
    try:
        plan = resolve(ref, revision=revision, choose_quant=choose_quant or recommended_quant)
    except HubError as exc:
        installed = find(db, ref) if getattr(exc, "unreachable", False) and revision is None else []
        if not installed:
            raise
        # No network, but the model is here: say so, as --offline would, and why it was not checked.
        from localq.hub import endpoint

        note = f"cannot reach {endpoint()}: not checked for a newer revision"
        if on_progress:
            on_progress(PullEvent("done", status="installed", variant=installed[0].ref, message=note))
        return PullResult(installed[0], "installed", note=note)
    progress = Progress(on_progress, plan.size)
    progress.emit("plan", total=plan.size, plan=plan.to_dict(), message=plan.reason or None)
    current = _installed(db, plan)
    if current is not None:
        progress.emit("done", status="up to date", variant=current.ref, done=0, total=plan.size)
        return PullResult(current, "up to date", plan, elapsed=time.monotonic() - started)
    check_free_space(plan)
    recover_stale_pulls(db)
    files = [{"path": f.path, "size": f.size, "sha256": f.sha256, "key": f.key} for f in plan.files]
    pull_id = pulls_table.record_start(db, plan.ref, plan.repo_id, plan.revision, files, plan.size)
    held = _pull_lock(pull_id)    # held while this process runs the pull: how others tell it is alive
    fetcher = Fetcher(plan, progress, retries=retries, limiter=RateLimiter(rate) if rate else None)
    try:
        held.try_acquire()
        results = _fetch_all(fetcher, plan)
        variant = _index(db, plan, results)
    except KeyboardInterrupt:
        pulls_table.record_end(db, pull_id, "cancelled", fetcher.progress.overall_done, "interrupted")
        raise
    except LocalqError as exc:
        pulls_table.record_end(db, pull_id, "failed", fetcher.progress.overall_done, exc.one_line())
        raise
    except Exception as exc:   # any failure: the row says so, the partial files stay for a resume
        pulls_table.record_end(db, pull_id, "failed", fetcher.progress.overall_done, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        held.remove()
        held.release()
    pulls_table.record_end(db, pull_id, "done", plan.size, None)
    hows = {remote.path: how for remote, (_, how) in zip(plan.files, results)}
    reused = sum(r.size for r in plan.files if hows[r.path] != "downloaded")
    result = PullResult(variant, "pulled", plan, fetcher.downloaded, reused, time.monotonic() - started, hows)
    progress.emit("done", status="pulled", variant=variant.ref, done=fetcher.downloaded, total=plan.size,
                  rate=round(fetcher.downloaded / result.elapsed, 1) if result.elapsed else 0.0)
    return result


def _fetch_all(fetcher: Fetcher, plan: PullPlan) -> list[tuple[str, str]]:
    """Fetch the plan's files on a few daemon threads while the caller's thread waits.

    Daemon threads, so that Ctrl-C ends the process at once even while a read
    blocks; what they received is on disk already (unbuffered appends). The
    first failure stops the other files; their partials are kept.
    """
    pending = list(enumerate(plan.files))
    results: dict[int, tuple[str, str]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        while not fetcher.cancel.is_set():
            with lock:
                if not pending:
                    return
                index, remote = pending.pop(0)
            try:
                results[index] = fetcher.fetch(remote)
            except BaseException as exc:  # handed to the caller's thread below
                errors.append(exc)
                fetcher.cancel.set()
                return

    threads = [threading.Thread(target=worker, daemon=True, name=f"localq-pull-{i}")
               for i in range(min(PARALLEL_FILES, len(plan.files)))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        fetcher.cancel.set()
        for thread in threads:
            thread.join(1.0)
        raise
    real = [e for e in errors if not isinstance(e, Cancelled)]
    if real:
        raise real[0]
    if errors or len(results) != len(plan.files):
        raise KeyboardInterrupt()
    return [results[i] for i in range(len(plan.files))]


def _installed(db, plan: PullPlan) -> Variant | None:
    """The installed variant this plan would produce, when it is already whole at this commit."""
    for v in list_variants(db):
        if (v.model, v.quant, v.format) == (plan.model, plan.quant, plan.format) and v.revision == plan.revision:
            if all(blobs.blob_path(f.sha256).is_file() for f in v.files) and len(v.files) == len(plan.files):
                return v
    return None


def _index(db, plan: PullPlan, results: list[tuple[str, str]]) -> Variant:
    files = [FileEntry(remote.relpath, sha, remote.size) for remote, (sha, _) in zip(plan.files, results)]
    architecture, parameters = plan.architecture, plan.parameters
    quant, warning = plan.quant, None
    if plan.format == "gguf":
        from localq.gguf_info import read_gguf_info

        infos = []
        for entry in files:
            try:
                infos.append(read_gguf_info(blobs.blob_path(entry.sha256)))
            except BadModelFile as exc:
                raise BadModelFile(f"{entry.relpath} from {plan.repo_id} is not a usable GGUF: {exc.message}", exc.hint) from exc
        architecture = infos[0].architecture or architecture
        parameters = sum(i.parameter_count for i in infos) or parameters
        from localq.quant_label import label

        held = label(infos[0], plan.files[0].relpath)   # labelled by what the file holds
        if held.quant != quant:
            quant = held.quant
            warning = held.warning or f"asked for {plan.quant.upper()}, the file holds {held.quant.upper()}"
        else:
            warning = held.warning
    elif plan.format == "mlx":
        _check_mlx_files(plan, files)
    return add_variant(
        db,
        model=plan.model,
        source_kind=plan.source_kind,
        catalog_ref=plan.catalog_ref,
        quant=quant,
        format=plan.format,
        files=files,
        architecture=architecture,
        parameters=parameters,
        source=plan.repo_url,
        revision=plan.revision,
        provenance={
            "pulled_from": plan.repo_url, "repo": plan.repo_id, "revision": plan.revision,
            "files": [f.path for f in plan.files], "ref": plan.ref, "quant_choice": plan.choice,
            "reason": plan.reason, "pulled": now(),
            **({"quant_warning": warning, "requested_quant": plan.quant} if warning else {}),
        },
    )


def _check_mlx_files(plan: PullPlan, files: list[FileEntry]) -> None:
    """An MLX repository's files, laid out under their names, must be a model directory MLX can load."""
    from types import SimpleNamespace

    from localq.mlx_info import read_model_dir
    from localq.store.materialize import materialize

    directory = materialize(SimpleNamespace(files=files, ref=plan.ref))
    try:
        read_model_dir(directory, name=plan.repo_id)
    except BadModelFile as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise BadModelFile(f"{plan.repo_id} is not a usable MLX model: {exc.message}", exc.hint) from exc


def _pull_offline(db, ref: ModelRef, on_progress: ProgressCallback | None) -> PullResult:
    """Offline: the installed variant the reference names, or an error saying what is missing."""
    if ref.kind == "path":
        raise InvalidReference(f"{ref.path!r} is a file, not a model to pull", f"index it with `localq import {ref.path}`")
    found = find(db, ref)
    if found:
        if on_progress:
            on_progress(PullEvent("done", status="installed", variant=found[0].ref,
                                  message="offline: the installed copy, not checked against the Hub"))
        return PullResult(found[0], "installed")
    text = ref.format()
    others = sorted(v.ref for v in find(db, ref.model)) if ref.quant else []
    message = f"offline: {text} is not installed"
    kept = _partial_bytes(db, text)
    if kept:
        message += f" ({_mb(kept[0])} of {_mb(kept[1])} downloaded so far)"
    hint = f"connect to the network and run `localq pull {text}` (without --offline or HF_HUB_OFFLINE=1)"
    if others:
        hint += "; installed: " + ", ".join(others)
    raise HubError(message, hint)


def _partial_bytes(db, ref_text: str) -> tuple[int, int] | None:
    """(bytes kept, bytes total) of the last unfinished pull of this reference, if any."""
    files = pulls_table.unfinished_files(db, ref_text)
    if files is None:
        return None
    kept = total = 0
    for f in files:
        total += f["size"]
        sha = f.get("sha256")
        if sha and blobs.blob_path(sha).is_file():
            kept += f["size"]
            continue
        partial = get_paths().partials / f"{f['key']}.partial"
        kept += partial.stat().st_size if partial.is_file() else 0
    return (kept, total) if kept else None


def _pull_lock(pull_id: int) -> FileLock:
    """The lock a running pull holds for its whole run (``partials/pull-ID.lock``)."""
    folder = get_paths().partials
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / f"pull-{pull_id}.lock")


def recover_stale_pulls(db) -> int:
    """Mark ``interrupted`` the pulls recorded as running whose process is gone; return how many.

    A pull killed with SIGKILL (or a power cut) cannot record its end. Its
    lock is released by the kernel with the process, so a running row whose
    lock can be taken has no process behind it. Its partial files stay: the
    next ``localq pull`` of the reference continues them.
    """
    ids = pulls_table.running_pulls(db)
    if not ids or not get_paths().partials.parent.exists():
        return 0
    stale = []
    for pull_id in ids:
        lock = _pull_lock(pull_id)
        try:
            if lock.try_acquire():
                stale.append(pull_id)
                lock.remove()
        except StoreError:
            continue
        finally:
            lock.release()
    pulls_table.mark_interrupted(db, stale, "the process running it stopped; pull again to resume")
    return len(stale)


def recent_pulls(db, limit: int = 50) -> list[dict]:
    """The newest pull of each reference, newest first, with killed pulls first marked ``interrupted``."""
    try:
        recover_stale_pulls(db)
    except LocalqError:
        pass  # a read-only index still lists what it has
    return pulls_table.recent_pulls(db, limit)
