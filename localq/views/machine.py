"""The machine as the probe sees it, as Rich blocks: what ``localq probe`` prints and the Hardware screen shows.

The CPU and its instruction sets grouped as they matter to inference kernels,
memory and its measured bandwidth, disk space for the cache, each GPU, Apple
Silicon's unified memory, every backend with its reason, and the parts the
probe could not read. One function, ``profile_renderables``, for both front ends.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from localq.backends import backend_label
from localq.units import size
from localq.views.paths import tilde

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


def known_size(n: int | None) -> str:
    return "unknown" if n is None else size(n)


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
    rows = [("total", known_size(mem.total)), ("available", known_size(mem.available)),
            ("swap", f"{known_size(mem.swap_total)} (never counted as room for a model)"), ("bandwidth", bandwidth)]
    if profile.disk_free is not None:
        rows.append(("disk free", f"{size(profile.disk_free)} at {tilde(profile.disk_path or '?')}"))
    blocks.append(section("Memory", facts(rows)))

    if profile.apple is not None:
        a = profile.apple
        blocks.append(section("Apple Silicon", facts([
            ("chip", a.chip), ("unified memory", known_size(a.unified_memory)),
            ("GPU cores", a.gpu_cores or "unknown"),
            ("GPU may use", f"{known_size(a.wired_limit)} ({a.wired_limit_share:.0%}, {a.wired_limit_source or 'default'})"),
            ("bandwidth", f"{a.bandwidth_gbps:.0f} GB/s" if a.bandwidth_gbps else "unknown"),
        ])))
    if profile.gpus:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("#", "GPU", "MEMORY", "FREE", "CC", "BANDWIDTH", "DRIVER"):
            table.add_column(column, no_wrap=column != "GPU")
        for gpu in profile.gpus:
            driver = " ".join(p for p in (gpu.driver, f"CUDA {gpu.cuda_version}" if gpu.cuda_version else None) if p)
            table.add_row(
                str(gpu.index), Text(gpu.name), known_size(gpu.memory_total), known_size(gpu.memory_free),
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
        table.add_row(mark(info.available), backend_label(name), info.device or "—",
                      info.version or "—", Text(info.reason))
    blocks.append(section("Backends", table if profile.backends else Text("none detected")))

    if profile.unknowns:
        blocks.append(section("Not known", facts([(part, why) for part, why in sorted(profile.unknowns.items())])))
    if profile.probe_seconds is not None:
        blocks.append(Text(f"probed in {profile.probe_seconds:.2f} s", style="dim"))
    return blocks
