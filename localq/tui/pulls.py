"""The app's pulls: ``PullManager`` starts, pauses, resumes and cancels them; the Downloads screen shows them.

It belongs to the app, not to a screen, so pulls go on whichever section is
open. Each pull is ``download.pull`` (the function ``localq pull`` calls) on
its own thread, reporting through its ``on_progress`` callback; every event
updates the job and posts a ``PullChanged`` message that the Downloads screen
draws (a bar, bytes, rate, ETA, state).

Pause, cancel and quit stop a pull the way Ctrl-C stops ``localq pull``: the
progress callback raises ``StopPull`` (a ``KeyboardInterrupt``), so
``download.pull`` keeps the partial files for a resume and records the pull as
interrupted; this module then records why in the pulls table: ``paused`` (space
resumes it, here or after a restart), ``cancelled`` (its partial files are
deleted) or ``queued`` (the app quit mid-pull: the next start resumes it).
Resuming is pulling again: the download continues from the partial file with an
HTTP Range request.

Why plain daemon threads instead of Textual workers here: quitting must never
wait on the network. A Textual thread worker is joined when the app exits, and
a stalled connection would hold the exit for up to the read timeout; a daemon
thread is not. Quitting asks each pull to stop, gives them a moment, and marks
what is left ``queued`` itself.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from textual.message import Message

from localq.errors import LocalqError
from localq.tui.screens.base import index_db, show_error

ACTIVE = ("queued", "starting", "running", "verifying")


class StopPull(KeyboardInterrupt):
    """Raised in a pull's progress callback to stop it like Ctrl-C (partials kept)."""


@dataclass
class PullJob:
    """One pull as the app sees it."""

    id: int
    ref: str
    state: str = "queued"          # queued, starting, running, verifying, done, failed, paused, cancelled
    done: int = 0
    total: int = 0
    rate: float = 0.0
    eta: float | None = None
    error: str | None = None
    message: str | None = None
    variant: str | None = None
    files: list[dict] = field(default_factory=list)   # the plan's files: path, size, sha256
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = ""
    thread: threading.Thread | None = None
    meter: object = None           # localq.download.RateMeter of the running pull
    last_post: float = 0.0
    int4_plan: object = None       # quantize.pull_source.Int4Pull: the source pulled, then quantized here

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


class PullChanged(Message):
    """A pull's job changed (progress or state)."""

    def __init__(self, job: PullJob) -> None:
        super().__init__()
        self.job = job


# --- the manager --------------------------------------------------------------------


