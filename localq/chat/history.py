"""Chat history in the index: every conversation, its messages, and how each reply was made.

Tables ``chats`` and ``messages`` (migration ``m003_chats``). A chat records
the model reference, the variant, the backend, the sampling parameters (JSON,
with the context size) and the current system prompt; each assistant message
records its token counts, tokens/s, time to first token and finish reason.

Decision: a turn (the user's message and the model's reply, plus a system
prompt that changed before it) is written in one transaction *after* the reply
ends, and the chat row itself is created with its first turn. So a failure
before or during the first reply (a missing model, a bad file, absurd
parameters, a crash) leaves no chat behind, and nothing is ever half-written.
A reply that ended with an error is not stored; a cancelled reply is stored
with the text written so far (``finish_reason = "cancelled"``) unless it is
empty. The price: a process killed mid-reply loses that one turn.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from localq.errors import LocalqError
from localq.store.db import write_transaction
from localq.store.migrations import now

TITLE_LENGTH = 60


@dataclass
class Message:
    """One stored message; the numbers are set on assistant replies only."""

    role: str
    content: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_s: float | None = None
    ttft_s: float | None = None
    finish_reason: str | None = None
    created: str | None = None
    id: int | None = None

    @classmethod
    def reply(cls, done) -> Message:
        """The assistant message for a backend's ``Done`` event."""
        return cls("assistant", done.text, done.prompt_tokens, done.completion_tokens,
                   round(done.tokens_per_s, 3), None if done.ttft_s is None else round(done.ttft_s, 4),
                   done.finish_reason)


@dataclass
class Chat:
    """A conversation; ``id`` is None until its first turn is saved."""

    model: str
    variant_id: int | None = None
    backend: str | None = None
    params: dict = field(default_factory=dict)
    system_prompt: str | None = None
    title: str | None = None
    id: int | None = None
    created: str | None = None
    updated: str | None = None
    messages: list[Message] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def save_turn(db, chat: Chat, messages: list[Message]) -> Chat:
    """Append ``messages`` to ``chat`` in one transaction, creating the chat row first if it is new.

    Updates ``chat`` in place (id, timestamps, messages) and returns it.
    """
    stamp = now()
    chat_id, title, ids = chat.id, chat.title, []
    # ``chat`` and ``messages`` change only once the transaction committed: a rollback leaves them as they were.
    with write_transaction(db):
        if chat_id is None:
            first_user = next((m.content for m in messages if m.role == "user"), "")
            title = title or make_title(first_user)
            chat_id = db.execute(
                "INSERT INTO chats (title, model, variant_id, backend, params, system_prompt, created, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [title, chat.model, chat.variant_id, chat.backend, json.dumps(chat.params),
                 chat.system_prompt, stamp, stamp],
            ).lastrowid
        else:
            db.execute(
                "UPDATE chats SET model = ?, variant_id = ?, backend = ?, params = ?, system_prompt = ?, updated = ?"
                " WHERE id = ?",
                [chat.model, chat.variant_id, chat.backend, json.dumps(chat.params), chat.system_prompt, stamp,
                 chat.id],
            )
        for m in messages:
            ids.append(db.execute(
                "INSERT INTO messages (chat_id, role, content, prompt_tokens, completion_tokens, tokens_per_s,"
                " ttft_s, finish_reason, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [chat_id, m.role, m.content, m.prompt_tokens, m.completion_tokens, m.tokens_per_s,
                 m.ttft_s, m.finish_reason, stamp],
            ).lastrowid)
    if chat.id is None:
        chat.id, chat.title, chat.created = chat_id, title, stamp
    for m, message_id in zip(messages, ids):
        m.id, m.created = message_id, stamp
    chat.updated = stamp
    chat.messages.extend(messages)
    return chat


def make_title(text: str) -> str:
    """A chat's title: the first line of its first message, shortened."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "") or "(empty)"
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 3].rstrip() + "..."


def list_chats(db, limit: int | None = None) -> list[dict]:
    """Stored chats, newest activity first, with their message counts (no message text)."""
    sql = (
        "SELECT c.id, c.title, c.model, c.backend, c.created, c.updated, COUNT(m.id) AS messages"
        " FROM chats c LEFT JOIN messages m ON m.chat_id = c.id"
        " GROUP BY c.id ORDER BY c.updated DESC, MAX(m.id) DESC"
    )
    params = []
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    cols = ("id", "title", "model", "backend", "created", "updated", "messages")
    return [dict(zip(cols, row)) for row in db.execute(sql, params).fetchall()]


def load_chat(db, chat_id: int) -> Chat:
    """The chat ``chat_id`` with all its messages, or LocalqError saying how to find one."""
    row = db.execute(
        "SELECT id, title, model, variant_id, backend, params, system_prompt, created, updated"
        " FROM chats WHERE id = ?", [chat_id],
    ).fetchone()
    if row is None:
        raise LocalqError(f"no chat with id {chat_id}", "list the stored chats with `localq history`")
    chat = Chat(id=row[0], title=row[1], model=row[2], variant_id=row[3], backend=row[4],
                params=json.loads(row[5] or "{}"), system_prompt=row[6], created=row[7], updated=row[8])
    for m in db.execute(
        "SELECT role, content, prompt_tokens, completion_tokens, tokens_per_s, ttft_s, finish_reason, created, id"
        " FROM messages WHERE chat_id = ? ORDER BY id", [chat_id],
    ).fetchall():
        chat.messages.append(Message(*m))
    return chat


def conversation_of(chat: Chat) -> list[dict]:
    """The user and assistant turns of a stored chat, as messages for ``Session.stream``."""
    return [{"role": m.role, "content": m.content} for m in chat.messages if m.role in ("user", "assistant")]


def export_chat(chat: Chat, fmt: str) -> str:
    """The chat as Markdown (``md``) or JSON (``json``) text."""
    if fmt == "json":
        return json.dumps(chat.to_dict(), indent=2, ensure_ascii=False)
    if fmt != "md":
        raise LocalqError(f"unknown export format {fmt!r}", "use md or json")
    lines = [f"# {chat.title or 'Chat'}", ""]
    facts = [f"model `{chat.model}`"]
    if chat.backend:
        facts.append(f"backend {chat.backend}")
    facts.append(f"started {chat.created}")
    lines += [" · ".join(facts), ""]
    for m in chat.messages:
        lines += [f"## {m.role.capitalize()}", "", m.content, ""]
        if m.role == "assistant" and m.completion_tokens is not None:
            stats = f"{m.completion_tokens} tokens, {m.tokens_per_s or 0:.1f} tokens/s"
            if m.ttft_s is not None:
                stats += f", first token after {m.ttft_s:.2f} s"
            if m.finish_reason and m.finish_reason != "stop":
                stats += f", ended: {m.finish_reason}"
            lines += [f"*{stats}*", ""]
    return "\n".join(lines).rstrip() + "\n"
