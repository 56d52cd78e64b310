"""Measured quality in the index: the ``evaluations`` rows ``localq eval`` writes, read back.

One run of ``localq eval`` stores up to three rows (perplexity with the
source's as ``reference_value``, KL divergence, top-1 agreement) sharing a
``run_key`` in their params (text hash, context, chunks, source). ``ls``,
``show``, the app and the recommender read the newest run of a variant,
preferring one made against a source, since only that gives an increase.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

METRICS = ("perplexity", "kl_divergence", "top1_agreement")


def record(db, variant_id: int, result, against: dict | None = None) -> None:
    """Store an ``evaluate.EvalResult`` as ``evaluations`` rows; replaces an earlier run with the same text, context and source."""
    from localq import __version__
    from localq.versions import package_version
    from localq.store.db import write_transaction
    from localq.store.migrations import now

    params = {
        "ctx": result.ctx, "chunks": result.chunks, "text_sha256": result.text_sha256,
        "against": against, "tool": "localq eval", "localq_version": __version__,
        "engine": f"llama.cpp (llama-cpp-python {package_version('llama-cpp-python')})",
        "threads": result.threads, "perplexity_stderr": result.perplexity_stderr,
        "seconds": round(result.seconds, 3), "tokens_per_second": round(result.tokens_per_second, 1),
    }
    key = json.dumps({k: params[k] for k in ("ctx", "chunks", "text_sha256", "against")}, sort_keys=True)
    params["run_key"] = key
    values = {
        "perplexity": (result.perplexity, result.source_perplexity),
        "kl_divergence": (result.kl_divergence, 0.0),
        "top1_agreement": (result.top1_agreement, 1.0),
    }
    stamp = now()
    with write_transaction(db):
        for row in db.execute("SELECT id, params FROM evaluations WHERE variant_id = ?", [variant_id]).fetchall():
            if json.loads(row[1] or "{}").get("run_key") == key:
                db.execute("DELETE FROM evaluations WHERE id = ?", [row[0]])
        for metric, (value, reference) in values.items():
            if value is None:
                continue
            db.execute(
                "INSERT INTO evaluations (variant_id, metric, value, reference_value, dataset, tokens, params, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [variant_id, metric, value, reference, result.text_name, result.tokens_scored, json.dumps(params), stamp],
            )


@dataclass(frozen=True)
class Quality:
    """A variant's latest measured quality, as ``ls``, ``show`` and the app show it."""

    perplexity: float
    source_perplexity: float | None
    kl_divergence: float | None
    top1_agreement: float | None
    dataset: str
    ctx: int
    tokens: int
    created: str

    @property
    def ppl_increase(self) -> float | None:
        return None if self.source_perplexity is None else self.perplexity / self.source_perplexity - 1

    @property
    def ppl_delta(self) -> float | None:
        """Absolute perplexity increase over the source (the unit of the recommender's tables)."""
        return None if self.source_perplexity is None else self.perplexity - self.source_perplexity

    def summary(self) -> str:
        """``+3.1 % PPL, KL 0.030, 92 % top-1``; ``PPL 17.41`` without a source."""
        if self.ppl_increase is None:
            return f"PPL {self.perplexity:.2f}"
        parts = [f"{self.ppl_increase * 100:+.1f} % PPL"]
        if self.kl_divergence is not None:
            parts.append(f"KL {self.kl_divergence:.3f}")
        if self.top1_agreement is not None:
            parts.append(f"{self.top1_agreement * 100:.0f} % top-1")
        return ", ".join(parts)


def latest_quality(db, variant_id: int) -> Quality | None:
    """The newest evaluation of a variant, preferring one made against a source."""
    rows = db.execute(
        "SELECT metric, value, reference_value, dataset, tokens, params, created FROM evaluations"
        " WHERE variant_id = ? ORDER BY created DESC, id DESC", [variant_id]).fetchall()
    runs: dict[str, dict] = {}
    for metric, value, reference, dataset, tokens, params, created in rows:
        p = json.loads(params or "{}")
        run = runs.setdefault(p.get("run_key", created), {"dataset": dataset, "tokens": tokens, "created": created,
                                                          "ctx": p.get("ctx", 0)})
        run[metric] = (value, reference)
    best = None
    for run in runs.values():  # newest first; one with a source beats one without
        if "perplexity" not in run:
            continue
        if best is None or (run["perplexity"][1] is not None and best["perplexity"][1] is None):
            best = run
    if best is None:
        return None
    return Quality(
        perplexity=best["perplexity"][0], source_perplexity=best["perplexity"][1],
        kl_divergence=best.get("kl_divergence", (None,))[0], top1_agreement=best.get("top1_agreement", (None,))[0],
        dataset=best["dataset"], ctx=best["ctx"], tokens=best["tokens"], created=best["created"],
    )


def measured_deltas(db, model: str) -> dict[str, float]:
    """quant -> absolute perplexity increase over its source, for the recommender, from the model's evaluations."""
    from localq.store.index import list_variants

    found = {}
    for v in list_variants(db):
        if v.model != model or v.format != "gguf":
            continue
        q = latest_quality(db, v.id)
        if q is not None and q.ppl_delta is not None:
            found[v.quant] = max(q.ppl_delta, 0.0)
    return found
