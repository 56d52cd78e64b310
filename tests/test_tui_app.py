"""The app shell: header, navigation, help, command palette, themes, machine summary."""

from __future__ import annotations

import json

from recorded_machines import laptop_8gb, m2_16gb, pi5_8gb
from tui_pilot import run_async, screen_text, settle

from localq.tui.app import SECTIONS, LocalqApp
from localq.tui.widgets.topbar import best_isa, machine_summary, short_cpu


def section_key(key: str) -> str:
    """The number key of a section."""
    return str([s.key for s in SECTIONS].index(key) + 1)


def test_machine_summary_of_modelled_machines():
    assert machine_summary(laptop_8gb()) == "Intel Core i5-8250U 8c AVX2 · 8 GiB · no GPU · llama.cpp ✓"
    assert machine_summary(pi5_8gb()) == "Cortex-A76 4c dotprod · 8 GiB · no GPU · llama.cpp ✓"
    assert machine_summary(m2_16gb()).startswith("Apple M2 8c i8mm · 16 GiB · 10-core GPU (unified) · ")
    assert "MLX(metal) ✓" in machine_summary(m2_16gb())
    assert machine_summary(None) == "probing this machine…"


def test_short_cpu_and_isa():
    assert short_cpu("Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz") == "Intel Xeon Platinum 8480+"
    assert short_cpu("AMD EPYC 9654 96-Core Processor") == "AMD EPYC 9654"
    assert short_cpu(None) == "unknown CPU"
    assert best_isa({"avx2", "avx512f", "amx_int8"}) == "AMX"
    assert best_isa({"avx2", "avx512f"}) == "AVX-512"
    assert best_isa({"neon", "dotprod", "i8mm"}) == "i8mm"
    assert best_isa(set()) is None


@run_async
async def test_shell_navigation_help_palette_and_theme(tmp_home):
    app = LocalqApp(profile=laptop_8gb(), first_start=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert type(app.screen).__name__ == "ModelsScreen"
        assert "localq ─ Models" in text
        assert "Intel Core i5-8250U 8c AVX2 · 8 GiB · no GPU" in text
        for number, section in enumerate(SECTIONS, start=1):
            assert f"{number} {section.title}" in text

        # Number keys switch sections; the header follows.
        await pilot.press(section_key("hardware"))
        await settle(pilot)
        assert type(app.screen).__name__ == "HardwareScreen"
        assert "localq ─ Hardware" in screen_text(app)
        await pilot.press(section_key("models"))
        await settle(pilot)
        assert type(app.screen).__name__ == "ModelsScreen"

        # The help screen lists every binding of every section, and the app's own.
        await pilot.press("question_mark")
        await settle(pilot)
        help_screen = app.screen
        assert type(help_screen).__name__ == "HelpScreen"
        help_text = "\n".join(str(w.render()) for w in help_screen.query("Static"))
        for _title, bindings in app.all_bindings():
            for binding in bindings:
                assert (binding.tooltip or binding.description) in help_text, binding
        assert "command palette" in help_text
        await pilot.press("escape")
        await settle(pilot)
        assert type(app.screen).__name__ == "ModelsScreen"

        # The command palette has an entry for every section and every section's binding ...
        names = [name for name, _, _ in app.palette_commands()]
        for section in SECTIONS:
            assert f"Go to {section.title}" in names
            for binding in section.screen_class().BINDINGS:
                assert f"{section.title}: {binding.tooltip or binding.description}" in names
        # ... and running one works.
        await pilot.press("ctrl+p")
        await settle(pilot)
        await pilot.press(*"Go to Hardware")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert type(app.screen).__name__ == "HardwareScreen"

        # ctrl+t toggles the theme and remembers it.
        assert app.theme == "textual-dark"
        await pilot.press("ctrl+t")
        await settle(pilot)
        assert app.theme == "textual-light"
    saved = json.loads((tmp_home / "config" / "tui.json").read_text())
    assert saved == {"theme": "textual-light"}

    # The next start opens with the saved theme.
    app = LocalqApp(profile=laptop_8gb(), first_start=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.theme == "textual-light"
        assert "localq ─ Models" in screen_text(app)


@run_async
async def test_alt_keys_switch_sections_from_a_focused_text_box(tmp_home):
    """In Chat the message box has the focus: a digit types itself, alt+digit switches sections."""
    app = LocalqApp(profile=laptop_8gb(), first_start=False, start_section="chat")
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        box = app.screen.query_one("#chat-input")
        assert app.focused is box
        await pilot.press(section_key("discover"))
        await settle(pilot)
        assert type(app.screen).__name__ == "ChatScreen" and box.value == section_key("discover")
        await pilot.press(f"alt+{section_key('discover')}")
        await settle(pilot)
        assert type(app.screen).__name__ == "DiscoverScreen"
        # From a text box of another section too: Discover's search box.
        await pilot.press("slash")
        await settle(pilot)
        assert app.focused is app.screen.query_one("#discover-search")
        await pilot.press(f"alt+{section_key('chat')}")
        await settle(pilot)
        assert type(app.screen).__name__ == "ChatScreen" and box.value == section_key("discover")
        # The footer says so.
        assert f"alt+1-{len(SECTIONS)} sections" in screen_text(app)


@run_async
async def test_help_has_a_title_and_says_how_to_close_it(tmp_home):
    app = LocalqApp(profile=laptop_8gb(), first_start=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        text = screen_text(app)
        assert "Help: every key" in text and "esc, q or ? closes" in text
        help_text = "\n".join(str(w.render()) for w in app.screen.query("Static"))
        for number, section in enumerate(SECTIONS, start=1):  # each section key, listed on its own
            assert f"alt+{number}" in help_text and f"go to {section.title}" in help_text
        await pilot.press("q")
        await settle(pilot)
        assert type(app.screen).__name__ == "ModelsScreen"
        # A section key closes the help and opens the section ...
        await pilot.press("question_mark")
        await settle(pilot)
        await pilot.press(f"alt+{section_key('hardware')}")
        await settle(pilot)
        assert type(app.screen).__name__ == "HardwareScreen"
        # ... but leaves a question unanswered alone: the delete confirmation stays.
        await pilot.press(f"alt+{section_key('models')}", "d")
        await settle(pilot)
        assert type(app.screen).__name__ == "ConfirmDialog"
        await pilot.press(f"alt+{section_key('hardware')}")
        await settle(pilot)
        assert type(app.screen).__name__ == "ConfirmDialog"
        await pilot.press("n")


@run_async
async def test_every_footer_fits_at_80x24_100_and_120(tmp_home):
    for size in ((80, 24), (100, 30), (120, 30)):
        app = LocalqApp(profile=laptop_8gb(), first_start=False)
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            for section in SECTIONS:
                await pilot.press(f"alt+{section_key(section.key)}")
                await settle(pilot)
                footer = screen_text(app).splitlines()[-1]
                # The last keys shown are the app's: when they are whole, nothing before them was cut.
                assert f"? help  alt+1-{len(SECTIONS)} sections" in footer.replace("? help alt", "? help  alt"), \
                    (size, section.key, footer)
