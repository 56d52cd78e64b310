"""Apple Silicon: chip, cores, unified memory, Metal's wired limit, bandwidth.

``sysctl`` names the chip (``machdep.cpu.brand_string: Apple M2``), its memory
(``hw.memsize``), core clusters (``hw.perflevel0/1.physicalcpu``), the ARM
features (``hw.optional.arm.FEAT_DotProd: 1`` ...) and a user-set GPU wired
limit (``iogpu.wired_limit_mb``, 0 meaning the default). The GPU core count is
an IORegistry property (``"gpu-core-count" = 10`` in ``ioreg -rc
AGXAccelerator``). Apple publishes each chip's memory bandwidth; no API reports
it, so it comes from the table below.

Metal lets one process keep at most ``recommendedMaxWorkingSetSize`` of unified
memory resident for the GPU. Without Metal at hand we estimate it: about 2/3 of
memory up to 16 GiB (10.67 GB on a 16 GB M4, exo-explore/exo#1672) and about 3/4
above (17.76 GiB on a 24 GB Mac, sgl-project/sglang#29949; larger Macs get a
little more, 107.5 GiB of 128 GiB in antirez/ds4#893, so 3/4 errs on the safe
side). A non-zero ``iogpu.wired_limit_mb`` replaces the estimate.
"""

from __future__ import annotations

import re
import subprocess

from localq.probe.profile import AppleInfo, CpuInfo, MemoryInfo
from localq.units import GiB


# Memory bandwidth in GB/s, from Apple's product pages and press releases.
APPLE_BANDWIDTH_GBPS = {
    "Apple M1": 68.25, "Apple M1 Pro": 200, "Apple M1 Max": 400, "Apple M1 Ultra": 800,
    "Apple M2": 100, "Apple M2 Pro": 200, "Apple M2 Max": 400, "Apple M2 Ultra": 800,
    "Apple M3": 100, "Apple M3 Pro": 150, "Apple M3 Max": 400, "Apple M3 Ultra": 819,
    "Apple M4": 120, "Apple M4 Pro": 273, "Apple M4 Max": 546,
    "Apple M5": 153,
}
# Binned chips with fewer CPU cores also have a narrower memory bus.
APPLE_BINNED_BANDWIDTH_GBPS = {("Apple M3 Max", 14): 300, ("Apple M4 Max", 14): 410}

# sysctl hw.optional.* keys -> localq's ARM feature names.
SYSCTL_FEATURES = {
    "hw.optional.AdvSIMD": "neon",
    "hw.optional.neon": "neon",
    "hw.optional.arm.FEAT_DotProd": "dotprod",
    "hw.optional.arm.FEAT_I8MM": "i8mm",
    "hw.optional.arm.FEAT_FP16": "fp16",
    "hw.optional.neon_fp16": "fp16",
    "hw.optional.arm.FEAT_BF16": "bf16",
    "hw.optional.arm.FEAT_SME": "sme",
    "hw.optional.arm.FEAT_SME2": "sme2",
}
# Intel Macs list features in machdep.cpu.features / leaf7_features.
INTEL_MAC_FEATURES = {
    "SSE4.2": "sse4_2", "AVX1.0": "avx", "AVX2": "avx2", "FMA": "fma", "F16C": "f16c",
    "AVX512F": "avx512f", "AVX512BW": "avx512bw", "AVX512VL": "avx512vl", "AVX512VNNI": "avx512_vnni",
}


def parse_sysctl(text: str) -> dict[str, str]:
    """``sysctl`` output (``name: value`` lines) as a dict."""
    values = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name and " " not in name.strip():
            values[name.strip()] = value.strip()
    return values


def _int(values: dict[str, str], key: str) -> int | None:
    try:
        return int(values[key])
    except (KeyError, ValueError):
        return None


def cpu_from_sysctl(values: dict[str, str]) -> CpuInfo:
    """The CPU as macOS's sysctl describes it."""
    features = {name for key, name in SYSCTL_FEATURES.items() if values.get(key) == "1"}
    intel = (values.get("machdep.cpu.features", "") + " " + values.get("machdep.cpu.leaf7_features", "")).split()
    features |= {INTEL_MAC_FEATURES[f] for f in intel if f in INTEL_MAC_FEATURES}
    brand = values.get("machdep.cpu.brand_string")
    return CpuInfo(
        model=brand,
        vendor="Apple" if brand and brand.startswith("Apple") else values.get("machdep.cpu.vendor"),
        physical_cores=_int(values, "hw.physicalcpu"),
        logical_cores=_int(values, "hw.logicalcpu"),
        features=features,
    )


def memory_from_sysctl(values: dict[str, str]) -> MemoryInfo:
    """Total memory and swap from sysctl (available memory is not there: psutil has it)."""
    swap_total = swap_free = None
    m = re.search(r"total = ([\d.]+)M .*free = ([\d.]+)M", values.get("vm.swapusage", ""))
    if m:
        swap_total, swap_free = (int(float(x) * 2**20) for x in m.groups())
    return MemoryInfo(total=_int(values, "hw.memsize"), swap_total=swap_total, swap_free=swap_free)


def parse_ioreg_gpu_cores(text: str) -> int | None:
    """The GPU core count from ``ioreg -rc AGXAccelerator`` output."""
    m = re.search(r'"gpu-core-count"\s*=\s*(\d+)', text)
    return int(m.group(1)) if m else None


def default_wired_share(unified_memory: int) -> float:
    """The share of unified memory Metal lets one process wire by default (an estimate)."""
    return 2 / 3 if unified_memory <= 16 * GiB else 3 / 4


def apple_from_sysctl(values: dict[str, str], gpu_cores: int | None = None) -> AppleInfo | None:
    """AppleInfo for an Apple Silicon Mac; None for anything else (Intel Macs)."""
    chip = values.get("machdep.cpu.brand_string", "")
    memory = _int(values, "hw.memsize")
    if not chip.startswith("Apple") or not memory:
        return None
    wired_mb = _int(values, "iogpu.wired_limit_mb") or 0
    if wired_mb > 0:
        share, source = min(wired_mb * 2**20 / memory, 1.0), "iogpu.wired_limit_mb"
    else:
        share, source = default_wired_share(memory), "macOS default (estimate)"
    cores = _int(values, "hw.physicalcpu")
    bandwidth = APPLE_BINNED_BANDWIDTH_GBPS.get((chip, cores), APPLE_BANDWIDTH_GBPS.get(chip))
    return AppleInfo(
        chip=chip,
        unified_memory=memory,
        gpu_cores=gpu_cores,
        performance_cores=_int(values, "hw.perflevel0.physicalcpu"),
        efficiency_cores=_int(values, "hw.perflevel1.physicalcpu"),
        wired_limit_share=share,
        wired_limit_source=source,
        bandwidth_gbps=bandwidth,
    )


def run_sysctl() -> dict[str, str]:
    """This Mac's sysctl values for the hw, machdep.cpu, iogpu and vm.swapusage nodes."""
    # iogpu is missing before macOS 14: sysctl then exits non-zero but prints the rest.
    out = subprocess.run(
        ["sysctl", "hw", "machdep.cpu", "iogpu", "vm.swapusage"],
        capture_output=True, text=True, timeout=5,
    ).stdout
    return parse_sysctl(out)


def run_ioreg_gpu_cores() -> int | None:
    """This Mac's GPU core count, from the IORegistry."""
    out = subprocess.run(
        ["ioreg", "-rc", "AGXAccelerator", "-d", "1"], capture_output=True, text=True, timeout=5
    ).stdout
    return parse_ioreg_gpu_cores(out)
