"""The Chat screen with the real SmolLM2 model: streaming, stop, parameters, history, resume, switch."""

from __future__ import annotations

from recorded_machines import laptop_8gb
from tui_pilot import record_notifications, run_async, screen_text, settle, wait_until

from localq.tui.app import LocalqApp
from localq.tui.chat_settings import parse_params


def stored_chats():
    from localq.chat.history import list_chats, load_chat
    from localq.store.db import open_index

    db = open_index()
    try:
        return [load_chat(db, c["id"]) for c in list_chats(db)]
    finally:
        db.close()


def test_parse_params():
    from localq.backends.base import GenerationParams
    from localq.errors import LocalqError

    base = GenerationParams()
    params = parse_params({"temperature": "0", "top_k": "10", "max_tokens": "", "seed": "7"}, base)
    assert (params.temperature, params.top_k, params.max_tokens, params.seed) == (0.0, 10, None, 7)
    for values, message in (
        ({"temperature": "abc"}, "temperature must be a number, not 'abc'"),
        ({"top_k": "1.5"}, "top_k must be a whole number, not '1.5'"),
        ({"temperature": "-1"}, "temperature must be 0 or more, not -1.0"),
    ):
        try:
            parse_params(values, base)
        except LocalqError as exc:
            assert exc.message == message
        else:
            raise AssertionError(f"{values} was accepted")


async def set_params(pilot, **values) -> None:
    """Fill the ctrl+o dialog and press OK."""
    await pilot.press("ctrl+o")
    await settle(pilot)
    dialog = pilot.app.screen
    for name, value in values.items():
        dialog.query_one(f"#field-{name}").value = value
    await pilot.click("#ok")
    await settle(pilot)


@run_async
async def test_chat_streams_stops_records_and_resumes(tmp_home):
    app = LocalqApp(profile=laptop_8gb(), first_start=False)
    async with app.run_test(size=(100, 30)) as pilot:
        seen = record_notifications(app)
        await settle(pilot)
        await pilot.press("enter")  # on the Models table: chat with the selected model
        await wait_until(pilot, lambda: type(app.screen).__name__ == "ChatScreen")
        screen = app.screen
        await wait_until(pilot, lambda: screen.conversation is not None, rounds=1200)
        await settle(pilot)
        assert "smollm2:135m-q4_1 · llama.cpp" in screen_text(app)

        # Parameters: a bad value is refused with the reason; good ones are used.
        await set_params(pilot, temperature="abc")
        assert ("error", "temperature must be a number, not 'abc'") in seen
        await set_params(pilot, temperature="0", max_tokens="64", seed="1")
        assert (screen.conversation.params.temperature, screen.conversation.params.max_tokens) == (0.0, 64)

        # System prompt.
        await pilot.press("ctrl+s")
        await settle(pilot)
        app.screen.query_one("#field-system").value = "You are a helpful assistant."
        await pilot.click("#ok")
        await settle(pilot)
        assert screen.conversation.system == "You are a helpful assistant."

        # A reply streams (typing during it is checked in the real terminal: test_tui_pty.py).
        await pilot.press(*"Tell me a long story about a dragon and a knight.", "enter")
        await pilot.press("a", "b", "c")
        await wait_until(pilot, lambda: not screen.streaming, rounds=2400)
        assert screen.pieces_drawn >= 2  # drawn piece by piece, as it streamed
        assert screen.query_one("#chat-input").value == "abc"
        await settle(pilot)
        status = str(screen.query_one("#chat-status").render())
        assert " tok/s · TTFT " in status and " · ctx " in status

        chats = stored_chats()
        assert len(chats) == 1
        chat = chats[0]
        assert chat.title == "Tell me a long story about a dragon and a knight."
        assert [m.role for m in chat.messages] == ["system", "user", "assistant"]
        reply = chat.messages[-1]
        assert reply.content and reply.tokens_per_s > 0 and reply.completion_tokens > 0
        shown = list(screen.query(".msg-assistant"))[-1]
        assert shown.source == reply.content  # the rendered Markdown is the stored reply

        # Esc stops a reply; what was written is kept, marked cancelled.
        screen.query_one("#chat-input").value = ""
        await set_params(pilot, max_tokens="")
        await pilot.press(*"Now tell me a much longer one, about a wizard.", "enter")
        await wait_until(pilot, lambda: screen.pieces_drawn >= 1)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.streaming, rounds=600)
        await settle(pilot)
        assert ("information", "reply stopped") in seen
        last = stored_chats()[0].messages[-1]
        assert last.finish_reason == "cancelled"

        # New chat, then the sidebar: search, resume.
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert not list(screen.query(".msg-assistant"))
        await pilot.press("ctrl+b")
        await settle(pilot)
        await pilot.press(*"dragon")
        await settle(pilot)
        options = screen.query_one("#chat-list")
        assert options.option_count == 1
        await pilot.press("enter")  # from the search box to the list
        await pilot.press("enter")  # resume the highlighted chat
        await settle(pilot)
        assert screen.conversation.chat.id == chat.id
        assert [w.source for w in screen.query(".msg-assistant")][0] == reply.content
        screen.query_one("#chat-search").value = "no such chat"
        await settle(pilot)
        assert options.option_count == 0

        # Switch the model (to the same one: it loads again as a new session).
        before = screen.session
        await pilot.press("ctrl+l")
        await settle(pilot)
        assert "smollm2:135m-q4_1" in screen_text(app)
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.session is not before and screen._loading is None, rounds=1200)
        assert screen.conversation.chat.id == chat.id  # the chat goes on with the new session


