"""One file of a pull: from the store, the Hugging Face cache or the Hub, resumed and verified.

``Fetcher.fetch`` reuses a blob the store holds, links a verified copy from the
Hugging Face cache, or downloads into ``partials/<key>.partial`` under the
file's lock: continuing with an HTTP ``Range`` request from what is there,
retrying dropped connections and 5xx answers with backoff, hashing as the
bytes arrive, and moving the verified file into the blob store.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from pathlib import Path

from localq.download.body import Body, file_size, write_all, write_behind
from localq.download.events import Progress
from localq.download.hashing import Hasher
from localq.download.locks import FileLock
from localq.download.rate import RateLimiter
from localq.errors import BadModelFile, HubError, LocalqError, StoreError
from localq.hub import PullPlan, RemoteFile, hub_error, is_hub_failure, is_retryable, request_headers, status_of
from localq.paths import get_paths, hf_cache_root
from localq.store import blobs
from localq.units import size

BACKOFF_S = 0.5              # first wait before a retry; doubles up to BACKOFF_MAX_S
BACKOFF_MAX_S = 30.0
CHUNK = 1024 * 1024          # read size of a transfer
WRITEBACK_EVERY = 16 * 1024 * 1024  # start writing received bytes to disk every this many
CONNECT_TIMEOUT_S = 20.0
READ_TIMEOUT_S = 60.0        # a connection silent this long is dropped and retried

_mb = size  # the bytes in messages, in the one convention of localq.units


class Cancelled(Exception):
    """The pull was interrupted (Ctrl-C) or another file failed."""


def partial_path(remote: RemoteFile) -> Path:
    """Where a file's bytes collect while it downloads."""
    return get_paths().partials / f"{remote.key}.partial"


def discard_partial(remote: RemoteFile) -> bool:
    """Delete ``remote``'s partial download unless a pull (any process) is writing it; True when deleted."""
    folder = get_paths().partials
    if not folder.is_dir():
        return True
    lock = FileLock(folder / f"{remote.key}.lock")
    try:
        if not lock.try_acquire():
            return False
        partial_path(remote).unlink(missing_ok=True)
        lock.remove()
        return True
    finally:
        lock.release()


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


def blob_present(remote: RemoteFile) -> bool:
    if not remote.sha256:
        return False
    path = blobs.blob_path(remote.sha256)
    return path.is_file() and path.stat().st_size == remote.size


class Fetcher:
    """Fetches the files of one plan into the blob store."""

    def __init__(self, plan: PullPlan, progress: Progress, *, retries: int, limiter: RateLimiter | None):
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
        if blob_present(remote):
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
        lock = FileLock(partials / f"{remote.key}.lock")
        told = False
        try:
            while not lock.try_acquire():
                if not told:
                    self.progress.emit("waiting", remote, message="another localq process is downloading this file")
                    told = True
                if self.cancel.wait(0.2):
                    raise Cancelled()
        except OSError as exc:
            raise blobs.storage_error(exc, f"the lock file {lock.path}") from exc
        try:
            if blob_present(remote):  # the other process finished it
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
        hasher = Hasher(remote)
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

    def _fill(self, remote: RemoteFile, path: Path, out, hasher: Hasher) -> None:
        """Append the rest of the file to its partial, retrying dropped connections and 5xx with backoff."""
        offset = self._prepare(out, path, hasher, remote)
        self.progress.set_done(remote, offset, "start", status="resume" if offset else "new")
        failures, wait = 0, BACKOFF_S
        while offset < remote.size:
            if self.cancel.is_set():
                raise Cancelled()
            before = offset
            try:
                offset = self._transfer(remote, out, hasher, offset)
            except (Cancelled, LocalqError):
                raise
            except Exception as exc:
                if not is_hub_failure(exc):
                    raise
                if not is_retryable(exc):
                    raise hub_error(exc, self.plan.repo_id, revision=self.plan.revision, path=remote.path) from exc
                offset = file_size(out)
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
                    raise Cancelled()
                wait = min(wait * 2, BACKOFF_MAX_S)
        try:
            os.fsync(out.fileno())
        except OSError as exc:
            raise _disk_error(exc, remote, offset) from exc

    def _prepare(self, out, path: Path, hasher: Hasher, remote: RemoteFile) -> int:
        """Hash what a partial already holds; returns the offset to continue from."""
        offset = file_size(out)
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

    def _transfer(self, remote: RemoteFile, out, hasher: Hasher, offset: int) -> int:
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
            body = Body(response)
            block = CHUNK if self.limiter is None else max(16 * 1024, min(CHUNK, int(self.limiter.rate / 8)))
            flushed = dropped = offset
            while offset < remote.size:
                # What has arrived, up to a block; a dropped connection loses nothing received.
                chunk = body.read(block)
                if not chunk:
                    raise ConnectionResetError(f"the connection closed at byte {offset} of {remote.size}")
                if self.cancel.is_set():
                    raise Cancelled()
                if offset + len(chunk) > remote.size:
                    raise BadModelFile(f"{remote.path} from {self.plan.repo_id} is longer than the Hub says", "run the same command to download it again")
                if self.limiter is not None:
                    self.limiter.take(len(chunk), self.cancel)
                try:
                    write_all(out, chunk)
                except OSError as exc:
                    raise _disk_error(exc, remote, file_size(out)) from exc
                hasher.update(chunk)
                offset += len(chunk)
                if offset - flushed >= WRITEBACK_EVERY:
                    write_behind(out, dropped, offset)
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
