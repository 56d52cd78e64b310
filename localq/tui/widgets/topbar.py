"""The two lines at the top of every section: where you are and what the machine is, then the tabs.

The machine summary is one dense line (CPU, its best instruction set, RAM, GPU,
the backends that run here), built from the app's ``HardwareProfile`` and
redrawn when the probe finishes. The navigation line lists the sections with
their number keys; the current one is highlighted, and each is clickable.
"""

from __future__ import annotations

import re

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.widgets import Static

from localq.units import GiB

_CPU_NOISE = re.compile(
    r"\(R\)|\(TM\)|\bCPU\b|\bProcessor\b|@\s*[\d.]+\s*GHz|\b\d+-Core\b|\bwith Radeon.*$", re.I
)


def short_cpu(model: str | None) -> str:
    """A CPU's model name without the trademarks and clock: ``AMD EPYC 9654``."""
    if not model:
        return "unknown CPU"
    words = re.sub(r"\([^)]*\)?", " ", _CPU_NOISE.sub(" ", model)).split()
    return " ".join(words[:4]) or model


def best_isa(features: set[str]) -> str | None:
    """The instruction set that matters most to inference kernels on this CPU."""
    for feature, label in (
        ("amx_int8", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"),
        ("sve2", "SVE2"), ("sve", "SVE"), ("i8mm", "i8mm"), ("dotprod", "dotprod"), ("neon", "NEON"),
    ):
        if feature in features:
            return label
    return None


def gib(n: int | None) -> str:
    """Memory as whole GiB, the way machines are sold: ``24 GiB`` (localq.units' unit, rounded)."""
    return "? GiB" if n is None else f"{n / GiB:.0f} GiB"


def backend_marks(profile) -> list[str]:
    """``llama.cpp ✓``, ``MLX(cpu) ✓``: the backends that run here (the Hardware screen says why the others
    do not); ``no backend ✗`` when none does."""
    from localq.backends import backend_label

    marks = []
    for name, info in profile.backends.items():
        if not info.available:
            continue
        label = backend_label(name)
        if name == "mlx" and info.device:
            label = f"{label}({info.device})"  # mlx on Linux is a CPU build: say so
        marks.append(f"{label} ✓")
    return marks or ["no backend ✗"]


def machine_summary(profile) -> str:
    """One line about the machine, for the header: CPU, ISA, RAM, GPU, backends."""
    if profile is None:
        return "probing this machine…"
    cpu = short_cpu(profile.cpu.model)
    cores = profile.cpu.logical_cores
    parts = [" ".join(p for p in (cpu, f"{cores}c" if cores else "", best_isa(profile.cpu.features) or "") if p)]
    parts.append(gib(profile.memory.total))
    if profile.apple is not None:
        cores = profile.apple.gpu_cores
        parts.append(f"{cores}-core GPU (unified)" if cores else "GPU (unified memory)")
    elif profile.gpus:
        gpu = profile.best_gpu()
        name = re.sub(r"^(NVIDIA\s+)?(GeForce\s+)?", "", gpu.name)
        more = f" ×{len(profile.gpus)}" if len(profile.gpus) > 1 else ""
        parts.append(f"{name} {gib(gpu.memory_total)}{more}")
    else:
        parts.append("no GPU")
    marks = backend_marks(profile)
    if marks:
        parts.append(" ".join(marks))
    return " · ".join(parts)


class TopBar(Horizontal):
    """``localq ─ Models`` on the left, the machine on the right."""

    def __init__(self, title: str) -> None:
        super().__init__(id="topbar")
        self.title_text = title

    def compose(self) -> ComposeResult:
        yield Static(Content.from_markup("[b]localq[/b] ─ $title", title=self.title_text), id="topbar-title")
        yield Static(machine_summary(getattr(self.app, "profile", None)), id="topbar-machine")

    def on_mount(self) -> None:
        self.watch(self.app, "profile", self.show_profile, init=False)

    def show_profile(self, profile) -> None:
        self.query_one("#topbar-machine", Static).update(machine_summary(profile))


class NavBar(Static):
    """``1 Models  2 Discover …``: the sections, their keys, the current one highlighted."""

    def __init__(self, current: str) -> None:
        super().__init__(id="navbar")
        self.current = current

    def on_mount(self) -> None:
        from localq.tui.navigation import SECTIONS

        parts = []
        for number, section in enumerate(SECTIONS, start=1):
            label = f" {number} {section.title} "
            style = "reverse b" if section.key == self.current else ""
            parts.append(Content.from_markup(
                f"[{style} @click=app.section('{section.key}')]$label[/]" if style
                else f"[@click=app.section('{section.key}')]$label[/]",
                label=label,
            ))
        self.update(Content(" ").join(parts))
