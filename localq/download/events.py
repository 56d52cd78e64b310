"""Progress of a pull: the events a display receives, and the measure of a transfer's rate.

``PullEvent`` is what ``on_progress`` receives (the CLI draws it with rich or
prints it, ``--json`` writes it, the app's Downloads screen shows it);
``Progress`` counts bytes per file and for the whole pull and emits them one at
a time from the transfer threads; ``RateMeter`` measures the rate and the time
left over the last few seconds.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from localq.hub import RemoteFile

PROGRESS_EVERY_S = 0.1       # at most this often per file
RATE_WINDOW_S = 3.0          # rates are measured over the last few seconds

ProgressCallback = Callable[["PullEvent"], None]


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


class Progress:
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
