"""The session features the server relies on, in the llama.cpp backend: JSON-schema grammars,
presence/frequency penalties, raw-text streaming and embeddings."""

from __future__ import annotations

import json
import math

import pytest

from localq.backends.base import Done, GenerationParams
from localq.errors import BackendError, LocalqError


def reply(session, prompt: str, **params) -> Done:
    return session.complete(prompt, GenerationParams(temperature=0, **params))


def test_json_schema_constrains_the_reply(smollm2_session):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "year": {"type": "integer"}}, "required": ["city", "year"]}
    done = reply(smollm2_session, "Name a city and a year.", max_tokens=60, json_schema=json.dumps(schema))
    data = json.loads(done.text)
    assert set(data) == {"city", "year"} and isinstance(data["year"], int)
    free = reply(smollm2_session, "Name a city and a year.", max_tokens=60)
    with pytest.raises(ValueError):   # the same prompt without the grammar is prose
        json.loads(free.text)


def test_a_schema_the_converter_cannot_read_is_a_clear_error(smollm2_session):
    with pytest.raises(LocalqError) as caught:
        reply(smollm2_session, "hi", max_tokens=4, json_schema=json.dumps({"type": "no-such-type"}))
    print(caught.value)
    assert "JSON schema" in str(caught.value)
    assert reply(smollm2_session, "hi", max_tokens=2).finish_reason in ("stop", "length")   # still usable


def test_presence_and_frequency_penalties_change_greedy_output(smollm2_session):
    plain = reply(smollm2_session, "List fruits: apple, apple, apple,", max_tokens=16)
    penalised = reply(smollm2_session, "List fruits: apple, apple, apple,", max_tokens=16,
                      presence_penalty=2.0, frequency_penalty=2.0)
    assert plain.text != penalised.text
    with pytest.raises(LocalqError, match=r"presence_penalty must be in \[-2, 2\]"):
        GenerationParams(presence_penalty=3).validate()


def test_stream_text_uses_no_chat_template(smollm2_session):
    prompt = "The capital of France is"
    done = list(smollm2_session.stream_text(prompt, GenerationParams(temperature=0, max_tokens=4)))[-1]
    assert done.prompt_tokens == len(smollm2_session.tokenize(prompt)) and done.completion_tokens <= 4
    chat = reply(smollm2_session, prompt, max_tokens=4)
    assert chat.prompt_tokens > done.prompt_tokens


def test_embeddings_are_unit_length_and_closer_for_close_texts(smollm2_session):
    a, b, c = smollm2_session.embed(["the cat sleeps", "the cat sleeps", "interest rates rose"])
    dot = sum(x * y for x, y in zip(a, b))
    assert len(a) == 576 and math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-6)
    assert dot > sum(x * y for x, y in zip(a, c))
    with pytest.raises(LocalqError, match="input 0 is empty"):
        smollm2_session.embed([""])


def test_the_base_session_refuses_embeddings():
    from localq.backends.base import Session

    class Plain(Session):
        encode_chat = tokenize = generate = _free = lambda *a, **k: None

    session = Plain(model_path="x", n_ctx=64, n_threads=1, load_s=0)
    assert not session.supports_embeddings and not session.supports_json_schema
    with pytest.raises(BackendError, match="cannot compute embeddings"):
        session.embed(["x"])
