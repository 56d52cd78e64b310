"""The real ``localq`` process in a pseudo-terminal: first start, chat with the starter, quit.

What a user does: start ``localq`` in a fresh home (the welcome screen shows),
press ``c`` to chat with the starter model, send a message, watch the reply
stream (the status line says "writing…" while it does) while typing into the
message box (the keys show before the reply ends), stop it with esc (the
status line then gives its tokens/s), quit with ctrl+q; the chat is in the
history afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time

import pytest

pexpect = pytest.importorskip("pexpect")

ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


class Terminal:
    """A localq process in a pty, with what it has drawn so far as text (escape codes removed)."""

    def __init__(self, home) -> None:
        command = shutil.which("localq")
        args = [] if command else ["-m", "localq.cli"]
        env = {**os.environ, "LOCALQ_HOME": str(home), "TERM": "xterm-256color", "COLORTERM": "truecolor"}
        env.pop("TEXTUAL", None)
        self.child = pexpect.spawn(command or sys.executable, args, env=env, dimensions=(30, 100),
                                   encoding="utf-8", codec_errors="replace", timeout=5)
        self.raw = ""

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw)

    def read(self) -> None:
        try:
            while True:
                self.raw += self.child.read_nonblocking(65536, timeout=0.05)
        except pexpect.TIMEOUT:
            pass

    def wait_for(self, pattern: str, timeout: float = 60.0, since: int = 0) -> re.Match:
        """Read until ``pattern`` appears in the drawn text after offset ``since``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read()
            found = re.search(pattern, self.text[since:])
            if found:
                return found
        raise AssertionError(f"{pattern!r} never appeared; last output:\n{self.text[-2000:]}")

    def send(self, keys: str) -> None:
        self.child.send(keys)


def test_real_process_chat_then_history(tmp_home):
    term = Terminal(tmp_home)
    try:
        term.wait_for(r"Welcome to localq")
        term.send("c")
        term.wait_for(r"smollm2:135m-q4_1 · llama\.cpp", timeout=120)
        mark = len(term.text)
        term.send("Tell me a long story about a dragon.\r")
        term.wait_for(r"writing…", since=mark, timeout=120)  # the reply streams ...
        typed = len(term.text)
        term.send("xyzzy")                                   # ... and typing shows while it does
        term.wait_for(r"xyzzy", since=typed, timeout=10)
        assert re.search(r"tok/s · TTFT \d+ ms · ctx", term.text[mark:]) is None, "the reply ended too soon"
        term.send("\x1b")  # esc stops the reply
        term.wait_for(r"tok/s · TTFT \d+ ms · ctx \d+/\d+", since=mark, timeout=60)
        term.send("\x11")  # ctrl+q
        term.child.expect(pexpect.EOF, timeout=30)
    finally:
        term.child.close(force=True)
    assert term.child.exitstatus == 0, term.text[-2000:]

    from localq.chat.history import list_chats, load_chat
    from localq.store.db import open_index

    db = open_index()
    chats = list_chats(db)
    assert [c["title"] for c in chats] == ["Tell me a long story about a dragon."]
    chat = load_chat(db, chats[0]["id"])
    db.close()
    assert [m.role for m in chat.messages] == ["user", "assistant"]
    assert chat.messages[1].finish_reason == "cancelled" and chat.messages[1].content.strip()
    assert chat.messages[1].content.split()[0] in term.text  # the reply was drawn on the terminal
