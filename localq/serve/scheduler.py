"""One worker thread and one bounded FIFO queue per loaded model.

A model writes one reply at a time, so requests to it wait in order. The
queue holds at most ``max_queue`` waiting requests besides the running one; one
more is refused with ``QueueFull`` (the server answers 429 with
``Retry-After``). A request whose client went away is dropped from the queue, or,
when it is running, cancelled: ``Session.cancel`` stops the reply within a token.

Events cross from the worker thread to the event loop through a ``Channel``:
the worker appends to a list and wakes the loop at most once until the loop has
taken what is there, so a fast model costs one wake-up per batch of tokens, not
one per token.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable

from localq.errors import LocalqError

log = logging.getLogger("localq.serve")


class QueueFull(LocalqError):
    """The model's queue is full; ``retry_after`` is a guess of the seconds until there is room."""

    def __init__(self, message: str, hint: str, retry_after: int):
        super().__init__(message, hint)
        self.retry_after = retry_after


class ModelGone(LocalqError):
    """The model was unloaded (``localq stop``, shutdown) while the request waited."""


class Channel:
    """Items from one worker thread to one coroutine, in order, in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._items: list = []
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._wake_pending = False

    def put(self, item) -> None:
        """Called from the worker thread."""
        with self._lock:
            self._items.append(item)
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed: the server is stopping
            pass

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._ready.set()

    async def get(self) -> list:
        """Every item that arrived since the last call (waits for at least one)."""
        while True:
            with self._lock:
                if self._items:
                    items, self._items = self._items, []
                    return items
                self._ready.clear()
            await self._ready.wait()


class Job:
    """One request's work on a model: ``work(session, job)`` runs on the model's worker thread.

    ``work`` sends what it produces with ``job.send``; an exception it raises
    is sent too, as ``("error", exc)``, and the channel always ends with ``END``.
    """

    END = ("end", None)

    def __init__(self, work: Callable, loop: asyncio.AbstractEventLoop, label: str = ""):
        self.work = work
        self.channel = Channel(loop)
        self.cancelled = threading.Event()
        self.label = label
        self.state = "new"          # new -> queued -> running -> done

    def send(self, item) -> None:
        self.channel.put(item)


class ModelQueue:
    """The FIFO queue and worker thread of one loaded model."""

    def __init__(self, session, name: str, max_queue: int, on_idle: Callable[[], None] | None = None):
        self.session = session
        self.name = name
        self.max_queue = max_queue
        self.on_idle = on_idle
        self._waiting: deque[Job] = deque()
        self._current: Job | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._mean_job_s = 5.0
        self.jobs_done = 0
        self._thread = threading.Thread(target=self._run, name=f"localq-model-{name}", daemon=True)
        self._thread.start()

    # --- the event loop's side

    def submit(self, job: Job) -> None:
        """Queue ``job`` after the others, or raise QueueFull."""
        with self._cond:
            if self._stopping:
                raise ModelGone(f"{self.name} is being unloaded", "send the request again")
            if len(self._waiting) >= self.max_queue:
                retry = max(1, math.ceil(self._mean_job_s * (len(self._waiting) + 1)))
                n = len(self._waiting)
                raise QueueFull(f"{self.name} has {n} request{'s' if n != 1 else ''} waiting already (the limit)",
                                f"retry in about {retry} s, or start the server with a larger --max-queue", retry)
            job.state = "queued"
            self._waiting.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """Drop ``job`` from the queue, or stop it if it is running. Safe at any time, from any thread."""
        job.cancelled.set()
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
                job.state = "done"
                job.send(Job.END)
                return
            running = self._current is job
        if running:
            self.session.cancel()

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._waiting)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> bool:
        return self._current is not None

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new jobs, end the waiting ones with ModelGone, cancel the running one, join the thread."""
        with self._cond:
            self._stopping = True
            dropped = list(self._waiting)
            self._waiting.clear()
            current = self._current
            self._cond.notify_all()
        for job in dropped:
            job.state = "done"
            job.send(("error", ModelGone(f"{self.name} was unloaded", "send the request again")))
            job.send(Job.END)
        if current is not None:
            current.cancelled.set()
            self.session.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # --- the worker thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if not self._waiting:
                    return
                job = self._current = self._waiting.popleft()
                job.state = "running"
            started = time.monotonic()
            try:
                if not job.cancelled.is_set():
                    job.work(self.session, job)
            except LocalqError as exc:
                job.send(("error", exc))
            except Exception as exc:  # a bug or a library failure: the log gets the traceback, the client a line
                log.exception("request on %s failed", self.name)
                job.send(("error", LocalqError(f"internal error: {type(exc).__name__}", "see the server's log")))
            finally:
                elapsed = time.monotonic() - started
                with self._cond:
                    self._current = None
                    job.state = "done"
                    self.jobs_done += 1
                    self._mean_job_s = 0.8 * self._mean_job_s + 0.2 * elapsed
                    idle = not self._waiting
                job.send(Job.END)
                if idle and self.on_idle is not None:
                    self.on_idle()
