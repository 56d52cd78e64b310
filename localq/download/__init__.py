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

The modules, one job each: ``orchestrate`` (the whole pull), ``transfer`` (one
file: resume, retries, verification, the move into the store), ``body`` (the
HTTP body reader and the writes), ``hashing``, ``locks`` (the per-file lock),
``rate`` (``--max-rate`` and its token bucket), ``events`` (progress events and
rate measurement). The ``pulls`` table is ``localq.store.pulls``.
"""

from localq.download.events import ProgressCallback, PullEvent, RateMeter
from localq.download.orchestrate import (
    DEFAULT_RETRIES, PullResult, check_free_space, pull, recent_pulls, recover_stale_pulls,
)
from localq.download.rate import RateLimiter, parse_rate
from localq.download.transfer import discard_partial, partial_path

__all__ = [
    "DEFAULT_RETRIES", "ProgressCallback", "PullEvent", "PullResult", "RateLimiter", "RateMeter",
    "check_free_space", "discard_partial", "parse_rate", "partial_path", "pull", "recent_pulls", "recover_stale_pulls",
]
