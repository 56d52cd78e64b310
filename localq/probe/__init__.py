"""The hardware probe: ``probe()`` returns this machine's HardwareProfile.

Each part (cpu, memory, disk, nvidia, amd, apple, backends, bandwidth) is read
on its own; one that fails leaves its fields empty and an entry in
``profile.unknowns`` saying why, and the probe goes on. Nothing here imports a
GPU library: NVML is asked through nvidia-ml-py only when that small package is
installed, otherwise ``nvidia-smi`` answers; the backends are found with
``importlib.util.find_spec`` (see probe.backends).

The probe measures and stores nothing: ``probe(bandwidth=True)`` measures the
memory bandwidth (probe.bandwidth) every time. ``localq.machine.machine_profile``
is what the CLI and the app call: it stores the figure per machine in the index
and reuses it, so that later probes take a small fraction of a second.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Callable, TypeVar

from localq.probe.profile import (
    AppleInfo,
    BackendInfo,
    CpuInfo,
    GpuInfo,
    HardwareProfile,
    MemoryInfo,
)

__all__ = [
    "probe", "measure_into", "HardwareProfile", "CpuInfo", "MemoryInfo", "GpuInfo", "AppleInfo", "BackendInfo",
    "normalize_arch", "normalize_os",
]

T = TypeVar("T")


def normalize_os(name: str) -> str:
    """``linux``, ``darwin``, ``windows`` (from ``sys.platform``)."""
    if name.startswith("linux"):
        return "linux"
    if name.startswith("win"):
        return "windows"
    return name


def normalize_arch(machine: str) -> str:
    """``x86_64`` or ``arm64`` for the usual spellings; others as given, in lower case."""
    machine = machine.lower()
    if machine in ("x86_64", "amd64", "x64"):
        return "x86_64"
    if machine in ("aarch64", "arm64", "armv8l"):
        return "arm64"
    return machine


def _soft(unknowns: dict[str, str], part: str, read: Callable[[], T], default: T) -> T:
    """Run one part of the probe; on any failure record why and return ``default``."""
    try:
        return read()
    except Exception as exc:  # the probe fails soft: a part is unknown, never a crash
        unknowns[part] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return default


def probe(*, bandwidth: bool = True) -> HardwareProfile:
    """Probe this machine.

    ``bandwidth=False`` skips the bandwidth measurement (well under a second,
    but the slowest part); ``localq.machine`` then fills in a stored figure.
    """
    from localq.paths import get_paths
    from localq.probe import amd, apple, backends, memory, nvidia
    from localq.probe.cpu import probe_cpu

    start = time.perf_counter()
    profile = HardwareProfile(os=normalize_os(sys.platform), arch=normalize_arch(platform.machine()))
    unknowns = profile.unknowns

    if profile.os == "darwin":
        values = _soft(unknowns, "cpu", apple.run_sysctl, {})
        profile.cpu = apple.cpu_from_sysctl(values)
        profile.memory = apple.memory_from_sysctl(values)
        profile.memory.available = _soft(unknowns, "memory", _psutil_available, None)
        if profile.arch == "arm64":
            cores = _soft(unknowns, "apple.gpu_cores", apple.run_ioreg_gpu_cores, None)
            profile.apple = apple.apple_from_sysctl(values, cores)
            if profile.apple is None:
                unknowns["apple"] = "sysctl did not name an Apple chip and its memory"
    elif profile.os == "linux":
        profile.cpu = _soft(unknowns, "cpu", probe_cpu, CpuInfo(logical_cores=os.cpu_count()))
        profile.memory = _soft(unknowns, "memory", memory.probe_memory, MemoryInfo())
    else:
        profile.cpu = CpuInfo(model=platform.processor() or None, logical_cores=os.cpu_count())
        unknowns["cpu.features"] = f"localq has no CPU feature reader for {profile.os} yet"
        profile.memory = _soft(unknowns, "memory", memory.probe_memory, MemoryInfo())
    if profile.memory.total is None and "memory" not in unknowns:
        unknowns["memory"] = "the total amount of RAM could not be read"

    data_dir = get_paths().data
    free = _soft(unknowns, "disk", lambda: memory.disk_free(data_dir), None)
    if free:
        profile.disk_free, profile.disk_path = free

    if profile.os != "darwin":
        found, why = _soft(unknowns, "nvidia", nvidia.probe_nvidia, ([], None))
        profile.gpus += found
        if why:
            unknowns["nvidia"] = why
    if profile.os == "linux":
        found, why = _soft(unknowns, "amd", amd.probe_amd, ([], None))
        profile.gpus += found
        if why:
            unknowns["amd"] = why

    profile.backends = _soft(
        unknowns, "backends",
        lambda: backends.detect_backends(profile.os, profile.arch, profile.gpus, profile.apple), {},
    )
    if bandwidth:
        _soft(unknowns, "bandwidth", lambda: measure_into(profile), None)
    profile.probe_seconds = round(time.perf_counter() - start, 3)
    return profile


def _psutil_available() -> int:
    import psutil

    return psutil.virtual_memory().available


def measure_into(profile: HardwareProfile) -> None:
    """Measure the memory bandwidth and put it in ``profile`` (nothing is stored)."""
    from localq.probe.bandwidth import measure_bandwidth

    profile.bandwidth_gbps = measure_bandwidth(threads=profile.cpu.logical_cores)
    profile.bandwidth_source = "measured now"
