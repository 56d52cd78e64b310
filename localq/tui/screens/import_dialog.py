"""The import dialog: what ``localq import`` offers, in the app.

A GGUF file (``localq import FILE [--name NAME]``), or every GGUF model that
Ollama, LM Studio or the Hugging Face cache holds (``localq import --from TOOL
[--path DIR]``), indexed by hardlink, never copied. The location of each tool
is shown; a different folder may be typed in. The dialog only asks: the Models
screen runs the import (``localq.importer``) in a worker.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

# (source, what it is); the tools' sources are localq.importer.FINDERS' keys.
SOURCES = [
    ("file", "A GGUF file"),
    ("ollama", "Ollama's models"),
    ("lmstudio", "LM Studio's models"),
    ("hf-cache", "The Hugging Face cache"),
]


def default_location(source: str) -> str:
    """Where a tool keeps its models on this machine (``--path``'s default)."""
    from localq.importer import FINDERS
    from localq.views.paths import tilde

    return tilde(str(FINDERS[source][1]()))


class ImportDialog(ModalScreen[dict | None]):
    """Pick a source, then a file or folder; dismisses with {source, path, name} or None."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self) -> None:
        super().__init__(classes="dialog")
        self.source = "file"

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label("Import models", classes="dialog-title")
            options = [Option(f"{label}" + ("" if key == "file" else f"  ({default_location(key)})"), id=key)
                       for key, label in SOURCES]
            yield OptionList(*options, id="import-source")
            with Horizontal(classes="field-row"):
                yield Label("File", classes="field-label", id="import-path-label")
                yield Input(placeholder="/path/to/model.gguf", id="import-path", compact=True)
            with Horizontal(classes="field-row", id="import-name-row"):
                yield Label("Name (optional)", classes="field-label")
                yield Input(placeholder="from the file name", id="import-name", compact=True)
            yield Static("", id="import-note", classes="dialog-detail", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Import", id="ok", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        options = self.query_one("#import-source", OptionList)
        options.highlighted = 0
        options.focus()
        self._show_source("file")

    def _show_source(self, source: str) -> None:
        self.source = source
        is_file = source == "file"
        self.query_one("#import-path-label", Label).update("File" if is_file else "Folder (optional)")
        self.query_one("#import-path", Input).placeholder = (
            "/path/to/model.gguf" if is_file else default_location(source))
        self.query_one("#import-name-row").display = is_file
        self.query_one("#import-note", Static).update(
            "Hardlinked into localq's store when on the same disk, else copied." if is_file else
            "Every GGUF model there is indexed by hardlink, not copied; empty folder: the one shown.")

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._show_source(event.option.id)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self._show_source(event.option.id)
        self.query_one("#import-path", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "import-path" and self.source == "file":
            self.query_one("#import-name", Input).focus()
        else:
            self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        self.dismiss({
            "source": self.source,
            "path": self.query_one("#import-path", Input).value.strip(),
            "name": self.query_one("#import-name", Input).value.strip() if self.source == "file" else "",
        })

    def action_cancel(self) -> None:
        self.dismiss(None)
