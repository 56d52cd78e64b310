"""``recommend()``: the whole recommendation for a model on this machine, and the pull's choice.

Checks the inputs, estimates every plan, lets the policy choose, and when nothing fits
looks for the largest context or a smaller catalog model that would; ``choose_quant_for_pull``
and ``recommend_pull`` are the same choice among the quants a repository offers.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable

from localq.defaults import DEFAULT_CONTEXT, MIN_CONTEXT
from localq.errors import LocalqError, ModelNotFound
from localq.probe.profile import HardwareProfile, validate
from localq.recommend.quants import CANDIDATES, QUANTS, QUANTS_BY_TAG
from localq.recommend.estimates import ModelSpec, Plan, Speeds
from localq.recommend.policy import ACCEPTABLE_PPL_DELTA, PREFERENCES, SLOW_TPS, all_plans, choose
from localq.recommend.explain import _assumptions, _reason, _warnings


@dataclass
class Recommendation:
    model: str
    context: int
    prefer: str
    choice: Plan | None
    reason: str                            # one sentence
    plans: list[Plan]                      # every candidate, fitting ones first, best first
    runnable_now: Plan | None = None       # the same as choice: only runnable plans are chosen
    warnings: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    largest_context: int | None = None     # when nothing fits: the longest context that would
    smaller_model: str | None = None       # when nothing fits, or too slowly: a catalog model that would
    smaller_model_plan: Plan | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def find_model(ref: str):
    """The catalog model ``name:size`` (or a family's default); ModelNotFound with a suggestion."""
    from localq.catalog import find, load_catalog

    text = ref.strip().lower()
    name, _, size = text.partition(":")
    model = find(name, size or None) if name else None
    if model is not None:
        return model
    refs = [m.ref for m in load_catalog()] + sorted({m.name for m in load_catalog()})
    close = difflib.get_close_matches(text, refs, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}?" if close else "run `localq catalog` to list the known models"
    raise ModelNotFound(f"no model named {ref!r} in the catalog", hint)


def _spec(model) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, str):
        return ModelSpec.from_catalog(find_model(model))
    return ModelSpec.from_catalog(model)


def _check_context(spec: ModelSpec, context: int | None) -> int:
    if context is None:
        return min(DEFAULT_CONTEXT, spec.context_length)
    if isinstance(context, bool) or not isinstance(context, int):
        raise LocalqError(f"context must be a whole number of tokens, not {context!r}")
    if context < MIN_CONTEXT:
        raise LocalqError(f"context {context} is too small: a chat needs at least {MIN_CONTEXT} tokens",
                          f"use --ctx {DEFAULT_CONTEXT}")
    if context > spec.context_length:
        raise LocalqError(f"context {context} is longer than {spec.name}'s {spec.context_length} tokens",
                          f"use --ctx {spec.context_length} or less")
    return context


def _check_measured(measured: dict[str, float] | None) -> dict[str, float]:
    result = {}
    for tag, value in (measured or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not -1 < value < 1000:
            raise LocalqError(f"measured perplexity increase for {tag} is {value!r}, not a sane number")
        result[tag.lower()] = float(value)
    return result


def recommend(profile: HardwareProfile, model, context: int | None = None, prefer: str = "balanced",
              measured: dict[str, float] | None = None, quants: Iterable[str] | None = None,
              floor: float = ACCEPTABLE_PPL_DELTA, speeds: Speeds | None = None) -> Recommendation:
    """Recommend how to run ``model`` (a CatalogModel, ModelSpec or ``name:size``) on ``profile``.

    ``speeds`` carries what ``localq bench`` measured here (``localq.calibration``):
    this model's measured decode speeds and the calibrated efficiency factors.

    ``measured`` maps quant tags to perplexity increases localq measured for this
    model (they replace the table's); ``quants`` limits the candidates (a pull
    offers only the quants its repository has); ``floor`` is the largest
    perplexity increase a choice may have (``math.inf`` when the user named the
    quant).
    """
    if prefer not in PREFERENCES:
        raise LocalqError(f"unknown preference {prefer!r}", "use quality, balanced or speed")
    spec = _spec(model)
    spec.validate()
    validate(profile)
    context = _check_context(spec, context)
    measured = _check_measured(measured)
    if quants is not None:
        quants = [q.lower() for q in quants]

    undecidable = _undecidable(profile)
    if undecidable:
        return Recommendation(spec.name, context, prefer, None, f"cannot decide because {undecidable}", [])

    plans, assumptions = all_plans(profile, spec, context, measured, quants, speeds)
    choice = choose(plans, prefer, floor)
    assumptions += _assumptions(profile, choice)
    plans.sort(key=lambda p: (not p.ready, not p.fits, p is not choice, p.rank, p.ppl_delta))
    rec = Recommendation(spec.name, context, prefer, choice, "", plans, choice, assumptions=assumptions)

    if choice is None:
        rec.largest_context = _largest_context(profile, spec, context, prefer, measured, quants, floor)
    if choice is None or choice.tokens_per_second < SLOW_TPS:
        calibrated = Speeds(efficiency=speeds.efficiency, benchmarks=speeds.benchmarks) if speeds else None
        rec.smaller_model, rec.smaller_model_plan = _smaller_model(profile, spec, context, prefer, calibrated)
    rec.reason = _reason(rec, profile, spec)
    rec.warnings = _warnings(rec, spec)
    return rec


def _undecidable(profile: HardwareProfile) -> str | None:
    if profile.apple is None and not profile.memory.total:
        why = profile.unknowns.get("memory", "the probe did not report it")
        return f"the amount of RAM is unknown ({why})"
    return None


def _largest_context(profile, spec, context, prefer, measured, quants, floor) -> int | None:
    """The longest context (a multiple of 256) at which some plan fits, if any does."""
    def fits(ctx: int) -> bool:
        return choose(all_plans(profile, spec, ctx, measured, quants)[0], prefer, floor) is not None

    lo, hi = MIN_CONTEXT // 256, (context - 1) // 256
    if hi < lo or not fits(lo * 256):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid * 256) else (lo, mid - 1)
    return lo * 256


