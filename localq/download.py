"""Pulling models: resumable, verified, rate-limited downloads into the blob store.

``pull(ref)`` resolves the reference (``localq.hub``), fetches every file the
plan names and records the variant in the index. What each step guarantees:

- **Resume.** A file downloads into ``partials/<key>.partial``, where the key
  is its sha256 (or git blob id for small files kept in git), so a later
  process, after a crash, Ctrl-C or a dropped connection, finds it and asks for
  the rest with an HTTP ``Range`` request. Bytes are only ever appended, so a
  partial is always a prefix of the file.
- **Verification.** The sha256 is computed as the bytes arrive (a resumed
  partial's prefix is hashed first) and compared with the Hub's LFS sha256
  before the file goes anywhere; small git files are checked against their git
  blob id. A mismatch deletes the partial and says so.
- **Fast.** huggingface_hub's HEAD finds where the bytes are (the Hub's
  redirect to its CDN; the token never leaves the Hub); the body is read with
  the standard library in blocks of up to 1 MB (over HTTPS, the 16 KB TLS
  records that have arrived are gathered into one block) and hashed on a
  thread of its own. Every 16 MB the kernel is asked to start writing the new
  bytes to disk and to drop from its page cache those it wrote a step before,
  so the fsync before the move is short and a pull keeps a few tens of MB of
  page cache however big the file (see ``_write_behind``). From the loopback
  Hub this is faster than curl (benchmarks/bench_pull.py).
- **Atomic.** A verified, fsynced partial is renamed into ``blobs/sha256-<hex>``
  (``store.blobs.add_file``); the index is written in one transaction after
  every file is in place, so an interrupted pull never leaves a variant that
  points at missing files.
- **Two pulls at once.** Each partial has a lock file (``flock``); the second
  process waits, then finds the finished blob and downloads nothing. Nothing
  else depends on the lock: blobs are written by rename.
- **Already there.** A blob with the file's sha256 is reused; a file in the
  Hugging Face cache (``HF_HUB_CACHE``/``HF_HOME``) is hashed and hardlinked
  (copied across filesystems), since huggingface_hub does not check what it
  stored.
- **Network trouble.** 5xx answers and dropped connections are retried with
  exponential backoff, resuming from the bytes already on disk; ``retries``
  is how many retries in a row may fail (an attempt that moved forward starts
  the count again; 0 gives up at the first failure). 401/403 and 404 fail at
  once with what to do.
- **Disk.** Free space is checked before anything is fetched (needed against
  free); a disk that fills mid-way (ENOSPC, EDQUOT, EFBIG) is reported as such
  and the partial is kept for a resume.
- **Bandwidth.** ``max_rate`` (bytes/s) is one token bucket shared by all the
  files of a pull; the parts of a split set download in parallel.

Progress is a stream of :class:`PullEvent` passed to ``on_progress`` (from
worker threads, one call at a time): the CLI draws them with rich or prints
them, ``--json`` writes them one per line, the TUI posts them to its widgets.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from localq.errors import (
    BadModelFile,
    HubError,
    InvalidReference,
    LocalqError,
    StoreError,
)
from localq.hub import (
    PullPlan,
    RemoteFile,
    hub_error,
    is_hub_failure,
    is_retryable,
    offline_mode,
    request_headers,
    resolve,
    status_of,
)
from localq.names import ModelRef, parse
from localq.paths import get_paths, hf_cache_root
from localq.store import blobs
from localq.store.index import FileEntry, Variant, add_variant, find, list_variants
from localq.store.migrations import now
from localq.units import size

DEFAULT_RETRIES = 5          # retries in a row that may fail before a file gives up
BACKOFF_S = 0.5              # first wait before a retry; doubles up to BACKOFF_MAX_S
BACKOFF_MAX_S = 30.0
PARALLEL_FILES = 4           # files (split parts, safetensors shards) fetched at once
CHUNK = 1024 * 1024          # read size of a transfer
TLS_RECORD = 16 * 1024       # the most one read of an HTTPS body returns (see _Body)
WRITEBACK_EVERY = 16 * 1024 * 1024  # start writing received bytes to disk every this many
CONNECT_TIMEOUT_S = 20.0
READ_TIMEOUT_S = 60.0        # a connection silent this long is dropped and retried
PROGRESS_EVERY_S = 0.1       # at most this often per file
RATE_WINDOW_S = 3.0          # rates are measured over the last few seconds

ProgressCallback = Callable[["PullEvent"], None]


# --- events ------------------------------------------------------------------


@dataclass(frozen=True)
class PullEvent:
    """One step of a pull, for progress displays and ``--json``.

    ``event`` is one of:
    ``plan`` (what will be fetched: ``plan`` holds it, ``total`` its bytes),
    ``start`` (a file begins; ``status`` is ``new`` or ``resume``, ``done`` the bytes already kept),
    ``progress`` (``done``/``total`` bytes of ``file``, its ``rate`` in bytes/s and ``eta`` in s),
    ``retry`` (``message`` says why, ``eta`` is the wait),
    ``waiting`` (another process is fetching the same file),
    ``verify`` (a file found in the Hugging Face cache is being hashed),
    ``file_done`` (``status``: ``downloaded``, ``present`` in the store, ``linked`` from the HF cache;
    ``sha256`` once verified),
    ``done`` (``status``: ``pulled``, ``up to date`` or ``installed`` when offline; ``variant`` is its ref).
    ``overall_done``/``overall_total`` count the bytes of the whole pull.
    """

    event: str
    file: str | None = None
    done: int = 0
    total: int = 0
    rate: float = 0.0
    eta: float | None = None
    overall_done: int = 0
    overall_total: int = 0
    status: str | None = None
    message: str | None = None
    variant: str | None = None
    sha256: str | None = None
    plan: dict | None = None

    def to_dict(self) -> dict:
        """The event as a JSON-ready dict, leaving out fields it does not use."""
        return {k: v for k, v in asdict(self).items() if v is not None and v != {} and not (k == "rate" and not v)}


class RateMeter:
    """A transfer's rate over the last few seconds, and the time it still needs.

    ``add(done)`` records the bytes done so far; ``rate`` is measured from the
    oldest sample in the window (at least two kept), so a stall shows at once
    and a burst does not. The pull's progress events and the app's Downloads
    screen both measure with it.
    """

    def __init__(self, window_s: float = RATE_WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self.clock = clock
        self.samples: deque[tuple[float, int]] = deque()

    def restart(self, done: int) -> None:
        """Start measuring afresh from ``done`` bytes (a resume, a restart from zero)."""
        self.samples = deque([(self.clock(), done)])

    def add(self, done: int) -> None:
        now_s = self.clock()
        self.samples.append((now_s, done))
        while len(self.samples) > 2 and now_s - self.samples[0][0] > self.window_s:
            self.samples.popleft()

    @property
    def rate(self) -> float:
        """Bytes per second over the window (0 before two samples)."""
        if len(self.samples) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def eta(self, total: int) -> float | None:
        """Seconds left to ``total`` bytes at the current rate; None while the rate is unknown."""
        rate = self.rate
        return (total - self.samples[-1][1]) / rate if rate > 0 else None


class _Progress:
    """Counts bytes per file and for the pull, and calls the callback one event at a time."""

    def __init__(self, callback: ProgressCallback | None, total: int):
        self.callback = callback
        self.lock = threading.Lock()
        self.total = total
        self.done_by_file: dict[str, int] = {}
        self.meters: dict[str, RateMeter] = {}
        self.last_emit: dict[str, float] = {}

    @property
    def overall_done(self) -> int:
        return sum(self.done_by_file.values())

    def emit(self, event: str, remote: RemoteFile | None = None, **fields) -> None:
        with self.lock:
            self._emit(event, remote, **fields)

    def _emit(self, event: str, remote: RemoteFile | None, **fields) -> None:
        if self.callback is None:
            return
        if remote is not None:
            fields.setdefault("done", self.done_by_file.get(remote.path, 0))
            fields.setdefault("total", remote.size)
        self.callback(PullEvent(
            event, file=remote.path if remote else None, overall_done=self.overall_done,
            overall_total=self.total, **fields,
        ))

    def set_done(self, remote: RemoteFile, done: int, event: str | None = None, **fields) -> None:
        """Record that ``done`` bytes of a file are on disk; emit ``event`` if given."""
        with self.lock:
            self.done_by_file[remote.path] = done
            self.meters.setdefault(remote.path, RateMeter()).restart(done)
            if event:
                self._emit(event, remote, **fields)

    def advance(self, remote: RemoteFile, done: int) -> None:
        """A transfer reached ``done`` bytes; emits a throttled ``progress`` event."""
        with self.lock:
            now_s = time.monotonic()
            self.done_by_file[remote.path] = done
            meter = self.meters.setdefault(remote.path, RateMeter())
            meter.add(done)
            if done < remote.size and now_s - self.last_emit.get(remote.path, 0.0) < PROGRESS_EVERY_S:
                return
            self.last_emit[remote.path] = now_s
            rate, eta = meter.rate, meter.eta(remote.size)
            self._emit("progress", remote, done=done, rate=round(rate, 1), eta=None if eta is None else round(eta, 1))


# --- results -----------------------------------------------------------------


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


# --- rates -------------------------------------------------------------------

_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?b)?(/s)?\s*$", re.IGNORECASE)


def parse_rate(text: str | float | None) -> float | None:
    """Bytes per second from ``500K``, ``5M``, ``1.5MB/s``, ``2G`` or a plain number.

    As curl's ``--limit-rate``: K, M and G are powers of 1024.
    """
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        rate = float(text)
    else:
        match = _RATE_RE.match(text)
        if not match:
            raise InvalidReference(f"cannot read the rate {text!r}", "write it like 500K, 5M or 1.5MB/s")
        rate = float(match[1]) * 1024 ** "_kmg".index(match[2].lower() or "_")
    if rate <= 0:
        raise InvalidReference(f"the rate must be above zero, not {text!r}", "write it like 500K or 5M")
    return rate


class RateLimiter:
    """A token bucket: ``take(n)`` waits until ``n`` more bytes fit under the rate."""

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = rate
        self.capacity = burst if burst is not None else max(rate / 4, 16 * 1024)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int, cancel: threading.Event | None = None) -> None:
        with self.lock:
            now_s = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now_s - self.stamp) * self.rate)
            self.stamp = now_s
            self.tokens -= n  # may go below zero: the debt is the wait
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            (cancel or threading.Event()).wait(wait)


# --- locks -------------------------------------------------------------------


class _FileLock:
    """An exclusive lock on a file (flock; msvcrt on Windows), released when the process dies."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = None

    def try_acquire(self) -> bool:
        """True when taken; False when another process holds it; StoreError when it cannot be taken at all.

        Only "held" answers wait: a filesystem that has no locks (ENOLCK on some
        network mounts) is reported, not waited on for ever.
        """
        self.handle = self.handle or open(self.path, "a+b")
        try:
            if os.name == "nt":
                import msvcrt

                msvcrt.locking(self.handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                # The holder before us may have removed the file: a lock on that
                # unlinked inode excludes no one, so take the new file's instead.
                try:
                    current = os.stat(self.path).st_ino
                except FileNotFoundError:
                    current = None
                if current != os.fstat(self.handle.fileno()).st_ino:
                    self.release()
                    return False
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK):
                return False
            self.release()
            raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}",
                             "the filesystem may not support file locks (a network mount?); "
                             "set LOCALQ_HOME to a local disk") from exc
        return True

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing releases the lock
            self.handle = None

    def remove(self) -> None:
        """Delete the lock file while holding it (POSIX; Windows cannot delete open files)."""
        if os.name != "nt":
            self.path.unlink(missing_ok=True)


