"""The Hardware screen and the first-start welcome screen, on recorded and modelled machines."""

from __future__ import annotations

from recorded_machines import desktop_4090, laptop_8gb, pi5_8gb
from tui_pilot import run_async, screen_text, settle, wait_until

from localq.tui.app import SECTIONS, LocalqApp


def key(section: str) -> str:
    return str([s.key for s in SECTIONS].index(section) + 1)


def hardware_text(app) -> str:
    return str(app.screen.query_one("#hardware-profile").render())


@run_async
async def test_hardware_screen_shows_the_profile(tmp_home):
    app = LocalqApp(profile=desktop_4090(), first_start=False, start_section="hardware")
    async with app.run_test(size=(120, 60)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "localq ─ Hardware" in text
        assert "AMD Ryzen 9 7950X 16-Core Processor" in text
        assert "16 physical, 32 logical" in text
        assert "NVIDIA GeForce RTX 4090" in text and "8.9" in text
        assert "torch on RTX 4090" in text               # each backend with its reason
        assert "mlx is not installed" in text
        assert "AVX-512  F BW VL VNNI BF16" in text        # instruction sets, grouped
        assert "assumed: dual-channel DDR5-6000" in text   # where the bandwidth figure comes from

        # A new profile (here another machine profile) redraws the screen and the header.
        app.profile = pi5_8gb()
        await settle(pilot)
        text = screen_text(app)
        assert "NEON FP16 BF16" in text and "dotprod i8mm" in text
        assert "Cortex-A76 4c dotprod · 8 GiB · no GPU" in text
        assert "none found" in text  # no GPU

        # r probes this machine for real, in a worker.
        await pilot.press("r")
        await wait_until(pilot, lambda: app.profile.probe_seconds is not None, rounds=1200)
        await settle(pilot)
        assert "probed in" in screen_text(app)


@run_async
async def test_first_start_welcome_offers_starter_and_pulls(tmp_home):
    app = LocalqApp(profile=laptop_8gb())  # only the starter model is installed: first start
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: type(app.screen).__name__ == "WelcomeScreen")
        await settle(pilot)
        text = screen_text(app)
        assert "Welcome to localq" in text
        assert "chat with smollm2:135m now" in text
        assert "Intel Core i5-8250U 8c AVX2 · 8 GiB · no GPU" in text
        pulls = app.screen.query_one("#welcome-pulls")
        offered = [pulls.get_option_at_index(i).id for i in range(pulls.option_count)]
        assert offered and all(ref.count(":") == 1 and "-q" in ref for ref in offered)
        assert "llama3.2:1b-q4_k_m" in offered  # fits an 8 GB laptop at a comfortable speed
        assert "llama3.1:8b-q4_k_m" not in offered  # fits, but too slow to enjoy here

        # d: the catalog, filtered to what fits, recommended first.
        await pilot.press("d")
        await settle(pilot)
        assert type(app.screen).__name__ == "DiscoverScreen"
        assert app.screen.fits_only
        table = app.screen.query_one("#discover-models")
        shown = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        assert "qwen2.5:14b" not in shown and "llama3.2:1b" in shown
        # The welcome screen is closed: Models shows its own screen.
        await pilot.press(key("models"))
        await settle(pilot)
        assert type(app.screen).__name__ == "ModelsScreen"


@run_async
async def test_welcome_shows_on_the_first_start_only_and_on_demand(tmp_home):
    app = LocalqApp(profile=laptop_8gb())
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: type(app.screen).__name__ == "WelcomeScreen")
        await pilot.press("escape")
        await settle(pilot)
        assert type(app.screen).__name__ == "ModelsScreen"
    # The next start opens on Models, though only the starter model is installed ...
    app = LocalqApp(profile=laptop_8gb())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await settle(pilot)
        assert type(app.screen).__name__ == "ModelsScreen"
        # ... and w opens the welcome screen when asked.
        await pilot.press("w")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "WelcomeScreen")
        assert "w shows this screen again" in screen_text(app)
