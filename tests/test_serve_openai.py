"""The real ``openai`` client against ``localq serve`` running SmolLM2."""

from __future__ import annotations

import json

import pytest
from serve_server import MODEL

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_lists_the_installed_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["smollm2:135m-q4_1"]
    assert client.models.retrieve("smollm2:135m-q4_1").owned_by == "localq"


def test_chat_not_streamed_has_text_and_usage(client):
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                           max_tokens=8, temperature=0)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.model == "smollm2:135m-q4_1"


def test_chat_streamed_matches_the_unstreamed_reply(client):
    messages = [{"role": "user", "content": "Name a colour."}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_sampling_parameters_reach_the_sampler(client):
    messages = [{"role": "user", "content": "Write a sentence about the sea."}]
    kw = {"model": MODEL, "messages": messages, "max_tokens": 12, "temperature": 1.0, "top_p": 0.95}
    a = client.chat.completions.create(seed=7, **kw).choices[0].message.content
    b = client.chat.completions.create(seed=7, **kw).choices[0].message.content
    assert a == b    # the seed is honoured
    stopped = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0,
                                             stop=[" "]).choices[0]
    assert " " not in stopped.message.content and stopped.finish_reason == "stop"
    penalised = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0,
                                               presence_penalty=2.0, frequency_penalty=2.0)
    plain = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    assert penalised.choices[0].message.content != plain.choices[0].message.content


def test_completion_continues_plain_text(client):
    reply = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert reply.choices[0].text and reply.usage.completion_tokens <= 6
    streamed = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6,
                                         temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == reply.choices[0].text


def test_embeddings_are_unit_vectors_closer_for_the_same_text(client):
    result = client.embeddings.create(model=MODEL, input=["a cat sat on the mat", "a cat sat on the mat",
                                                          "quarterly tax filing deadlines"])
    vectors = [d.embedding for d in result.data]
    assert len(vectors) == 3 and len(vectors[0]) == 576
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert abs(dot(vectors[0], vectors[0]) - 1) < 1e-4
    assert dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2])
    assert result.usage.prompt_tokens > 0
    floats = client.embeddings.create(model=MODEL, input="a cat sat on the mat", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-5)


def test_json_schema_reply_parses_and_validates(client):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 150}},
              "required": ["name", "age"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe a person as JSON."}], max_tokens=60,
        temperature=0, response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
    data = json.loads(reply.choices[0].message.content)
    jsonschema.validate(data, schema)


def test_unknown_model_is_a_404_naming_localq_pull(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="llama3.2:3b", messages=[{"role": "user", "content": "hi"}])
    error = caught.value.body
    print(error)
    assert error["code"] == "model_not_found" and "localq pull llama3.2:3b" in error["message"]


@pytest.mark.parametrize("kwargs, param", [
    ({"temperature": -1}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"presence_penalty": 5}, "presence_penalty"),
    ({"n": 2}, "n"),
])
def test_bad_parameter_is_a_400_naming_it(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], **kwargs)
    print(caught.value.body)
    assert caught.value.body["param"] == param and param in caught.value.body["message"]