class _Cancelled(Exception):
    """The pull was interrupted (Ctrl-C) or another file failed."""


# --- one file ----------------------------------------------------------------


def partial_path(remote: RemoteFile) -> Path:
    """Where a file's bytes collect while it downloads."""
    return get_paths().partials / f"{remote.key}.partial"


def _hf_cache_blob(repo_id: str, remote: RemoteFile) -> Path | None:
    """The file in the Hugging Face cache, where that cache names LFS blobs by their sha256."""
    if not remote.sha256:
        return None
    org, _, name = repo_id.partition("/")
    path = hf_cache_root() / f"models--{org}--{name}" / "blobs" / remote.sha256
    try:
        return path if path.is_file() and path.stat().st_size == remote.size else None
    except OSError:
        return None


def _blob_present(remote: RemoteFile) -> bool:
    if not remote.sha256:
        return False
    path = blobs.blob_path(remote.sha256)
    return path.is_file() and path.stat().st_size == remote.size


class _Hasher:
    """The sha256 of a file (and its git blob id when that is what the Hub gives),
    computed on a thread of its own so that hashing overlaps the network and the
    disk (hashlib releases the GIL on large buffers)."""

    def __init__(self, remote: RemoteFile):
        self.remote = remote
        self.thread = None
        self.reset()

    def reset(self) -> None:
        """Start again from zero bytes."""
        self.close()
        self.sha256 = hashlib.sha256()
        self.git = hashlib.sha1(b"blob %d\0" % self.remote.size) if not self.remote.sha256 else None
        self.queue: queue.Queue = queue.Queue(maxsize=16)
        self.thread = threading.Thread(target=self._run, daemon=True, name="localq-hash")
        self.thread.start()

    def _run(self) -> None:
        while (data := self.queue.get()) is not None:
            self.sha256.update(data)
            if self.git is not None:
                self.git.update(data)

    def update(self, data: bytes) -> None:
        self.queue.put(data)

    def close(self) -> None:
        """Stop the hashing thread after the bytes it was given."""
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
            self.thread = None

    def check(self, repo_id: str) -> str:
        """The sha256 if the bytes are the Hub's; else BadModelFile."""
        self.close()
        got = self.sha256.hexdigest()
        if self.remote.sha256:
            expected, actual, kind = self.remote.sha256, got, "sha256"
        else:
            expected, actual, kind = self.remote.git_oid, self.git.hexdigest(), "git blob id"
        if expected and actual != expected:
            raise BadModelFile(
                f"{self.remote.path} from {repo_id} is corrupt: its {kind} is {actual[:16]}..., the Hub says "
                f"{expected[:16]}...; the partial download was removed",
                "run the same command to download it again",
            )
        return got


