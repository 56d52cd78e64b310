"""Hardware profiles of recorded machines, built from tests/fixtures/hardware/.

Each profile runs the recorded outputs (``/proc/cpuinfo``, ``/proc/meminfo``,
``nvidia-smi -q``, ``sysctl``, ``ioreg``) through the probe's own parsers. What
a recording cannot hold is set here and says so: which backends are installed
(a machine set up for localq), and the memory bandwidth of machines that were
not measured (an assumption, named in ``bandwidth_source``). The H100 profile
is the output of ``localq probe --json`` on a real H100 machine. Files named
``modelled-...`` are not recordings (see the fixtures' README); the laptop,
Pi, M2 and RTX 4090 profiles are built from them.
"""

from __future__ import annotations

import json
from pathlib import Path

from localq.probe.apple import apple_from_sysctl, cpu_from_sysctl, memory_from_sysctl, parse_ioreg_gpu_cores, parse_sysctl
from localq.probe.cpu import parse_proc_cpuinfo
from localq.probe.memory import parse_meminfo
from localq.probe.nvidia import parse_nvidia_smi_q
from localq.probe.profile import BackendInfo, HardwareProfile

FIXTURES = Path(__file__).parent / "fixtures" / "hardware"
GiB = 2**30


def read(name: str) -> str:
    return (FIXTURES / name).read_text()


def llamacpp(device: str = "cpu") -> BackendInfo:
    return BackendInfo("llamacpp", True, device, device != "cpu", "0.3.16", f"llama-cpp-python ({device})")


def missing(name: str) -> BackendInfo:
    return BackendInfo(name, False, reason=f"{name} is not installed")


def laptop_8gb() -> HardwareProfile:
    """A Core i5-8250U laptop with 8 GB of RAM and no discrete GPU."""
    return HardwareProfile(
        os="linux", arch="x86_64",
        cpu=parse_proc_cpuinfo(read("modelled-laptop-i5-8250u-proc-cpuinfo.txt")),
        memory=parse_meminfo(read("modelled-laptop-8gb-proc-meminfo.txt")),
        backends={"llamacpp": llamacpp(), "mlx": missing("mlx"), "torch_int4": missing("torch_int4")},
        bandwidth_gbps=20.0, bandwidth_source="assumed: dual-channel DDR4-2400 (38.4 GB/s peak), not measured",
    )


def pi5_8gb() -> HardwareProfile:
    """A Raspberry Pi 5 with 8 GB (LPDDR4X-4267 on a 32-bit bus: 17 GB/s peak)."""
    return HardwareProfile(
        os="linux", arch="arm64",
        cpu=parse_proc_cpuinfo(read("modelled-pi5-8gb-proc-cpuinfo.txt")),
        memory=parse_meminfo(read("modelled-pi5-8gb-proc-meminfo.txt")),
        backends={"llamacpp": llamacpp(), "mlx": missing("mlx"), "torch_int4": missing("torch_int4")},
        bandwidth_gbps=9.0, bandwidth_source="assumed: about half of the 17 GB/s peak, not measured",
    )


def m2_16gb() -> HardwareProfile:
    """A MacBook Air M2 with 16 GB, 10 GPU cores; mlx and llama.cpp (Metal) installed."""
    values = parse_sysctl(read("modelled-m2-16gb-sysctl.txt"))
    return HardwareProfile(
        os="darwin", arch="arm64",
        cpu=cpu_from_sysctl(values),
        memory=memory_from_sysctl(values),  # sysctl has no free-memory figure: left unknown
        apple=apple_from_sysctl(values, parse_ioreg_gpu_cores(read("modelled-m2-ioreg-agxaccelerator.txt"))),
        backends={
            "llamacpp": llamacpp("metal"),
            "mlx": BackendInfo("mlx", True, "metal", True, "0.29.0", "mlx on the Apple GPU"),
            "torch_int4": missing("torch_int4"),
        },
    )


def desktop_4090() -> HardwareProfile:
    """A Ryzen 9 7950X desktop with 64 GB and an RTX 4090 (24 GB); torch (CUDA) and llama.cpp (CUDA)."""
    return HardwareProfile(
        os="linux", arch="x86_64",
        cpu=parse_proc_cpuinfo(read("modelled-desktop-ryzen-7950x-proc-cpuinfo.txt")),
        memory=parse_meminfo(read("modelled-desktop-64gb-proc-meminfo.txt")),
        gpus=parse_nvidia_smi_q(read("modelled-rtx4090-nvidia-smi-q.txt")),
        backends={
            "llamacpp": llamacpp("cuda"),
            "mlx": missing("mlx"),
            "torch_int4": BackendInfo("torch_int4", True, "cuda", True, "2.9.0", "torch on RTX 4090"),
        },
        bandwidth_gbps=60.0, bandwidth_source="assumed: dual-channel DDR5-6000 (96 GB/s peak), not measured",
    )


def h100_80gb() -> HardwareProfile:
    """An H100 80GB machine: ``localq probe --json`` as it ran there."""
    return HardwareProfile.from_dict(json.loads(read("h100-localq-probe.json")))


def _this_environments_backends(profile: HardwareProfile) -> HardwareProfile:
    """The profile with the backends the probe detects in this environment, for its hardware."""
    from localq.probe.backends import detect_backends

    profile.backends = detect_backends(profile.os, profile.arch, profile.gpus, profile.apple)
    return profile


def h200_141gb() -> HardwareProfile:
    """The recorded H200 (141 GB) and its 16-core Xeon host, 128 GiB; the backends are what this
    environment has (a recording cannot say what will be installed)."""
    return _this_environments_backends(HardwareProfile(
        os="linux", arch="x86_64",
        cpu=parse_proc_cpuinfo(read("h200-host-proc-cpuinfo.txt")),
        memory=parse_meminfo(read("h200-host-proc-meminfo.txt")),
        gpus=parse_nvidia_smi_q(read("h200-nvidia-smi-q.txt")),
        bandwidth_gbps=40.0, bandwidth_source="assumed for the host's RAM, not measured",
    ))


def xeon_2c() -> HardwareProfile:
    """The recorded 2-vCPU Intel Xeon VM with 24 GiB; backends as in this environment."""
    return _this_environments_backends(HardwareProfile(
        os="linux", arch="x86_64",
        cpu=parse_proc_cpuinfo(read("xeon-2c-avx512-amx-proc-cpuinfo.txt")),
        memory=parse_meminfo(read("xeon-2c-proc-meminfo.txt")),
        bandwidth_gbps=17.0, bandwidth_source="assumed, not measured",
    ))


MACHINES = {
    "laptop-8gb": laptop_8gb,
    "m2-16gb": m2_16gb,
    "rtx4090-24gb": desktop_4090,
    "h100-80gb": h100_80gb,
    "pi5-8gb": pi5_8gb,
    "h200-141gb": h200_141gb,
    "xeon-2c": xeon_2c,
}
