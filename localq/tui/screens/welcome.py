"""The first-start screen: what this machine is, and what to do first.

Shown when the index holds nothing but the starter model. It shows the probe
as it runs (the app's probe worker; the machine's lines appear when it
answers), then offers: chat with the starter model now, the catalog filtered
to what fits (recommended first), and the few pulls the recommender likes
best here (``localq.recommend.suggest.suggested_pulls``, which ``localq recommend``
with no model prints too): the largest catalog models that fit and still run
at a comfortable speed, each with its quant, size and estimated tokens/s.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Label, LoadingIndicator, OptionList, Static
from textual.widgets.option_list import Option

from localq.tui.widgets.topbar import machine_summary
from localq.units import size

class WelcomeScreen(Screen):
    """First start: the machine, the starter model, the recommended pulls."""

    CLOSE_ON_SECTION = True  # a section key closes it and opens that section
    BINDINGS = [
        Binding("c", "chat", "chat now", tooltip="chat with the starter model now"),
        Binding("d", "discover", "discover", tooltip="browse the models that fit this machine"),
        Binding("escape", "close", "my models", tooltip="close the welcome screen"),
    ]

    def compose(self) -> ComposeResult:
        from localq.starter import STARTER_REF
        from localq.tui.navigation import keys_line

        with VerticalScroll(id="welcome"):
            yield Label("Welcome to localq: language models that run on this machine", id="welcome-title")
            yield Static(
                f"  c    chat with {STARTER_REF} now (the starter model: installed, no download)\n"
                "  d    browse the models that fit this machine, recommended first\n"
                f"  esc  your models; {keys_line()} open the sections; w shows this screen again; ? lists every key",
                markup=False,
            )
            yield Label("This machine", classes="welcome-head")
            yield LoadingIndicator(id="welcome-probing")
            yield Static("", id="welcome-machine", markup=False)
            yield Label("Recommended pulls here (enter pulls one)", classes="welcome-head")
            with Vertical(id="welcome-pulls-box"):
                yield OptionList(id="welcome-pulls")
        yield Footer()

    def on_mount(self) -> None:
        self.watch(self.app, "profile", self.show_profile)
        self.query_one(OptionList).focus()

    def show_profile(self, profile) -> None:
        if profile is None:
            return
        from localq.recommend.suggest import suggested_pulls

        self.query_one("#welcome-probing").display = False
        lines = [machine_summary(profile)]
        if profile.bandwidth_gbps:
            lines.append(f"memory bandwidth {profile.bandwidth_gbps:.1f} GB/s")
        for name, backend in profile.backends.items():
            lines.append(f"{'✓' if backend.available else '✗'} {backend.reason}")
        self.query_one("#welcome-machine", Static).update("\n".join(lines))
        options = self.query_one(OptionList)
        options.clear_options()
        try:
            from localq.calibration import local_speeds_for

            suggestions = suggested_pulls(profile, speeds_for=local_speeds_for(profile))
        except Exception as exc:
            from localq.tui.screens.base import show_error

            show_error(self.app, exc)
            return
        for s in suggestions:
            text = (f"★ {s.model.ref:<17} {s.plan.quant.upper():<7} {size(s.plan.weights_bytes):>9}  "
                    f"about {s.plan.tokens_per_second:.0f} tokens/s")
            options.add_option(Option(text, id=s.ref))
        if not suggestions:
            options.add_option(Option("nothing in the catalog runs comfortably here; the starter model does",
                                       disabled=True))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.app.start_pull(event.option.id)

    def action_chat(self) -> None:
        from localq.starter import STARTER_REF

        self.app.run_worker(self._open_chat(STARTER_REF))  # the app's: this screen closes on the way

    async def _open_chat(self, ref: str) -> None:
        chat = await self.app.open_section("chat")
        chat.open_model(ref)

    def action_discover(self) -> None:
        self.app.run_worker(self._open_discover())

    async def _open_discover(self) -> None:
        discover = await self.app.open_section("discover")
        if not discover.fits_only:
            discover.action_toggle_fits()

    def action_close(self) -> None:
        self.app.pop_screen()
