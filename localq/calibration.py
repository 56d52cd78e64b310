"""Speeds measured on this machine, for the recommender.

``localq bench`` stores each measurement in the index's ``benchmarks`` table.
Two things follow from them (``speeds``):

- a measured model: the recommendation for that model uses its newest measured
  decode tokens/s per quant, on the backend and device it ran on, instead of
  the bandwidth estimate;
- unmeasured models: each backend's efficiency factor (the share of memory
  bandwidth it turns into decoding, ``recommend.EFFICIENCY``) is scaled by the
  median, over this machine's stored benchmarks of that backend, of measured
  tokens/s / estimated tokens/s. The median, not the mean, so one run on a
  busy machine does not drag every estimate.

The estimate a benchmark is compared with is the recommender's own plan for the
benchmarked file (its GGUF header gives the exact numbers) at the benchmark's
context, with the default factor and this profile's bandwidth. A benchmark runs
on the first runnable device of its backend here (``recommend.runtimes``), so
that is the device its figures are filed under.
"""

from __future__ import annotations

import statistics

from localq.defaults import DEFAULT_CONTEXT
from localq.errors import LocalqError
from localq.recommend import (
    EFFICIENCY,
    QUANTS_BY_TAG,
    ModelSpec,
    Speeds,
    plan,
    runtimes,
)


def _device(profile, backend: str):
    return next((r for r in runtimes(profile)[0] if r.backend == backend and r.ready), None)


def stored_benchmarks(db) -> list[dict]:
    """The newest benchmark of every installed variant and backend: model, quant, backend,
    decode tokens/s, context and the variant's main file."""
    import json

    from localq.store.index import get_variant

    rows = db.execute(
        "SELECT b.variant_id, b.backend, b.decode_tps, b.params FROM benchmarks b"
        " WHERE b.decode_tps > 0 AND b.id = (SELECT b2.id FROM benchmarks b2 WHERE b2.variant_id = b.variant_id"
        " AND b2.backend = b.backend ORDER BY b2.created DESC, b2.id DESC LIMIT 1)"
    ).fetchall()
    found = []
    for variant_id, backend, tps, params in rows:
        try:
            variant = get_variant(db, variant_id)
        except LocalqError:  # a row whose variant was removed: nothing to learn from it
            continue
        n_ctx = json.loads(params or "{}").get("n_ctx")
        found.append({"model": variant.model, "quant": variant.quant.lower(), "backend": backend,
                      "decode_tps": float(tps), "n_ctx": n_ctx, "path": variant.main_path})
    return found


def calibrate(profile, benchmarks: list[dict]) -> tuple[dict, dict]:
    """(backend, device) -> calibrated efficiency, and -> how many benchmarks it came from.

    Each benchmark whose file can be sized gives measured / estimated tokens/s;
    the factor is the default times the median ratio.
    """
    from localq.gguf_info import read_gguf_info

    ratios: dict[tuple[str, str], list[float]] = {}
    for bench in benchmarks:
        runtime = _device(profile, bench["backend"])
        quant = QUANTS_BY_TAG.get(bench["quant"])
        if runtime is None or quant is None or (runtime.backend, runtime.device) not in EFFICIENCY:
            continue
        try:
            spec = ModelSpec.from_gguf_info(read_gguf_info(bench["path"]))
        except (LocalqError, OSError):  # not a GGUF, or a file gone: it cannot be estimated
            continue
        context = bench["n_ctx"] or DEFAULT_CONTEXT
        estimate = plan(profile, spec, quant, runtime, context).tokens_per_second
        if estimate > 0:
            ratios.setdefault((runtime.backend, runtime.device), []).append(bench["decode_tps"] / estimate)
    efficiency = {key: EFFICIENCY[key] * statistics.median(r) for key, r in ratios.items()}
    return efficiency, {key: len(r) for key, r in ratios.items()}


def speeds(db, profile, model: str | None) -> Speeds:
    """What this machine's benchmarks say for ``model`` (a catalog ``name:size`` or None)."""
    return _speeds_from(profile, stored_benchmarks(db))(model)


def _speeds_from(profile, benchmarks: list[dict]):
    """model name -> Speeds: the calibration once, each model's own measured speeds on demand."""
    efficiency, counts = calibrate(profile, benchmarks)

    def speeds_for(model: str | None) -> Speeds:
        measured = {}
        for bench in benchmarks:
            runtime = _device(profile, bench["backend"])
            if model and bench["model"] == model and runtime is not None:
                measured[(runtime.backend, runtime.device, bench["quant"])] = bench["decode_tps"]
        return Speeds(measured=measured, efficiency=efficiency, benchmarks=counts)

    return speeds_for


def local_speeds(profile, model: str | None) -> Speeds | None:
    """``speeds`` from this machine's index; None when the index cannot be read (the
    recommendation then uses the default estimates, as on a machine never benchmarked)."""
    from localq.store.db import open_index

    try:
        db = open_index()
    except LocalqError:
        return None
    try:
        return speeds(db, profile, model)
    finally:
        db.conn.close()


def local_speeds_for(profile):
    """A function model name -> ``Speeds``, reading this machine's benchmarks once: for the
    lists that recommend many models at a time (Discover, the recommended pulls)."""
    from localq.store.db import open_index

    try:
        db = open_index()
    except LocalqError:
        return lambda model: None
    try:
        return _speeds_from(profile, stored_benchmarks(db))
    finally:
        db.conn.close()
