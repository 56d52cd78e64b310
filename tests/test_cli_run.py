"""`localq run`, `chat`, `history` and `bench` from the command line, with the real SmolLM2 model."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import bad_gguf
from localq.cli import cli

pytest.importorskip("llama_cpp")

LOCALQ = [sys.executable, "-c", "from localq.cli import main; main()"]
GREEDY = ["--temperature", "0", "--max-tokens", "30"]


def invoke(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input)


def history(tmp_home) -> list[dict]:
    result = invoke("history", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# --- run -------------------------------------------------------------------------------------


def test_run_streams_the_reply_and_records_the_chat(tmp_home, smollm2_gguf):
    result = invoke("run", "smollm2:135m", "What is 2+2?", *GREEDY)
    assert result.exit_code == 0, result.output
    assert result.output.strip() and result.output.endswith("\n")
    [chat] = history(tmp_home)
    assert chat["title"] == "What is 2+2?" and chat["messages"] == 2 and chat["model"] == "smollm2:135m-q4_1"
    export = json.loads(invoke("history", "export", str(chat["id"]), "--format", "json").output)
    # What streamed to the terminal is the reply that was stored, word for word.
    assert result.output.strip() == export["messages"][-1]["content"].strip()


def test_run_json_prints_one_record_with_text_and_stats(tmp_home, smollm2_gguf):
    result = invoke("run", "smollm2:135m", "What is 2+2?", "--json", "--system", "Be brief.", *GREEDY)
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    # The words of a greedy reply depend on the CPU's kernels: assert what holds everywhere.
    assert record["text"].strip() and record["finish_reason"] in ("stop", "length")
    assert 1 <= record["completion_tokens"] <= 30
    again = json.loads(invoke("run", "smollm2:135m", "What is 2+2?", "--json", "--system", "Be brief.", *GREEDY).output)
    assert again["text"] == record["text"]   # greedy decoding is reproducible in one process
    assert record["model"] == "smollm2:135m-q4_1" and record["backend"] == "llamacpp"
    assert record["tokens_per_s"] == pytest.approx(record["completion_tokens"] / record["decode_s"])
    assert record["params"]["temperature"] == 0 and record["n_ctx"] == 4096
    export = json.loads(invoke("history", "export", str(record["chat_id"]), "--format", "json").output)
    assert [m["role"] for m in export["messages"]] == ["system", "user", "assistant"]
    assert export["messages"][2]["content"] == record["text"]


def test_run_works_in_a_real_pipe(tmp_home, smollm2_gguf):
    env = {**os.environ, "LOCALQ_HOME": str(tmp_home)}
    command = " ".join(LOCALQ[:2]) + f" '{LOCALQ[2]}' run smollm2:135m --temperature 0 --max-tokens 30"
    done = subprocess.run(f"echo 'What is 2+2?' | {command} | tr a-z A-Z", shell=True, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert done.stdout.strip() and done.stdout == done.stdout.upper()
    assert any(c.isalpha() for c in done.stdout)   # the model's words went through `tr`
    # llama.cpp's log went to the log file, not over the terminal.
    assert done.stderr == ""
    assert "llama_model_loader" in (tmp_home / "logs" / "localq.log").read_text()


def test_piped_text_comes_before_the_prompt_argument(tmp_home, smollm2_gguf):
    result = invoke("run", "smollm2:135m", "Answer the question.", "--json", *GREEDY, input="What is 2+2?\n")
    export = json.loads(invoke("history", "export", str(json.loads(result.output)["chat_id"]), "--format", "json").output)
    assert export["messages"][0]["content"] == "What is 2+2?\n\nAnswer the question."


def test_run_without_a_prompt_is_a_usage_error(tmp_home):
    result = invoke("run", "smollm2:135m", input="")
    assert result.exit_code == 2 and "no prompt: give one as an argument, or pipe it on stdin" in result.output


def test_no_history_records_nothing(tmp_home, smollm2_gguf):
    assert invoke("run", "smollm2:135m", "Hi", "--no-history", *GREEDY).exit_code == 0
    assert history(tmp_home) == []


@pytest.mark.parametrize("make_args, message", [
    (lambda d, model: ["nosuch:1b"], "error: model 'nosuch:1b' is not installed (pull it with `localq pull nosuch:1b`"),
    (lambda d, model: [str(d / "missing.gguf")], "missing.gguf does not exist"),
    (lambda d, model: [str(bad_gguf.truncated_copy(model, d / "cut.gguf"))], "truncated GGUF"),
    (lambda d, model: [str(bad_gguf.unknown_architecture(d / "odd.gguf"))],
     "error: llama.cpp cannot load odd.gguf: unknown model architecture: 'notanarch'"),
    (lambda d, model: [str(bad_gguf.sparse_huge(d / "huge.gguf"))], "huge.gguf needs about"),
    (lambda d, model: ["smollm2:135m", "--temperature", "-1"], "error: temperature must be 0 or more, not -1.0"),
    (lambda d, model: ["smollm2:135m", "--top-p", "2"], "error: top_p must be in (0, 1], not 2.0"),
    (lambda d, model: ["smollm2:135m", "--ctx", str(10**9)],
     "error: context size 1000000000 is larger than the model's trained context (8192 tokens)"),
    (lambda d, model: ["smollm2:135m", "--max-tokens", "0"], "error: max_tokens must be 1 or more, not 0"),
])
def test_bad_input_is_one_clear_line_and_no_chat_is_left(tmp_home, tmp_path, smollm2_gguf, make_args, message):
    model, *options = make_args(tmp_path, smollm2_gguf)
    result = invoke("run", model, "Hi", *options)
    assert result.exit_code == 1, result.output
    assert message in result.output and result.output.count("\n") == 1
    assert history(tmp_home) == []


# --- chat -------------------------------------------------------------------------------------------


def test_chat_repl_commands_and_history(tmp_home, tmp_path, smollm2_gguf):
    saved = tmp_path / "saved.md"
    lines = ["What is 2+2?", "/stats", "/system Be brief.", "/system", "Hi", f"/save {saved}",
             "/frobnicate", "/clear", "Hello", "/exit", "never sent"]
    result = invoke("chat", *GREEDY, input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("Chatting with smollm2:135m-q4_1 (llamacpp, context 4096 tokens).")
    assert "tokens/s); prompt" in out and "ended: stop" in out
    assert "system prompt: Be brief." in out and "unknown command /frobnicate" in out
    assert "Started a new chat." in out
    chats = history(tmp_home)
    assert [c["messages"] for c in chats] == [3, 5]      # the new chat (system, user, reply) first
    text = saved.read_text()
    assert "## User\n\nWhat is 2+2?" in text and "## System\n\nBe brief." in text and "never sent" not in text


def test_chat_resume_continues_a_stored_chat(tmp_home, smollm2_gguf):
    assert invoke("run", "smollm2:135m", "What is 2+2?", *GREEDY).exit_code == 0
    [chat] = history(tmp_home)
    result = invoke("chat", "--resume", str(chat["id"]), input="And 3+3?\n")
    assert result.exit_code == 0, result.output
    assert f"Resumed chat {chat['id']}: 1 earlier exchanges." in result.output
    [after] = history(tmp_home)
    assert after["id"] == chat["id"] and after["messages"] == 4
    md = invoke("history", "export", str(chat["id"])).output
    assert md.index("What is 2+2?") < md.index("And 3+3?")


def test_resuming_a_missing_chat_is_an_error(tmp_home):
    result = invoke("chat", "--resume", "99")
    assert result.exit_code == 1 and "error: no chat with id 99" in result.output


def test_ctrl_c_stops_the_reply_not_the_chat(tmp_home, smollm2_gguf):
    env = {**os.environ, "LOCALQ_HOME": str(tmp_home)}
    proc = subprocess.Popen(LOCALQ + ["chat", "--temperature", "0", "--max-tokens", "2000"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b"Write a very long story about a dragon.\n")
        proc.stdin.flush()
        seen = read_until(proc, lambda text: text.count(" ") > 15 and ">>> " in text, timeout=60)
        proc.send_signal(signal.SIGINT)
        seen += read_until(proc, lambda text: "[stopped]" in text, timeout=30)
        proc.stdin.write(b"/exit\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "[stopped]" in seen + out.decode()
    [chat] = history(tmp_home)
    export = json.loads(invoke("history", "export", str(chat["id"]), "--format", "json").output)
    reply = export["messages"][-1]
    assert reply["finish_reason"] == "cancelled" and 0 < reply["completion_tokens"] < 2000


def read_until(proc, done, timeout: float) -> str:
    """Read the process's stdout until ``done(text)`` holds."""
    text = ""
    deadline = time.monotonic() + timeout
    while not done(text):
        assert time.monotonic() < deadline, f"timed out; so far: {text!r}"
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"the chat ended early: {text!r}"
            text += chunk.decode("utf-8", "replace")
    return text


