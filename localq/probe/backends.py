"""Which inference backends can run here, on which device, without importing them.

Importing torch or mlx takes seconds; the probe must take under one. So:

- llama.cpp: ``importlib.util.find_spec("llama_cpp")`` finds the package, and its
  ``lib/`` folder tells the build: llama-cpp-python installs one shared library
  per ggml backend there (``libggml-cuda.so``, ``libggml-metal.dylib``,
  ``libggml-hip.so``, ``libggml-vulkan.so``). Only when that folder has no ggml
  library at all (an unusual build) do we import ``llama_cpp`` and ask
  ``llama_supports_gpu_offload()``.
- MLX: the package is found; it runs on the GPU (Metal) on Apple Silicon, on the
  CPU elsewhere (``mlx[cpu]`` on Linux).
- torch INT4: torch is found, and ``torch/version.py`` (a plain text file) says
  whether the build has CUDA; torch's ``_weight_int4pack_mm`` then needs an
  NVIDIA GPU of compute capability 8.0 or more.

"Available" means runnable: the backend is registered through the
``localq.backends`` entry points (read from package metadata, nothing
imported), its libraries are found, and the hardware suits it. A backend that
no installed package registers is unavailable whatever libraries are present,
and says so: installing torch or mlx cannot add a backend localq lacks.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path

from localq.probe.profile import AppleInfo, BackendInfo, GpuInfo

LLAMACPP_GPU_LIBS = {"cuda": "cuda", "metal": "metal", "hip": "rocm", "vulkan": "vulkan"}
INT4_MIN_CC = (8, 0)


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent if spec.origin else None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def llamacpp_gpu_libs(package_dir: Path) -> set[str] | None:
    """The GPU backends a llama-cpp-python build carries; None when its libraries are not found."""
    names = [p.name.lower() for p in (package_dir / "lib").glob("*ggml*")]
    names += [p.name.lower() for p in package_dir.glob("*ggml*")]
    if not names:
        return None
    return {device for lib, device in LLAMACPP_GPU_LIBS.items() if any(f"ggml-{lib}" in n for n in names)}


def _has_gpu_for(device: str, gpus: list[GpuInfo], apple: AppleInfo | None) -> bool:
    vendors = {g.vendor for g in gpus}
    return {
        "cuda": "nvidia" in vendors,
        "rocm": "amd" in vendors,
        "metal": apple is not None,
        "vulkan": bool(gpus),
    }[device]


def detect_llamacpp(gpus: list[GpuInfo], apple: AppleInfo | None) -> BackendInfo:
    package = _package_dir("llama_cpp")
    if package is None:
        return BackendInfo("llamacpp", False, reason=f"llama-cpp-python is not installed ({INSTALL_ADVICE['llamacpp']})")
    version = _version("llama_cpp_python")
    label = f"llama-cpp-python {version}" if version else "llama-cpp-python"
    built = llamacpp_gpu_libs(package)
    if built is None:
        built = _llamacpp_offload_by_import(apple)
    for device in ("cuda", "rocm", "metal", "vulkan"):
        if device in built and _has_gpu_for(device, gpus, apple):
            return BackendInfo("llamacpp", True, device, True, version, f"{label} with {device} offload")
    if built:
        why = f"built with {', '.join(sorted(built))} offload, but no such GPU is here"
    else:
        why = "built for the CPU only"
    return BackendInfo("llamacpp", True, "cpu", False, version, f"{label} {why}")


def _llamacpp_offload_by_import(apple: AppleInfo | None) -> set[str]:
    """Ask llama.cpp itself (an import of ~0.1-0.5 s); used only for unrecognized builds."""
    try:
        import llama_cpp

        if not llama_cpp.llama_supports_gpu_offload():
            return set()
    except Exception:  # a broken build: treat it as CPU-only, the load will say more
        return set()
    return {"metal"} if apple is not None else {"cuda"}


def detect_mlx(os_name: str, arch: str) -> BackendInfo:
    if importlib.util.find_spec("mlx") is None:
        return BackendInfo("mlx", False, reason="mlx is not installed (pip install 'localq[mlx]')")
    version = _version("mlx")
    if os_name == "darwin" and arch == "arm64":
        return BackendInfo("mlx", True, "metal", True, version, f"mlx {version} on the Apple GPU")
    return BackendInfo("mlx", True, "cpu", False, version, f"mlx {version} on the CPU (mlx[cpu]; slow)")


def torch_build(package_dir: Path) -> dict[str, str | None]:
    """``{"version", "cuda", "hip"}`` read from ``torch/version.py`` without importing torch."""
    try:
        text = (package_dir / "version.py").read_text()
    except OSError:
        return {"version": None, "cuda": None, "hip": None}

    def field(name: str) -> str | None:
        m = re.search(rf"^{name}(?:\s*:[^=\n]+)?\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        return m.group(1) if m else None

    return {"version": field("__version__"), "cuda": field("cuda"), "hip": field("hip")}


def detect_torch_int4(gpus: list[GpuInfo]) -> BackendInfo:
    package = _package_dir("torch")
    if package is None:
        return BackendInfo("torch_int4", False, reason="torch is not installed (pip install 'localq[torch]')")
    build = torch_build(package)
    version = build["version"]
    if not build["cuda"]:
        return BackendInfo("torch_int4", False, "cpu", False, version,
                           f"torch {version} has no CUDA; its INT4 kernels need an NVIDIA GPU")
    nvidia = [g for g in gpus if g.vendor == "nvidia"]
    good = [g for g in nvidia if g.cc is not None and g.cc >= INT4_MIN_CC]
    if good:
        gpu = max(good, key=lambda g: g.memory_total or 0)
        return BackendInfo("torch_int4", True, "cuda", True, version,
                           f"torch {version} (CUDA {build['cuda']}) on {gpu.name}, compute capability {gpu.compute_capability}")
    if nvidia:
        gpu = nvidia[0]
        have = f"compute capability {gpu.compute_capability}" if gpu.compute_capability else "an unknown compute capability"
        return BackendInfo("torch_int4", False, "cuda", False, version,
                           f"torch's INT4 kernels need compute capability 8.0+; {gpu.name} has {have}")
    return BackendInfo("torch_int4", False, "cuda", False, version,
                       f"torch {version} has CUDA, but no NVIDIA GPU was found")


ENTRY_POINT_GROUP = "localq.backends"   # the group localq.backends.registry loads
BACKEND_LABELS = {"llamacpp": "llama.cpp", "mlx": "MLX", "torch_int4": "torch INT4"}
# What to install when a registered backend's libraries are missing (extras of pyproject.toml).
INSTALL_ADVICE = {
    "llamacpp": "pip install 'localq[llamacpp]'",
    "mlx": "pip install 'localq[mlx]'",
    "torch_int4": "pip install 'localq[torch]'",
}


def registered_backends() -> set[str]:
    """Names of the backends registered through the entry-point group, without importing them."""
    return {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def not_registered(name: str) -> str:
    """The reason for a backend that no installed package provides (true install advice: none)."""
    label = BACKEND_LABELS.get(name, name)
    return (f"the {label} backend is not part of this localq version (no package registers a "
            f"`{name}` entry point in the {ENTRY_POINT_GROUP} group)")


def detect_backends(os_name: str, arch: str, gpus: list[GpuInfo], apple: AppleInfo | None,
                    registered: set[str] | None = None) -> dict[str, BackendInfo]:
    """What can run here: llama.cpp, MLX and torch INT4, each with a one-line reason.

    ``registered`` defaults to the backends the entry points name in this environment.
    """
    registered = registered_backends() if registered is None else registered
    detectors = {
        "llamacpp": lambda: detect_llamacpp(gpus, apple),
        "mlx": lambda: detect_mlx(os_name, arch),
        "torch_int4": lambda: detect_torch_int4(gpus),
    }
    found = {}
    for name, detect in detectors.items():
        if name in registered:
            found[name] = detect()
        else:
            found[name] = BackendInfo(name, False, reason=not_registered(name))
    return found
