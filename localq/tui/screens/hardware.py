"""The Hardware section: what the probe found, and which backends can run here and why.

Shows the app's ``HardwareProfile`` (``localq.probe.probe``, the same probe
``localq probe`` runs): the CPU and its instruction sets grouped as they matter
to inference kernels, memory and its measured bandwidth, disk space for the
cache, each GPU, Apple Silicon's unified memory, every backend with its reason,
and the parts the probe could not read. ``r`` probes again; ``b`` measures the
bandwidth again instead of reusing the stored figure.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from localq.cache import human_size
from localq.tui.screens.base import SectionScreen
from localq.tui.widgets.topbar import BACKEND_LABELS

GiB = 2**30

# Instruction sets, grouped as kernels use them, in localq's feature names.
X86_GROUPS = [
    ("SIMD", [("sse4_2", "SSE4.2"), ("avx", "AVX"), ("avx2", "AVX2"), ("fma", "FMA"), ("f16c", "F16C")]),
    ("AVX-512", [("avx512f", "F"), ("avx512bw", "BW"), ("avx512vl", "VL"), ("avx512_vnni", "VNNI"),
                 ("avx512_bf16", "BF16"), ("avx512_fp16", "FP16")]),
    ("VNNI", [("avx_vnni", "AVX-VNNI")]),
    ("AMX", [("amx_tile", "tile"), ("amx_int8", "INT8"), ("amx_bf16", "BF16")]),
]
ARM_GROUPS = [
    ("SIMD", [("neon", "NEON"), ("fp16", "FP16"), ("bf16", "BF16")]),
    ("int8", [("dotprod", "dotprod"), ("i8mm", "i8mm")]),
    ("SVE", [("sve", "SVE"), ("sve2", "SVE2")]),
]


def gib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / GiB:.1f} GiB"


def mark(ok: bool) -> Text:
    return Text("✓", style="bold green") if ok else Text("✗", style="bold red")


def features_text(features: set[str], groups) -> Table:
    """One row per group: each feature in it, present in full colour, missing dimmed and struck out."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", min_width=8)
    grid.add_column()
    for title, members in groups:
        line = Text()
        for name, label in members:
            if line:
                line.append(" ")
            line.append(label, style="" if name in features else "dim strike")
        grid.add_row(title, line)
    return grid


def section(title: str, body) -> Group:
    return Group(Text(title, style="bold underline"), body, Text(""))


def facts(rows: list[tuple[str, object]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in rows:
        grid.add_row(label, value if isinstance(value, Text) else Text(str(value)))
    return grid


def profile_renderables(profile) -> list:
    """The profile as a list of titled Rich blocks (CPU, memory, GPUs, backends, unknowns)."""
    cpu = profile.cpu
    cores = f"{cpu.physical_cores or '?'} physical, {cpu.logical_cores or '?'} logical"
    groups = ARM_GROUPS if profile.arch == "arm64" else X86_GROUPS
    blocks = [section("CPU", Group(
        facts([("model", cpu.model or "unknown"), ("vendor", cpu.vendor or "unknown"), ("cores", cores),
               ("system", f"{profile.os} {profile.arch}")]),
        features_text(cpu.features, groups),
    ))]

    mem = profile.memory
    bandwidth = "not measured"
    if profile.bandwidth_gbps:
        bandwidth = f"{profile.bandwidth_gbps:.1f} GB/s" + (f" ({profile.bandwidth_source})" if profile.bandwidth_source else "")
    rows = [("total", gib(mem.total)), ("available", gib(mem.available)),
            ("swap", f"{gib(mem.swap_total)} (never counted as room for a model)"), ("bandwidth", bandwidth)]
    if profile.disk_free is not None:
        from localq.tui.screens.model_info import tilde

        rows.append(("disk free", f"{human_size(profile.disk_free)} at {tilde(profile.disk_path or '?')}"))
    blocks.append(section("Memory", facts(rows)))

    if profile.apple is not None:
        a = profile.apple
        blocks.append(section("Apple Silicon", facts([
            ("chip", a.chip), ("unified memory", gib(a.unified_memory)),
            ("GPU cores", a.gpu_cores or "unknown"),
            ("GPU may use", f"{gib(a.wired_limit)} ({a.wired_limit_share:.0%}, {a.wired_limit_source or 'default'})"),
            ("bandwidth", f"{a.bandwidth_gbps:.0f} GB/s" if a.bandwidth_gbps else "unknown"),
        ])))
    if profile.gpus:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("#", "GPU", "MEMORY", "FREE", "CC", "BANDWIDTH", "DRIVER"):
            table.add_column(column, no_wrap=column != "GPU")
        for gpu in profile.gpus:
            driver = " ".join(p for p in (gpu.driver, f"CUDA {gpu.cuda_version}" if gpu.cuda_version else None) if p)
            table.add_row(
                str(gpu.index), Text(gpu.name), gib(gpu.memory_total), gib(gpu.memory_free),
                gpu.compute_capability or "—",
                f"{gpu.peak_bandwidth_gbps:.0f} GB/s" if gpu.peak_bandwidth_gbps else "—", driver or "—",
            )
        blocks.append(section("GPUs", table))
    elif profile.apple is None:
        blocks.append(section("GPUs", Text("none found")))

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("", "BACKEND", "DEVICE", "VERSION", "WHY"):
        table.add_column(column, no_wrap=column != "WHY", overflow="fold")
    for name, info in profile.backends.items():
        table.add_row(mark(info.available), BACKEND_LABELS.get(name, name), info.device or "—",
                      info.version or "—", Text(info.reason))
    blocks.append(section("Backends", table if profile.backends else Text("none detected")))

    if profile.unknowns:
        blocks.append(section("Not known", facts([(part, why) for part, why in sorted(profile.unknowns.items())])))
    if profile.probe_seconds is not None:
        blocks.append(Text(f"probed in {profile.probe_seconds:.2f} s", style="dim"))
    return blocks


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
