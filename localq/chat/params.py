"""A chat's sampling parameters: stored settings, overridden by what the user changes.

``localq run``/``localq chat`` options and the app's parameters dialog both end
in ``merge_params``: the stored (or default) parameters with the given changes,
validated, so a bad value gets the same one-line error everywhere. The dialog's
text fields become typed changes with ``parse_param_texts``.
"""

from __future__ import annotations

from dataclasses import replace

from localq.backends.base import GenerationParams
from localq.errors import LocalqError

# The parameters a user sets, in the order the CLI's options and the dialog list them.
PARAM_NAMES = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "max_tokens")
INTEGER_PARAMS = {"top_k", "max_tokens", "seed"}
CLEARABLE_PARAMS = {"max_tokens", "seed"}   # empty means "none": until the model stops, a random seed


def merge_params(base: GenerationParams | dict | None, changes: dict) -> GenerationParams:
    """``base`` (parameters, a stored chat's dict, or None for the defaults) with ``changes``, validated."""
    if not isinstance(base, GenerationParams):
        base = GenerationParams.from_dict(base or {})
    unknown = set(changes) - set(PARAM_NAMES)
    if unknown:
        raise LocalqError(f"unknown parameter {sorted(unknown)[0]!r}", f"use one of {', '.join(PARAM_NAMES)}")
    return replace(base, **changes).validate()


def parse_param_texts(texts: dict[str, str]) -> dict:
    """Typed changes from text fields: an empty field is no change, or "none" for max_tokens and seed."""
    changes = {}
    for name in PARAM_NAMES:
        text = str(texts.get(name, "")).strip()
        if not text:
            if name in CLEARABLE_PARAMS and name in texts:
                changes[name] = None
            continue
        try:
            changes[name] = int(text) if name in INTEGER_PARAMS else float(text)
        except ValueError:
            kind = "a whole number" if name in INTEGER_PARAMS else "a number"
            raise LocalqError(f"{name} must be {kind}, not {text!r}") from None
    return changes
