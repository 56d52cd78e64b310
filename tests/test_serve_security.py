"""``localq serve`` against bad input and unwelcome callers: every refusal is a clear one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from serve_server import MODEL, Server

KEY = "test-key-0123456789abcdef"
HF_TOKEN = "hf_testtokenthatmustneverbelogged"


def chat(**extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}


def no_traceback(body: bytes) -> None:
    assert b"Traceback" not in body and b'File "' not in body


# --- bad input on the loopback server -------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_malformed_json_is_a_400(server, path):
    status, _, body = server.request("POST", path, raw=b'{"model": "smollm2:135m", "messages": [')
    print(body)
    no_traceback(body)
    error = json.loads(body)["error"]
    message = error if isinstance(error, str) else error["message"]
    assert status == 400 and message.startswith("the request body is not valid JSON")


@pytest.mark.parametrize("body, param, words", [
    (chat(temperature="hot"), "temperature", "must be a number"),
    (chat(max_tokens="many"), "max_tokens", "must be a whole number"),
    (chat(stream="yes"), "stream", "must be true or false"),
    ({"model": 5, "messages": []}, "model", "must be a string"),
    ({"model": MODEL, "messages": "hi"}, "messages", "non-empty list"),
    ({"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "expected system"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "model", "is required"),
    (chat(stop=[1, 2]), "stop", "list of strings"),
    (chat(response_format={"type": "xml"}), "response_format.type", "not one of"),
])
def test_wrong_types_are_400s_naming_the_field(server, body, param, words):
    status, reply = server.json("POST", "/v1/chat/completions", body)
    print(reply)
    assert status == 400 and reply["error"]["param"] == param and words in reply["error"]["message"]


def test_body_that_is_not_an_object(server):
    status, reply = server.json("POST", "/api/generate", [1, 2, 3])
    assert status == 400 and "must be a JSON object" in reply["error"]


def test_absurd_max_tokens_is_bounded_by_the_context(server):
    status, reply = server.json("POST", "/v1/chat/completions", chat(max_tokens=10**12))
    assert status == 400 and reply["error"]["param"] == "max_tokens"
    status, reply = server.json("POST", "/v1/chat/completions", chat(max_tokens=100_000))
    print(reply)
    assert status == 400 and "context of 1024 tokens" in reply["error"]["message"]
    status, reply = server.json("POST", "/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                                          "options": {"num_predict": 100_000}})
    assert status == 400 and "context of 1024 tokens" in reply["error"]


def test_prompt_longer_than_the_context_is_a_400_that_says_so(server):
    long = "The quick brown fox jumps over the lazy dog. " * 200
    status, reply = server.json("POST", "/v1/chat/completions", {**chat(), "messages": [{"role": "user", "content": long}]})
    print(reply)
    message = reply["error"]["message"]
    assert status == 400 and "the prompt takes" in message and "context holds 1024" in message
    status, reply = server.json("POST", "/v1/completions", {"model": MODEL, "prompt": long, "max_tokens": 2})
    assert status == 400 and "context holds 1024" in reply["error"]["message"]


def test_unknown_routes_and_methods_are_json_errors(server):
    status, _, body = server.request("GET", "/v1/nothing")
    assert status == 404 and json.loads(body)["error"]["message"] == "no route /v1/nothing"
    status, _, body = server.request("GET", "/api/chat")
    assert status == 405 and "GET is not allowed" in json.loads(body)["error"]


def test_foreign_host_header_and_web_origins_are_refused(server):
    status, _, body = server.request("GET", "/v1/models", headers={"Host": "attacker.example"})
    assert status == 403 and "not a loopback name" in json.loads(body)["error"]["message"]
    status, _, body = server.request("GET", "/api/tags", headers={"Origin": "https://evil.example"})
    print(body)
    assert status == 403 and "--cors-origin https://evil.example" in json.loads(body)["error"]
    status, headers, _ = server.request("GET", "/api/tags", headers={"Origin": "http://localhost:3000"})
    assert status == 200 and headers.get("access-control-allow-origin") is None   # no CORS unless asked


def test_serving_off_127_0_0_1_without_a_key_is_refused(tmp_home):
    env = {k: v for k, v in os.environ.items() if k != "LOCALQ_API_KEY"}
    for host in ("127.0.0.2", "0.0.0.0"):
        done = subprocess.run([sys.executable, "-c", "from localq.cli import main; main()", "serve", "--host", host],
                              capture_output=True, text=True, env=env, timeout=60, check=False)
        print(done.stderr)
        assert done.returncode == 1
        assert done.stderr.startswith(f"error: serving on {host} (not 127.0.0.1) needs an API key")
        assert "--api-key KEY or LOCALQ_API_KEY=KEY" in done.stderr


# --- the API key on 127.0.0.2 ----------------------------------------------------


@pytest.fixture(scope="module")
def keyed(serve_home):
    srv = Server(serve_home, "--ctx", "512", "--max-body", "64K", "--cors-origin", "http://app.example",
                 host="127.0.0.2", env={"LOCALQ_API_KEY": KEY, "HF_TOKEN": HF_TOKEN})
    yield srv
    srv.stop()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key-000000"}, {"Authorization": KEY},
                                     {"Authorization": f"Basic {KEY}"}])
def test_requests_without_the_right_key_get_401(keyed, headers):
    for path in ("/v1/models", "/api/tags"):
        status, h, body = keyed.request("GET", path, headers=headers)
        print(body)
        assert status == 401 and h["www-authenticate"] == "Bearer"
        error = json.loads(body)["error"]
        message = error if isinstance(error, str) else error["message"]
        assert "API key" in message and KEY not in message
    status, _, _ = keyed.request("POST", "/v1/chat/completions", chat(), headers=headers)
    assert status == 401


def test_the_right_key_works_with_the_openai_client(keyed):
    openai = pytest.importorskip("openai")
    good = openai.OpenAI(base_url=keyed.url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    assert [m.id for m in good.models.list()] == ["smollm2:135m-q4_1"]
    reply = good.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert reply.usage.completion_tokens <= 2
    bad = openai.OpenAI(base_url=keyed.url + "/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_cors_only_for_the_named_origin(keyed):
    status, headers, _ = keyed.request("OPTIONS", "/v1/chat/completions", headers={
        "Origin": "http://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert status == 200 and headers["access-control-allow-origin"] == "http://app.example"
    status, headers, _ = keyed.request("GET", "/v1/models", headers={"Origin": "http://app.example",
                                                                     "Authorization": f"Bearer {KEY}"})
    assert status == 200 and headers["access-control-allow-origin"] == "http://app.example"
    status, _, _ = keyed.request("GET", "/v1/models", headers={"Origin": "http://other.example",
                                                               "Authorization": f"Bearer {KEY}"})
    assert status == 403


def test_huge_body_is_refused_with_413(keyed):
    big = json.dumps(chat(messages=[{"role": "user", "content": "x" * 200_000}])).encode()
    status, _, body = keyed.request("POST", "/v1/chat/completions", raw=big,
                                    headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    print(body)
    assert status == 413 and "the limit is 65536" in json.loads(body)["error"]["message"]


def test_the_log_never_shows_the_key_or_the_hf_token(keyed):
    keyed.request("GET", "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    keyed.request("GET", "/v1/models", headers={"Authorization": "Bearer nope-nope-nope"})
    keyed.request("POST", "/v1/chat/completions", chat(), headers={"Authorization": f"Bearer {KEY}"})
    log = keyed.log()
    assert "POST /v1/chat/completions" in log and "401" in log    # it does log requests
    assert KEY not in log and HF_TOKEN not in log
