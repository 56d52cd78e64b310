"""The app's sections and how to move between them.

Sections are listed once, in ``SECTIONS``: the section keys, the navigation
line, the help screen and the command palette are all made from this list, so
a new section (Quantize) is one line here and one screen module. Screens and
widgets import this module, never ``localq.tui.app``.

Switching closes what covers the section: the welcome screen, and overlays
that only show something (help, a model's info: ``CLOSE_ON_SECTION``). A dialog
that asks a question (confirm, a form, the import or model picker) stays until
it is answered or dismissed: the keys do nothing there.

Keys: ``alt+1`` ... ``alt+N`` switch sections from every screen, also while a
text box has the focus (there a plain digit types itself, so it cannot be the
only way). Terminals send alt+digit as ESC then the digit, which works over
SSH and in tmux; where Option/Alt is not set to send it (macOS Terminal's
default), the plain digits work whenever no text box has the focus, and ``tab``
or ``esc`` leaves a text box first.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from textual.screen import ModalScreen


@dataclass(frozen=True)
class Section:
    """A top-level screen: its mode key, its title and where its class lives."""

    key: str
    title: str
    screen: str  # "module:Class"

    def screen_class(self):
        module, _, name = self.screen.partition(":")
        return getattr(import_module(module), name)


SECTIONS: list[Section] = [
    Section("models", "Models", "localq.tui.screens.models:ModelsScreen"),
    Section("discover", "Discover", "localq.tui.screens.discover:DiscoverScreen"),
    Section("downloads", "Downloads", "localq.tui.screens.downloads:DownloadsScreen"),
    Section("chat", "Chat", "localq.tui.screens.chat:ChatScreen"),
    Section("hardware", "Hardware", "localq.tui.screens.hardware:HardwareScreen"),
]


def section_number(key: str) -> int:
    """The 1-based number of a section, as its keys and the navigation line show it."""
    return [s.key for s in SECTIONS].index(key) + 1


def section_keys(key: str) -> str:
    """The keys of a section as help texts write them: ``alt+3 (or 3)``."""
    number = section_number(key)
    return f"alt+{number} (or {number})"


def has_section(key: str) -> bool:
    return any(s.key == key for s in SECTIONS)


def keys_line() -> str:
    """The range of section keys, for the welcome screen and the help: ``alt+1-5``."""
    return f"alt+1-{len(SECTIONS)}"


def _closes_on_section(screen) -> bool:
    return bool(getattr(screen, "CLOSE_ON_SECTION", False))


def close_overlays(app) -> None:
    """Pop the dialogs and the welcome screen over the current section, so it shows its own screen."""
    while len(app.screen_stack) > 1 and (isinstance(app.screen, ModalScreen) or _closes_on_section(app.screen)):
        app.pop_screen()


def switch_section(app, key: str) -> bool:
    """Switch to section ``key``; False (and nothing done) while a dialog waits for an answer."""
    if key not in app.MODES:
        return False
    if isinstance(app.screen, ModalScreen) and not _closes_on_section(app.screen):
        return False
    close_overlays(app)
    app.switch_mode(key)
    return True


async def open_section(app, key: str):
    """Switch to section ``key`` (closing dialogs and the welcome screen) and return its screen."""
    close_overlays(app)
    await app.switch_mode(key)
    return app._screen_stacks[key][0]
