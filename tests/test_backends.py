"""The backend interface and the llama.cpp backend, with the real SmolLM2 model."""

from __future__ import annotations

import threading

import pytest

import bad_gguf
from localq.backends.base import (
    ContextTrimmed, Done, GenerationParams, LoadOptions, StopMatcher, TextDelta,
)
from localq.errors import BackendError, BadModelFile, LocalqError, ModelNotFound

pytest.importorskip("llama_cpp")

GREEDY = GenerationParams(temperature=0, max_tokens=40)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def run(session, messages, params=GREEDY) -> tuple[list, Done]:
    events = list(session.stream(messages, params))
    assert isinstance(events[-1], Done) and not any(isinstance(e, Done) for e in events[:-1])
    return events, events[-1]


# --- template and stop tokens ------------------------------------------------------------


def test_the_models_own_chat_template_is_applied(smollm2_session):
    messages = [{"role": "system", "content": "Be brief."}, *user("Hi")]
    text = smollm2_session.template.render(messages)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    tokens = smollm2_session.encode_chat(messages)
    im_start = smollm2_session.encode_chat(user("x"))[0]
    # The markers are the vocabulary's special tokens, not the text "<|im_start|>" spelled out.
    assert tokens.count(im_start) == 3
    assert len(smollm2_session.tokenize("<|im_start|>")) > 1


def test_the_stop_token_ends_the_reply(smollm2_session):
    _, done = run(smollm2_session, user("What is 2+2?"))
    assert done.finish_reason == "stop"
    assert 0 < done.completion_tokens < 40
    assert done.text.strip() and "<|im_end|>" not in done.text and "<|im_start|>" not in done.text
    # Ignoring the end-of-generation token, the same prompt runs on to the limit.
    _, forced = run(smollm2_session, user("What is 2+2?"), GenerationParams(temperature=0, max_tokens=done.completion_tokens + 5, ignore_eos=True))
    assert forced.finish_reason == "length" and forced.completion_tokens == done.completion_tokens + 5


def test_stop_strings_cut_the_reply(smollm2_session):
    long = GenerationParams(temperature=0, max_tokens=40, ignore_eos=True)   # enough words on any CPU
    _, full = run(smollm2_session, user("What is 2+2?"), long)
    words = full.text.split()
    word = words[min(2, len(words) - 1)]
    _, done = run(smollm2_session, user("What is 2+2?"), GenerationParams(temperature=0, max_tokens=40, ignore_eos=True, stop=(word,)))
    assert done.finish_reason == "stop"
    assert done.text == full.text[: full.text.index(word)]


def test_stop_matcher_holds_back_a_possible_start():
    matcher = StopMatcher(["</end>"])
    assert matcher.feed("hello </") == ("hello ", False)
    assert matcher.feed("en") == ("", False)
    assert matcher.feed("d> more") == ("", True)
    matcher = StopMatcher(["</end>"])
    assert matcher.feed("a </e") == ("a ", False)
    assert matcher.feed("x") == ("</ex", False)
    assert matcher.feed("tail </") == ("tail ", False) and matcher.flush() == "</"


# --- reproducibility --------------------------------------------------------------------------


def test_greedy_is_reproducible_with_and_without_the_prompt_cache(smollm2_session):
    _, first = run(smollm2_session, user("Name three colors."))
    _, cached = run(smollm2_session, user("Name three colors."))
    assert cached.cached_tokens > 0
    smollm2_session.reset()
    _, fresh = run(smollm2_session, user("Name three colors."))
    assert fresh.cached_tokens == 0
    assert first.text == cached.text == fresh.text and first.text


def test_a_seed_reproduces_a_sampled_reply(smollm2_session):
    def sampled(seed):
        params = GenerationParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=seed, max_tokens=24)
        return run(smollm2_session, user("Tell me a story."), params)[1].text

    assert sampled(7) == sampled(7)
    assert sampled(7) != sampled(8)


# --- cancellation ------------------------------------------------------------------------------


def test_cancel_from_another_thread_stops_within_a_few_tokens(smollm2_session):
    params = GenerationParams(temperature=0, max_tokens=400, ignore_eos=True)
    deltas_at_cancel = None
    events = []
    for event in smollm2_session.stream(user("Write a long story."), params):
        events.append(event)
        if isinstance(event, TextDelta) and deltas_at_cancel is None and len(events) == 5:
            canceller = threading.Thread(target=smollm2_session.cancel)
            canceller.start()
            canceller.join()
            deltas_at_cancel = len(events)
    done = events[-1]
    assert done.finish_reason == "cancelled"
    assert done.completion_tokens <= deltas_at_cancel + 2
    # The session goes on working after a cancel.
    assert run(smollm2_session, user("Hi"))[1].finish_reason == "stop"


