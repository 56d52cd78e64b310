"""Helpers for the terminal app's tests: wait for workers, read the screen as text.

``settle`` waits until no worker of the app runs (a cancelled worker counts
as finished), so a test never sleeps. ``screen_text`` renders the current
screen (with any modal over it) as plain text, the way a user would read it.
"""

from __future__ import annotations

import asyncio
import functools
import io


def run_async(test):
    """Run an ``async def`` test in a fresh event loop (no asyncio plugin is needed for pytest)."""
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


async def settle(pilot, rounds: int = 50) -> None:
    """Pause until every worker of the app has finished and the screen is redrawn."""
    app = pilot.app
    for _ in range(rounds):
        await pilot.pause()
        running = [w for w in app.workers if not w.is_finished]
        if not running:
            await pilot.pause()
            return
        await asyncio.gather(*(w.wait() for w in running), return_exceptions=True)
    raise AssertionError(f"workers still running: {[w.name for w in app.workers if not w.is_finished]}")


async def wait_until(pilot, condition, rounds: int = 600, step: float = 0.05) -> None:
    """Pause in small steps until ``condition()`` is true (for events a worker posts mid-run)."""
    for _ in range(rounds):
        if condition():
            return
        await pilot.pause(step)
    raise AssertionError("the condition never became true; the screen:\n" + screen_text(pilot.app))


def screen_text(app) -> str:
    """The screen as plain text (the same render Textual's screenshots use)."""
    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def record_notifications(app) -> list[tuple[str, str]]:
    """Start recording every notification as (severity, message); returns the growing list.

    Toasts time out and vanish; the record keeps them for the assertions.
    """
    seen: list[tuple[str, str]] = []
    original = app.notify

    def notify(message, *args, **kwargs):
        seen.append((kwargs.get("severity", "information"), str(message)))
        return original(message, *args, **kwargs)

    app.notify = notify
    return seen
