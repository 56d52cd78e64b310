"""The sentences that explain a recommendation: its reason, its warnings, its assumptions.

One sentence of reason, then warnings (K-quant fallbacks, not free right now, backend
not installed, slow) and the assumptions made where the probe knew nothing.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable

from localq.probe.profile import HardwareProfile
from localq.units import size
from localq.recommend.quants import K_QUANT_FALLBACK, QUANTS_BY_TAG
from localq.recommend.estimates import ASSUMED_CPU_BANDWIDTH_GBPS, ASSUMED_GPU_BANDWIDTH_GBPS, ModelSpec, Plan
from localq.recommend.policy import ACCEPTABLE_PPL_DELTA, SLOW_TPS, runtimes

if TYPE_CHECKING:
    from localq.recommend.recommendation import Recommendation


def _assumptions(profile: HardwareProfile, choice: Plan | None) -> list[str]:
    notes = []
    uses_cpu = choice is None or choice.device == "cpu" or choice.device.endswith("+cpu")
    if not profile.bandwidth_gbps and uses_cpu:
        why = profile.unknowns.get("bandwidth", "not measured")
        notes.append(f"memory bandwidth unknown ({why}); assumed {ASSUMED_CPU_BANDWIDTH_GBPS:g} GB/s")
    for gpu in filter(None, (profile.best_gpu("nvidia"), profile.best_gpu("amd"))):  # the ones plans use
        if gpu.memory_total and not gpu.peak_bandwidth_gbps:
            notes.append(f"{gpu.name}'s memory bandwidth unknown; assumed {ASSUMED_GPU_BANDWIDTH_GBPS:g} GB/s")
    if profile.apple and profile.apple.wired_limit_source.startswith("macOS default"):
        notes.append(f"Metal's wired limit estimated at {profile.apple.wired_limit_share:.0%} of unified memory")
    if profile.memory.available is None:
        notes.append("free RAM right now unknown; plans use total RAM minus a reserve")
    return notes


def _reason(rec: Recommendation, profile: HardwareProfile, spec: ModelSpec) -> str:
    choice = rec.choice
    if choice is None:
        if not rec.plans:
            return f"no candidate quant is known for {spec.name}"
        fixes = []
        if rec.largest_context:
            fixes.append(f"--ctx {rec.largest_context} would fit")
        if rec.smaller_model:
            fixes.append(f"{rec.smaller_model} would fit")
        fix = f"; {' and '.join(fixes)}" if fixes else ""
        runnable = [p for p in rec.plans if p.ready]
        if not runnable:
            setups = sorted({f"{p.backend}: {p.setup}" for p in rec.plans if p.setup})
            return f"nothing can run {spec.name} here ({'; '.join(setups)})"
        poor = [p for p in runnable if p.fits]
        if poor:
            best = min(poor, key=lambda p: p.ppl_delta)
            return (f"{spec.name} fits at a {rec.context}-token context only as "
                    f"{QUANTS_BY_TAG[best.quant].label}, which loses too much quality "
                    f"({_quality(best)}){fix}")
        first = min(p.rank for p in runnable)
        preferred = [p for p in runnable if p.rank == first and p.ppl_delta <= ACCEPTABLE_PPL_DELTA]
        smallest = min(preferred or runnable, key=lambda p: _need(p) - p.budget_bytes)
        return (f"{spec.name} does not fit at a {rec.context}-token context: even "
                f"{QUANTS_BY_TAG[smallest.quant].label} needs {size(_need(smallest))} of {smallest.pool} "
                f"and {size(smallest.budget_bytes)} is usable{fix}")
    runtime = next(r for r in runtimes(profile)[0] if r.backend == choice.backend and r.rank == choice.rank)
    how = {
        "balanced": "the best balance of quality and speed that fits",
        "quality": "the highest-quality quant that fits",
        "speed": "the fastest quant of acceptable quality that fits",
    }[rec.prefer]
    where = f"{choice.gpu_layers} of {spec.layers} layers on the GPU" if choice.pool == "VRAM+RAM" else \
        f"{size(choice.total_bytes)} of {size(choice.budget_bytes)} usable {choice.pool}"
    why = runtime.why
    if choice.pool == "VRAM+RAM":
        why = "the model does not fit the GPU's memory, so llama.cpp splits it between GPU and RAM"
    return (f"{choice.label}: {why}, and {QUANTS_BY_TAG[choice.quant].label} is {how} "
            f"({where}, about {choice.tokens_per_second:.0f} tokens/s {choice.speed_source}, {_quality(choice)}).")


def _need(p: Plan) -> int:
    """What a plan needs of the pool that binds it: RAM for a split, else the whole."""
    return p.host_bytes if p.pool == "VRAM+RAM" else p.total_bytes


def _quality(p: Plan) -> str:
    """The expected quality loss, saying whose it is: this model's only when localq measured it."""
    if p.quality_source.startswith("measured"):
        return f"+{p.ppl_delta:.3f} perplexity, measured on this model"
    return f"+{p.ppl_delta:.2f} perplexity {quality_basis(p)}, not on this model"


def quality_basis(p: Plan) -> str:
    """Which model a plan's perplexity figure was measured on, as a phrase: "measured on
    Llama-3-8B (llama.cpp's quantize table)"; "this model" when localq measured it."""
    source = p.quality_source
    if source.startswith("measured"):
        return "measured on this model"
    found = re.search(r"\(([^)]*)\)", source)
    if source.startswith("llama.cpp") and found:
        return f"measured on {found.group(1)} (llama.cpp's quantize table)"
    if source.startswith("estimate: "):
        return "estimated " + source.removeprefix("estimate: ")
    return source


def quality_note(plans: Iterable[Plan], model: str) -> str:
    """One line for a table's perplexity column: which model each figure was measured on,
    so a table's "+0.18" is not read as this model's own loss."""
    groups: dict[str, list[str]] = {}
    for p in plans:
        labels = groups.setdefault(quality_basis(p), [])
        label = QUANTS_BY_TAG[p.quant].label
        if label not in labels:
            labels.append(label)
    parts = [f"{', '.join(labels)}: {basis}" for basis, labels in groups.items()]
    mine = "" if "measured on this model" in groups else f" (none measured on {model})"
    return f"PPL + is the perplexity increase{mine}; " + "; ".join(parts)


def _warnings(rec: Recommendation, spec: ModelSpec) -> list[str]:
    warnings = []
    choice = rec.choice
    if choice and QUANTS_BY_TAG[choice.quant].k_quant and spec.narrow_rows():
        warnings.append(
            f"{spec.name} has weight rows of {', '.join(map(str, spec.narrow_rows()))} values, not a multiple "
            f"of 256, so llama.cpp's K-quants fall back to other types on those tensors ({K_QUANT_FALLBACK}): "
            f"{QUANTS_BY_TAG[choice.quant].label}'s size and quality differ from the table's"
        )
    if choice and not choice.fits_now:
        if choice.pool == "VRAM+RAM":
            need = f"{size(choice.gpu_bytes)} of VRAM and {size(choice.host_bytes)} of RAM"
        else:
            need = f"{size(_need(choice))} of {choice.pool}"
        warnings.append(f"needs {need}, more than is free right now: close other programs first")
    if choice and choice.tokens_per_second < SLOW_TPS:
        better = ""
        if rec.smaller_model_plan:
            better = (f"; {rec.smaller_model} would run at about "
                      f"{rec.smaller_model_plan.tokens_per_second:.0f} tokens/s")
        warnings.append(f"about {choice.tokens_per_second:.1f} tokens/s is slow for chat{better}")
    return warnings