# --- stats -----------------------------------------------------------------------------------------


def test_stats_are_consistent(smollm2_session):
    messages = user("Count from one to ten.")
    smollm2_session.reset()
    events, done = run(smollm2_session, messages, GenerationParams(temperature=0, max_tokens=12, ignore_eos=True))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert done.text == "".join(deltas)
    assert done.finish_reason == "length" and done.completion_tokens == 12
    assert done.prompt_tokens == len(smollm2_session.encode_chat(messages)) and done.cached_tokens == 0
    assert done.tokens_per_s == pytest.approx(done.completion_tokens / done.decode_s)
    assert done.prompt_tokens_per_s == pytest.approx(done.prompt_tokens / done.prompt_s)
    assert 0 < done.ttft_s <= done.prompt_s + done.decode_s + 0.5
    record = done.to_dict()
    assert record["tokens_per_s"] == done.tokens_per_s and record["finish_reason"] == "length"


def test_text_is_whole_characters(smollm2_session):
    # Byte-level tokens split accented letters and emoji; the stream puts them back together.
    text = "café 😀 naïve"
    tokens = smollm2_session.tokenize(text)
    assert b"".join(smollm2_session._piece(t) for t in tokens).decode("utf-8") == text
    _, done = run(smollm2_session, user("Repeat exactly: café 😀 naïve"), GenerationParams(temperature=0, max_tokens=30))
    assert "\ufffd" not in done.text


# --- context -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_session(smollm2_gguf, tmp_path_factory):
    """SmolLM2 with a 256-token context: a conversation outgrows it quickly."""
    from localq.backends.llamacpp import LlamaCppBackend

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOCALQ_HOME", str(tmp_path_factory.mktemp("small-home")))
        session = LlamaCppBackend().load(smollm2_gguf, LoadOptions(n_ctx=256))
    yield session
    session.close()


def test_a_long_conversation_is_trimmed_and_keeps_the_system_prompt(small_session):
    paragraph = "The lighthouse keeper wrote in his log about ships and storms. "
    messages = [{"role": "system", "content": "You are a pirate."}]
    for i in range(8):
        messages += [{"role": "user", "content": f"Part {i}: {paragraph}"}, {"role": "assistant", "content": "Noted."}]
    messages += user("Who are you?")
    assert len(small_session.encode_chat(messages)) > 256
    events, done = run(small_session, messages, GenerationParams(temperature=0, max_tokens=8))
    trimmed = events[0]
    assert isinstance(trimmed, ContextTrimmed) and trimmed.dropped_messages % 2 == 0 and trimmed.dropped_messages > 0
    assert trimmed.prompt_tokens <= 256 - 8 and done.trimmed_messages == trimmed.dropped_messages
    assert done.prompt_tokens == trimmed.prompt_tokens and done.finish_reason in ("stop", "length")

    from localq.backends.context import fit_messages

    fitted = fit_messages(messages, small_session.encode_chat, 256, reserve=8)
    assert len(fitted.tokens) == trimmed.prompt_tokens
    assert fitted.messages[0]["content"] == "You are a pirate."
    assert fitted.messages[-1]["content"] == "Who are you?"
    assert fitted.messages[1]["role"] == "user" and fitted.messages[1]["content"].startswith("Part ")
    assert len(fitted.messages) == len(messages) - trimmed.dropped_messages


def test_a_prompt_longer_than_the_context_is_an_error_before_generation(smollm2_session):
    stream = smollm2_session.stream(user("word " * 1500), GREEDY)
    with pytest.raises(LocalqError, match=r"the message takes \d+ tokens; the context holds 1024"):
        next(stream)


