"""What every section screen shares: the top bar, the footer, index access and error reporting.

Slow work (hashing, probing, loading a model, downloading) runs in Textual
thread workers. A worker opens its own connection to the index with
``index_db()`` (a SQLite connection belongs to one thread at a time) and hands
results back to the UI thread with ``app.call_from_thread``. A ``LocalqError``
raised in a worker becomes an error notification with the same one line the
CLI prints (``exc.one_line()``).
"""

from __future__ import annotations

from contextlib import contextmanager

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from localq.errors import LocalqError
from localq.tui.widgets.topbar import NavBar, TopBar


@contextmanager
def index_db():
    """A connection to the index for the calling thread, closed afterwards."""
    from localq.store.db import open_index

    db = open_index()
    try:
        yield db
    finally:
        db.close()


def show_error(app, exc: BaseException) -> None:
    """Show ``exc`` as an error notification, in the CLI's words; call from the UI thread."""
    text = exc.one_line() if isinstance(exc, LocalqError) else f"{type(exc).__name__}: {exc}"
    app.notify(text, title="error", severity="error", timeout=8)


def report_error(app, exc: BaseException) -> None:
    """``show_error`` from a worker thread."""
    app.call_from_thread(show_error, app, exc)


NARROW_COLUMNS = 120


class SectionScreen(Screen):
    """A top-level section: top bar, navigation, the section's body, the footer."""

    SECTION = ""          # the mode key in localq.tui.navigation.SECTIONS
    TITLE_TEXT = ""       # shown after "localq ─"

    def compose(self) -> ComposeResult:
        yield TopBar(self.TITLE_TEXT)
        yield NavBar(self.SECTION)
        yield from self.compose_body()
        yield Footer()

    def on_resize(self, event) -> None:
        """Below 120 columns the footer packs its keys tighter and leaves ctrl+p (in the help) out."""
        footer = self.query_one(Footer)
        narrow = event.size.width < NARROW_COLUMNS
        footer.compact = narrow
        footer.show_command_palette = not narrow

    def compose_body(self) -> ComposeResult:
        """The section's own widgets, between the navigation and the footer."""
        yield from ()
