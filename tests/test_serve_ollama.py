"""The Ollama-compatible endpoints of ``localq serve``, with a plain HTTP client (the standard library)."""

from __future__ import annotations

import json
import time
import urllib.request

from serve_server import MODEL


def ndjson(server, path: str, body: dict) -> list[dict]:
    """POST ``body`` and read the streamed reply line by line, as Ollama's clients do."""
    req = urllib.request.Request(server.url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as response:
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response if line.strip()]


def test_tags_lists_installed_models_with_details(server):
    status, body = server.json("GET", "/api/tags")
    assert status == 200
    (model,) = body["models"]
    assert model["name"] == "smollm2:135m-q4_1" and model["size"] > 50_000_000 and len(model["digest"]) == 64
    assert model["details"]["format"] == "gguf" and model["details"]["family"] == "llama"
    assert model["details"]["quantization_level"] == "Q4_1" and model["details"]["parameter_size"] == "135M"


def test_chat_streamed_and_not_give_the_same_reply(server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Name an animal."}],
            "options": {"temperature": 0, "num_predict": 8}}
    status, whole = server.json("POST", "/api/chat", {**body, "stream": False})
    assert status == 200 and whole["done"] is True and whole["message"]["role"] == "assistant"
    assert whole["eval_count"] <= 8 and whole["prompt_eval_count"] > 0 and whole["total_duration"] > 0
    lines = ndjson(server, "/api/chat", body)   # streaming is the default
    assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"] is True
    assert lines[-1]["done_reason"] == whole["done_reason"] and lines[-1]["eval_count"] == whole["eval_count"]
    assert "".join(line["message"]["content"] for line in lines) == whole["message"]["content"]


def test_generate_streamed_not_streamed_and_raw(server):
    body = {"model": MODEL, "prompt": "Why is the sky blue?", "options": {"temperature": 0, "num_predict": 6}}
    status, whole = server.json("POST", "/api/generate", {**body, "stream": False})
    assert status == 200 and whole["response"] and whole["done"] is True
    lines = ndjson(server, "/api/generate", body)
    assert "".join(line["response"] for line in lines) == whole["response"]
    status, raw = server.json("POST", "/api/generate", {**body, "raw": True, "stream": False,
                                                        "prompt": "The capital of France is"})
    assert status == 200 and raw["prompt_eval_count"] < whole["prompt_eval_count"]   # no chat template around it


def test_format_schema_gives_json(server):
    schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 15}}, "required": ["colour"]}
    status, reply = server.json("POST", "/api/chat", {
        "model": MODEL, "messages": [{"role": "user", "content": "Pick a colour."}], "stream": False,
        "format": schema, "options": {"temperature": 0, "num_predict": 30}})
    assert status == 200
    assert isinstance(json.loads(reply["message"]["content"])["colour"], str)


def test_show_gives_template_and_model_info(server):
    status, info = server.json("POST", "/api/show", {"model": MODEL})
    assert status == 200
    assert "im_start" in info["template"]
    assert info["model_info"]["general.architecture"] == "llama"
    assert info["model_info"]["llama.block_count"] == 30 and info["model_info"]["llama.attention.head_count_kv"] == 3


def test_ps_shows_the_loaded_model_with_expiry(server):
    server.json("POST", "/api/generate", {"model": MODEL, "keep_alive": "10m"})   # load (no prompt)
    (model,) = server.loaded()
    assert model["name"] == "smollm2:135m-q4_1" and model["size"] > 0 and model["context_length"] == 1024
    assert model["expires_at"] and model["keep_alive_s"] == 600


def test_keep_alive_zero_unloads_and_an_empty_request_loads(server):
    status, body = server.json("POST", "/api/generate", {"model": MODEL, "keep_alive": 0})
    assert status == 200 and body["done_reason"] == "unload"
    assert server.loaded() == []
    status, body = server.json("POST", "/api/chat", {"model": MODEL, "messages": []})
    assert status == 200 and body["done_reason"] == "load"
    assert [m["name"] for m in server.loaded()] == ["smollm2:135m-q4_1"]


def test_a_short_keep_alive_unloads_the_idle_model(server):
    server.json("POST", "/api/generate", {"model": MODEL, "prompt": "hi", "stream": False, "keep_alive": "1s",
                                          "options": {"num_predict": 2}})
    deadline = time.monotonic() + 30
    while server.loaded() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.loaded() == []


def test_missing_model_is_a_404_in_ollama_format(server):
    status, body = server.json("POST", "/api/chat", {"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hi"}]})
    print(body)
    assert status == 404 and set(body) == {"error"} and "localq pull qwen2.5:7b" in body["error"]
    status, body = server.json("POST", "/api/show", {"model": "qwen2.5:7b"})
    assert status == 404 and "localq pull" in body["error"]


def test_embed(server):
    status, body = server.json("POST", "/api/embed", {"model": MODEL, "input": ["one", "two"]})
    assert status == 200 and len(body["embeddings"]) == 2 and len(body["embeddings"][0]) == 576