# --- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, message", [
    (GenerationParams(temperature=-1), "temperature must be 0 or more, not -1"),
    (GenerationParams(temperature=1e6), "temperature 1000000.0 is out of range"),
    (GenerationParams(temperature=float("nan")), "temperature must be a finite number"),
    (GenerationParams(top_p=0), r"top_p must be in \(0, 1\], not 0"),
    (GenerationParams(top_p=1.5), r"top_p must be in \(0, 1\], not 1.5"),
    (GenerationParams(top_k=-3), "top_k must be 0"),
    (GenerationParams(min_p=1), r"min_p must be in \[0, 1\)"),
    (GenerationParams(repeat_penalty=0), "repeat_penalty must be in"),
    (GenerationParams(seed=-1), "seed must be a whole number"),
    (GenerationParams(max_tokens=0), "max_tokens must be 1 or more"),
])
def test_absurd_sampling_parameters_are_refused(smollm2_session, params, message):
    with pytest.raises(LocalqError, match=message):
        next(smollm2_session.stream(user("Hi"), params))


def test_bad_messages_are_refused(smollm2_session):
    with pytest.raises(LocalqError, match="role 'robot'"):
        next(smollm2_session.stream([{"role": "robot", "content": "x"}]))
    with pytest.raises(LocalqError, match="must end with a user message"):
        next(smollm2_session.stream([{"role": "assistant", "content": "x"}]))


@pytest.mark.parametrize("n_ctx, message", [
    (10**9, r"context size 1000000000 is larger than the model's trained context \(8192 tokens\)"),
    (8, "context size 8 is too small"),
])
def test_absurd_context_sizes_are_refused(smollm2_gguf, tmp_home, n_ctx, message):
    from localq.backends.llamacpp import LlamaCppBackend

    with pytest.raises(LocalqError, match=message):
        LlamaCppBackend().load(smollm2_gguf, LoadOptions(n_ctx=n_ctx))


def test_a_missing_file_is_model_not_found(tmp_home, tmp_path):
    from localq.backends.llamacpp import LlamaCppBackend

    with pytest.raises(ModelNotFound, match="does not exist"):
        LlamaCppBackend().load(tmp_path / "nothing.gguf")


def test_a_truncated_gguf_is_a_bad_model_file(smollm2_gguf, tmp_home, tmp_path):
    from localq.backends.llamacpp import LlamaCppBackend

    path = bad_gguf.truncated_copy(smollm2_gguf, tmp_path / "cut.gguf")
    with pytest.raises(BadModelFile, match="truncated GGUF"):
        LlamaCppBackend().load(path)


def test_an_unknown_architecture_says_so(tmp_home, tmp_path):
    from localq.backends.llamacpp import LlamaCppBackend

    path = bad_gguf.unknown_architecture(tmp_path / "odd.gguf")
    with pytest.raises(BackendError) as caught:
        LlamaCppBackend().load(path)
    assert caught.value.message == "llama.cpp cannot load odd.gguf: unknown model architecture: 'notanarch'"
    assert "update llama-cpp-python" in caught.value.hint
    # llama.cpp's own words went to localq's log file.
    assert "notanarch" in (tmp_home / "logs" / "localq.log").read_text()


def test_a_model_too_big_for_memory_is_refused_before_loading(tmp_home, tmp_path):
    from localq.backends.llamacpp import LlamaCppBackend, check_fits
    from localq.gguf_info import read_gguf_info

    path = bad_gguf.sparse_huge(tmp_path / "huge.gguf")
    with pytest.raises(LocalqError, match=r"huge.gguf needs about 1\d\d\d.\d GiB of memory"):
        LlamaCppBackend().load(path, LoadOptions(n_gpu_layers=0))
    info = read_gguf_info(path)
    check_fits(info, 4096, available=2**41)         # fits a machine with 2 TiB
    with pytest.raises(LocalqError, match="GiB is available"):
        check_fits(info, 4096, available=2**40)


def test_a_closed_session_refuses_work(smollm2_gguf, tmp_home):
    from localq.backends.llamacpp import LlamaCppBackend

    session = LlamaCppBackend().load(smollm2_gguf, LoadOptions(n_ctx=256))
    assert run(session, user("Hi"), GenerationParams(temperature=0, max_tokens=4))[1].completion_tokens > 0
    session.close()
    session.close()    # twice is harmless
    with pytest.raises(BackendError, match="closed"):
        next(session.stream(user("Hi")))


# --- the registry ------------------------------------------------------------------------------------


def test_the_builtin_backend_comes_through_the_entry_point_group():
    from localq.backends import registry
    from localq.backends.llamacpp import LlamaCppBackend

    assert "llamacpp" in registry.backend_names()
    backend = registry.get_backend("llamacpp")
    assert isinstance(backend, LlamaCppBackend) and backend.formats == ("gguf",)
    assert backend.available() == (True, "")
    assert isinstance(registry.backend_for("gguf"), LlamaCppBackend)


