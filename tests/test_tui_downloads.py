"""Discover and Downloads against the loopback Hub: pull, pause, resume, cancel, resume after quitting."""

from __future__ import annotations

from recorded_machines import laptop_8gb
from tui_pilot import record_notifications, run_async, screen_text, settle, wait_until

from localq.tui.app import SECTIONS, LocalqApp
from localq.tui.screens.downloads import bar, duration

Q8_FILE = "SmolLM2-135M-Instruct-Q8_0.gguf"


def key(section: str) -> str:
    return str([s.key for s in SECTIONS].index(section) + 1)


def pull_rows(home) -> list[tuple[str, str]]:
    from localq.store.db import open_index

    db = open_index()
    try:
        return [tuple(r) for r in db.execute("SELECT ref, status FROM pulls ORDER BY id").fetchall()]
    finally:
        db.close()


def test_bar_and_duration():
    assert bar(0, 100, 10) == "░" * 10 + "   0%"
    assert bar(50, 100, 10) == "█" * 5 + "░" * 5 + "  50%"
    assert bar(5, 0, 4) == "░░░░   0%"
    assert duration(None) == "—"
    assert duration(42) == "42 s"
    assert duration(125) == "2 min 05 s"
    assert duration(7500) == "2 h 05 min"


@run_async
async def test_discover_shows_quants_and_pulls_one(tmp_home, fake_hub):
    app = LocalqApp(profile=laptop_8gb(), first_start=False)
    async with app.run_test(size=(120, 34)) as pilot:
        seen = record_notifications(app)
        await settle(pilot)
        await pilot.press(key("discover"))
        await settle(pilot)
        screen = app.screen
        assert type(screen).__name__ == "DiscoverScreen"
        await pilot.press("slash", *"smollm2:135m", "enter")
        await settle(pilot)
        assert screen.selected_model().ref == "smollm2:135m"
        text = screen_text(app)
        rec = screen.recommendations["smollm2:135m"]
        assert f"★  {rec.choice.quant.upper()}" in text  # the recommended row is marked
        assert rec.reason.split(",")[0] in " ".join(text.split())  # and the reason is under the table

        # Pull the Q8_0 row of the quants table.
        await pilot.press("enter")  # into the quants table
        quants = screen.query_one("#discover-quants")
        row = [str(quants.get_row_at(i)[1]) for i in range(quants.row_count)].index("Q8_0")
        quants.move_cursor(row=row)
        await pilot.press("p")
        job = app.pulls.job_for("smollm2:135m-q8_0")
        assert job is not None
        await wait_until(pilot, lambda: not job.active, rounds=2400)
        await settle(pilot)
        assert job.state == "done", job.error
        assert ("information", "pulled smollm2:135m-q8_0") in seen

        await pilot.press(key("downloads"))
        await settle(pilot)
        downloads = screen_text(app)
        assert "smollm2:135m-q8_0" in downloads and "100%" in downloads and "done" in downloads
        await pilot.press(key("models"))
        await settle(pilot)
        assert "smollm2:135m-q8_0" in screen_text(app)
    assert pull_rows(tmp_home) == [("smollm2:135m-q8_0", "done")]


@run_async
async def test_pause_resume_cancel_and_resume_after_quit(tmp_home, fake_hub):
    ref = "smollm2:135m-q8_0"
    app = LocalqApp(profile=laptop_8gb(), first_start=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press(key("downloads"))
        await settle(pilot)
        # A slow link, so the pull is caught mid-way.
        await pilot.press("l")
        await settle(pilot)
        await pilot.press(*"2M", "enter")
        await settle(pilot)
        assert app.pulls.max_rate == 2 * 1024 * 1024

        app.start_pull(ref)
        job = app.pulls.job_for(ref)
        await wait_until(pilot, lambda: job.done > 0)
        await pilot.press("space")  # pause
        await wait_until(pilot, lambda: job.state == "paused")
        await settle(pilot)
        assert "paused" in screen_text(app)
        assert pull_rows(tmp_home)[-1] == (ref, "paused")
        kept = job.done
        assert 0 < kept < job.total

        await pilot.press("space")  # resume: continues from the partial file
        await wait_until(pilot, lambda: job.state == "running" and job.done > kept)
        # Quit mid-pull: the pull stops and is left queued for the next start.
        await app.action_quit()
    assert pull_rows(tmp_home)[-1] == (ref, "queued")
    resumed_from = [t.start for t in fake_hub.transfers(Q8_FILE)]
    assert resumed_from[0] == 0 and resumed_from[1] > 0  # the resume asked for the rest only

    # The next start resumes it (no rate limit now) and installs it.
    app = LocalqApp(profile=laptop_8gb(), first_start=False)
    async with app.run_test(size=(100, 30)) as pilot:
        seen = record_notifications(app)
        await wait_until(pilot, lambda: app.pulls.job_for(ref) is not None)
        job = app.pulls.job_for(ref)
        await wait_until(pilot, lambda: not job.active, rounds=2400)
        await settle(pilot)
        assert job.state == "done", job.error
        assert ("information", f"pulled {ref}") in seen
        assert min(t.start for t in fake_hub.transfers(Q8_FILE)[2:]) > 0  # never from byte 0 again

        # Cancel: a second quant, stopped mid-way; its partial file is deleted.
        from localq.download import partial_path
        from localq.hub import RemoteFile

        app.pulls.max_rate = 2 * 1024 * 1024
        other = "smollm2:135m-q4_k_m"  # a split set of three parts, fetched in parallel
        app.start_pull(other)
        job = app.pulls.job_for(other)
        await wait_until(pilot, lambda: job.done > 0)
        await pilot.press(key("downloads"))
        await settle(pilot)
        table = app.screen.query_one("DataTable")
        table.move_cursor(row=table.get_row_index(other))
        await pilot.press("x")
        await wait_until(pilot, lambda: job.state == "cancelled")
        assert len(job.files) == 3
        for f in job.files:
            assert not partial_path(RemoteFile(f["path"], f["size"], f["sha256"], None, "")).exists()
    assert pull_rows(tmp_home)[-1] == (other, "cancelled")
