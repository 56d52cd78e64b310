"""A model's metadata, as ``localq show`` prints it: facts, quant mix, chat template.

The GGUF header is read by ``localq.gguf_info.read_gguf_info`` in a thread
worker (the dialog shows "reading…" until it answers); the facts, the quant
mix and the notes are ``localq.views.model``'s, which ``localq show`` prints.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from localq.tui.screens.base import report_error
from localq.views.model import QUANT_MIX_COLUMNS, model_facts, model_notes, quant_mix_rows


class ModelInfoScreen(ModalScreen[None]):
    """Everything the GGUF header says about one installed variant."""

    BINDINGS = [Binding("escape,q,i", "close", "close")]
    CLOSE_ON_SECTION = True  # a section key closes it and opens that section

    def __init__(self, variant) -> None:
        super().__init__(classes="dialog")
        self.variant = variant

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog-box wide", id="info-box"):
            yield Label(f"{self.variant.ref}", classes="dialog-title", markup=False)
            yield Static("reading the GGUF header…", id="info-facts", markup=False)
            yield DataTable(id="info-mix", cursor_type="none", show_cursor=False)
            yield Static("", id="info-notes", markup=False)

    def on_mount(self) -> None:
        self.query_one("#info-mix").display = False
        self.load()

    @work(thread=True, exclusive=True)
    def load(self) -> None:
        from localq.gguf_info import read_gguf_info

        try:
            info = read_gguf_info(self.variant.main_path)
        except Exception as exc:
            report_error(self.app, exc)
            self.app.call_from_thread(self.query_one("#info-facts", Static).update, "could not read this file")
            return
        self.app.call_from_thread(self.show, info)

    def show(self, info) -> None:
        from rich.table import Table
        from rich.text import Text

        facts = Table.grid(padding=(0, 2))
        facts.add_column(style="bold", no_wrap=True)
        facts.add_column(overflow="fold")
        for label, value in model_facts(info, self.variant):
            facts.add_row(label, Text(value))
        self.query_one("#info-facts", Static).update(facts)
        table = self.query_one("#info-mix", DataTable)
        table.add_columns("quant mix", *QUANT_MIX_COLUMNS[1:])
        for row in quant_mix_rows(info):
            table.add_row(*row)
        table.display = True
        self.query_one("#info-notes", Static).update("\n\n".join(model_notes(info)))

    def action_close(self) -> None:
        self.dismiss(None)