def _smaller_model(profile, spec, context, prefer, speeds=None) -> tuple[str | None, Plan | None]:
    """The largest smaller catalog model with a plan that fits and runs at a usable speed."""
    from localq.catalog import load_catalog

    def kin(m) -> tuple:
        prefix = re.match(r"[a-z]+", spec.family or spec.name.lower())
        same_family = m.name == spec.family
        same_line = bool(prefix) and m.name.startswith(prefix.group(0))
        return (not same_family, not same_line, -m.parameters)

    smaller = sorted((m for m in load_catalog() if m.parameters < spec.parameters), key=kin)
    for model in smaller:
        small = ModelSpec.from_catalog(model)
        plans, _ = all_plans(profile, small, min(context, small.context_length), speeds=speeds)
        choice = choose(plans, prefer)
        if choice and choice.tokens_per_second >= SLOW_TPS:
            return small.name, choice
    return None, None


def pullable_quants(model) -> list[str] | None:
    """The candidate quants a pull of catalog ``model`` can fetch: the GGUF quants its
    repository holds (all candidates when the catalog did not record them) and its
    MLX repositories' quants; never INT4, which is made locally, not downloaded."""
    gguf = list(getattr(model, "gguf_quants", ()) or [q.tag for q in QUANTS if q.backend == "llamacpp"])
    mlx = list(getattr(model, "mlx_repos", {}) or {})
    return [tag for tag in CANDIDATES if tag in gguf or tag in mlx]


def recommend_pull(profile: HardwareProfile, model, available_quants=None, context: int | None = None,
                   prefer: str = "balanced", speeds: Speeds | None = None) -> Recommendation:
    """The recommendation a pull acts on, shared by ``localq pull`` and the app's Discover.

    Among the quants that can be fetched: ``available_quants`` (a repository's
    listing: tags, or tag -> bytes for exact sizes) when given, else the
    catalog's record (``pullable_quants``). ``speeds``: what ``localq bench``
    measured here (``localq.calibration``), as ``recommend`` takes it, so a
    pull chooses with the same figures ``localq recommend`` shows.
    """
    if isinstance(model, str):
        model = find_model(model)
    spec = _spec(model)
    if available_quants is None:
        quants = pullable_quants(model) if not isinstance(model, ModelSpec) else None
        return recommend(profile, spec, context, prefer, quants=quants, speeds=speeds)
    offered = [q.lower() for q in available_quants]
    if isinstance(available_quants, dict):
        sizes = {tag.lower(): int(n) for tag, n in available_quants.items() if n and tag.lower() in QUANTS_BY_TAG}
        spec = ModelSpec(**{**asdict(spec), "file_sizes": {**spec.file_sizes, **sizes}})
    return recommend(profile, spec, context, prefer, quants=[q for q in offered if q in QUANTS_BY_TAG], speeds=speeds)


def choose_quant_for_pull(profile: HardwareProfile, model, available_quants,
                          context: int | None = None, prefer: str = "balanced",
                          speeds: Speeds | None = None) -> str | None:
    """The quant ``localq pull`` should fetch, among those the repository offers.

    ``available_quants`` is a list of quant tags, or a dict of tag -> bytes
    (then the exact sizes replace the estimates). Returns the entry as given
    (its case kept), or None when localq cannot decide: no model numbers
    (``model`` is None, as for a Hub repository outside the catalog) or no quant
    it can size; the caller then falls back to its default. Raises LocalqError
    when none of the offered quants fits this machine: pulling gigabytes that
    cannot run helps no one, and naming a quant overrides it.
    """
    if model is None:
        return None
    offered = {q.lower(): q for q in available_quants}
    known = [tag for tag in offered if tag in QUANTS_BY_TAG]
    if not known:
        return None
    rec = recommend_pull(profile, model, available_quants, context, prefer, speeds)
    if rec.choice is None:
        raise LocalqError(f"none of the offered quants of {rec.model} fits this machine: {rec.reason}",
                          "name a quant explicitly to pull it anyway")
    return offered[rec.choice.quant]