@run_async
async def test_a_dead_model_process_is_an_error_and_the_chat_goes_on(tmp_home):
    import os
    import signal

    app = LocalqApp(profile=laptop_8gb(), first_start=False)
    async with app.run_test(size=(100, 30)) as pilot:
        seen = record_notifications(app)
        await settle(pilot)
        await pilot.press("enter")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "ChatScreen")
        screen = app.screen
        await wait_until(pilot, lambda: screen.conversation is not None, rounds=1200)
        first = screen.session
        assert first.pid != os.getpid()   # the model runs in its own process
        await set_params(pilot, temperature="0", max_tokens="8")
        await pilot.press(*"Say hi.", "enter")
        await wait_until(pilot, lambda: not screen.streaming, rounds=2400)
        chat_id = screen.conversation.chat.id
        assert chat_id is not None

        # The engine dies mid-reply (as an out-of-memory kill would do it).
        await set_params(pilot, max_tokens="")
        await pilot.press(*"Tell me a very long story.", "enter")
        await wait_until(pilot, lambda: screen.pieces_drawn >= 1, rounds=2400)
        os.kill(first.pid, signal.SIGKILL)
        await wait_until(pilot, lambda: not screen.streaming, rounds=2400)
        errors = [text for kind, text in seen if kind == "error"]
        print(errors)
        assert any("the model process stopped: SIGKILL, last message: " in text for text in errors)

        # The app is still here, loads the model again, and the chat goes on.
        await wait_until(pilot, lambda: screen.session is not first and screen._loading is None
                         and screen.session is not None and screen.session.alive, rounds=2400)
        assert screen.conversation.chat.id == chat_id
        assert [t["content"] for t in screen.conversation.turns][:1] == ["Say hi."]
        await set_params(pilot, max_tokens="8")
        await pilot.press(*"Say bye.", "enter")
        await wait_until(pilot, lambda: not screen.streaming, rounds=2400)
        await settle(pilot)
        chat = [c for c in stored_chats() if c.id == chat_id][0]
        assert [m.content for m in chat.messages if m.role == "user"] == ["Say hi.", "Say bye."]
        assert chat.messages[-1].finish_reason in ("stop", "length")
    assert not first.alive and not screen.session.alive   # quitting ended the model process


@run_async
async def test_models_last_used_follows_a_chat_and_the_context_is_settable(tmp_home):
    """Loading a model in Chat updates Models' LAST USED at once; ctrl+o sets the context length."""
    app = LocalqApp(profile=laptop_8gb(), first_start=False)
    async with app.run_test(size=(100, 30)) as pilot:
        seen = record_notifications(app)
        await settle(pilot)
        models = app.screen
        assert models.query_one("#models-table").get_row_at(0)[-1] == "never"
        await pilot.press("enter")  # chat with the selected model
        await wait_until(pilot, lambda: getattr(app.screen, "session", None) is not None)
        chat = app.screen
        default_ctx = chat.session.n_ctx
        await pilot.press("alt+1")
        await settle(pilot)
        await wait_until(pilot, lambda: models.query_one("#models-table").get_row_at(0)[-1] == "just now")

        await pilot.press("alt+4")
        await settle(pilot)
        for bad, message in (("abc", "the context must be a whole number of tokens, not 'abc'"),
                             ("100", "context size 100 is too small (at least 256 tokens)")):
            await set_params(pilot, n_ctx=bad)
            assert any(message in text for _, text in seen), message
            assert chat.session.n_ctx == default_ctx
        await set_params(pilot, n_ctx="512", temperature="0.1")
        await wait_until(pilot, lambda: chat.session is not None and chat.session.n_ctx == 512)
        assert chat.conversation.params.temperature == 0.1  # the settings survive the reload
        # Longer than the model was trained for: the backend's one-line error, and the model stays loaded.
        await set_params(pilot, n_ctx="100000")
        await wait_until(pilot, lambda: any("larger than the model's trained context" in t for _, t in seen))
        await wait_until(pilot, lambda: chat._loading is None)
        assert chat.session.n_ctx == 512 and chat.n_ctx == 512
