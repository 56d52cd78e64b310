"""The Downloads section: the app's pulls (``localq.tui.pulls``) and the last ones recorded.

Each row is a pull of this session (progress bar, bytes, rate, ETA, state) or
the newest recorded pull of a reference (``store.pulls.recent_pulls``), so a
pull stopped by quitting or a failure from yesterday shows too. Space pauses or
resumes, ``x`` cancels (and deletes the partial files), ``r`` retries, ``l``
limits the rate of new and resumed pulls.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from localq.errors import LocalqError
from localq.tui.pulls import PullChanged
from localq.tui.screens.base import SectionScreen, index_db, show_error
from localq.units import rate as rate_text
from localq.units import size

BAR_WIDTH = 16


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """``██████░░░░ 63%``."""
    share = min(1.0, done / total) if total else 0.0
    filled = int(share * width)
    return "█" * filled + "░" * (width - filled) + f" {share:4.0%}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


STATE_STYLES = {"done": "green", "failed": "red", "paused": "yellow", "cancelled": "dim", "queued": "dim"}


class DownloadsScreen(SectionScreen):
    """Pulls of this session and the last ones recorded: progress, rate, ETA, state."""

    SECTION = "downloads"
    TITLE_TEXT = "Downloads"
    BINDINGS = [
        Binding("space", "pause_resume", "pause/resume", tooltip="pause or resume the selected pull"),
        Binding("x", "cancel", "cancel", tooltip="cancel the selected pull and delete its partial files"),
        Binding("r", "retry", "retry", tooltip="retry the selected pull"),
        Binding("l", "limit", "limit rate", tooltip="limit the download rate of new and resumed pulls"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.history: list[dict] = []

    def compose_body(self) -> ComposeResult:
        table = DataTable(id="downloads-table", cursor_type="row")
        table.add_columns("MODEL", "PROGRESS", "BYTES", "RATE", "ETA", "STATE")
        yield table
        yield Static("", id="downloads-detail", markup=False)

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.load_history()

    def index_changed(self) -> None:
        self.load_history()

    def load_history(self) -> None:
        self.run_worker(self._read_history, thread=True, exclusive=True, group="downloads-history")

    def _read_history(self) -> None:
        from localq.download import recent_pulls

        try:
            with index_db() as db:
                rows = recent_pulls(db)
        except LocalqError as exc:
            self.app.call_from_thread(show_error, self.app, exc)
            return
        self.app.call_from_thread(self._show_history, rows)

    def _show_history(self, rows: list[dict]) -> None:
        self.history = rows
        self.redraw()

    def redraw(self) -> None:
        table = self.query_one(DataTable)
        selected = self.selected_ref()
        table.clear()
        jobs = list(self.app.pulls.jobs.values())
        refs = {j.ref for j in jobs}
        for job in reversed(jobs):
            self._add(table, job.ref, job.done, job.total, job.rate if job.state == "running" else None,
                      job.eta if job.state == "running" else None, job.state, job.error)
        for row in self.history:
            if row["ref"] in refs:
                continue
            state = "interrupted" if row["status"] == "cancelled" and row["error"] == "interrupted" else row["status"]
            self._add(table, row["ref"], row["done"] or 0, row["total"] or 0, None, None, state, row["error"])
        if selected is not None and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected))
        self.show_detail()

    def _add(self, table, ref, done, total, rate, eta, state, error) -> None:
        label = Text(state, style=STATE_STYLES.get(state, ""))  # a failure's reason is in the detail below
        table.add_row(
            ref, bar(done, total), f"{size(done)} / {size(total)}",
            rate_text(rate) if rate else "—", duration(eta), label, key=ref,
        )

    def selected_ref(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def show_detail(self) -> None:
        ref = self.selected_ref()
        detail = self.query_one("#downloads-detail", Static)
        job = self.app.pulls.job_for(ref) if ref else None
        if ref is None:
            detail.update("No pulls yet. Find a model in Discover (2) and press p to pull it.")
        elif job is not None:
            lines = [f"── {job.ref}"]
            if job.message:
                lines.append(job.message)
            if job.error:
                lines.append(job.error)
            if job.variant:
                lines.append(f"installed as {job.variant}: press 1 for Models")
            detail.update("\n".join(lines))
        else:
            row = next((r for r in self.history if r["ref"] == ref), None)
            detail.update(f"── {ref}\n{(row or {}).get('error') or ''}")

    def on_data_table_row_highlighted(self) -> None:
        self.show_detail()

    def on_pull_changed(self, message: PullChanged) -> None:
        self.redraw()

    # --- actions ------------------------------------------------------------------

    def action_pause_resume(self) -> None:
        ref = self.selected_ref()
        if ref is None:
            return
        job = self.app.pulls.job_for(ref)
        if job is not None and job.active:
            self.app.pulls.pause(job)
        else:
            self.app.start_pull(ref)

    def action_cancel(self) -> None:
        ref = self.selected_ref()
        job = self.app.pulls.job_for(ref) if ref else None
        if job is not None:
            self.app.pulls.cancel(job)

    def action_retry(self) -> None:
        ref = self.selected_ref()
        job = self.app.pulls.job_for(ref) if ref else None
        if ref is not None and (job is None or not job.active):
            self.app.start_pull(ref)

    def action_limit(self) -> None:
        from localq.tui.screens.dialogs import PromptDialog

        current = self.app.pulls.max_rate

        def answered(values: dict | None) -> None:
            from localq.download import parse_rate

            if values is None:
                return
            try:
                self.app.pulls.max_rate = parse_rate(values["rate"] or None)
            except LocalqError as exc:
                show_error(self.app, exc)
                return
            rate = self.app.pulls.max_rate
            self.notify(f"new and resumed pulls limited to {rate_text(rate)}" if rate else "no rate limit",
                        timeout=3)

        self.app.push_screen(PromptDialog(
            "Limit the download rate", [("rate", "Rate (like 500K, 5M; empty: no limit)", "no limit")],
            values={"rate": f"{current:.0f}" if current else ""},
        ), answered)
