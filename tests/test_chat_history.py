"""Chat history in the index: what a conversation stores, when, and how it reads back."""

from __future__ import annotations

import json

import pytest

from localq.backends.base import Done, GenerationParams, TextDelta
from localq.chat.history import Chat, Message, export_chat, list_chats, load_chat, make_title, save_turn
from localq.errors import IndexDatabaseError, LocalqError


@pytest.fixture
def db(tmp_home):
    from localq.store.db import open_index

    return open_index()


def reply(text: str, **stats) -> Message:
    done = Done(text=text, finish_reason=stats.get("finish_reason", "stop"), prompt_tokens=30,
                completion_tokens=stats.get("completion_tokens", 5), prompt_s=0.1, decode_s=0.05, ttft_s=0.12)
    return Message.reply(done)


def count(db, table: str) -> int:
    return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_a_chat_row_appears_with_its_first_turn_and_round_trips(db):
    chat = Chat(model="smollm2:135m-q4_1", backend="llamacpp", params={"temperature": 0.0, "n_ctx": 1024})
    assert count(db, "chats") == 0
    save_turn(db, chat, [Message("system", "Be brief."), Message("user", "Hi there"), reply("Hello!")])
    save_turn(db, chat, [Message("user", "Bye"), reply("Goodbye.", finish_reason="length")])

    stored = load_chat(db, chat.id)
    assert stored.title == "Hi there" and stored.model == "smollm2:135m-q4_1" and stored.backend == "llamacpp"
    assert stored.params == {"temperature": 0.0, "n_ctx": 1024}
    assert [(m.role, m.content) for m in stored.messages] == [
        ("system", "Be brief."), ("user", "Hi there"), ("assistant", "Hello!"), ("user", "Bye"), ("assistant", "Goodbye."),
    ]
    answer = stored.messages[2]
    assert (answer.prompt_tokens, answer.completion_tokens, answer.tokens_per_s, answer.ttft_s, answer.finish_reason) \
        == (30, 5, 100.0, 0.12, "stop")
    assert stored.messages[4].finish_reason == "length"
    assert stored.to_dict() == chat.to_dict()


def test_list_chats_newest_first_with_message_counts(db):
    first = save_turn(db, Chat(model="a"), [Message("user", "one"), reply("1")])
    second = save_turn(db, Chat(model="b"), [Message("user", "two"), reply("2")])
    save_turn(db, first, [Message("user", "again"), reply("3")])
    rows = list_chats(db)
    assert [(r["id"], r["messages"]) for r in rows] == [(first.id, 4), (second.id, 2)]
    assert list_chats(db, limit=1)[0]["model"] == "a"


def test_a_failed_write_leaves_nothing(db):
    chat = Chat(model="m")
    # The index's refusal is one line (IndexDatabaseError), naming the constraint that failed.
    with pytest.raises(IndexDatabaseError, match="NOT NULL constraint failed: messages.content"):
        save_turn(db, chat, [Message("user", "hi"), Message("robot", None)])   # the second row fails
    assert count(db, "chats") == 0 and count(db, "messages") == 0


def test_exports_in_markdown_and_json(db):
    chat = save_turn(db, Chat(model="smollm2:135m-q4_1", backend="llamacpp"),
                     [Message("user", "What is 2+2?"), reply("4.", completion_tokens=2)])
    md = export_chat(load_chat(db, chat.id), "md")
    assert md.startswith("# What is 2+2?\n\nmodel `smollm2:135m-q4_1` · backend llamacpp · started ")
    assert "## User\n\nWhat is 2+2?\n\n## Assistant\n\n4.\n\n*2 tokens, 40.0 tokens/s, first token after 0.12 s*\n" in md
    data = json.loads(export_chat(load_chat(db, chat.id), "json"))
    assert data["id"] == chat.id and [m["content"] for m in data["messages"]] == ["What is 2+2?", "4."]
    with pytest.raises(LocalqError, match="unknown export format 'pdf'"):
        export_chat(chat, "pdf")


