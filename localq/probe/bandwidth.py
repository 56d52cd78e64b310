"""Main-memory bandwidth: a short measurement, stored in the index and reused.

Decoding one token reads every weight once, so tokens/s on a CPU is bounded by
memory bandwidth, and the recommender's speed estimates start from it. The
measurement copies a 128 MiB array into another (a STREAM-style copy: the
bytes read plus the bytes written, over the time), with one thread and with
several (one core rarely saturates a server's memory channels). Each thread
count is timed several times and gives the median of its runs (one lucky or
unlucky copy on a busy machine moves a median little, a best-of a lot); the
result is the better of the medians (``summarize``). It takes well under a second on an ordinary machine; the
first copy, which also maps the pages, is not counted.

The result is stored per machine (``HardwareProfile.machine_key``) in the
index's ``hardware_profiles`` table, so later probes read it back instead of
measuring. Reading uses plain sqlite3, read-only (about a millisecond); only a
new measurement opens the index through ``localq.store.db``.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import time
from pathlib import Path

ARRAY_BYTES = 128 * 2**20
TIMED_COPIES = 5          # per thread count
MAX_THREADS = 16
TIME_BUDGET_S = 0.8       # stop early on a slow machine


def measure_bandwidth(array_bytes: int = ARRAY_BYTES, threads: int | None = None) -> float:
    """Measured copy bandwidth in GB/s (bytes read + bytes written, per second)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    threads = max(1, min(threads or os.cpu_count() or 1, MAX_THREADS))
    start = time.perf_counter()
    src = np.ones(array_bytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # maps dst's pages; not timed
    moved = 2 * src.nbytes
    samples: dict[int, list[float]] = {}

    def timed(copy, n: int) -> None:
        t = time.perf_counter()
        copy()
        samples.setdefault(n, []).append(moved / (time.perf_counter() - t) / 1e9)

    for _ in range(TIMED_COPIES):
        timed(lambda: np.copyto(dst, src), 1)
    if threads > 1:
        bounds = [(i * len(src) // threads, (i + 1) * len(src) // threads) for i in range(threads)]
        with ThreadPoolExecutor(threads) as pool:  # numpy releases the GIL while copying
            def parallel_copy():
                list(pool.map(lambda b: np.copyto(dst[b[0]:b[1]], src[b[0]:b[1]]), bounds))

            for _ in range(TIMED_COPIES):
                if time.perf_counter() - start > TIME_BUDGET_S:
                    break
                timed(parallel_copy, threads)
    return summarize(samples)


def summarize(samples: dict[int, list[float]]) -> float:
    """GB/s from timed copies per thread count: the best thread count's median run."""
    import statistics

    return round(max(statistics.median(runs) for runs in samples.values() if runs), 1)


def load_bandwidth(index_db: Path, machine_key: str) -> tuple[float, str] | None:
    """The stored bandwidth for this machine and when it was measured, or None."""
    if not Path(index_db).is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{index_db}?mode=ro", uri=True, timeout=1.0)
        try:
            row = conn.execute(
                "SELECT bandwidth_gbps, measured FROM hardware_profiles WHERE machine_key = ?",
                (machine_key,),
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:  # no table yet, a locked or damaged index: measure instead
        return None
    if not row or row[0] is None:
        return None
    return float(row[0]), str(row[1])


def store_bandwidth(machine_key: str, bandwidth_gbps: float, profile: dict) -> str:
    """Record this machine's profile and bandwidth in the index; returns the timestamp."""
    from localq.store.db import open_index

    measured = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    db = open_index()
    try:
        db["hardware_profiles"].upsert(
            {
                "machine_key": machine_key,
                "profile": json.dumps(profile, sort_keys=True),
                "bandwidth_gbps": bandwidth_gbps,
                "measured": measured,
            },
            pk="machine_key",
        )
    finally:
        db.conn.close()
    return measured
