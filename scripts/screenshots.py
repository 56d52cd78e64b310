"""Regenerate the README's screenshots (assets/screenshots/*.svg) from the real app.

    python scripts/screenshots.py            # writes assets/screenshots/
    python scripts/screenshots.py --out DIR  # somewhere else, to compare first

Each screenshot is the real ``LocalqApp`` driven by Textual's pilot at 100x30
and saved with ``App.save_screenshot``. So that they show no one's machine or
paths and come out the same on every run, the app gets a recorded machine
profile (tests/recorded_machines.py: the probe's own parsers over recorded
outputs) and a fresh LOCALQ_HOME holding the starter model, two stored pulls
and one stored chat. Nothing is downloaded and no reply is generated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = (100, 30)


def stored_rows() -> None:
    """The pulls and the chat the Downloads and Chat screenshots show, in the fresh index."""
    from localq.chat.history import Chat, Message, save_turn
    from localq.starter import ensure_starter
    from localq.store.db import open_index

    db = open_index()
    variant = ensure_starter(db)
    for ref, status, done, total, error in (
        ("qwen2.5:1.5b-q4_k_m", "paused", 412_000_000, 986_048_768, None),
        ("llama3.2:1b-q4_k_m", "done", 807_694_464, 807_694_464, None),
        ("hf.co/org/missing-GGUF:Q4_K_M", "failed", 0, 0,
         "no repository org/missing-GGUF on https://huggingface.co (check the name)"),
    ):
        db.execute("INSERT INTO pulls (ref, status, bytes_done, bytes_total, error, started)"
                   " VALUES (?, ?, ?, ?, ?, '2026-01-01T00:00:00+00:00')", [ref, status, done, total, error])
    db.conn.commit()
    chat = Chat(model=variant.ref, variant_id=variant.id, backend="llamacpp", params={"temperature": 0.0})
    reply = Message("assistant", "Paris is the capital of France.\n\n- population: about **2.1 million**\n"
                    "- on the *Seine*", 31, 17, 41.5, 0.182, "stop")
    save_turn(db, chat, [Message("user", "What is the capital of France?"), reply])
    db.close()


async def settle(pilot, rounds: int = 50) -> None:
    """Let the workers answer, then stop every text cursor's blinking."""
    for _ in range(rounds):
        await pilot.pause(0.02)
        if not any(w.is_running for w in pilot.app.workers):
            break
    for box in pilot.app.screen.query("Input"):
        box.cursor_blink = False
    await pilot.pause(0.1)


async def until(pilot, condition, seconds: float = 30.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise SystemExit(f"screenshots: the app did not get there in {seconds:g} s")


# name -> (profile, app options, what to do before the picture)
async def models(pilot):
    await settle(pilot)


async def models_light(pilot):
    pilot.app.theme = "textual-light"
    await settle(pilot)


async def discover(pilot):
    await settle(pilot)
    await pilot.press("alt+2", "slash", *"qwen2.5", "enter", "down", "down")
    await settle(pilot)


async def downloads(pilot):
    await settle(pilot)
    await pilot.press("alt+3")
    await settle(pilot)


async def chat(pilot):
    await settle(pilot)
    await pilot.press("alt+4")
    screen = pilot.app.screen
    await until(pilot, lambda: screen.conversation is not None, 60)
    await pilot.press("ctrl+b")
    await settle(pilot)
    await pilot.press("enter", "enter")  # search box -> list -> resume the stored chat
    await until(pilot, lambda: screen.conversation.chat.id is not None)
    await settle(pilot)


async def hardware(pilot):
    await settle(pilot)
    await pilot.press("alt+5")
    await settle(pilot)


async def welcome(pilot):
    await until(pilot, lambda: type(pilot.app.screen).__name__ == "WelcomeScreen")
    await settle(pilot)


async def help_screen(pilot):
    await settle(pilot)
    await pilot.press("question_mark")
    await settle(pilot)


def scenes():
    from recorded_machines import desktop_4090, laptop_8gb

    return {
        "models": (laptop_8gb, {}, models),
        "models-light": (laptop_8gb, {}, models_light),
        "discover": (laptop_8gb, {}, discover),
        "downloads": (laptop_8gb, {}, downloads),
        "chat": (laptop_8gb, {}, chat),
        "hardware": (laptop_8gb, {}, hardware),
        "hardware-rtx4090": (desktop_4090, {}, hardware),
        "welcome": (laptop_8gb, {"first_start": True}, welcome),
        "help": (laptop_8gb, {}, help_screen),
    }


async def shoot(name: str, profile, options: dict, before, out: Path) -> Path:
    from localq.tui.app import LocalqApp

    app = LocalqApp(profile=profile(), **{"first_start": False, **options})
    async with app.run_test(size=SIZE) as pilot:
        await before(pilot)
        app.save_screenshot(f"{name}.svg", str(out))
    return out / f"{name}.svg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "screenshots")
    parser.add_argument("names", nargs="*", help="only these screenshots (default: all)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))  # recorded_machines
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = scenes()
    for name in args.names or list(wanted):
        if name not in wanted:
            raise SystemExit(f"screenshots: no screenshot named {name!r} (known: {', '.join(wanted)})")
        with tempfile.TemporaryDirectory() as home:
            os.environ["LOCALQ_HOME"] = home
            stored_rows()
            path = asyncio.run(shoot(name, *wanted[name], args.out))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
