"""``localq chat``: a line-mode chat in the terminal.

Each line is a message; lines starting with ``/`` are commands (``/help``).
The reply is written by a worker thread while the main thread prints its
events, so Ctrl-C (a KeyboardInterrupt in the main thread) cancels the reply
through ``Session.cancel`` and the chat goes on; Ctrl-C at the prompt only
clears the line. Ctrl-D or ``/exit`` leaves.
"""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path
from typing import Callable, TextIO

from localq.backends.base import ContextTrimmed, Done, TextDelta
from localq.chat.conversation import Conversation
from localq.errors import LocalqError

HELP = """\
/system TEXT   use TEXT as the system prompt (/system alone shows it; /system - removes it)
/clear         start a new chat (the current one stays in the history)
/stats         timings of the last reply
/save [FILE]   write this chat as Markdown (default: localq-chat-ID.md)
/exit          leave (also /bye, /quit, Ctrl-D)
Ctrl-C stops a reply."""

_END = object()


def run_repl(conv: Conversation, *, read: Callable[[str], str] = input,
             out: TextIO | None = None, err: TextIO | None = None) -> None:
    """Read messages and commands until /exit or end of input."""
    out = out or sys.stdout
    err = err or sys.stderr
    if read is input and sys.stdin is not None and sys.stdin.isatty():
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    session = conv.session
    out.write(f"Chatting with {session.model_ref} ({session.backend_name}, context {session.n_ctx} tokens). "
              "/help for commands, Ctrl-D to leave.\n")
    if conv.chat.id is not None:
        out.write(f"Resumed chat {conv.chat.id}: {len(conv.turns) // 2} earlier exchanges.\n")
    out.flush()
    while True:
        try:
            line = read(">>> ")
        except EOFError:
            out.write("\n")
            break
        except KeyboardInterrupt:
            out.write("\n(Ctrl-D or /exit to leave)\n")
            continue
        if not line.strip():
            continue
        if line.startswith("/"):
            if not command(conv, line.strip(), out, err):
                break
            continue
        stream_reply(conv, line, out, err)


def stream_reply(conv: Conversation, text: str, out: TextIO, err: TextIO) -> Done | None:
    """Print the reply to ``text`` as it is written; Ctrl-C cancels it. Returns its Done event."""
    events: queue.Queue = queue.Queue()

    def work():
        try:
            for event in conv.send(text):
                events.put(event)
        except BaseException as exc:  # handed to the main thread, which reports it
            events.put(exc)
        finally:
            events.put(_END)

    worker = threading.Thread(target=work, name="localq-reply", daemon=True)
    worker.start()
    done = None
    wrote_text = False
    while True:
        try:
            item = events.get(timeout=0.1)
            if item is _END:
                break
            if isinstance(item, LocalqError):
                err.write(f"error: {item.one_line()}\n")
            elif isinstance(item, BaseException):
                err.write(f"error: {type(item).__name__}: {item}\n")
            elif isinstance(item, TextDelta):
                out.write(item.text)
                out.flush()
                wrote_text = True
            elif isinstance(item, ContextTrimmed):
                err.write(f"[the conversation outgrew the {item.n_ctx}-token context: "
                          f"left out its {item.dropped_messages} oldest messages]\n")
            elif isinstance(item, Done):
                done = item
        except queue.Empty:
            continue
        except KeyboardInterrupt:
            conv.session.cancel()
    worker.join()
    if wrote_text:
        out.write("\n")
    if done is not None:
        if done.finish_reason == "cancelled":
            out.write("[stopped]\n")
        elif done.finish_reason == "length":
            out.write("[reply cut at the token limit]\n")
        elif done.finish_reason == "error":
            err.write(f"error: the model failed: {done.error}\n")
    out.flush()
    return done


def command(conv: Conversation, line: str, out: TextIO, err: TextIO) -> bool:
    """Run one /command; return False when the chat should end."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/exit", "/bye", "/quit"):
        return False
    if name == "/help":
        out.write(HELP + "\n")
    elif name == "/system":
        if not arg:
            out.write(f"system prompt: {conv.system or '(none: the model template default)'}\n")
        else:
            conv.set_system(None if arg == "-" else arg)
            out.write("System prompt removed.\n" if arg == "-" else "System prompt set.\n")
    elif name == "/clear":
        conv.clear()
        out.write("Started a new chat.\n")
    elif name == "/stats":
        out.write(format_stats(conv.last) + "\n")
    elif name == "/save":
        if conv.chat.id is None:
            out.write("Nothing to save yet.\n")
        else:
            from localq.chat.history import export_chat, load_chat

            path = Path(arg or f"localq-chat-{conv.chat.id}.md").expanduser()
            try:
                path.write_text(export_chat(load_chat(conv.db, conv.chat.id), "md"), encoding="utf-8")
            except OSError as exc:
                err.write(f"error: cannot write {path}: {exc.strerror}\n")
            else:
                out.write(f"Saved chat {conv.chat.id} to {path}\n")
    else:
        err.write(f"unknown command {name} (/help lists them)\n")
    out.flush()
    return True


def format_stats(done: Done | None) -> str:
    """One line about a reply's speed, as ``/stats`` and ``run --verbose`` print it."""
    if done is None:
        return "No reply yet."
    parts = [f"{done.completion_tokens} tokens in {done.decode_s:.2f} s ({done.tokens_per_s:.1f} tokens/s)"]
    prompt = f"prompt {done.prompt_tokens} tokens"
    if done.cached_tokens:
        prompt += f" ({done.cached_tokens} cached)"
    parts.append(f"{prompt} in {done.prompt_s:.2f} s")
    if done.ttft_s is not None:
        parts.append(f"first token after {done.ttft_s:.2f} s")
    parts.append(f"ended: {done.finish_reason}")
    if done.trimmed_messages:
        parts.append(f"{done.trimmed_messages} old messages left out")
    return "; ".join(parts)
