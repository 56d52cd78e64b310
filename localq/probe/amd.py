"""AMD GPUs (ROCm): name and VRAM.

Through AMD's ``amdsmi`` Python package when it is installed (ROCm ships it),
else from the amdgpu driver's files in ``/sys/class/drm/cardN/device``:
``vendor`` (0x1002 is AMD), ``device`` (the PCI device id), and
``mem_info_vram_total`` / ``mem_info_vram_used`` in bytes. sysfs names no
product, so a small table maps the common device ids to names; other cards
read as "AMD GPU 0x....". ``read_drm`` takes the directory, so the tests point
it at a recorded tree.
"""

from __future__ import annotations

import re
from pathlib import Path

from localq.probe.profile import GpuInfo

AMD_VENDOR = "0x1002"
DRM_ROOT = Path("/sys/class/drm")

# PCI device ids of the amdgpu cards people run models on (from the PCI ID repository).
AMD_DEVICE_NAMES = {
    "0x744c": "Radeon RX 7900 XTX / XT",
    "0x7448": "Radeon PRO W7900",
    "0x73bf": "Radeon RX 6900 XT / 6800 XT / 6800",
    "0x73af": "Radeon RX 6900 XT",
    "0x740f": "Instinct MI210",
    "0x740c": "Instinct MI250X / MI250",
    "0x74a1": "Instinct MI300X",
    "0x7550": "Radeon RX 9070 XT / 9070",
}


def read_drm(root: Path = DRM_ROOT) -> list[GpuInfo]:
    """AMD GPUs described by the amdgpu driver's sysfs files under ``root``."""
    gpus = []
    cards = sorted((p for p in root.glob("card*") if re.fullmatch(r"card\d+", p.name)),
                   key=lambda p: int(p.name[4:]))
    for card in cards:
        device = card / "device"
        if _read(device / "vendor") != AMD_VENDOR:
            continue
        total = _read_int(device / "mem_info_vram_total")
        used = _read_int(device / "mem_info_vram_used")
        device_id = _read(device / "device") or "unknown"
        name = _read(device / "product_name") or AMD_DEVICE_NAMES.get(device_id, f"AMD GPU {device_id}")
        gpus.append(GpuInfo(
            vendor="amd", name=name, index=len(gpus), memory_total=total,
            memory_free=total - used if total is not None and used is not None else None,
            source="sysfs",
        ))
    return gpus


def _read(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text.lower() if path.name in ("vendor", "device") else text


def _read_int(path: Path) -> int | None:
    text = _read(path)
    return int(text) if text and text.isdigit() else None


def probe_amd() -> tuple[list[GpuInfo], str | None]:
    """This machine's AMD GPUs, and why they are unknown if they are."""
    import importlib.util

    problem = None
    if importlib.util.find_spec("amdsmi") is not None:
        try:
            return _probe_amdsmi(), None
        except Exception as exc:  # AmdSmiException and friends; sysfs may still answer
            problem = f"amdsmi failed: {exc}"
    gpus = read_drm()
    if problem and not gpus:
        return [], problem
    return gpus, None


def _probe_amdsmi() -> list[GpuInfo]:
    import amdsmi

    amdsmi.amdsmi_init()
    try:
        gpus = []
        for index, handle in enumerate(amdsmi.amdsmi_get_processor_handles()):
            name = amdsmi.amdsmi_get_gpu_asic_info(handle).get("market_name") or "AMD GPU"
            vram = amdsmi.AmdSmiMemoryType.VRAM
            total = int(amdsmi.amdsmi_get_gpu_memory_total(handle, vram))
            used = int(amdsmi.amdsmi_get_gpu_memory_usage(handle, vram))
            gpus.append(GpuInfo(vendor="amd", name=name, index=index, memory_total=total,
                                memory_free=total - used, source="amdsmi"))
        return gpus
    finally:
        amdsmi.amdsmi_shut_down()
