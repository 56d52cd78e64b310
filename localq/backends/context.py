"""Fitting a conversation into the model's context window.

When a conversation outgrows the context, its oldest turns are left out of the
prompt (the system prompt always stays, and the newest user message always
stays) until the prompt plus a reserve for the reply fits. Turns go in whole
pairs, user message and its reply together, so the model never sees a reply
without its question. The caller is told how many messages were dropped.

If even the system prompt plus the newest user message do not fit, the reply
may still use whatever room is left; only a prompt that fills the whole
context, with no room for a single token of reply, is an error, raised before
generation starts.

Only the prompt the model sees is trimmed: the stored history keeps every turn.

``reusable_prefix`` is the other half of a turn's prompt: how much of the KV
cache the backends keep from the previous turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from localq.errors import LocalqError


@dataclass(frozen=True)
class Fitted:
    """The messages that fit, their prompt tokens, and how many messages were left out."""

    messages: list[dict]
    tokens: list[int]
    dropped: int


def fit_messages(
    messages: Sequence[dict],
    encode: Callable[[Sequence[dict]], list[int]],
    n_ctx: int,
    reserve: int = 0,
) -> Fitted:
    """Drop the oldest turns of ``messages`` until ``encode(messages)`` leaves ``reserve`` tokens free.

    ``encode`` renders the chat template and tokenizes (it is the session's
    ``encode_chat``). Raises LocalqError when the system prompt and the last
    user message alone fill the whole context.
    """
    messages = list(messages)
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system):]
    budget = max(1, n_ctx - reserve)

    tokens = encode(system + turns)
    dropped = 0
    while len(tokens) > budget and len(turns) > 1:
        # Drop the oldest message, and its reply with it when it is a question.
        cut = 2 if turns[0]["role"] == "user" and len(turns) > 2 and turns[1]["role"] == "assistant" else 1
        turns = turns[cut:]
        dropped += cut
        tokens = encode(system + turns)
    if len(tokens) >= n_ctx:
        what = "the system prompt and the message take" if system else "the message takes"
        raise LocalqError(
            f"{what} {len(tokens)} tokens; the context holds {n_ctx}",
            "shorten the prompt, or load the model with a larger context (--ctx)",
        )
    return Fitted(system + turns, tokens, dropped)


def reusable_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    """How many tokens of the KV cache (``cached``) a new ``prompt`` can keep: their common
    prefix, less the prompt's last token, which is evaluated again for its logits."""
    keep = 0
    for a, b in zip(cached, prompt):
        if a != b:
            break
        keep += 1
    return min(keep, len(prompt) - 1)
