"""Main-memory bandwidth: a short measurement.

Decoding one token reads every weight once, so tokens/s on a CPU is bounded by
memory bandwidth, and the recommender's speed estimates start from it. The
measurement copies a 128 MiB array into another (a STREAM-style copy: the
bytes read plus the bytes written, over the time), with one thread and with
several (one core rarely saturates a server's memory channels). Each thread
count is timed several times and gives the median of its runs (one lucky or
unlucky copy on a busy machine moves a median little, a best-of a lot); the
result is the better of the medians (``summarize``). It takes well under a second on an ordinary machine; the
first copy, which also maps the pages, is not counted.

The probe only measures. Storing the figure per machine, and reading it back
so later probes need not measure, is ``localq.machine``'s job (the index's
``hardware_profiles`` table, ``localq.store.profiles``).
"""

from __future__ import annotations

import time

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
