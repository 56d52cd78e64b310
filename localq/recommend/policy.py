"""The policy: which backends this machine should use, and which plan a preference picks.

``runtimes`` orders the backends for the hardware, ``all_plans`` estimates every candidate,
``choose`` applies the preference (see the package's docstring for how each one weighs).
"""
from __future__ import annotations

import math
from typing import Iterable

from localq.probe.profile import HardwareProfile
from localq.recommend.quants import CANDIDATES, QUANTS, QUANTS_BY_TAG
from localq.recommend.estimates import INT4_MIN_CC, ModelSpec, Plan, Runtime, Speeds, plan

PREFERENCES = ("quality", "balanced", "speed")
COMFORTABLE_TPS = 8.0               # a reply read as it is written: recommended pulls, Discover's order
SPEED_CAP_TPS = 30.0                # balanced: speed above this buys nothing in chat (its utility is flat)
PPL_PER_LOG_SPEED = 1.2             # balanced: perplexity worth a factor e of speed
SLOW_TPS = 2.0                      # below this, suggest a smaller model
ACCEPTABLE_PPL_DELTA = 0.7          # worse than Q3_K_M is not picked unless asked for by name
MARGIN = 0.02                       # balanced: utilities closer than this are a tie (2% of speed)
BANDWIDTH_NOISE = 0.35              # balanced: how far repeated bandwidth measurements spread (17 vs 23 GB/s)
MLX_ELSEWHERE = ("needs Apple Silicon: MLX runs on its GPU through Metal; here only mlx's CPU build runs, "
                 "at a small fraction of llama.cpp's speed")


def _backend(profile: HardwareProfile, name: str):
    return profile.backends.get(name)


def backend_state(profile: HardwareProfile, name: str, device: str | None = None) -> tuple[bool, str]:
    """(runnable, why not and what to install) for backend ``name`` on ``device``.

    Runnable means: registered through the ``localq.backends`` entry points of
    this environment, its libraries found (the profile's probe says so) and the
    hardware suited (the profile's device). Nothing here names a backend: a
    backend that another package registers becomes runnable with no change.
    """
    from localq.probe.backends import INSTALL_ADVICE, not_registered, registered_backends

    if name not in registered_backends():
        return False, not_registered(name)
    info = _backend(profile, name)
    if info is None or not info.available:
        why = info.reason if info and info.reason else f"{name} was not found"
        advice = INSTALL_ADVICE.get(name)
        return False, why if not advice or advice in why else f"{why}; {advice}"
    if device is not None and info.device != device:
        return False, info.reason or f"{name} runs on {info.device} here, not {device}"
    return True, ""


def runtimes(profile: HardwareProfile) -> tuple[list[Runtime], list[str]]:
    """The backends this machine could use, best first, and the assumptions made.

    Each Runtime says whether it is runnable here (``ready``) and, when not,
    why and what to install (``setup``); ``choose`` picks only ready ones.
    """
    assumptions: list[str] = []
    found: list[Runtime] = []

    def add(backend: str, device: str, why: str, rebuild: str = "") -> None:
        ready, setup = backend_state(profile, backend, device)
        if not ready and rebuild and backend_state(profile, backend)[0]:
            setup = rebuild   # installed, but built for another device
        found.append(Runtime(backend, device, len(found), ready, why, setup))

    nvidia = profile.best_gpu("nvidia")
    amd = profile.best_gpu("amd")
    for part in ("nvidia", "amd", "apple"):
        if part in profile.unknowns:
            assumptions.append(f"no usable {part} GPU assumed: {profile.unknowns[part]}")
    for gpu in (nvidia, amd):
        if gpu and not gpu.memory_total:
            assumptions.append(f"{gpu.name}'s memory is unknown, so plans leave it out")
    nvidia = nvidia if nvidia and nvidia.memory_total else None
    amd = amd if amd and amd.memory_total else None
    rebuild = "reinstall llama-cpp-python built for it: CMAKE_ARGS='{}' pip install --force-reinstall --no-cache-dir llama-cpp-python"

    if profile.apple:
        chip = profile.apple.chip
        add("mlx", "metal", f"MLX is the native runtime on {chip}")
        add("llamacpp", "metal", f"llama.cpp runs on {chip}'s GPU through Metal", rebuild.format("-DGGML_METAL=on"))
    elif nvidia:
        cc = nvidia.cc
        cc_text = f"compute capability {nvidia.compute_capability}"
        if cc is not None and cc >= INT4_MIN_CC:
            add("torch_int4", "cuda", f"{nvidia.name} ({cc_text}) runs torch's INT4 kernels")
            why = f"llama.cpp offloads to {nvidia.name}"
        else:
            why = (f"llama.cpp runs on {nvidia.name} ({cc_text if cc else 'an unknown compute capability'}; "
                   "torch's INT4 kernels need 8.0)")
        add("llamacpp", "cuda", why, rebuild.format("-DGGML_CUDA=on"))
    elif amd:
        llama = _backend(profile, "llamacpp")
        device = "vulkan" if llama and llama.device == "vulkan" else "rocm"
        add("llamacpp", device, f"llama.cpp offloads to {amd.name}",
            rebuild.format("-DGGML_VULKAN=on" if device == "vulkan" else "-DGGML_HIP=on"))
    gpu_named = bool(found)
    add("llamacpp", "cpu", "llama.cpp is the runtime for CPUs" if not gpu_named else "llama.cpp can also run on the CPU")
    if not profile.apple:
        # MLX plans are listed, never chosen: mlx's CPU build runs here, but far slower than llama.cpp.
        found.append(Runtime("mlx", "cpu", len(found), False, "MLX is Apple Silicon's runtime",
                             MLX_ELSEWHERE))
    return found, assumptions


