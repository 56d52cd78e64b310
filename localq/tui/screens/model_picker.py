"""A dialog to pick one of the installed models (for switching the chat's model)."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from localq.tui.screens.base import index_db, report_error
from localq.units import size


class ModelPicker(ModalScreen[str | None]):
    """The installed variants; dismisses with the chosen reference, or None."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, current: str | None = None) -> None:
        super().__init__(classes="dialog")
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label("Switch model", classes="dialog-title")
            yield OptionList(id="picker-list")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()
        self.load()

    @work(thread=True, exclusive=True)
    def load(self) -> None:
        from localq.store.index import list_variants

        try:
            with index_db() as db:
                variants = list_variants(db)
        except Exception as exc:
            report_error(self.app, exc)
            return
        self.app.call_from_thread(self.show, variants)

    def show(self, variants) -> None:
        options = self.query_one(OptionList)
        for v in variants:
            here = "  (current)" if v.ref == self.current else ""
            options.add_option(Option(f"{v.ref:<32} {v.format:<5} {size(v.size):>9}{here}", id=v.ref))
        if not variants:
            options.add_option(Option("no models installed", disabled=True))
        else:
            refs = [v.ref for v in variants]
            options.highlighted = refs.index(self.current) if self.current in refs else 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
