"""Small modal dialogs: a yes/no confirmation and a one-form text prompt.

Both are keyboard-first: ``y``/``enter`` confirm, ``n``/``esc`` cancel; a prompt
submits on ``enter`` in its last field and cancels on ``esc``.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class ConfirmDialog(ModalScreen[bool]):
    """Ask a yes/no question; dismisses with True (yes) or False (no)."""

    BINDINGS = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]

    def __init__(self, question: str, detail: str = "", yes: str = "Yes") -> None:
        super().__init__(classes="dialog")
        self.question = question
        self.detail = detail
        self.yes_label = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.question, classes="dialog-title", markup=False)
            if self.detail:
                yield Static(self.detail, classes="dialog-detail", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes_label} (y)", id="yes", variant="error", compact=True)
                yield Button("No (n)", id="no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class PromptDialog(ModalScreen[dict | None]):
    """A title, some labelled text fields and OK/Cancel; dismisses with {field: text} or None."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, title: str, fields: list[tuple[str, str, str]], ok: str = "OK", note: str = "",
                 values: dict | None = None) -> None:
        """``fields``: (name, label, placeholder) for each input, in order; ``values``: their starting text."""
        super().__init__(classes="dialog")
        self.title_text = title
        self.fields = fields
        self.values = values or {}
        self.ok_label = ok
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            with VerticalScroll(classes="dialog-fields", can_focus=False):
                for name, label, placeholder in self.fields:
                    with Horizontal(classes="field-row"):
                        yield Label(label, classes="field-label", markup=False)
                        yield Input(str(self.values.get(name, "")), placeholder=placeholder, id=f"field-{name}",
                                    compact=True)
            if self.note:
                yield Static(self.note, classes="dialog-detail", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.ok_label, id="ok", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query(Input).first().focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        inputs = list(self.query(Input))
        position = inputs.index(event.input)
        if position + 1 < len(inputs):
            inputs[position + 1].focus()
        else:
            self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        self.dismiss({name: self.query_one(f"#field-{name}", Input).value.strip() for name, _, _ in self.fields})

    def action_cancel(self) -> None:
        self.dismiss(None)
