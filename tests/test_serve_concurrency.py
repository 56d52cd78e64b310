"""Concurrency in ``localq serve``: FIFO queues per model, cancellation on disconnect, 429, two models.

Greedy decoding (temperature 0) makes each prompt's reply a fixed function of
the prompt, so "no client got another's tokens" is checked against the same
prompts answered one at a time by the same server, in the same run.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time

import pytest
from serve_server import MODEL, Server

WORDS = ["Apples", "Bridges", "Clouds", "Dolphins", "Engines", "Forests", "Glaciers", "Harbors"]


class Stream:
    """A streamed chat completion read with http.client, so the test can hang up mid-stream."""

    def __init__(self, server, body: dict, path: str = "/v1/chat/completions"):
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=600)
        self.conn.request("POST", path, json.dumps({**body, "stream": True}), {"Content-Type": "application/json"})
        self.response = self.conn.getresponse()
        self.status = self.response.status

    def chunks(self):
        """(arrival time, text) for each content chunk, until [DONE]."""
        while True:
            line = self.response.readline()
            if not line:
                return
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                return
            event = json.loads(data)
            if event.get("choices"):
                yield time.monotonic(), event["choices"][0]["delta"].get("content") or ""

    def close(self) -> None:
        self.response.close()
        self.conn.close()


def chat(word: str, max_tokens: int = 8, **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": f"{word} are"}], "max_tokens": max_tokens,
            "temperature": 0, **extra}


def state(server) -> dict:
    (model,) = server.loaded() or [{}]
    return model


def accepted(server) -> int:
    """Requests the model has taken so far: done, running or waiting."""
    m = state(server)
    return m.get("requests_done", 0) + int(bool(m.get("running"))) + m.get("queued", 0)


def wait_until(predicate, timeout: float = 30.0, step: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def test_eight_streaming_clients_all_complete_in_order_with_their_own_tokens(server):
    alone = {}
    for word in WORDS:          # the reference: each prompt answered alone, by the same server
        stream = Stream(server, chat(word))
        alone[word] = "".join(text for _, text in stream.chunks())
        stream.close()

    results: dict[int, list] = {}
    threads = []
    most_waiting = 0

    def client(i: int, word: str) -> None:
        stream = Stream(server, chat(word))
        results[i] = list(stream.chunks())
        stream.close()

    base = accepted(server)
    for i, word in enumerate(WORDS):
        thread = threading.Thread(target=client, args=(i, word))
        thread.start()
        threads.append(thread)
        wait_until(lambda n=base + i + 1: accepted(server) >= n)   # queued behind the ones before it
        most_waiting = max(most_waiting, state(server).get("queued", 0))
    for thread in threads:
        thread.join(600)

    assert sorted(results) == list(range(8)), "every client completed"
    for i, word in enumerate(WORDS):
        assert "".join(text for _, text in results[i]) == alone[word], f"client {i} got another reply"
    for i in range(7):          # FIFO, one at a time: client i+1's reply starts after client i's ended
        assert results[i + 1][0][0] >= results[i][-1][0]
    assert most_waiting >= 2, "the clients really were queued together"


def test_disconnect_mid_stream_frees_the_model_within_a_second(server):
    stream = Stream(server, chat("Rivers", max_tokens=900, ignore_eos=True))
    chunks = stream.chunks()
    for _ in range(3):
        next(chunks)
    assert state(server)["running"]
    closed = time.monotonic()
    stream.close()
    wait_until(lambda: not state(server)["running"], timeout=5, step=0.005)
    freed = time.monotonic() - closed
    print(f"model freed {freed * 1000:.0f} ms after the client hung up")
    assert freed < 1.0
    follow = Stream(server, chat("Mountains", max_tokens=4))
    assert "".join(t for _, t in follow.chunks())
    follow.close()


def test_a_client_that_leaves_the_queue_is_dropped_before_it_runs(server):
    long = Stream(server, chat("Rivers", max_tokens=900, ignore_eos=True))
    first = long.chunks()
    next(first)
    waiting = Stream.__new__(Stream)
    waiting.conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    waiting.conn.request("POST", "/v1/chat/completions", json.dumps({**chat("Lakes"), "stream": True}),
                         {"Content-Type": "application/json"})
    wait_until(lambda: state(server)["queued"] == 1)
    waiting.conn.close()                       # hang up while queued
    wait_until(lambda: state(server)["queued"] == 0, timeout=5)
    assert state(server)["running"]           # the first one is untouched
    long.close()
    wait_until(lambda: not state(server)["running"], timeout=5)


# --- a server with two models and a queue of one -----------------------------------


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, smollm2_gguf, serve_home):
    home = tmp_path_factory.mktemp("serve-two")
    env = {"LOCALQ_HOME": str(home), "PATH": ""}
    code = "from localq.cli import main; main()"
    subprocess.run([sys.executable, "-c", code, "import", str(smollm2_gguf), "--name", "smolcopy"],
                   check=True, capture_output=True, env={**__import__("os").environ, **env})
    srv = Server(home, "--ctx", "512", "--max-queue", "1")
    yield srv
    srv.stop()


def test_two_models_generate_at_the_same_time(two_models):
    for name in (MODEL, "smolcopy"):
        assert two_models.json("POST", "/api/generate", {"model": name})[0] == 200   # load both
    assert len(two_models.loaded()) == 2
    a = Stream(two_models, chat("Rivers", max_tokens=300, ignore_eos=True))
    next(a.chunks())
    b = Stream(two_models, {**chat("Lakes", max_tokens=300, ignore_eos=True), "model": "smolcopy"})
    next(b.chunks())
    models = two_models.loaded()
    assert [m["running"] for m in models] == [True, True], models   # both write at once
    a.close()
    b.close()
    wait_until(lambda: not any(m["running"] for m in two_models.loaded()), timeout=5)


def test_a_full_queue_answers_429_with_retry_after(two_models):
    running = Stream(two_models, chat("Rivers", max_tokens=400, ignore_eos=True))
    next(running.chunks())
    waiter = threading.Thread(target=lambda: two_models.json("POST", "/v1/chat/completions", chat("Lakes", 2)))
    waiter.start()
    wait_until(lambda: any(m["queued"] == 1 for m in two_models.loaded()))
    status, headers, body = two_models.request("POST", "/v1/chat/completions", chat("Seas", 2))
    print(body)
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"
    running.close()
    waiter.join(60)


def test_ps_and_stop_talk_to_the_server(two_models):
    from click.testing import CliRunner

    from localq.cli import cli

    two_models.json("POST", "/api/generate", {"model": "smolcopy"})
    args = ["--host", two_models.host, "--port", str(two_models.port)]
    result = CliRunner().invoke(cli, ["ps", *args])
    print(result.output)
    assert result.exit_code == 0 and "smolcopy:q4_1" in result.output and "llamacpp" in result.output
    result = CliRunner().invoke(cli, ["stop", "smolcopy", *args])
    assert result.exit_code == 0 and result.output == "stopped smolcopy:q4_1\n"
    assert "smolcopy:q4_1" not in [m["name"] for m in two_models.loaded()]
    result = CliRunner().invoke(cli, ["stop", "smolcopy", *args])
    print(result.output)
    assert result.exit_code == 1 and "smolcopy is not loaded" in result.output


def test_ps_says_clearly_when_no_server_runs(tmp_home):
    from click.testing import CliRunner
    from serve_server import free_port

    from localq.cli import cli

    result = CliRunner().invoke(cli, ["ps", "--port", str(free_port())])
    print(result.output)
    assert result.exit_code == 1 and "no localq server is running at http://127.0.0.1:" in result.output
    assert "localq serve" in result.output


def test_memory_limit_unloads_the_idle_model_for_another(tmp_path_factory, smollm2_gguf, serve_home):
    import os

    home = tmp_path_factory.mktemp("serve-mem")
    code = "from localq.cli import main; main()"
    subprocess.run([sys.executable, "-c", code, "import", str(smollm2_gguf), "--name", "smolcopy"],
                   check=True, capture_output=True, env={**os.environ, "LOCALQ_HOME": str(home)})
    probe = Server(home, "--ctx", "512")
    try:
        probe.json("POST", "/api/generate", {"model": MODEL})
        one = probe.loaded()[0]["size"]
    finally:
        probe.stop()
    srv = Server(home, "--ctx", "512", "--max-memory", str(int(one * 1.5)))
    try:
        assert srv.json("POST", "/api/generate", {"model": MODEL})[0] == 200
        assert srv.json("POST", "/api/generate", {"model": "smolcopy"})[0] == 200
        assert [m["name"] for m in srv.loaded()] == ["smolcopy:q4_1"]    # the idle one made room
        busy = Stream(srv, {**chat("Rivers", max_tokens=300, ignore_eos=True), "model": "smolcopy"})
        next(busy.chunks())
        status, body = srv.json("POST", "/api/generate", {"model": MODEL})
        print(body)
        assert status == 503 and "needs about" in body["error"] and "smolcopy" in body["error"]
        busy.close()
    finally:
        srv.stop()
