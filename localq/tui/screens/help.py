"""The help screen (``?``): every key binding of the app, grouped by where it works.

Made from the bindings themselves (``LocalqApp.all_bindings``), so it cannot
fall out of date: a binding added to a screen shows up here and in the command
palette.
"""

from __future__ import annotations

from dataclasses import replace

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

# Keys Textual itself provides on every screen.
BUILT_IN = [
    Binding("ctrl+p", "command_palette", "command palette: every action by name"),
    Binding("tab", "focus_next", "move the focus to the next widget"),
    Binding("shift+tab", "focus_previous", "move the focus to the previous widget"),
    Binding("ctrl+c", "copy", "copy the selected text"),
]

DIALOG_KEYS = [
    Binding("y", "", "confirmation: yes"),
    Binding("n,escape", "", "confirmation: no"),
    Binding("enter", "", "form: next field, or OK in the last one"),
    Binding("escape", "", "form, info or help: close"),
]


def key_names(app, binding: Binding) -> str:
    """All the keys of a binding as they are shown: ``n / esc``."""
    keys = [k.strip() for k in binding.key.split(",") if k.strip()]
    if binding.key_display and len(keys) == 1 and not binding.action.startswith("section("):
        # (a section key's display names the whole range, for the footer: here each key is listed)
        return binding.key_display
    return " / ".join(app.get_key_display(replace(binding, key=k, key_display=None)) for k in keys)


def describe(binding: Binding) -> str:
    return binding.tooltip or binding.description or binding.action


class HelpScreen(ModalScreen[None]):
    """Every binding, by section, under a title that says how to close it."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "close")]
    CLOSE_ON_SECTION = True  # a section key closes it and opens that section
    CLOSE_KEYS = "esc, q or ? closes"

    def compose(self) -> ComposeResult:
        box = VerticalScroll(classes="dialog-box wide", id="help-box")
        box.border_title = "Help: every key"
        box.border_subtitle = self.CLOSE_KEYS
        with box:
            yield Label(f"Every key of every screen, by where it works ({self.CLOSE_KEYS}; "
                        "↑ ↓ and page keys scroll)", classes="dialog-detail")
            groups = self.app.all_bindings()
            groups[0] = (groups[0][0], groups[0][1] + BUILT_IN)
            groups.append(("Dialogs", DIALOG_KEYS))
            for title, bindings in groups:
                if not bindings:
                    continue
                yield Label(title, classes="help-group")
                lines = [f"  {key_names(self.app, b):<12} {describe(b)}" for b in bindings]
                yield Static("\n".join(lines), markup=False, classes="help-keys")

    def action_close(self) -> None:
        self.dismiss(None)
