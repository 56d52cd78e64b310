"""The pulls localq recommends on this machine, for the welcome screen and ``localq recommend``.

``suggested_pulls`` asks the recommender about every catalog model and keeps
the largest that fit and still run at ``COMFORTABLE_TPS`` or more, each with
its chosen plan (``recommend_pull`` chooses among quants a Hub repository holds,
so never an INT4 one, which localq makes itself). ``pull_ref`` is the reference
that pulls a quant of a catalog model.

``COMFORTABLE_TPS`` (``recommend.policy``) is the one "comfortable speed": a
reply you read as it is written. The Discover screen's "fits" order uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass

from localq.recommend.policy import COMFORTABLE_TPS

SUGGESTIONS = 4


@dataclass(frozen=True)
class Suggestion:
    """A recommended pull: the catalog model, the plan the recommender chose, the reference to pull."""

    model: object      # localq.catalog.CatalogModel
    plan: object       # localq.recommend.Plan
    ref: str

    def to_dict(self) -> dict:
        return {"ref": self.ref, "model": self.model.ref, "quant": self.plan.quant, "backend": self.plan.backend,
                "weights_bytes": self.plan.weights_bytes, "tokens_per_second": self.plan.tokens_per_second}


def pull_ref(model, quant: str) -> str:
    """The reference that pulls ``quant`` of a catalog model (an ``int4-`` one is made here from the source)."""
    return f"{model.ref}-{quant}"


def comfortable(plan) -> bool:
    """Whether a plan fits and runs at a comfortable speed."""
    return plan is not None and plan.fits and plan.tokens_per_second >= COMFORTABLE_TPS


def suggested_pulls(profile, models=None, limit: int = SUGGESTIONS, context: int | None = None,
                    prefer: str = "balanced", speeds_for=None) -> list[Suggestion]:
    """The best pulls here: catalog models whose choice fits at a comfortable speed, biggest first.

    ``models`` defaults to the whole catalog; ``context`` (tokens) is capped at
    each model's own, so that a long context skips no model for being short.
    """
    from localq.catalog import load_catalog
    from localq.recommend import recommend_pull

    found = []
    for model in load_catalog() if models is None else models:
        ctx = None if context is None else min(context, model.context_length)
        speeds = speeds_for(model.ref) if speeds_for else None
        choice = recommend_pull(profile, model, context=ctx, prefer=prefer, speeds=speeds).choice
        if comfortable(choice):
            found.append(Suggestion(model, choice, pull_ref(model, choice.quant)))
    found.sort(key=lambda s: -s.model.parameters)
    return found[:limit]
