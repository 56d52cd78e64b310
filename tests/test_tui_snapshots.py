"""Snapshots of every screen at 100x30 (pytest-textual-snapshot; update with --snapshot-update).

Deterministic by construction: machine profiles (recorded or modelled) instead of the probe,
a fresh LOCALQ_HOME with the starter model, stored rows with fixed numbers for
Downloads and Chat, no clock times on screen, and the text cursor's blink off.
"""

from __future__ import annotations

from recorded_machines import desktop_4090, laptop_8gb
from tui_pilot import settle, wait_until

from localq.tui.app import SECTIONS, LocalqApp

SIZE = (100, 30)


def key(section: str) -> str:
    return str([s.key for s in SECTIONS].index(section) + 1)


async def steady(pilot) -> None:
    """Wait for the workers, then stop every text cursor's blinking."""
    await settle(pilot)
    for box in pilot.app.screen.query("Input"):
        box.cursor_blink = False
    await settle(pilot)


def app(profile=None, **kwargs) -> LocalqApp:
    return LocalqApp(profile=profile or laptop_8gb(), first_start=kwargs.pop("first_start", False), **kwargs)


def test_models_screen(snap_compare, tmp_home):
    assert snap_compare(app(), terminal_size=SIZE, run_before=steady)


def test_help_screen(snap_compare, tmp_home):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("question_mark")
        await steady(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=run_before)


def test_welcome_screen(snap_compare, tmp_home):
    async def run_before(pilot):
        await wait_until(pilot, lambda: type(pilot.app.screen).__name__ == "WelcomeScreen")
        await steady(pilot)

    assert snap_compare(app(first_start=None), terminal_size=SIZE, run_before=run_before)


def test_hardware_screen(snap_compare, tmp_home):
    assert snap_compare(app(desktop_4090(), start_section="hardware"), terminal_size=SIZE, run_before=steady)


def test_discover_screen(snap_compare, tmp_home):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press(key("discover"), "slash", *"qwen2.5", "enter", "down", "down")
        await steady(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=run_before)


def test_downloads_screen(snap_compare, tmp_home):
    from localq.store.db import open_index

    db = open_index()
    rows = [
        ("qwen2.5:1.5b-q4_k_m", "paused", 412_000_000, 986_048_768, None),
        ("llama3.2:1b-q4_k_m", "done", 807_694_464, 807_694_464, None),
        ("hf.co/org/missing-GGUF:Q4_K_M", "failed", 0, 0,
         "repository org/missing-GGUF was not found on the Hub (check the name)"),
    ]
    for ref, status, done, total, error in rows:
        db.execute("INSERT INTO pulls (ref, status, bytes_done, bytes_total, error, started)"
                   " VALUES (?, ?, ?, ?, ?, '2026-01-01T00:00:00+00:00')", [ref, status, done, total, error])
    db.conn.commit()
    db.close()
    assert snap_compare(app(start_section="downloads"), terminal_size=SIZE, run_before=steady)


def test_chat_screen(snap_compare, tmp_home):
    """A stored chat, resumed from the sidebar: its transcript, and its last reply's figures."""
    from localq.chat.history import Chat, Message, save_turn
    from localq.starter import ensure_starter
    from localq.store.db import open_index

    db = open_index()
    variant = ensure_starter(db)
    chat = Chat(model=variant.ref, variant_id=variant.id, backend="llamacpp", params={"temperature": 0.0})
    reply = Message("assistant", "Paris is the capital of France.\n\n- population: about **2.1 million**\n"
                    "- on the *Seine*", 31, 17, 41.5, 0.182, "stop")
    save_turn(db, chat, [Message("user", "What is the capital of France?"), reply])
    db.close()

    async def run_before(pilot):
        await settle(pilot)
        await pilot.press(key("chat"))
        screen = pilot.app.screen
        await wait_until(pilot, lambda: screen.conversation is not None, rounds=1200)
        await pilot.press("ctrl+b")
        await settle(pilot)
        await pilot.press("enter", "enter")  # search box -> list -> resume
        await wait_until(pilot, lambda: screen.conversation.chat.id == chat.id)
        await steady(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=run_before)
