"""HardwareProfile: what the probe found about this machine, as plain data.

Every part that the probe could not read is ``None`` (or empty) and has an entry
in ``unknowns`` saying why, so the recommender can state its assumption instead
of guessing silently. Sizes are bytes, bandwidths decimal GB/s.

The profile is stored as JSON (in the index, and as recordings in the tests),
so ``to_dict`` / ``from_dict`` round-trip it exactly; ``from_dict`` checks the
numbers, because a hand-edited or damaged record must not become a plan.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from localq.errors import LocalqError
from localq.units import GiB



@dataclass
class CpuInfo:
    model: str | None = None
    vendor: str | None = None
    physical_cores: int | None = None
    logical_cores: int | None = None
    # Instruction-set features that inference kernels use, by localq's names:
    # x86 as Linux spells them (avx2, avx512_vnni, amx_int8 ...), ARM as
    # neon, dotprod, i8mm, sve, sve2, fp16, bf16 (see probe.cpu).
    features: set[str] = field(default_factory=set)


@dataclass
class MemoryInfo:
    total: int | None = None
    available: int | None = None
    swap_total: int | None = None
    swap_free: int | None = None


@dataclass
class GpuInfo:
    vendor: str                               # "nvidia" or "amd"
    name: str
    index: int = 0
    memory_total: int | None = None
    memory_free: int | None = None
    compute_capability: str | None = None     # NVIDIA only: "9.0"
    driver: str | None = None
    cuda_version: str | None = None           # the highest CUDA the driver supports
    bus_width_bits: int | None = None
    memory_clock_mhz: int | None = None       # the maximum memory clock
    peak_bandwidth_gbps: float | None = None  # bus width / 8 x clock x 2 (double data rate)
    source: str = ""                          # "nvml", "nvidia-smi", "amdsmi", "sysfs"

    @property
    def cc(self) -> tuple[int, int] | None:
        """The compute capability as a comparable tuple, e.g. (9, 0)."""
        if not self.compute_capability:
            return None
        major, _, minor = self.compute_capability.partition(".")
        try:
            return int(major), int(minor or 0)
        except ValueError:
            return None


@dataclass
class AppleInfo:
    chip: str                                 # "Apple M2"
    unified_memory: int
    gpu_cores: int | None = None
    performance_cores: int | None = None
    efficiency_cores: int | None = None
    wired_limit_share: float = 2 / 3          # share of unified memory Metal lets one process wire
    wired_limit_source: str = ""              # "macOS default (estimate)" or "iogpu.wired_limit_mb"
    bandwidth_gbps: float | None = None       # the chip's memory bandwidth (Apple's figure)

    @property
    def wired_limit(self) -> int:
        """Bytes of unified memory the GPU may use (Metal's working-set limit)."""
        return int(self.unified_memory * self.wired_limit_share)


@dataclass
class BackendInfo:
    name: str                                 # "llamacpp", "mlx", "torch_int4"
    available: bool
    device: str | None = None                 # where it runs: "cpu", "cuda", "metal", "rocm", "vulkan"
    gpu_offload: bool = False
    version: str | None = None
    reason: str = ""                          # one line: why it can or cannot run


@dataclass
class HardwareProfile:
    os: str                                   # "linux", "darwin", "windows"
    arch: str                                 # "x86_64", "arm64"
    cpu: CpuInfo = field(default_factory=CpuInfo)
    memory: MemoryInfo = field(default_factory=MemoryInfo)
    disk_free: int | None = None
    disk_path: str | None = None              # where disk_free was measured (the cache)
    gpus: list[GpuInfo] = field(default_factory=list)
    apple: AppleInfo | None = None
    backends: dict[str, BackendInfo] = field(default_factory=dict)
    bandwidth_gbps: float | None = None       # measured main-memory bandwidth
    bandwidth_source: str = ""                # "measured", "stored <date>", or a recording's note
    unknowns: dict[str, str] = field(default_factory=dict)  # part -> why it is unknown
    probe_seconds: float | None = None

    @property
    def machine_key(self) -> str:
        """What identifies this machine for reusing its bandwidth measurement."""
        model = self.cpu.model or "unknown cpu"
        total = self.memory.total or 0
        return f"{self.os}-{self.arch}|{model}|{round(total / GiB)}GiB"

    def best_gpu(self, vendor: str | None = None) -> GpuInfo | None:
        """The GPU with the most memory (of one vendor, if given)."""
        gpus = [g for g in self.gpus if vendor is None or g.vendor == vendor]
        return max(gpus, key=lambda g: g.memory_total or 0, default=None)

    # --- JSON ------------------------------------------------------------------

    def to_dict(self) -> dict:
        data = asdict(self)
        data["cpu"]["features"] = sorted(self.cpu.features)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "HardwareProfile":
        """Rebuild a profile from ``to_dict`` output; raise LocalqError on bad numbers."""
        if not isinstance(data, dict) or "os" not in data or "arch" not in data:
            raise LocalqError(
                "not a hardware profile: it needs at least 'os' and 'arch'",
                "run `localq probe --json` to make one",
            )
        cpu = _build(CpuInfo, data.get("cpu") or {})
        cpu.features = set(cpu.features or ())
        apple = data.get("apple")
        profile = cls(
            os=data["os"],
            arch=data["arch"],
            cpu=cpu,
            memory=_build(MemoryInfo, data.get("memory") or {}),
            disk_free=data.get("disk_free"),
            disk_path=data.get("disk_path"),
            gpus=[_build(GpuInfo, g) for g in data.get("gpus") or []],
            apple=_build(AppleInfo, apple) if apple else None,
            backends={k: _build(BackendInfo, v) for k, v in (data.get("backends") or {}).items()},
            bandwidth_gbps=data.get("bandwidth_gbps"),
            bandwidth_source=data.get("bandwidth_source") or "",
            unknowns=dict(data.get("unknowns") or {}),
            probe_seconds=data.get("probe_seconds"),
        )
        validate(profile)
        return profile


def _build(kind, values: dict):
    """A dataclass from a dict, ignoring keys it does not know (newer records)."""
    names = {f.name for f in fields(kind)}
    try:
        return kind(**{k: v for k, v in values.items() if k in names})
    except TypeError as exc:
        raise LocalqError(f"bad hardware profile: {kind.__name__}: {exc}") from exc


def validate(profile: HardwareProfile) -> None:
    """Raise LocalqError naming the first negative or absurd number in ``profile``."""
    checks = {
        "memory.total": profile.memory.total,
        "memory.available": profile.memory.available,
        "memory.swap_total": profile.memory.swap_total,
        "memory.swap_free": profile.memory.swap_free,
        "disk_free": profile.disk_free,
        "bandwidth_gbps": profile.bandwidth_gbps,
        "cpu.physical_cores": profile.cpu.physical_cores,
        "cpu.logical_cores": profile.cpu.logical_cores,
    }
    for i, gpu in enumerate(profile.gpus):
        checks[f"gpus[{i}].memory_total"] = gpu.memory_total
        checks[f"gpus[{i}].memory_free"] = gpu.memory_free
        checks[f"gpus[{i}].peak_bandwidth_gbps"] = gpu.peak_bandwidth_gbps
    if profile.apple:
        checks["apple.unified_memory"] = profile.apple.unified_memory
        checks["apple.bandwidth_gbps"] = profile.apple.bandwidth_gbps
    for name, value in checks.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise LocalqError(f"bad hardware profile: {name} is {value!r}, not a number")
        if value < 0:
            raise LocalqError(f"bad hardware profile: {name} is negative ({value})")
        if value > 2**60:  # an exabyte of memory, or bandwidth past any machine: a damaged record
            raise LocalqError(f"bad hardware profile: {name} is absurdly large ({value})")
    if profile.apple and not 0 < profile.apple.wired_limit_share <= 1:
        raise LocalqError(
            f"bad hardware profile: apple.wired_limit_share is {profile.apple.wired_limit_share}, "
            "not a share between 0 and 1"
        )
