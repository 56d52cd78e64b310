"""CPU: model, cores and the instruction-set features inference kernels use.

Linux tells all of it in ``/proc/cpuinfo`` (and ``lscpu`` repeats it); macOS in
``sysctl`` (see probe.apple). The parsers take the text, so the tests feed them
recordings of real machines.

Feature names: x86 keeps the kernel's flag names (``avx512_vnni``,
``amx_int8``); ARM uses the names llama.cpp's build reports (``neon``,
``dotprod``, ``i8mm``, ``sve``, ``sve2``, ``fp16``, ``bf16``), mapped from the
kernel's hwcap names (``asimd``, ``asimddp``, ``asimdhp`` ...).
"""

from __future__ import annotations

import os
import re

from localq.probe.profile import CpuInfo

# The x86 features that matter to llama.cpp's, torch's and oneDNN's kernels.
X86_FEATURES = (
    "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
)

# Linux arm64 hwcap names (arch/arm64/kernel/cpuinfo.c) -> localq's names.
# fp16 means half-precision SIMD arithmetic (asimdhp), which the kernels use.
ARM_LINUX_FEATURES = {
    "asimd": "neon",
    "neon": "neon",          # 32-bit kernels say neon
    "asimddp": "dotprod",
    "i8mm": "i8mm",
    "sve": "sve",
    "sve2": "sve2",
    "asimdhp": "fp16",
    "bf16": "bf16",
}

# ARM's "CPU part" numbers for implementer 0x41 (Arm Ltd), from Arm's technical
# reference manuals (MIDR_EL1.PartNum), for the cores people run models on.
ARM_PARTS = {
    0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57",
    0xD08: "Cortex-A72", 0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76",
    0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77", 0xD40: "Neoverse-V1", 0xD41: "Cortex-A78",
    0xD44: "Cortex-X1", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710", 0xD48: "Cortex-X2",
    0xD49: "Neoverse-N2", 0xD4B: "Cortex-A78C", 0xD4D: "Cortex-A715", 0xD4E: "Cortex-X3",
    0xD4F: "Neoverse-V2", 0xD80: "Cortex-A520", 0xD81: "Cortex-A720", 0xD82: "Cortex-X4",
}
ARM_IMPLEMENTERS = {0x41: "ARM", 0x51: "Qualcomm", 0x61: "Apple", 0x48: "HiSilicon", 0xC0: "Ampere"}

_LINE = re.compile(r"^([^:]+?)\s*:\s?(.*)$")


def parse_proc_cpuinfo(text: str) -> CpuInfo:
    """Read a Linux ``/proc/cpuinfo`` (x86 or ARM) into a CpuInfo."""
    blocks: list[dict[str, str]] = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        block = {}
        for line in chunk.splitlines():
            m = _LINE.match(line.strip())
            if m:
                block[m.group(1).strip().lower()] = m.group(2).strip()
        if block:
            blocks.append(block)
    processors = [b for b in blocks if b.get("processor", "").isdigit()]
    first = processors[0] if processors else (blocks[0] if blocks else {})
    board = {k: v for b in blocks for k, v in b.items()}  # trailing "Model : Raspberry Pi 5" etc.

    flags = (first.get("flags") or first.get("features") or "").split()
    info = CpuInfo(logical_cores=len(processors) or None, features=normalize_features(flags))
    if "vendor_id" in first or "model name" in first:
        info.model = first.get("model name") or None
        info.vendor = first.get("vendor_id") or None
    if "cpu implementer" in first:
        info.model, info.vendor = _arm_model(first, board.get("model"))

    cores = {(b.get("physical id"), b.get("core id")) for b in processors if "core id" in b}
    if cores:
        info.physical_cores = len(cores)
    elif info.logical_cores and "cpu cores" not in first:
        info.physical_cores = info.logical_cores  # ARM reports no SMT: one thread per core
    return info


def _arm_model(block: dict[str, str], board: str | None) -> tuple[str | None, str | None]:
    """An ARM core's name from its implementer and part numbers, with the board's name."""
    try:
        implementer = int(block.get("cpu implementer", ""), 16)
        part = int(block.get("cpu part", ""), 16)
    except ValueError:
        return block.get("model name"), None
    vendor = ARM_IMPLEMENTERS.get(implementer, f"implementer 0x{implementer:02x}")
    core = ARM_PARTS.get(part, f"part 0x{part:03x}") if implementer == 0x41 else f"part 0x{part:03x}"
    model = block.get("model name") or core
    return (f"{model} ({board})" if board else model), vendor


def parse_lscpu(text: str) -> CpuInfo:
    """Read ``lscpu`` output (its default, human-readable form) into a CpuInfo."""
    values = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            values[m.group(1).strip()] = m.group(2).strip()

    def number(key: str) -> int | None:
        try:
            return int(values[key])
        except (KeyError, ValueError):
            return None

    per_socket, sockets = number("Core(s) per socket"), number("Socket(s)") or 1
    return CpuInfo(
        model=values.get("Model name"),
        vendor=values.get("Vendor ID"),
        physical_cores=per_socket * sockets if per_socket else None,
        logical_cores=number("CPU(s)"),
        features=normalize_features(values.get("Flags", "").split()),
    )


def normalize_features(flags: list[str]) -> set[str]:
    """The kernel-relevant subset of a flags/Features list, in localq's names."""
    found = set()
    for flag in flags:
        flag = flag.lower()
        if flag in X86_FEATURES:
            found.add(flag)
        elif flag in ARM_LINUX_FEATURES:
            found.add(ARM_LINUX_FEATURES[flag])
    return found


def probe_cpu() -> CpuInfo:
    """This machine's CPU on Linux (raises OSError where /proc is unreadable)."""
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        info = parse_proc_cpuinfo(f.read())
    if info.logical_cores is None:
        info.logical_cores = os.cpu_count()
    return info