class PullManager:
    """The app's pulls: start, pause, resume, cancel; their progress as messages to the app."""

    def __init__(self, app) -> None:
        self.app = app
        self.jobs: dict[int, PullJob] = {}
        self.max_rate: float | None = None
        self._next_id = 1

    def job_for(self, ref: str) -> PullJob | None:
        return next((j for j in self.jobs.values() if j.ref == ref), None)

    def start(self, ref: str, int4_plan=None) -> PullJob:
        """Pull ``ref`` (resuming it if it was stopped before); one job per reference.

        ``int4_plan``: the plan of an ``int4-`` reference the user agreed to
        (``LocalqApp.start_pull`` asks); one resumed after a restart is planned
        again in the pull's thread.
        """
        job = self.job_for(ref)
        if job is not None and job.active:
            return job
        if job is None:
            job = PullJob(self._next_id, ref)
            self._next_id += 1
            self.jobs[job.id] = job
        job.state, job.error, job.message, job.stop_reason = "starting", None, None, ""
        job.int4_plan = int4_plan or job.int4_plan
        job.stop = threading.Event()
        job.meter = None
        job.thread = threading.Thread(target=self._run, args=(job,), name=f"localq-tui-pull-{job.id}", daemon=True)
        job.thread.start()
        self._changed(job, force=True)
        return job

    def pause(self, job: PullJob) -> None:
        if job.active:
            job.stop_reason = "paused"
            job.stop.set()

    def cancel(self, job: PullJob) -> None:
        if job.active:
            job.stop_reason = "cancelled"
            job.stop.set()
        elif job.state in ("paused", "failed"):
            self._forget_partials(job)
            self._mark(job.ref, "cancelled", None)
            job.state = "cancelled"
            self._changed(job, force=True)

    def stop_all(self, wait_s: float = 2.0) -> None:
        """On quit: stop every running pull and leave it ``queued`` for the next start."""
        running = [j for j in self.jobs.values() if j.active]
        for job in running:
            job.stop_reason = "quit"
            job.stop.set()
        deadline = time.monotonic() + wait_s
        for job in running:
            if job.thread is not None:
                job.thread.join(max(0.0, deadline - time.monotonic()))
            if job.thread is None or job.thread.is_alive():
                self._mark(job.ref, "queued", None)  # stuck on the network: marked from here

    # --- the pull's thread ----------------------------------------------------------

    def _run(self, job: PullJob) -> None:
        from localq.download import pull
        from localq.quantize import pull_source

        try:
            with index_db() as db:
                if pull_source.wanted(job.ref):
                    result = self._make_int4(job, db)
                else:
                    result = pull(job.ref, db=db, max_rate=self.max_rate, on_progress=lambda e: self._progress(job, e))
        except StopPull:
            reason = job.stop_reason or "paused"
            state = {"quit": "queued"}.get(reason, reason)
            if reason == "cancelled":
                self._forget_partials(job)
            self._mark(job.ref, state, None)
            job.state = state  # last: whoever sees the state sees its record and files settled
        except LocalqError as exc:
            job.state, job.error = "failed", exc.one_line()
            self.app.call_from_thread(show_error, self.app, exc)
        except Exception as exc:  # an unexpected failure is shown, never a crash of the app
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            self.app.call_from_thread(show_error, self.app, exc)
        else:
            job.state, job.variant = "done", result.variant.ref
            job.done = job.total = result.variant.size if not job.total else job.total
            job.message = None
            note = {"up to date": "already up to date", "installed": "already installed", "made": "made"}.get(
                result.status, "pulled")
            self.app.call_from_thread(self.app.notify, f"{note} {result.variant.ref}")
            self.app.call_from_thread(self.app.post_message_to_sections, "index_changed")
        self._changed(job, force=True)

    def _make_int4(self, job: PullJob, db):
        """An ``int4-`` pull: the source downloaded (with progress, stoppable), then quantized here."""
        from localq.quantize import pull_source

        plan = job.int4_plan or pull_source.plan(job.ref, db)

        def say(line: str) -> None:
            job.message = line          # "quantizing ... here": the download's bar stays at its end meanwhile
            self._changed(job, force=True)

        return pull_source.run(plan, db, max_rate=self.max_rate, on_progress=lambda e: self._progress(job, e), say=say)

    def _progress(self, job: PullJob, event) -> None:
        """``on_progress`` of download.pull: update the job; stop the pull if asked."""
        if job.stop.is_set():
            raise StopPull()
        kind = event.event
        if kind == "plan":
            job.total = event.total
            job.files = list((event.plan or {}).get("files", []))
            job.message = event.message
            job.state = "running"
        elif kind == "start":
            job.state = "running"
        elif kind in ("progress", "file_done"):
            job.done = event.overall_done
            job.total = event.overall_total or job.total
            if job.state not in ("running", "verifying"):
                job.state = "running"
            self._measure(job)
        elif kind == "verify":
            job.state = "verifying"
            job.message = f"checking {event.file} found in the Hugging Face cache"
        elif kind == "retry":
            job.message = f"retrying: {event.message}"
        elif kind == "waiting":
            job.message = "another localq process is downloading the same file; waiting"
        self._changed(job, force=kind != "progress")

    def _measure(self, job: PullJob) -> None:
        """The pull's rate over the last few seconds, and its ETA (``download.RateMeter``, as ``localq pull``)."""
        from localq.download import RateMeter

        if job.meter is None:
            job.meter = RateMeter()
        job.meter.add(job.done)
        job.rate, job.eta = job.meter.rate, job.meter.eta(job.total)

    def _changed(self, job: PullJob, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - job.last_post < 0.1:
            return
        job.last_post = now
        self.app.post_message(PullChanged(job))

    def _mark(self, ref: str, status: str, error: str | None) -> None:
        from localq.store.pulls import mark_pull

        try:
            with index_db() as db:
                mark_pull(db, ref, status, error)
        except LocalqError:
            pass  # the pull itself is stopped either way; only its record is stale

    def _forget_partials(self, job: PullJob) -> None:
        """Delete a cancelled pull's partial files (those named by their sha256), unless a pull writes them."""
        from localq.download import discard_partial
        from localq.hub import RemoteFile

        for f in job.files:
            if f.get("sha256"):
                discard_partial(RemoteFile(f["path"], f["size"], f["sha256"], None, ""))
