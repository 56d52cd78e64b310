"""The Hardware section: what the probe found, and which backends can run here and why.

Shows the app's ``HardwareProfile`` (``localq.probe.probe``, the same probe
``localq probe`` runs): the CPU and its instruction sets grouped as they matter
to inference kernels, memory and its measured bandwidth, disk space for the
cache, each GPU, Apple Silicon's unified memory, every backend with its reason,
and the parts the probe could not read: ``localq.views.machine``, which
``localq probe`` prints too. ``r`` probes again; ``b`` measures the bandwidth
again instead of reusing the stored figure.
"""

from __future__ import annotations

from rich.console import Group
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from localq.tui.screens.base import SectionScreen
from localq.views.machine import profile_renderables


class HardwareScreen(SectionScreen):
    """The machine, as the probe sees it."""

    SECTION = "hardware"
    TITLE_TEXT = "Hardware"
    BINDINGS = [
        Binding("r", "probe", "probe again", tooltip="probe the machine again"),
        Binding("b", "remeasure", "measure bandwidth", tooltip="measure the memory bandwidth again"),
    ]

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="hardware-body"):
            yield Static("probing this machine…", id="hardware-profile")

    def on_mount(self) -> None:
        self.watch(self.app, "profile", self.show_profile)
        self.query_one("#hardware-body").focus()

    def show_profile(self, profile) -> None:
        if profile is None:
            return
        self.query_one("#hardware-profile", Static).update(Group(*profile_renderables(profile)))

    def action_probe(self) -> None:
        self.notify("probing…", timeout=2)
        self.app.probe_machine()

    def action_remeasure(self) -> None:
        self.notify("measuring the memory bandwidth…", timeout=3)
        self.app.probe_machine(remeasure=True)
