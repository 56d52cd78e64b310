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


@run_async
async def test_quantize_from_the_discover_screen(tmp_home, smollm2_f16_gguf):
    from test_tui_downloads import key
    from tui_pilot import screen_text

    from localq.importer import import_file
    from localq.store.db import open_index
    from localq.store.index import find

    db = open_index()
    f16 = import_file(db, smollm2_f16_gguf, "smollm2:135m")   # the catalog's smollm2:135m, unquantized
    app = LocalqApp(profile=laptop_8gb(), first_start=False)
    async with app.run_test(size=(120, 34)) as pilot:
        seen = record_notifications(app)
        await settle(pilot)
        await pilot.press(key("discover"))
        await settle(pilot)
        screen = app.screen
        # a catalog model with no installed copy has nothing to quantize from
        await pilot.press("slash", *"qwen2.5", "enter")
        await settle(pilot)
        assert screen.selected_model().ref.startswith("qwen2.5")
        await pilot.press("q")
        await settle(pilot)
        assert any(sev == "warning" and "is not installed" in msg for sev, msg in seen), seen
        assert type(app.screen).__name__ == "DiscoverScreen"

        screen.query_one("#discover-search").value = ""
        await pilot.press("slash", *"smollm2:135m", "enter")
        await settle(pilot)
        assert screen.selected_model().ref == "smollm2:135m"
        await pilot.press("enter")  # into the quants table, onto its Q8_0 row
        quants = screen.query_one("#discover-quants")
        quants.move_cursor(row=[str(quants.get_row_at(i)[1]) for i in range(quants.row_count)].index("Q8_0"))
        await pilot.press("q")
        await settle(pilot)
        box = app.screen.query_one("#field-types")
        assert box.placeholder == "Q8_0" and f"Quantize {f16.ref}" in screen_text(app)
        await pilot.press("enter")   # left empty: the highlighted quant
        await settle(pilot, rounds=3000)
        assert ("information", "stored smollm2:135m-q8_0 (144.8 MB)") in seen, seen
        assert "stored smollm2:135m-q8_0" in screen_text(app)   # the job's line on the Discover screen
    made = find(db, "smollm2:135m-q8_0")
    assert len(made) == 1 and made[0].format == "gguf"
    assert made[0].provenance["source_sha256"] == f16.files[0].sha256
    assert made[0].provenance["parameters"]["type"] == "Q8_0"
