"""The bandwidth cap of a pull: ``--max-rate`` as text, and the token bucket that holds it."""

from __future__ import annotations

import re
import threading
import time

from localq.errors import InvalidReference

_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?b)?(/s)?\s*$", re.IGNORECASE)


def parse_rate(text: str | float | int | None) -> float | None:
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