# --- history ------------------------------------------------------------------------------------------


def test_history_lists_and_exports(tmp_home, tmp_path, smollm2_gguf):
    assert "No chats yet." in invoke("history").output
    assert invoke("run", "smollm2:135m", "What is 2+2?", *GREEDY).exit_code == 0
    table = invoke("history").output
    assert "What is 2+2?" in table and "smollm2:135m-q4_1" in table
    target = tmp_path / "chat.md"
    result = invoke("history", "export", "1", "--format", "md", "-o", str(target))
    assert result.exit_code == 0 and target.read_text().startswith("# What is 2+2?")
    bad = invoke("history", "export", "7")
    assert bad.exit_code == 1 and "error: no chat with id 7" in bad.output
    assert invoke("history", "export", "1", "--format", "pdf").exit_code == 2


# --- bench ---------------------------------------------------------------------------------------------


def test_bench_measures_and_records(tmp_home, smollm2_gguf):
    result = invoke("bench", "smollm2:135m", "--prompt-tokens", "32", "--decode-tokens", "8", "--ctx", "256", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["prompt_tokens"] == 32 and record["decode_tokens"] == 8 and record["n_ctx"] == 256
    for key in ("prompt_tps", "decode_tps", "ttft_s", "load_s"):
        assert record[key] > 0
    assert record["peak_memory"] > 50 * 2**20

    from localq.bench import latest_benchmark
    from localq.store.db import open_index
    from localq.store.index import resolve

    db = open_index()
    stored = latest_benchmark(db, resolve(db, "smollm2:135m").id)
    assert stored["decode_tps"] == record["decode_tps"] and stored["params"] == {"n_ctx": 256}
    assert record["flash_attn"] == stored["flash_attn"] == "auto"
    text = invoke("bench", "smollm2:135m", "--prompt-tokens", "16", "--decode-tokens", "4", "--ctx", "256", "--no-save",
                  "--flash-attn", "off")
    assert "decode       4 tokens at" in text.output and "flash attention off" in text.output
    assert latest_benchmark(db, resolve(db, "smollm2:135m").id)["id"] == stored["id"]
    shown = invoke("show", "smollm2:135m")
    assert f"decode {record['decode_tps']:.1f} tokens/s" in shown.output
    assert json.loads(invoke("show", "smollm2:135m", "--json").output)["benchmark"]["id"] == stored["id"]


def test_flash_attention_is_a_load_option_that_reaches_llama_cpp(tmp_home, smollm2_gguf):
    """Flash attention on and off compute the same attention by different kernels: the first
    reply's logits agree closely but are not bit-identical on any CPU llama.cpp runs on."""
    from localq.backends.base import LoadOptions
    from localq.backends.llamacpp import LlamaCppBackend

    first = {}
    for mode in ("off", "on"):
        session = LlamaCppBackend().load(smollm2_gguf, LoadOptions(n_ctx=256, flash_attn=mode))
        try:
            assert session.flash_attn == mode
            first[mode] = session.next_token_logits(session.tokenize("The capital of France is"))
        finally:
            session.close()
    import numpy as np

    off, on = np.array(first["off"]), np.array(first["on"])
    assert np.argmax(off) == np.argmax(on) or np.max(np.abs(off - on)) < 0.5
    assert np.max(np.abs(off - on)) > 0     # the option changed the computation


def test_bench_refuses_more_tokens_than_the_context(tmp_home, smollm2_gguf):
    result = invoke("bench", "smollm2:135m", "--prompt-tokens", "200", "--decode-tokens", "100", "--ctx", "256")
    assert result.exit_code == 1
    assert "200 prompt + 100 decode tokens do not fit the 256-token context" in result.output
