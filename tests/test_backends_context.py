"""Fitting a conversation into the context: which turns go, which stay."""

import pytest

from localq.backends.context import fit_messages
from localq.errors import LocalqError


def words(messages):
    """A stand-in tokenizer: one token per word, plus two per message for the template's markers."""
    return [0] * sum(len(m["content"].split()) + 2 for m in messages)


def conversation(turns: int, words_per_message: int = 8, system: str | None = "Be kind.") -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    for i in range(turns):
        messages.append({"role": "user", "content": f"question {i} " + "w " * (words_per_message - 2)})
        messages.append({"role": "assistant", "content": f"answer {i} " + "w " * (words_per_message - 2)})
    messages.append({"role": "user", "content": "last question"})
    return messages


def test_a_conversation_that_fits_is_left_whole():
    messages = conversation(3)
    fitted = fit_messages(messages, words, n_ctx=1000, reserve=100)
    assert fitted.messages == messages and fitted.dropped == 0 and len(fitted.tokens) == len(words(messages))


def test_the_oldest_turns_go_in_pairs_and_the_system_prompt_stays():
    messages = conversation(10)        # 4 + 20 * 10 + 4 = 208 tokens
    fitted = fit_messages(messages, words, n_ctx=150, reserve=50)
    assert len(fitted.tokens) <= 100
    assert fitted.dropped % 2 == 0 and fitted.dropped > 0
    assert fitted.messages[0] == {"role": "system", "content": "Be kind."}
    assert fitted.messages[1]["content"].startswith("question ")          # a question, not an orphan answer
    assert fitted.messages[-1]["content"] == "last question"
    assert fitted.messages[1:] == messages[1 + fitted.dropped:]
    # Dropping one pair fewer would not have fitted.
    assert len(words([messages[0]] + messages[1 + fitted.dropped - 2:])) > 100


def test_without_a_system_prompt_the_oldest_turns_still_go():
    messages = conversation(10, system=None)
    fitted = fit_messages(messages, words, n_ctx=150, reserve=50)
    assert fitted.messages[0]["content"].startswith("question ") and fitted.dropped > 0


def test_the_last_message_keeps_what_room_is_left_for_the_reply():
    messages = conversation(2) + []
    messages[-1] = {"role": "user", "content": "w " * 90}
    fitted = fit_messages(messages, words, n_ctx=100, reserve=50)
    assert fitted.messages == [messages[0], messages[-1]] and len(fitted.tokens) == 96


def test_a_message_bigger_than_the_context_is_an_error():
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "w " * 200}]
    with pytest.raises(LocalqError, match="the system prompt and the message take 206 tokens; the context holds 100"):
        fit_messages(messages, words, n_ctx=100)
    with pytest.raises(LocalqError, match="the message takes 202 tokens"):
        fit_messages(messages[1:], words, n_ctx=100)
