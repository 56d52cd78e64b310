"""The Models screen: the table, the detail line, info, verify, delete, import, filter, errors."""

from __future__ import annotations

import datetime
import shutil

from recorded_machines import laptop_8gb
from tui_pilot import record_notifications, run_async, screen_text, settle

from localq.errors import BadModelFile
from localq.tui.app import LocalqApp
from localq.tui.screens.models import ago


def rows(app) -> list[list[str]]:
    table = app.screen.query_one("DataTable")
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def select_row(pilot, ref: str) -> None:
    table = pilot.app.screen.query_one("DataTable")
    for i in range(table.row_count):
        if str(table.get_row_at(i)[0]) == ref:
            table.move_cursor(row=i)
            await settle(pilot)
            return
    raise AssertionError(f"{ref} is not in the table")


def test_ago():
    now = datetime.datetime(2026, 1, 10, 12, 0, tzinfo=datetime.timezone.utc)
    assert ago(None, now) == "never"
    assert ago("2026-01-10T11:59:30+00:00", now) == "just now"
    assert ago("2026-01-10T11:55:00+00:00", now) == "5 min ago"
    assert ago("2026-01-10T09:00:00+00:00", now) == "3 h ago"
    assert ago("2026-01-09T10:00:00+00:00", now) == "yesterday"
    assert ago("2025-12-31T12:00:00+00:00", now) == "10 days ago"


@run_async
async def test_models_screen_lists_imports_verifies_and_deletes(tmp_home, tmp_path, smollm2_gguf):
    app = LocalqApp(profile=laptop_8gb(), first_start=False)
    async with app.run_test(size=(100, 30)) as pilot:
        seen = record_notifications(app)
        await settle(pilot)
        assert rows(app) == [["smollm2:135m-q4_1", "q4_1", "gguf", "93.8 MiB", "llama.cpp", "—", "never"]]
        text = screen_text(app)
        assert "llama · 135M params · 30 layers · ctx 8192 · GQA 9/3 · chat template ✓ · sha256 b179c9…" in text

        # Info: the GGUF header, as `localq show` tells it.
        await pilot.press("i")
        await settle(pilot)
        info = screen_text(app)
        assert "architecture     llama" in info
        assert "parameters       134.5M (134,515,008)" in info
        await pilot.press("escape")
        await settle(pilot)

        # Import a private copy whose last weights differ: its own blob, hardlinked to this copy,
        # so corrupting it later cannot touch the installed model's file.
        copy = tmp_path / "copy.Q4_1.gguf"
        shutil.copyfile(smollm2_gguf, copy)
        with open(copy, "r+b") as f:
            f.seek(-16, 2)
            f.write(bytes(range(16)))
        await pilot.press("a")
        await settle(pilot)
        await pilot.press("enter", *str(copy), "enter", *"mycopy", "enter")  # "A GGUF file", its path, a name
        await settle(pilot)
        assert ("information", "imported mycopy:q4_1 (gguf, 93.8 MiB)") in seen
        assert [r[0] for r in rows(app)] == ["mycopy:q4_1", "smollm2:135m-q4_1"]

        # Importing a path that is not there: an error in the CLI's words.
        missing = tmp_path / "nope.gguf"
        await pilot.press("a")
        await settle(pilot)
        await pilot.press("enter", *str(missing), "enter", "enter")
        await settle(pilot)
        assert ("error", BadModelFile(f"{missing} does not exist", "check the path").one_line()) in seen

        # Filter.
        await pilot.press("slash", "m", "y")
        await settle(pilot)
        assert [r[0] for r in rows(app)] == ["mycopy:q4_1"]
        await pilot.press("escape")
        await settle(pilot)
        assert len(rows(app)) == 2

        # Verify: good, then corrupt.
        await select_row(pilot, "mycopy:q4_1")
        await pilot.press("v")
        await settle(pilot)
        assert ("information", "ok  mycopy:q4_1") in seen
        assert "verified ✓" in screen_text(app)
        with open(copy, "r+b") as f:  # the blob is a hardlink to this copy
            f.seek(-64, 2)
            f.write(b"\xff" * 16)
        await pilot.press("v")
        await settle(pilot)
        assert any(sev == "warning" and msg.startswith("CORRUPT  mycopy:q4_1") for sev, msg in seen)
        assert ("error", "1 model(s) failed verification (remove them with `localq rm REF` and pull or "
                         "import them again)") in seen

        # Delete: the dialog says what it frees; "n" keeps the model, "y" removes it.
        await pilot.press("d")
        await settle(pilot)
        assert "Remove mycopy:q4_1 (93.8 MiB)?" in screen_text(app)
        # The copy it was imported from keeps the bytes on disk, and the dialog says so.
        assert app.screen.detail.startswith("This frees 0 B of disk space. Its file is hardlinked from elsewhere")
        await pilot.press("n")
        await settle(pilot)
        assert len(rows(app)) == 2
        await pilot.press("d")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert [r[0] for r in rows(app)] == ["smollm2:135m-q4_1"]
        assert any(msg.startswith("Removed mycopy:q4_1; freed ") for _, msg in seen)


@run_async
async def test_models_screen_marks_what_the_server_has_loaded(tmp_home, smollm2_gguf):
    import pytest

    pytest.importorskip("uvicorn")
    pytest.importorskip("llama_cpp")
    from serve_server import Server

    srv = Server(tmp_home, "--ctx", "512")
    try:
        app = LocalqApp(profile=laptop_8gb(), first_start=False)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            assert rows(app)[0][-1] != "● loaded"
            srv.json("POST", "/api/generate", {"model": "smollm2:135m"})      # the server loads it
            await pilot.press("r")
            await settle(pilot)
            assert rows(app)[0][0] == "smollm2:135m-q4_1" and rows(app)[0][-1] == "● loaded"
    finally:
        srv.stop()


@run_async
async def test_import_dialog_offers_what_the_cli_imports(tmp_home, tmp_path, smollm2_gguf):
    """a: a file, or the models of Ollama, LM Studio or the Hugging Face cache (here a real HF cache layout)."""
    from localq.store.blobs import sha256_file

    smollm2_sha = sha256_file(smollm2_gguf)
    repo = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF"
    (repo / "blobs").mkdir(parents=True)
    shutil.copyfile(smollm2_gguf, repo / "blobs" / smollm2_sha)
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "smollm2-135m-instruct-q4_1.gguf").symlink_to(f"../../blobs/{smollm2_sha}")
    app = LocalqApp(profile=laptop_8gb(), first_start=False)
    async with app.run_test(size=(100, 30)) as pilot:
        seen = record_notifications(app)
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        text = screen_text(app)
        for offer in ("A GGUF file", "Ollama's models", "LM Studio's models", "The Hugging Face cache"):
            assert offer in text, offer
        await pilot.press("down", "down", "down", "enter", *str(tmp_path / "hub"), "enter")
        await settle(pilot)
        ref = "hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:q4_1"
        assert ("information", f"imported 1 model(s) from hf-cache: {ref}") in seen
        assert ref in [r[0] for r in rows(app)]
        # A tool folder with nothing in it: the CLI's one-line error.
        await pilot.press("a")
        await settle(pilot)
        await pilot.press("down", "enter", *str(tmp_path / "none"), "enter")
        await settle(pilot)
        assert any(severity == "error" and "no ollama models at" in text for severity, text in seen), seen
