"""The model runner: SmolLM2 in a real worker process, killed in the ways native code dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from localq.backends.base import Done, GenerationParams, LoadOptions, TextDelta
from localq.errors import BackendError, LocalqError

pytestmark = pytest.mark.usefixtures("tmp_home")
GREEDY = GenerationParams(temperature=0, max_tokens=12)
HELLO = [{"role": "user", "content": "Say hello."}]
OPTIONS = LoadOptions(n_ctx=512, n_threads=2)


@pytest.fixture
def remote(smollm2_gguf):
    pytest.importorskip("llama_cpp")
    from localq.backends import runner

    session = runner.load(None, smollm2_gguf, OPTIONS)
    yield session
    session.close()


def gone(pid: int, within: float = 10.0) -> bool:
    """True when ``pid`` exits (or is a zombie) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def events_of(session, messages=HELLO, params=GREEDY):
    return list(session.stream(messages, params))


def test_worker_replies_as_the_in_process_session_does(remote, smollm2_gguf):
    from localq.backends.llamacpp import LlamaCppBackend

    local = LlamaCppBackend().load(smollm2_gguf, OPTIONS)
    try:
        expected = events_of(local)[-1]
        expected_tokens = local.tokenize("hello there")
    finally:
        local.close()
    events = events_of(remote)
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason in ("stop", "length")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == done.text
    assert done.text == expected.text and done.completion_tokens == expected.completion_tokens
    assert remote.tokenize("hello there") == expected_tokens
    assert remote.backend_name == "llamacpp" and remote.n_ctx == 512 and remote.pid != os.getpid()
    assert remote.info is not None and remote.info.architecture == "llama"
    # A second reply from the same worker, with the KV cache reused.
    assert events_of(remote)[-1].text == expected.text


def test_refused_load_comes_back_as_the_same_error(smollm2_gguf, tmp_path):
    pytest.importorskip("llama_cpp")
    from bad_gguf import truncated_copy

    from localq.backends import runner

    bad = truncated_copy(smollm2_gguf, tmp_path / "cut.gguf")
    with pytest.raises(LocalqError) as caught:
        runner.load("llamacpp", bad, OPTIONS)
    print(caught.value.one_line())
    assert "truncated" in caught.value.message and caught.value.hint
    with pytest.raises(LocalqError) as caught:
        runner.load("nosuchbackend", bad, OPTIONS)
    print(caught.value.one_line())
    assert "nosuchbackend" in caught.value.message


def test_errors_of_a_request_keep_the_worker(remote):
    with pytest.raises(LocalqError) as caught:
        events_of(remote, params=GenerationParams(temperature=-1))
    print(caught.value.one_line())
    assert "temperature" in caught.value.message
    assert remote.alive and events_of(remote)[-1].finish_reason in ("stop", "length")


@pytest.mark.parametrize("sig", [signal.SIGABRT, signal.SIGKILL, signal.SIGSEGV])
def test_a_killed_worker_is_an_error_and_the_model_loads_again(smollm2_gguf, sig):
    pytest.importorskip("llama_cpp")
    from localq.backends import runner

    session = runner.load(None, smollm2_gguf, OPTIONS)
    pid = session.pid
    stream = session.stream(HELLO, GenerationParams(temperature=0, max_tokens=400, ignore_eos=True))
    first = next(stream)
    assert isinstance(first, TextDelta)
    os.kill(pid, sig)
    rest = list(stream)
    done = rest[-1]
    print(done.error)
    assert isinstance(done, Done) and done.finish_reason == "error"
    assert done.error.startswith(f"the model process stopped: {sig.name}, last message: ")
    assert "\n" not in done.error
    assert not session.alive and gone(pid)
    with pytest.raises(BackendError) as caught:
        session.tokenize("x")
    assert sig.name in caught.value.message
    session.close()

    again = runner.load(None, smollm2_gguf, OPTIONS)
    try:
        assert events_of(again)[-1].finish_reason in ("stop", "length")
    finally:
        again.close()


def test_cancel_reaches_the_worker_mid_reply(remote):
    params = GenerationParams(temperature=0, max_tokens=2000, ignore_eos=True)
    seen = []
    stream = remote.stream(HELLO, params)
    for event in stream:
        if isinstance(event, TextDelta):
            seen.append(event.text)
            if len(seen) == 5:
                threading.Thread(target=remote.cancel).start()
        elif isinstance(event, Done):
            done = event
    assert done.finish_reason == "cancelled"
    assert done.completion_tokens < 2000
    # The worker stays usable, and the next reply is not cancelled.
    assert events_of(remote)[-1].finish_reason in ("stop", "length")


def test_close_ends_the_worker(remote):
    pid = remote.pid
    remote.close()
    assert gone(pid)
    with pytest.raises(BackendError):
        events_of(remote)


def test_worker_exits_when_its_parent_is_killed(smollm2_gguf, tmp_path):
    pytest.importorskip("llama_cpp")
    script = textwrap.dedent(f"""
        import sys, time
        from localq.backends import runner
        from localq.backends.base import LoadOptions
        session = runner.load(None, {str(smollm2_gguf)!r}, LoadOptions(n_ctx=256, n_threads=1))
        print(session.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        assert not gone(worker, within=0.2)
        parent.kill()
        parent.wait()
        assert gone(worker), "the worker outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_reply_left_unread_does_not_leak_into_the_next(remote):
    stream = remote.stream(HELLO, GenerationParams(temperature=0, max_tokens=2000, ignore_eos=True))
    assert isinstance(next(stream), TextDelta)
    stream.close()    # the caller went away (a closed HTTP connection, say)
    events = events_of(remote)
    assert isinstance(events[-1], Done) and events[-1].finish_reason in ("stop", "length")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == events[-1].text
