"""The Models screen's quantize action: a background llama.cpp job, with progress, that stores its result."""

from __future__ import annotations

import pytest
from recorded_machines import laptop_8gb
from test_tui_models import rows, select_row
from tui_pilot import record_notifications, run_async, settle

from localq.tui.app import LocalqApp

pytest.importorskip("llama_cpp")


@run_async
async def test_quantize_from_the_models_screen(tmp_home, smollm2_f16_gguf):
    from localq.importer import import_file
    from localq.store.db import open_index

    import_file(open_index(), smollm2_f16_gguf, "smolf16")
    app = LocalqApp(profile=laptop_8gb(), first_start=False)
    async with app.run_test(size=(110, 30)) as pilot:
        seen = record_notifications(app)
        await settle(pilot)
        # a quantized source asks first, and refuses without a yes
        await select_row(pilot, "smollm2:135m-q4_1")
        await pilot.press("q")
        await settle(pilot)
        await pilot.press(*"Q8_0", "enter", "enter")
        await settle(pilot)
        assert any(sev == "error" and "already Q4_1" in msg for sev, msg in seen), seen

        await select_row(pilot, "smolf16:f16")
        await pilot.press("q")
        await settle(pilot)
        await pilot.press(*"Q8_0", "enter")
        await settle(pilot, rounds=3000)
        assert ("information", "stored smolf16:q8_0 (144.8 MB)") in seen, seen
        assert "smolf16:q8_0" in [r[0] for r in rows(app)]