class _Fetcher:
    """Fetches the files of one plan into the blob store."""

    def __init__(self, plan: PullPlan, progress: _Progress, *, retries: int, limiter: RateLimiter | None):
        import urllib.request

        self.plan = plan
        self.progress = progress
        self.retries = retries
        self.limiter = limiter
        self.cancel = threading.Event()
        # Honours HTTP(S)_PROXY, as huggingface_hub does; the token never follows a redirect off the Hub.
        self.opener = urllib.request.build_opener(_hub_only_redirects(plan.endpoint))
        self.downloaded = 0
        self.count_lock = threading.Lock()

    def fetch(self, remote: RemoteFile) -> tuple[str, str]:
        """(sha256, how) for one file: how is downloaded, present or linked."""
        if _blob_present(remote):
            self.progress.set_done(remote, remote.size, "file_done", status="present")
            return remote.sha256, "present"
        linked = self._link_from_hf_cache(remote)
        if linked:
            return linked, "linked"
        partials = get_paths().partials
        try:
            partials.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise blobs.storage_error(exc, f"the partial downloads folder {partials}") from exc
        lock = _FileLock(partials / f"{remote.key}.lock")
        told = False
        try:
            while not lock.try_acquire():
                if not told:
                    self.progress.emit("waiting", remote, message="another localq process is downloading this file")
                    told = True
                if self.cancel.wait(0.2):
                    raise _Cancelled()
        except OSError as exc:
            raise blobs.storage_error(exc, f"the lock file {lock.path}") from exc
        try:
            if _blob_present(remote):  # the other process finished it
                sha, how = remote.sha256, "present"
                self.progress.set_done(remote, remote.size, "file_done", status="present")
            else:
                sha, how = self._download(remote), "downloaded"
            # Safe to remove while held: whoever waits on it then finds the blob and stops.
            lock.remove()
            return sha, how
        finally:
            lock.release()

    def _link_from_hf_cache(self, remote: RemoteFile) -> str | None:
        cached = _hf_cache_blob(self.plan.repo_id, remote)
        if cached is None:
            return None
        self.progress.emit("verify", remote, message=f"hashing the copy in the Hugging Face cache ({cached})")
        if blobs.sha256_file(cached) != remote.sha256:
            return None  # a damaged cache file: download instead
        sha, _ = blobs.add_file(cached, remote.sha256, link=True)
        self.progress.set_done(remote, remote.size, "file_done", status="linked")
        return sha

    def _download(self, remote: RemoteFile) -> str:
        """Fetch one file into its partial (continuing what is there), verify it, move it into the store."""
        path = partial_path(remote)
        try:
            out = open(path, "ab", buffering=0)  # unbuffered: what was received is on disk
        except OSError as exc:
            raise blobs.storage_error(exc, f"the partial download {path}") from exc
        hasher = _Hasher(remote)
        try:
            with out:
                self._fill(remote, path, out, hasher)
            sha = hasher.check(self.plan.repo_id)
        except BadModelFile:
            path.unlink(missing_ok=True)
            raise
        finally:
            hasher.close()
        blobs.add_file(path, sha, move=True)
        self.progress.set_done(remote, remote.size, "file_done", status="downloaded", sha256=sha)
        return sha

    def _fill(self, remote: RemoteFile, path: Path, out, hasher: _Hasher) -> None:
        """Append the rest of the file to its partial, retrying dropped connections and 5xx with backoff."""
        offset = self._prepare(out, path, hasher, remote)
        self.progress.set_done(remote, offset, "start", status="resume" if offset else "new")
        failures, wait = 0, BACKOFF_S
        while offset < remote.size:
            if self.cancel.is_set():
                raise _Cancelled()
            before = offset
            try:
                offset = self._transfer(remote, out, hasher, offset)
            except (_Cancelled, LocalqError):
                raise
            except Exception as exc:
                if not is_hub_failure(exc):
                    raise
                if not is_retryable(exc):
                    raise hub_error(exc, self.plan.repo_id, revision=self.plan.revision, path=remote.path) from exc
                offset = _size(out)
                # An attempt that moved forward starts a new count.
                failures = 1 if offset > before else failures + 1
                wait = BACKOFF_S if offset > before else wait
                if failures > self.retries:
                    attempts = f"{failures} failed attempts" if failures > 1 else "a failed attempt"
                    raise HubError(
                        f"gave up on {remote.path} after {attempts} in a row ({_describe(exc)}); "
                        f"{_mb(offset)} of {_mb(remote.size)} are kept",
                        "run the same command to resume",
                    ) from exc
                self.progress.emit("retry", remote, done=offset, eta=wait, message=_describe(exc))
                if self.cancel.wait(wait):
                    raise _Cancelled()
                wait = min(wait * 2, BACKOFF_MAX_S)
        try:
            os.fsync(out.fileno())
        except OSError as exc:
            raise _disk_error(exc, remote, offset) from exc

    def _prepare(self, out, path: Path, hasher: _Hasher, remote: RemoteFile) -> int:
        """Hash what a partial already holds; returns the offset to continue from."""
        offset = _size(out)
        if offset > remote.size:
            out.truncate(0)
            return 0
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK * 4):
                hasher.update(chunk)
        return offset

    def _locate(self, remote: RemoteFile) -> tuple[str, dict[str, str]]:
        """Where the bytes are, and the headers to ask with.

        huggingface_hub's HEAD follows the Hub's own redirects and stops at the
        one to its CDN; the token is sent only to the Hub, never to the CDN.
        """
        from huggingface_hub import get_hf_file_metadata

        meta = get_hf_file_metadata(remote.url, endpoint=self.plan.endpoint, timeout=CONNECT_TIMEOUT_S)
        headers = request_headers()
        if _origin(meta.location) != _origin(self.plan.endpoint):
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        return meta.location, headers

    def _transfer(self, remote: RemoteFile, out, hasher: _Hasher, offset: int) -> int:
        """One GET from ``offset`` to the end (or until the connection drops); returns the new offset.

        The body is read with the standard library in large blocks: several
        times faster than a 64 KB-at-a-time client, and what sets the pace
        against curl.
        """
        import urllib.error
        import urllib.request

        url, headers = self._locate(remote)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = self.opener.open(urllib.request.Request(url, headers=headers), timeout=READ_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset >= remote.size:
                return offset
            raise
        with response:
            if offset and response.status == 200:  # the server ignored the Range: start over
                out.truncate(0)
                hasher.reset()
                offset = 0
                self.progress.set_done(remote, 0)
            elif response.status == 206:
                start = _range_start(response.headers.get("Content-Range"))
                if start != offset:
                    raise HubError(f"the server answered {remote.path} from byte {start}, not {offset}", "try again later")
            body = _Body(response)
            block = CHUNK if self.limiter is None else max(16 * 1024, min(CHUNK, int(self.limiter.rate / 8)))
            flushed = dropped = offset
            while offset < remote.size:
                # What has arrived, up to a block; a dropped connection loses nothing received.
                chunk = body.read(block)
                if not chunk:
                    raise ConnectionResetError(f"the connection closed at byte {offset} of {remote.size}")
                if self.cancel.is_set():
                    raise _Cancelled()
                if offset + len(chunk) > remote.size:
                    raise BadModelFile(f"{remote.path} from {self.plan.repo_id} is longer than the Hub says", "run the same command to download it again")
                if self.limiter is not None:
                    self.limiter.take(len(chunk), self.cancel)
                try:
                    _write_all(out, chunk)
                except OSError as exc:
                    raise _disk_error(exc, remote, _size(out)) from exc
                hasher.update(chunk)
                offset += len(chunk)
                if offset - flushed >= WRITEBACK_EVERY:
                    _write_behind(out, dropped, offset)
                    dropped, flushed = flushed, offset
                with self.count_lock:
                    self.downloaded += len(chunk)
                self.progress.advance(remote, offset)
        return offset


def _hub_only_redirects(hub: str):
    """A redirect handler that drops ``Authorization`` on a redirect to any origin but the Hub's.

    urllib copies every header of a request onto its redirected GET; a Hub that
    redirects to a CDN (or anywhere) would receive the user's token otherwise.
    """
    import urllib.request

    class HubOnlyRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None and _origin(newurl) != _origin(hub):
                for name in [k for k in new.headers if k.lower() == "authorization"]:
                    del new.headers[name]
                new.unredirected_hdrs = {k: v for k, v in new.unredirected_hdrs.items()
                                         if k.lower() != "authorization"}
            return new

    return HubOnlyRedirects()


def _origin(url: str) -> tuple[str, str, int | None]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class _Body:
    """Reads a response body in blocks of what has arrived, up to a size.

    Over plain HTTP one ``read1`` takes all that the socket holds. Over HTTPS
    one read returns one TLS record, 16 KB at most: a loop around it would pay
    its per-block costs (a write, a hand-over to the hashing thread, a progress
    update) some 60 times per MB, which made localq several times slower than
    curl over HTTPS. So when a read is that small and the socket already has
    more, the records that have arrived are read on into one block. It reads on
    only while the socket has bytes ready, so a stalled connection does not hold
    back what was received, and a failing read keeps what came before it.
    """

    def __init__(self, response):
        self.response = response
        self.ready = _readiness(response)

    def read(self, most: int) -> bytes | bytearray:
        """What has arrived, up to ``most`` bytes (waiting only for the first); empty at the end."""
        first = self.response.read1(most)
        if not 0 < len(first) <= TLS_RECORD or len(first) == most or not self.ready():
            return first
        block = bytearray(most)
        n = len(first)
        block[:n] = first
        while n < most and self.ready():
            try:
                more = self._read_into(memoryview(block)[n:])
            except OSError:
                break  # what was read is kept; the next read meets the failure again
            if not more:
                break
            n += more
        del block[n:]
        return block

    def _read_into(self, view: memoryview) -> int:
        """One read (one system call at most) into ``view``, keeping http.client's count of bytes left."""
        response = self.response
        fp = response.fp
        if fp is None:
            return 0
        if response.chunked or not hasattr(fp, "readinto1"):
            data = response.read1(len(view))
            view[:len(data)] = data
            return len(data)
        if response.length is not None:
            view = view[:response.length]
        n = fp.readinto1(view)
        if response.length is not None:
            response.length -= n
        return n


def _readiness(response) -> Callable[[], bool]:
    """A check that the response's socket has bytes to read now (always False when it cannot tell)."""
    import select

    try:
        fd = response.fp.fileno()
    except (AttributeError, OSError, ValueError):
        return lambda: False
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return lambda: bool(poller.poll(0))
    return lambda: bool(select.select([fd], [], [], 0)[0])


def _write_behind(out, start: int, end: int) -> None:
    """Start writing the received bytes up to ``end`` to disk, and drop from the
    page cache those from ``start`` that are on disk already (Linux; elsewhere a
    no-op).

    ``posix_fadvise(DONTNEED)`` starts the writeback of the dirty pages in its
    range and drops the clean ones. Called every :data:`WRITEBACK_EVERY` bytes
    from where the previous call began, it starts the newest stretch and drops
    the one before, written out since. So the fsync at the end finds little to
    do, and a pull holds a few tens of MB of page cache whatever the size of
    the file: it does not push out what other programs have cached, and the
    kernel reuses the pages it just dropped for the next bytes. That matters on
    virtual machines, where filling fresh page cache with 1 MB writes can cost
    several times the copy itself (the large blocks of free memory they need
    have often been handed back to the host): on a 2-core virtual machine about
    one pull in four that kept the whole file cached took 1.5 to 3 times as
    long as usual. The price: the first load of a just-pulled model reads it
    from disk rather than from memory.
    """
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(out.fileno(), start, end - start, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def _size(out) -> int:
    """Bytes in an open partial (its write position may lag after a truncate)."""
    return os.fstat(out.fileno()).st_size


def _write_all(out, data: bytes) -> None:
    """Write every byte (a raw file may take fewer; the next write then says why)."""
    view = memoryview(data)
    while view:
        written = out.write(view)
        view = view[written:]


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match[1]) if match else None


def _disk_error(exc: OSError, remote: RemoteFile, kept: int) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        why = "the file size limit was reached" if exc.errno == errno.EFBIG else "the disk is full"
        return StoreError(
            f"{why} while downloading {remote.path}: {_mb(kept)} of {_mb(remote.size)} written",
            "free some space (or move the cache with LOCALQ_HOME) and run the same command to resume",
        )
    return blobs.storage_error(exc, f"the partial download of {remote.path}", remote.size)


def _describe(exc: BaseException) -> str:
    status = status_of(exc)
    if status:
        return f"the server answered {status}"
    return f"connection dropped: {type(exc).__name__}" + (f": {exc}" if str(exc) else "")


_mb = size  # the bytes in messages, in the one convention of localq.units


# --- the whole pull ----------------------------------------------------------


def check_free_space(plan: PullPlan) -> int:
    """Bytes this plan still needs on disk; StoreError when the disk has less free."""
    needed = 0
    for remote in plan.files:
        if _blob_present(remote):
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
    ``choose_quant`` overrides the recommender when ``ref`` names no quant.
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
        plan = resolve(ref, revision=revision, choose_quant=choose_quant)
    except HubError as exc:
        installed = find(db, ref) if getattr(exc, "unreachable", False) and revision is None else []
        if not installed:
            raise
        # No network, but the model is here: say so, as --offline would, and why it was not checked.
        from localq.hub import endpoint, public_address

        note = f"cannot reach {public_address(endpoint())}: not checked for a newer revision"
        if on_progress:
            on_progress(PullEvent("done", status="installed", variant=installed[0].ref, message=note))
        return PullResult(installed[0], "installed", note=note)
    progress = _Progress(on_progress, plan.size)
    progress.emit("plan", total=plan.size, plan=plan.to_dict(), message=plan.reason or None)
    current = _installed(db, plan)
    if current is not None:
        progress.emit("done", status="up to date", variant=current.ref, done=0, total=plan.size)
        return PullResult(current, "up to date", plan, elapsed=time.monotonic() - started)
    check_free_space(plan)
    recover_stale_pulls(db)
    pull_id = _record_start(db, plan)
    held = _pull_lock(pull_id)    # held while this process runs the pull: how others tell it is alive
    fetcher = _Fetcher(plan, progress, retries=retries, limiter=RateLimiter(rate) if rate else None)
    try:
        held.try_acquire()
        results = _fetch_all(fetcher, plan)
        variant = _index(db, plan, results)
    except KeyboardInterrupt:
        _record_end(db, pull_id, "cancelled", fetcher.progress.overall_done, "interrupted")
        raise
    except LocalqError as exc:
        _record_end(db, pull_id, "failed", fetcher.progress.overall_done, exc.one_line())
        raise
    except Exception as exc:   # any failure: the row says so, the partial files stay for a resume
        _record_end(db, pull_id, "failed", fetcher.progress.overall_done, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        held.remove()
        held.release()
    _record_end(db, pull_id, "done", plan.size, None)
    hows = {remote.path: how for remote, (_, how) in zip(plan.files, results)}
    reused = sum(r.size for r in plan.files if hows[r.path] != "downloaded")
    result = PullResult(variant, "pulled", plan, fetcher.downloaded, reused, time.monotonic() - started, hows)
    progress.emit("done", status="pulled", variant=variant.ref, done=fetcher.downloaded, total=plan.size,
                  rate=round(fetcher.downloaded / result.elapsed, 1) if result.elapsed else 0.0)
    return result


def _fetch_all(fetcher: _Fetcher, plan: PullPlan) -> list[tuple[str, str]]:
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
    real = [e for e in errors if not isinstance(e, _Cancelled)]
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


def _record_start(db, plan: PullPlan) -> int:
    from localq.store.db import write_transaction

    files = [{"path": f.path, "size": f.size, "sha256": f.sha256, "key": f.key} for f in plan.files]
    with write_transaction(db):
        cursor = db.execute(
            "INSERT INTO pulls (ref, repo, revision, files, status, bytes_total, bytes_done, started)"
            " VALUES (?, ?, ?, ?, 'running', ?, 0, ?)",
            [plan.ref, plan.repo_id, plan.revision, json.dumps(files), plan.size, now()],
        )
    return cursor.lastrowid


def _record_end(db, pull_id: int, status: str, done: int, error: str | None) -> None:
    from localq.store.db import write_transaction

    with write_transaction(db):
        db.execute(
            "UPDATE pulls SET status = ?, bytes_done = ?, error = ?, finished = ? WHERE id = ?",
            [status, done, error, now(), pull_id],
        )


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
    row = db.execute(
        "SELECT files FROM pulls WHERE ref = ? AND status != 'done' ORDER BY id DESC LIMIT 1", [ref_text]
    ).fetchone()
    if not row:
        return None
    files = json.loads(row[0] or "[]")
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


# --- the pulls table ------------------------------------------------------------------


def _pull_lock(pull_id: int) -> _FileLock:
    """The lock a running pull holds for its whole run (``partials/pull-ID.lock``)."""
    folder = get_paths().partials
    folder.mkdir(parents=True, exist_ok=True)
    return _FileLock(folder / f"pull-{pull_id}.lock")


def recover_stale_pulls(db) -> int:
    """Mark ``interrupted`` the pulls recorded as running whose process is gone; return how many.

    A pull killed with SIGKILL (or a power cut) cannot record its end. Its
    lock is released by the kernel with the process, so a running row whose
    lock can be taken has no process behind it. Its partial files stay: the
    next ``localq pull`` of the reference continues them.
    """
    from localq.store.db import write_transaction

    rows = db.execute("SELECT id FROM pulls WHERE status = 'running'").fetchall()
    if not rows or not get_paths().partials.parent.exists():
        return 0
    stale = []
    for (pull_id,) in rows:
        lock = _pull_lock(pull_id)
        try:
            if lock.try_acquire():
                stale.append(pull_id)
                lock.remove()
        except StoreError:
            continue
        finally:
            lock.release()
    if stale:
        with write_transaction(db):
            for pull_id in stale:
                db.execute("UPDATE pulls SET status = 'interrupted', error = ? WHERE id = ? AND status = 'running'",
                           ["the process running it stopped; pull again to resume", pull_id])
    return len(stale)


def discard_partial(remote: RemoteFile) -> bool:
    """Delete ``remote``'s partial download unless a pull (any process) is writing it; True when deleted."""
    folder = get_paths().partials
    if not folder.is_dir():
        return True
    lock = _FileLock(folder / f"{remote.key}.lock")
    try:
        if not lock.try_acquire():
            return False
        partial_path(remote).unlink(missing_ok=True)
        lock.remove()
        return True
    finally:
        lock.release()


def unfinished_pull_blobs(db) -> set[str]:
    """sha256 of the files of pulls not finished (the newest row of each reference): not orphans."""
    rows = db.execute(
        "SELECT files FROM pulls p WHERE id = (SELECT MAX(id) FROM pulls WHERE ref = p.ref)"
        " AND status NOT IN ('done', 'cancelled')"
    ).fetchall()
    found = set()
    for (files,) in rows:
        try:
            found |= {f["sha256"] for f in json.loads(files or "[]") if isinstance(f, dict) and f.get("sha256")}
        except (ValueError, TypeError):
            continue
    return found


def mark_pull(db, ref: str, status: str, error: str | None = None) -> None:
    """Record ``status`` on the newest pulls row of ``ref`` (``pull`` wrote it as interrupted); the app's pause and cancel use it."""
    from localq.store.db import write_transaction

    with write_transaction(db):
        db.execute(
            "UPDATE pulls SET status = ?, error = ? WHERE id = (SELECT MAX(id) FROM pulls WHERE ref = ?)",
            [status, error, ref],
        )


def pulls_to_resume(db) -> list[str]:
    """References whose newest pull was stopped by quitting the app (``queued``): resumed at start."""
    rows = db.execute(
        "SELECT ref, status FROM pulls p WHERE id = (SELECT MAX(id) FROM pulls WHERE ref = p.ref) ORDER BY id"
    ).fetchall()
    return [ref for ref, status in rows if status == "queued"]


def recent_pulls(db, limit: int = 50) -> list[dict]:
    """The newest pull of each reference, newest first: ref, status, bytes, error."""
    try:
        recover_stale_pulls(db)
    except LocalqError:
        pass  # a read-only index still lists what it has
    rows = db.execute(
        "SELECT ref, status, bytes_done, bytes_total, error, started FROM pulls p"
        " WHERE id = (SELECT MAX(id) FROM pulls WHERE ref = p.ref) ORDER BY id DESC LIMIT ?", [limit],
    ).fetchall()
    return [dict(zip(("ref", "status", "done", "total", "error", "started"), row)) for row in rows]