def test_a_missing_chat_says_how_to_find_one(db):
    with pytest.raises(LocalqError, match=r"no chat with id 42 \(list the stored chats with `localq history`\)"):
        load_chat(db, 42)


def test_titles_are_the_first_line_shortened():
    assert make_title("\n  Hello there \nmore") == "Hello there"
    assert make_title("x" * 100) == "x" * 57 + "..."
    assert make_title("") == "(empty)"


# --- a real conversation ---------------------------------------------------------------------


def test_a_conversation_records_each_turn_with_its_settings(db, smollm2_session):
    from localq.chat.conversation import Conversation

    conv = Conversation(smollm2_session, GenerationParams(temperature=0, max_tokens=12), db=db, system="Be brief.")
    events = list(conv.send("Hi"))
    done = events[-1]
    assert isinstance(done, Done) and conv.chat.id is not None
    conv.set_system("Answer in French.")
    list(conv.send("What is 2+2?"))

    stored = load_chat(db, conv.chat.id)
    assert [m.role for m in stored.messages] == ["system", "user", "assistant", "system", "user", "assistant"]
    assert stored.messages[2].content == done.text and stored.messages[2].completion_tokens == done.completion_tokens
    assert stored.system_prompt == "Answer in French."
    assert stored.params["temperature"] == 0.0 and stored.params["n_ctx"] == 1024 and stored.backend == "llamacpp"
    assert stored.model == str(smollm2_session.model_path)


def test_resuming_continues_the_same_chat(db, smollm2_session):
    from localq.chat.conversation import Conversation
    from localq.chat.history import conversation_of

    params = GenerationParams(temperature=0, max_tokens=8)
    first = Conversation(smollm2_session, params, db=db, system="Be brief.")
    list(first.send("Hi"))
    resumed = Conversation(smollm2_session, params, db=db, chat=load_chat(db, first.chat.id))
    assert resumed.system == "Be brief." and resumed.turns == first.turns
    assert resumed.messages("Next")[:3] == [{"role": "system", "content": "Be brief."}, *first.turns]
    list(resumed.send("Next"))
    stored = load_chat(db, first.chat.id)
    # The unchanged system prompt is not stored twice.
    assert [m.role for m in stored.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert conversation_of(stored)[-2]["content"] == "Next"
    assert count(db, "chats") == 1


def test_a_cancelled_reply_keeps_its_text_and_a_failed_one_is_not_stored(db, smollm2_session):
    from localq.chat.conversation import Conversation

    conv = Conversation(smollm2_session, GenerationParams(temperature=0, max_tokens=200, ignore_eos=True), db=db)
    for event in conv.send("Write a story."):
        if isinstance(event, TextDelta):
            smollm2_session.cancel()
    assert conv.last.finish_reason == "cancelled"
    stored = load_chat(db, conv.chat.id)
    assert stored.messages[-1].finish_reason == "cancelled" and stored.messages[-1].content == conv.last.text

    # A prompt too long for the context fails before a reply: no turn, no new chat.
    fresh = Conversation(smollm2_session, GenerationParams(temperature=0, max_tokens=4), db=db)
    with pytest.raises(LocalqError, match="the context holds 1024"):
        list(fresh.send("word " * 1500))
    assert fresh.chat.id is None and count(db, "chats") == 1 and fresh.turns == []


def test_clear_starts_a_new_chat(db, smollm2_session):
    from localq.chat.conversation import Conversation

    conv = Conversation(smollm2_session, GenerationParams(temperature=0, max_tokens=4), db=db, system="Be brief.")
    list(conv.send("Hi"))
    old = conv.chat.id
    conv.clear()
    list(conv.send("Hello"))
    assert conv.chat.id != old and count(db, "chats") == 2
    assert [m.role for m in load_chat(db, conv.chat.id).messages] == ["system", "user", "assistant"]
