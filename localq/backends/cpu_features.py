"""Whether llama.cpp may use its AMX kernels on this CPU.

llama-cpp-python compiled on the machine it runs on builds ggml's AMX kernels
when the CPU advertises Intel AMX (the ``amx_tile`` flag), and then puts the
weights in AMX buffers. On some virtual machines that advertise AMX, those
kernels die with SIGILL at the first reply (seen on a Firecracker VM with
Sapphire Rapids CPUs, where a plain ``ldtilecfg``/``tilezero`` test passes,
so no cheap probe can tell). So the llama.cpp backend keeps the weights in
plain CPU buffers when AMX is advertised, unless ``LOCALQ_LLAMA_AMX=1``
says that the AMX kernels work here.
"""

from __future__ import annotations

import os
from pathlib import Path


def advertises_amx() -> bool:
    """True when the CPU flags in /proc/cpuinfo include amx_tile (Linux only)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return " amx_tile" in text


def use_extra_buffers() -> bool:
    """Whether llama.cpp may put weights in its extra (AMX, repacked) buffer types."""
    if os.environ.get("LOCALQ_LLAMA_AMX", "").strip() in ("1", "yes", "true"):
        return True
    return not advertises_amx()