def offload_plan(profile: HardwareProfile, spec: ModelSpec, context: int) -> Plan | None:
    """The llama.cpp GPU plan for ``spec``'s own file at ``context``: the plan ``recommend``
    shows, whose ``gpu_layers`` the backend then loads with. None without a usable GPU."""
    quant = next((QUANTS_BY_TAG[t] for t in spec.file_sizes if t in QUANTS_BY_TAG), QUANTS_BY_TAG["q4_k_m"])
    for runtime in runtimes(profile)[0]:
        if runtime.backend == "llamacpp" and runtime.device != "cpu":
            return plan(profile, spec, quant, runtime, context)
    return None


def all_plans(profile: HardwareProfile, spec: ModelSpec, context: int, measured=None,
              quants: Iterable[str] | None = None, speeds: Speeds | None = None) -> tuple[list[Plan], list[str]]:
    """Every candidate plan for the policy's runtimes, and the assumptions made."""
    found, assumptions = runtimes(profile)
    wanted = set(quants) if quants is not None else set(CANDIDATES)
    plans = [
        plan(profile, spec, quant, runtime, context, measured, speeds)
        for runtime in found
        for quant in QUANTS
        if quant.backend == runtime.backend and quant.tag in wanted
    ]
    return plans, assumptions


def _utility(p: Plan) -> float:
    """Balanced's score. A speed within the bandwidth measurement's spread of the
    speed cap counts as capped, so a plan near 30 tokens/s does not win or lose on
    one measurement's noise (and a measured speed is treated alike)."""
    speed = min(p.tokens_per_second * (1 + BANDWIDTH_NOISE), SPEED_CAP_TPS)
    return math.log(speed) - p.ppl_delta / PPL_PER_LOG_SPEED


def choose(plans: list[Plan], prefer: str, floor: float = ACCEPTABLE_PPL_DELTA) -> Plan | None:
    """The plan ``prefer`` picks among the runnable plans that fit (see the module's docstring).

    Plans that lose more than ``floor`` perplexity (Q2_K) are never picked: a
    smaller model at a good quant serves better. Pass ``floor=math.inf`` when
    the user named the quant.
    """
    fitting = [p for p in plans if p.ready and p.fits and p.ppl_delta <= floor]
    if not fitting:
        return None
    if prefer == "quality":
        usable = [p for p in fitting if p.tokens_per_second >= SLOW_TPS] or fitting
        return min(usable, key=lambda p: (round(p.ppl_delta, 2), p.rank, -p.tokens_per_second))
    best_rank = min(p.rank for p in fitting)
    pool = [p for p in fitting if p.rank == best_rank]
    if prefer == "speed":
        return max(pool, key=lambda p: (p.tokens_per_second, -p.ppl_delta))
    # Within MARGIN of the best, plans count as equal and the better quality wins.
    best = max(_utility(p) for p in pool)
    close = [p for p in pool if _utility(p) >= best - MARGIN]
    return min(close, key=lambda p: (round(p.ppl_delta, 4), -p.tokens_per_second))
