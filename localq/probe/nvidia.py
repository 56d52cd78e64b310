"""NVIDIA GPUs: name, memory, compute capability, driver, memory bandwidth.

The live probe asks NVML through nvidia-ml-py (``pynvml``) when it is
installed, else runs ``nvidia-smi`` (the driver ships it), else reports the GPU
as unknown with the reason. The text parsers take what ``nvidia-smi -q`` and
``nvidia-smi --query-gpu=... --format=csv`` print, so the tests use recordings.

``nvidia-smi -q`` prints neither the compute capability nor the memory bus
width. The live probe asks ``--query-gpu=compute_cap`` for the first; for both,
when nothing better is at hand, the tables below (from NVIDIA's CUDA GPUs list,
developer.nvidia.com/cuda-gpus, and the cards' data sheets) fill them in by
name. Peak bandwidth = bus width / 8 x maximum memory clock x 2: nvidia-smi and
NVML report the memory clock so that two transfers per clock give the data
sheet's figure (H100 SXM: 5120 bit x 2619 MHz -> 3352 GB/s; RTX 4090: 384 bit
x 10501 MHz -> 1008 GB/s).
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
from pathlib import Path

from localq.probe.profile import GpuInfo
from localq.units import MiB

SMI_TIMEOUT_S = 10

# (name pattern, compute capability), first match wins: specific before general.
CC_BY_NAME = [
    (r"\b(GH|H)(100|200|800)\b|\bH20\b", "9.0"),
    (r"\b(GB|B)(100|200)\b", "10.0"),
    (r"RTX 50\d0|RTX PRO \d+ Blackwell", "12.0"),
    (r"\bA(100|800|30)\b", "8.0"),
    (r"RTX 40\d0|\bL(4|40S?|20)\b|RTX \d000 Ada", "8.9"),
    (r"RTX 30\d0|\bA(2|10G?|16|40)\b|RTX A\d000", "8.6"),
    (r"RTX 20\d0|GTX 16\d0|\bT4\b|TITAN RTX|Quadro RTX", "7.5"),
    (r"V100|TITAN V\b", "7.0"),
    (r"P100", "6.0"),
    (r"GTX 10\d0|\bP40\b|\bP4\b|TITAN Xp?\b", "6.1"),
]
# The architecture nvidia-smi names -> the lowest compute capability of that family.
CC_BY_ARCHITECTURE = {
    "Blackwell": "10.0", "Hopper": "9.0", "Ada Lovelace": "8.9", "Ampere": "8.0",
    "Turing": "7.5", "Volta": "7.0", "Pascal": "6.0",
}
# (name pattern, memory bus width in bits), from the cards' data sheets.
BUS_WIDTH_BY_NAME = [
    (r"H100 NVL|\bH200\b|\bH20\b", 6144),
    (r"\bH100\b|\bA100\b|\bA800\b|\bH800\b", 5120),
    (r"V100", 4096),
    (r"RTX 5090", 512),
    (r"RTX 4090|RTX 3090|\bL40S?\b|\bA10G?\b|\bA40\b|RTX 6000 Ada|RTX A6000", 384),
    (r"RTX 5080|RTX 4080|RTX 4070 Ti SUPER|RTX 3070|\bT4\b", 256),
    (r"RTX 4070|RTX 3060\b|\bL4\b", 192),
    (r"RTX 4060", 128),
]


def compute_capability_for(name: str, architecture: str | None = None) -> str | None:
    """The compute capability of a card, by its name (or, failing that, its architecture)."""
    for pattern, cc in CC_BY_NAME:
        if re.search(pattern, name):
            return cc
    return CC_BY_ARCHITECTURE.get(architecture or "")


def bus_width_for(name: str) -> int | None:
    """The memory bus width of a card, by its name, from its data sheet."""
    for pattern, bits in BUS_WIDTH_BY_NAME:
        if re.search(pattern, name):
            return bits
    return None


def peak_bandwidth(bus_width_bits: int | None, memory_clock_mhz: int | None) -> float | None:
    """Peak memory bandwidth in GB/s from the bus width and the maximum memory clock."""
    if not bus_width_bits or not memory_clock_mhz:
        return None
    return round(bus_width_bits / 8 * memory_clock_mhz * 2 / 1000, 1)


# --- nvidia-smi -q -----------------------------------------------------------

_GPU_HEADER = re.compile(r"^GPU [0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+\.[0-9A-Fa-f]+\s*$")
_KEY_VALUE = re.compile(r"^(\s*)(\S.*?)\s+:\s?(.*)$")


def parse_nvidia_smi_q(text: str) -> list[GpuInfo]:
    """Read ``nvidia-smi -q`` output into one GpuInfo per GPU."""
    top: dict[str, str] = {}
    gpus: list[dict[str, str]] = []
    stack: list[tuple[int, str]] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("="):
            continue
        if _GPU_HEADER.match(line):
            gpus.append({"Bus Id": line.split()[1]})
            stack = []
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        m = _KEY_VALUE.match(line)
        if not m:  # a section header: "    FB Memory Usage"
            stack.append((indent, line.strip()))
            continue
        key = "/".join([name for _, name in stack] + [m.group(2).strip()])
        target = gpus[-1] if gpus and indent > 0 else top
        target.setdefault(key, m.group(3).strip())

    result = []
    for index, values in enumerate(gpus):
        name = values.get("Product Name", "NVIDIA GPU")
        architecture = _value(values.get("Product Architecture"))
        bus_width = bus_width_for(name)
        clock = _mhz(values.get("Max Clocks/Memory"))
        result.append(GpuInfo(
            vendor="nvidia",
            name=name,
            index=index,
            memory_total=_mib(values.get("FB Memory Usage/Total")),
            memory_free=_mib(values.get("FB Memory Usage/Free")),
            compute_capability=compute_capability_for(name, architecture),
            driver=_value(top.get("Driver Version")),
            cuda_version=_value(top.get("CUDA Version")),
            bus_width_bits=bus_width,
            memory_clock_mhz=clock,
            peak_bandwidth_gbps=peak_bandwidth(bus_width, clock),
            source="nvidia-smi",
        ))
    return result


def parse_nvidia_smi_csv(text: str, columns: list[str] | None = None) -> list[dict[str, str]]:
    """Rows of ``nvidia-smi --query-gpu=... --format=csv``, keyed by field name.

    With ``columns`` the text has no header line (``--format=csv,noheader``).
    Header names lose their unit (``memory.total [MiB]`` -> ``memory.total``).
    """
    rows = [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text.strip())) if row]
    if columns is None:
        if not rows:
            return []
        columns = [re.sub(r"\s*\[.*\]$", "", name) for name in rows[0]]
        rows = rows[1:]
    return [dict(zip(columns, row)) for row in rows]


def gpus_from_csv(rows: list[dict[str, str]]) -> list[GpuInfo]:
    """GpuInfo from CSV query rows with name, memory.total, memory.free, driver_version, compute_cap."""
    gpus = []
    for index, row in enumerate(rows):
        name = row.get("name", "NVIDIA GPU")
        cc = _value(row.get("compute_cap")) or compute_capability_for(name)
        gpus.append(GpuInfo(
            vendor="nvidia", name=name, index=index,
            memory_total=_mib(row.get("memory.total")), memory_free=_mib(row.get("memory.free")),
            compute_capability=cc, driver=_value(row.get("driver_version")),
            bus_width_bits=bus_width_for(name), source="nvidia-smi",
        ))
    return gpus


def _value(text: str | None) -> str | None:
    if text is None or text.strip() in ("", "N/A", "[N/A]", "Not Supported", "[Not Supported]"):
        return None
    return text.strip()


def _mib(text: str | None) -> int | None:
    m = re.match(r"^\s*(\d+)\s*MiB", text or "")
    return int(m.group(1)) * MiB if m else None


def _mhz(text: str | None) -> int | None:
    m = re.match(r"^\s*(\d+)\s*MHz", text or "")
    return int(m.group(1)) if m else None


# --- live probe --------------------------------------------------------------


def probe_nvidia() -> tuple[list[GpuInfo], str | None]:
    """This machine's NVIDIA GPUs, and why they are unknown if they are.

    Returns ``([], None)`` on a machine without NVIDIA hardware.
    """
    import importlib.util

    problems = []
    if importlib.util.find_spec("pynvml") is not None:
        try:
            return _probe_nvml(), None
        except Exception as exc:  # NVMLError subclasses, a missing libnvidia-ml
            problems.append(f"NVML failed: {exc}")
    if shutil.which("nvidia-smi"):
        try:
            return _probe_smi(), None
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            problems.append(f"nvidia-smi failed: {exc}")
    if problems:
        return [], "; ".join(problems)
    if nvidia_on_pci():
        return [], ("an NVIDIA GPU is on the PCI bus, but neither nvidia-ml-py nor nvidia-smi "
                    "is installed (install NVIDIA's driver)")
    return [], None


def _probe_smi() -> list[GpuInfo]:
    """Run ``nvidia-smi -q`` and the compute-capability query side by side."""
    columns = ["index", "compute_cap"]
    detail = subprocess.Popen(["nvidia-smi", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    query = subprocess.Popen(
        ["nvidia-smi", f"--query-gpu={','.join(columns)}", "--format=csv,noheader"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        out, err = detail.communicate(timeout=SMI_TIMEOUT_S)
        q_out, _ = query.communicate(timeout=SMI_TIMEOUT_S)
    finally:  # a hung driver must not leave nvidia-smi running behind us
        for process in (detail, query):
            if process.poll() is None:
                process.kill()
    if detail.returncode != 0:
        lines = (err or out).strip().splitlines()
        raise subprocess.SubprocessError(lines[0] if lines else f"exit status {detail.returncode}")
    gpus = parse_nvidia_smi_q(out)
    if query.returncode == 0:  # older drivers do not know compute_cap: keep the table's value
        for row in parse_nvidia_smi_csv(q_out, columns):
            i = int(row["index"])
            if i < len(gpus) and _value(row.get("compute_cap")):
                gpus[i].compute_capability = row["compute_cap"]
    return gpus


def _probe_nvml() -> list[GpuInfo]:
    import pynvml

    pynvml.nvmlInit()
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        try:
            cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
            cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}"
        except pynvml.NVMLError:
            cuda_version = None
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(pynvml.nvmlDeviceGetName(handle))
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            cc = _nvml_or_none(lambda: "%d.%d" % pynvml.nvmlDeviceGetCudaComputeCapability(handle))
            bus = _nvml_or_none(lambda: pynvml.nvmlDeviceGetMemoryBusWidth(handle)) or bus_width_for(name)
            clock = _nvml_or_none(lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM))
            gpus.append(GpuInfo(
                vendor="nvidia", name=name, index=index,
                memory_total=int(memory.total), memory_free=int(memory.free),
                compute_capability=cc or compute_capability_for(name), driver=driver,
                cuda_version=cuda_version, bus_width_bits=bus, memory_clock_mhz=clock,
                peak_bandwidth_gbps=peak_bandwidth(bus, clock), source="nvml",
            ))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def _nvml_or_none(call):
    import pynvml

    try:
        return call()
    except pynvml.NVMLError:
        return None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvidia_on_pci(root: Path = Path("/sys/bus/pci/devices")) -> bool:
    """True when a display controller of NVIDIA's (vendor 0x10de) is on the PCI bus."""
    try:
        for device in root.iterdir():
            vendor = (device / "vendor").read_text().strip()
            klass = (device / "class").read_text().strip()
            if vendor == "0x10de" and klass.startswith("0x03"):
                return True
    except OSError:
        pass
    return False
