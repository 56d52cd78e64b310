"""Memory and disk: RAM total and available, swap, free space where the cache lives.

On Linux the numbers come from ``/proc/meminfo`` (``MemAvailable`` is the
kernel's own estimate of what can be allocated without swapping), capped by a
cgroup v2 ``memory.max`` when the process runs in a container with a limit.
Elsewhere psutil answers. Swap is reported, never counted as room for a model:
a model that pages from swap runs at the disk's speed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from localq.probe.profile import MemoryInfo

CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")
CGROUP_MEMORY_CURRENT = Path("/sys/fs/cgroup/memory.current")


def parse_meminfo(text: str) -> MemoryInfo:
    """Read Linux ``/proc/meminfo`` (values in kB) into a MemoryInfo in bytes."""
    kb: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kb[key.strip()] = int(parts[0])

    def size(key: str) -> int | None:
        return kb[key] * 1024 if key in kb else None

    available = size("MemAvailable")
    if available is None and "MemFree" in kb:  # kernels before 3.14 lack MemAvailable
        available = (kb["MemFree"] + kb.get("Buffers", 0) + kb.get("Cached", 0)) * 1024
    return MemoryInfo(
        total=size("MemTotal"),
        available=available,
        swap_total=size("SwapTotal"),
        swap_free=size("SwapFree"),
    )


def parse_cgroup_limit(text: str) -> int | None:
    """A cgroup v2 ``memory.max`` value in bytes; None for ``max`` (no limit)."""
    text = text.strip()
    return int(text) if text.isdigit() else None


def apply_cgroup_limit(memory: MemoryInfo, limit: int | None, current: int | None) -> MemoryInfo:
    """Cap total and available RAM by a container's memory limit."""
    if limit is None or memory.total is None or limit >= memory.total:
        return memory
    available = memory.available
    if current is not None:
        left = max(limit - current, 0)
        available = left if available is None else min(available, left)
    return MemoryInfo(limit, available, memory.swap_total, memory.swap_free)


def probe_memory() -> MemoryInfo:
    """This machine's RAM and swap."""
    if sys.platform.startswith("linux"):
        memory = parse_meminfo(Path("/proc/meminfo").read_text())
        try:
            limit = parse_cgroup_limit(CGROUP_MEMORY_MAX.read_text())
            current = int(CGROUP_MEMORY_CURRENT.read_text().strip()) if limit else None
        except (OSError, ValueError):
            limit = current = None
        return apply_cgroup_limit(memory, limit, current)
    import psutil

    vm, swap = psutil.virtual_memory(), psutil.swap_memory()
    return MemoryInfo(vm.total, vm.available, swap.total, swap.free)


def disk_free(path: Path) -> tuple[int, str]:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free, str(path)
