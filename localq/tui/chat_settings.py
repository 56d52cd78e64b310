"""The Chat screen's settings and choices that need no screen: the ctrl+o fields and the default model.

``parse_params`` and ``parse_context`` turn the settings dialog's text into
``GenerationParams`` and a context length, with the one-line errors the CLI
gives for the same values (``localq.chat.params``, ``LoadOptions.validate``);
``default_model`` is the model a chat opens with when none was chosen.
"""

from __future__ import annotations

from localq.defaults import DEFAULT_CONTEXT, MIN_CONTEXT
from localq.errors import LocalqError

# The sampling parameters the ctrl+o dialog edits, with their labels (localq.chat.params.PARAM_NAMES).
PARAM_FIELDS = [
    ("temperature", "temperature", "0 = greedy"),
    ("top_p", "top_p", "1 = off"),
    ("top_k", "top_k", "0 = off"),
    ("min_p", "min_p", "0 = off"),
    ("repeat_penalty", "repeat_penalty", "1 = off"),
    ("max_tokens", "max_tokens", "empty: until the model stops"),
    ("seed", "seed", "empty: random"),
]


CONTEXT_FIELD = ("n_ctx", "context (tokens)", f"at least {MIN_CONTEXT}; empty: {DEFAULT_CONTEXT} or the model's")


def parse_context(text) -> int | None:
    """The context length from the dialog's field: None when empty; LocalqError when not a usable size."""
    from localq.backends.base import LoadOptions

    text = str(text).strip()
    if not text:
        return None
    try:
        n_ctx = int(text)
    except ValueError:
        raise LocalqError(f"the context must be a whole number of tokens, not {text!r}") from None
    LoadOptions(n_ctx=n_ctx).validate()
    return n_ctx


def parse_params(values: dict, current):
    """New ``GenerationParams`` from the dialog's text fields; LocalqError names a bad one."""
    from localq.chat.params import merge_params, parse_param_texts

    return merge_params(current, parse_param_texts(values))


def default_model(db) -> str | None:
    """The model a chat opens with when none was chosen: the one used last, else the starter."""
    from localq.starter import STARTER_REF
    from localq.store.index import find, list_variants

    variants = list_variants(db)
    used = sorted((v for v in variants if v.last_used), key=lambda v: v.last_used, reverse=True)
    if used:
        return used[0].ref
    starter = find(db, STARTER_REF)
    if starter:
        return starter[0].ref
    return variants[0].ref if variants else None