def test_unknown_backends_and_formats_say_what_exists():
    from localq.backends import registry

    with pytest.raises(BackendError, match=r"no backend named 'nope' \(installed: .*llamacpp"):
        registry.get_backend("nope")
    with pytest.raises(BackendError, match="no installed backend runs onnx models"):
        registry.backend_for("onnx")


def test_a_third_party_backend_registers_through_the_same_group(tmp_path, monkeypatch):
    from localq.backends import registry

    (tmp_path / "echo_backend.py").write_text(
        "from localq.backends.base import Backend\n"
        "class EchoBackend(Backend):\n"
        "    name = 'echo'\n"
        "    formats = ('txt',)\n"
        "    def available(self, profile=None):\n"
        "        return False, 'echo needs nothing but is shy'\n"
        "    def load(self, model, options=None, profile=None):\n"
        "        raise NotImplementedError\n"
    )
    dist = tmp_path / "echo_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[localq.backends]\necho = echo_backend:EchoBackend\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    assert "echo" in registry.backend_names()
    assert registry.get_backend("echo").formats == ("txt",)
    with pytest.raises(BackendError, match="no backend can run txt models here .echo: echo needs nothing but is shy"):
        registry.backend_for("txt")


# --- installed variants ---------------------------------------------------------------------------


def test_a_split_gguf_variant_loads_from_its_blobs(tmp_home, hub_files, smollm2_session):
    from localq.chat.conversation import open_session
    from localq.store import blobs
    from localq.store.db import open_index
    from localq.store.index import FileEntry, add_variant

    db = open_index()
    files = []
    for key in ("q4_k_m-1", "q4_k_m-2", "q4_k_m-3"):
        sha, blob = blobs.add_file(hub_files[key], link=True)
        files.append(FileEntry(hub_files[key].name, sha, blob.stat().st_size))
    variant = add_variant(db, model="smollm2:135m", source_kind="import", quant="q4_k_m", format="gguf", files=files)
    params = GenerationParams(temperature=0, max_tokens=12)
    with open_session(db, "smollm2:135m-q4_k_m", LoadOptions(n_ctx=1024)) as session:
        assert session.model_ref == variant.ref and session.variant_id == variant.id and session.quant == "q4_k_m"
        split = run(session, user("What is 2+2?"), params)[1]
    # The same tensors in three parts answer as the single file does.
    assert split.text == run(smollm2_session, user("What is 2+2?"), params)[1].text
    assert open_index().execute("SELECT last_used FROM variants WHERE id = ?", [variant.id]).fetchone()[0]


# --- the shared generation defaults --------------------------------------------------------------


def test_a_reply_without_max_tokens_ends_at_the_cap_bounded_by_the_context(smollm2_gguf, tmp_home):
    """A greedy reply that never meets an end token (ignore_eos stands in for a loop) stops at
    the default cap: DEFAULT_MAX_TOKENS, at most half the context; not at the full context."""
    from localq.backends.base import DEFAULT_MAX_TOKENS, reply_limit
    from localq.backends.llamacpp import LlamaCppBackend

    session = LlamaCppBackend().load(smollm2_gguf, LoadOptions(n_ctx=256))   # a small context: a short test
    try:
        params = GenerationParams(temperature=0, ignore_eos=True)
        limit = reply_limit(params, session.n_ctx)
        assert limit == min(DEFAULT_MAX_TOKENS, session.n_ctx // 2) == 128
        _, done = run(session, user("Count."), params)
        assert done.finish_reason == "length" and done.completion_tokens == limit
    finally:
        session.close()


def test_the_help_documents_the_defaults_the_code_uses():
    from click.testing import CliRunner

    from localq.backends.base import DEFAULT_MAX_TOKENS
    from localq.cli import cli

    text = " ".join(CliRunner().invoke(cli, ["run", "--help"]).output.split())
    defaults = GenerationParams()
    assert f"(default {defaults.temperature:g})" in text and f"(default {defaults.top_p:g})" in text
    assert f"(default {defaults.top_k})" in text and f"(default {defaults.repeat_penalty:g}, as llama.cpp)" in text
    assert f"(default {DEFAULT_MAX_TOKENS}, at most half the context)" in text
