"""The Chat section: talk to a model, with replies streaming as rendered Markdown.

(Over 400 lines on purpose: loading, streaming, the past-chats sidebar and the
settings all act on one conversation, its session and the reply being drawn;
what needs none of that state is in ``localq.tui.chat_settings``.)

The services are the CLI's: ``chat.conversation.open_session`` loads the model
with the right backend, ``Conversation.send`` streams a reply and records the
turn, ``chat.history`` lists and loads past chats.

Threads: loading a model and writing a reply run in thread workers. The reply
worker iterates the backend's events and *posts* them (``post_message`` never
waits; pieces are batched into at most 20 redraws a second), so the decode
loop runs at full speed while the UI thread renders Markdown through Textual's ``MarkdownStream`` (which batches fragments when
rendering falls behind) and keeps handling keys: typing stays responsive.
``esc`` calls ``Session.cancel()``, which is safe from any thread; the reply
ends within a token and is stored with ``finish_reason = "cancelled"``.

The default model is the one used last, else the starter (``localq chat``
without a model takes the starter).

The status line shows the model, quant and backend, and while a reply streams
its live tokens/s and time to first token (counted here from the text pieces);
when it ends, the backend's exact figures and how much of the context is used.

Keys: ``ctrl+b`` past chats (with a search box; ``enter`` resumes one),
``ctrl+n`` a new chat, ``ctrl+s`` the system prompt, ``ctrl+o`` the sampling
parameters, ``ctrl+l`` switch the model (``ctrl+m`` is the same key as Enter in
a terminal, so it cannot be used).
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Markdown, OptionList, Static
from textual.widgets.option_list import Option

from localq.errors import LocalqError
from localq.tui.chat_settings import CONTEXT_FIELD, PARAM_FIELDS, default_model, parse_context, parse_params
from localq.tui.screens.base import SectionScreen, index_db, report_error, show_error

REPLY_FRAME_S = 0.05  # the reply is redrawn at most 20 times a second


class Reply(Message):
    """A piece of the reply being written, with the live figures."""

    def __init__(self, text: str, pieces: int, ttft_s: float | None, tokens_per_s: float | None) -> None:
        super().__init__()
        self.text = text
        self.pieces = pieces
        self.ttft_s = ttft_s
        self.tokens_per_s = tokens_per_s


class ReplyEnded(Message):
    """The reply's ``Done`` event (or the error that stopped it)."""

    def __init__(self, done=None, error: BaseException | None = None) -> None:
        super().__init__()
        self.done = done
        self.error = error


class ChatScreen(SectionScreen):
    """Transcript, status line, input; a sidebar of past chats."""

    SECTION = "chat"
    TITLE_TEXT = "Chat"
    BINDINGS = [
        # Short labels: the footer must hold them all at 120 columns, the main ones at 80.
        Binding("escape", "stop", "stop", tooltip="stop the reply being written"),
        Binding("ctrl+b", "toggle_sidebar", "chats", tooltip="show or hide the past chats"),
        Binding("ctrl+n", "new_chat", "new", tooltip="start a new chat"),
        # Not in the footer (it has no room at 80 columns): the message box's placeholder names them.
        Binding("ctrl+s", "system_prompt", "system", show=False, tooltip="edit the system prompt"),
        Binding("ctrl+o", "parameters", "settings", show=False,
                tooltip="edit the sampling parameters and the context length"),
        Binding("ctrl+l", "switch_model", "model", tooltip="switch to another installed model"),
    ]
    EXTRA_BINDINGS = [("past chats", [
        Binding("enter", "", "resume the highlighted chat"),
        Binding("escape", "", "back to the message box"),
    ])]

    def __init__(self) -> None:
        super().__init__()
        self.session = None          # the loaded backend Session
        self.conversation = None     # chat.conversation.Conversation
        self.db = None               # the conversation's own index connection (written by reply workers)
        self.streaming = False
        self.pieces_drawn = 0        # redraws of the reply being written (or the last one)
        self.chats: list[dict] = []
        self._stream = None          # MarkdownStream of the reply being written
        self._reply_widget: Markdown | None = None
        self._loading: str | None = None
        self._ref: str | None = None     # the reference the session was loaded from
        self.n_ctx: int | None = None  # the context length chosen in ctrl+o (None: the backend's default)

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="chat-body"):
            with Vertical(id="chat-sidebar"):
                yield Input(placeholder="search chats…", id="chat-search")
                yield OptionList(id="chat-list")
            with Vertical(id="chat-main"):
                yield VerticalScroll(id="chat-transcript")
                yield Static("no model loaded", id="chat-status", markup=False)
                yield Input(placeholder="Message, then Enter · ctrl+s system prompt · ctrl+o settings",
                            id="chat-input")

    def on_mount(self) -> None:
        self.query_one("#chat-sidebar").display = False
        self.query_one("#chat-input", Input).focus()
        self.refresh_chats()
        if self.session is None and self._loading is None:
            self.open_default_model()

    def on_unmount(self) -> None:
        # Quitting mid-reply: stop the decode loop, then end the model process.
        if self.session is not None:
            self.session.cancel()
            self.session.close()

    # --- models -------------------------------------------------------------------

    def open_model(self, ref: str, chat=None) -> None:
        """Load ``ref`` for chatting (from Models, the welcome screen, the model switch, a resumed chat)."""
        if self.streaming:
            # The reply's worker still writes through this chat's index connection.
            self.notify("stop the reply first (esc), then switch", severity="warning")
            return
        self._loading = ref
        self.set_status(f"loading {ref}…")
        self.load_model(ref, chat)

    @work(thread=True, group="chat-load")
    def open_default_model(self) -> None:
        try:
            with index_db() as db:
                ref = default_model(db)
        except Exception as exc:
            report_error(self.app, exc)
            return
        if ref is None:
            self.app.call_from_thread(self.set_status, "no model installed: pull or import one first")
        else:
            self.app.call_from_thread(self._open_default, ref)

    def _open_default(self, ref: str) -> None:
        # Decided here, on the UI thread: a model chosen meanwhile (from Models, the welcome screen) wins.
        if self._loading is None and self.session is None:
            self.open_model(ref)

    @work(thread=True, exclusive=True, group="chat-load")
    def load_model(self, ref: str, chat=None) -> None:
        from localq.backends.base import GenerationParams
        from localq.chat.conversation import Conversation, open_session
        from localq.store.db import open_index

        from localq.backends.base import LoadOptions

        old_session, old_conversation = self.session, self.conversation
        try:
            db = self.db or open_index()
            session = open_session(db, ref, LoadOptions(n_ctx=self.n_ctx), profile=self.app.profile, worker=True)
        except Exception as exc:
            report_error(self.app, exc)
            self.app.call_from_thread(self._load_failed, ref)
            return
        if chat is not None:
            params = GenerationParams.from_dict(chat.params or {})
            system = chat.system_prompt
        elif old_conversation is not None:
            params, system = old_conversation.params, old_conversation.system
            if old_conversation.chat.id is not None:
                chat = old_conversation.chat  # a model switch keeps the chat going
        else:
            params, system = GenerationParams(), None
        try:
            conversation = Conversation(session, params, db=db, system=system, chat=chat)
        except Exception as exc:
            session.close()
            report_error(self.app, exc)
            self.app.call_from_thread(self._load_failed, ref)
            return
        if old_session is not None and old_session is not session:
            old_session.close()
        self.db = db
        self.app.call_from_thread(self._loaded, session, conversation, ref)

    def _load_failed(self, ref: str) -> None:
        self._loading = None
        # A context the model refused (longer than it was trained for) is not kept for the next load.
        self.n_ctx = self.session.n_ctx if self.session is not None else None
        self.set_status(f"could not load {ref}" if self.session is None else self.model_status())

    def _loaded(self, session, conversation, ref: str | None = None) -> None:
        self._ref = ref or self._ref
        previous = self.session
        self.session, self.conversation = session, conversation
        if previous is not None and previous is not session:
            previous.close()  # no-op when the loading worker closed it already
        self._loading = None
        self.set_status(self.model_status(last=self._last_stored_reply(conversation.chat)))
        # Loading marked the model as used: Models' LAST USED says so without a reload.
        self.app.post_message_to_sections("index_changed")

    def _last_stored_reply(self, chat):
        replies = [m for m in chat.messages if m.role == "assistant"]
        return replies[-1] if replies else None

    def model_status(self, last=None) -> str:
        """``model · quant · backend`` and the figures of the last reply, if any."""
        s = self.session
        if s is None:
            return "no model loaded"
        from localq.backends import backend_label

        parts = [s.model_ref]
        if s.quant and s.quant not in s.model_ref:
            parts.append(s.quant)
        parts.append(backend_label(s.backend_name))
        if last is not None and getattr(last, "tokens_per_s", None) is not None:
            parts.append(f"{last.tokens_per_s:.1f} tok/s")
            if last.ttft_s is not None:
                parts.append(f"TTFT {last.ttft_s * 1000:.0f} ms")
            used = (last.prompt_tokens or 0) + (last.completion_tokens or 0)
            parts.append(f"ctx {used}/{s.n_ctx}")
        return " · ".join(parts)

    def set_status(self, text: str) -> None:
        self.query_one("#chat-status", Static).update(text)

    # --- sending and streaming ---------------------------------------------------------

    @on(Input.Submitted, "#chat-input")
    def send(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.streaming:
            self.notify("a reply is still being written (esc stops it)", severity="warning")
            return
        if self.conversation is None:
            self.notify("the model is still loading" if self._loading else "no model loaded (ctrl+l picks one)",
                        severity="warning")
            return
        event.input.value = ""
        transcript = self.query_one("#chat-transcript", VerticalScroll)
        transcript.mount(Static(text, classes="msg-user", markup=False))
        self._reply_widget = Markdown("", classes="msg-assistant")
        transcript.mount(self._reply_widget)
        self._stream = Markdown.get_stream(self._reply_widget)
        transcript.scroll_end(animate=False)
        self.streaming = True
        self.pieces_drawn = 0
        self.set_status(f"{self.model_status()} · thinking…")
        self.write_reply(self.conversation, text)

    @work(thread=True, exclusive=True, group="chat-reply")
    def write_reply(self, conversation, text: str) -> None:
        from localq.backends.base import Done, TextDelta

        started = time.perf_counter()
        first = None
        pieces = 0
        pending, posted = "", 0.0
        try:
            for event in conversation.send(text):
                if isinstance(event, TextDelta) and event.text:
                    now = time.perf_counter()
                    first = first or now
                    pieces += 1
                    pending += event.text
                    # At most one redraw per REPLY_FRAME_S: the UI thread stays free for keys.
                    if now - posted >= REPLY_FRAME_S:
                        rate = (pieces - 1) / (now - first) if pieces > 1 and now > first else None
                        self.post_message(Reply(pending, pieces, first - started, rate))
                        pending, posted = "", now
                elif isinstance(event, Done):
                    if pending:
                        self.post_message(Reply(pending, pieces, (first or started) - started, None))
                    self.post_message(ReplyEnded(done=event))
                    return
        except Exception as exc:
            self.post_message(ReplyEnded(error=exc))
            return
        self.post_message(ReplyEnded(error=LocalqError("the reply ended without a final event")))

    async def on_reply(self, message: Reply) -> None:
        if self._stream is None:
            return
        await self._stream.write(message.text)
        self.pieces_drawn += 1
        figures = [self.model_status()]
        if message.tokens_per_s is not None:
            figures.append(f"{message.tokens_per_s:.1f} tok/s")
        if message.ttft_s is not None:
            figures.append(f"TTFT {message.ttft_s * 1000:.0f} ms")
        figures.append("writing… (esc stops)")
        self.set_status(" · ".join(figures))
        transcript = self.query_one("#chat-transcript", VerticalScroll)
        if transcript.max_scroll_y - transcript.scroll_y < 4:
            transcript.scroll_end(animate=False)

    async def on_reply_ended(self, message: ReplyEnded) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.streaming = False
        done = message.done
        if message.error is not None:
            show_error(self.app, message.error)
            self.set_status(self.model_status())
        elif done is not None:
            if done.finish_reason == "error":
                show_error(self.app, LocalqError(f"the reply failed: {done.error}"))
            elif done.finish_reason == "cancelled":
                self.notify("reply stopped", timeout=2)
            if not done.text and self._reply_widget is not None:
                await self._reply_widget.update(f"*({done.finish_reason})*")
            elif self._reply_widget is not None and self._reply_widget.source != done.text:
                await self._reply_widget.update(done.text)  # the stored text is the truth
            self.set_status(self.model_status(last=done))
        self.query_one("#chat-transcript", VerticalScroll).scroll_end(animate=False)
        self.refresh_chats()
        self.reload_if_stopped()

    def reload_if_stopped(self) -> None:
        """After the model process died (the error is shown already), load the model again.

        The conversation stays: its turns, system prompt and parameters carry
        over to the new session, as on a model switch.
        """
        if self.session is None or getattr(self.session, "alive", True) or self._ref is None:
            return
        self.notify(f"loading {self._ref} again", timeout=3)
        self.open_model(self._ref)

    def action_stop(self) -> None:
        if self.streaming and self.session is not None:
            self.session.cancel()
        elif self.query_one("#chat-sidebar").display and self.focused is not self.query_one("#chat-input"):
            self.query_one("#chat-input", Input).focus()

    # --- transcript ---------------------------------------------------------------

    def show_transcript(self, chat) -> None:
        transcript = self.query_one("#chat-transcript", VerticalScroll)
        transcript.remove_children()
        widgets = []
        for m in chat.messages:
            if m.role == "user":
                widgets.append(Static(m.content, classes="msg-user", markup=False))
            elif m.role == "assistant":
                widgets.append(Markdown(m.content, classes="msg-assistant"))
            else:
                widgets.append(Static(f"system: {m.content}", classes="msg-system", markup=False))
        if widgets:
            transcript.mount_all(widgets)
        transcript.scroll_end(animate=False)

    def action_new_chat(self) -> None:
        if self.streaming:
            self.notify("stop the reply first (esc)", severity="warning")
            return
        if self.conversation is not None:
            self.conversation.clear()
        self.query_one("#chat-transcript", VerticalScroll).remove_children()
        self.set_status(self.model_status())
        self.query_one("#chat-input", Input).focus()

    # --- past chats ---------------------------------------------------------------

    @work(thread=True, exclusive=True, group="chat-list")
    def refresh_chats(self) -> None:
        from localq.chat.history import list_chats

        try:
            with index_db() as db:
                chats = list_chats(db)
        except Exception as exc:
            report_error(self.app, exc)
            return
        self.app.call_from_thread(self._show_chats, chats)

    def _show_chats(self, chats: list[dict]) -> None:
        self.chats = chats
        needle = self.query_one("#chat-search", Input).value.strip().lower()
        options = self.query_one("#chat-list", OptionList)
        options.clear_options()
        for c in chats:
            title = c["title"] or "(untitled)"
            if needle and needle not in title.lower() and needle not in (c["model"] or "").lower():
                continue
            label = Text.assemble(title, "\n", (f"{c['model']} · {c['messages']} msgs", "dim"))
            options.add_option(Option(label, id=str(c["id"])))

    @on(Input.Changed, "#chat-search")
    def _search_changed(self) -> None:
        self._show_chats(self.chats)

    @on(Input.Submitted, "#chat-search")
    def _search_done(self) -> None:
        options = self.query_one("#chat-list", OptionList)
        if options.option_count and options.highlighted is None:
            options.highlighted = 0
        options.focus()

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one("#chat-sidebar")
        sidebar.display = not sidebar.display
        if sidebar.display:
            self.refresh_chats()
            self.query_one("#chat-search", Input).focus()
        else:
            self.query_one("#chat-input", Input).focus()

    @on(OptionList.OptionSelected, "#chat-list")
    def _resume(self, event: OptionList.OptionSelected) -> None:
        if self.streaming:
            self.notify("stop the reply first (esc)", severity="warning")
            return
        self.resume_chat(int(event.option.id))

    @work(thread=True, exclusive=True, group="chat-resume")
    def resume_chat(self, chat_id: int) -> None:
        """Load a stored chat; its model is loaded too when it is not the current one."""
        from localq.chat.history import load_chat

        try:
            with index_db() as db:
                chat = load_chat(db, chat_id)
        except Exception as exc:
            report_error(self.app, exc)
            return
        self.app.call_from_thread(self._resumed, chat)

    def _resumed(self, chat) -> None:
        if self.session is not None and self.session.model_ref == chat.model:
            from localq.backends.base import GenerationParams
            from localq.chat.conversation import Conversation

            try:
                params = GenerationParams.from_dict(chat.params or {})
                self.conversation = Conversation(self.session, params, db=self.db, chat=chat)
            except LocalqError as exc:
                show_error(self.app, exc)
                return
            self.show_transcript(chat)
            self.set_status(self.model_status(last=self._last_stored_reply(chat)))
        else:
            self.show_transcript(chat)
            self.open_model(chat.model, chat)
        self.query_one("#chat-input", Input).focus()

    # --- settings -----------------------------------------------------------------

    def action_system_prompt(self) -> None:
        from localq.tui.screens.dialogs import PromptDialog

        if self.conversation is None:
            self.notify("load a model first", severity="warning")
            return

        def answered(values: dict | None) -> None:
            if values is not None and self.conversation is not None:
                self.conversation.set_system(values["system"])
                self.notify("system prompt set" if values["system"] else "system prompt removed", timeout=2)

        self.app.push_screen(PromptDialog(
            "System prompt", [("system", "System prompt", "You are a helpful assistant.")],
            values={"system": self.conversation.system or ""},
            note="Used from the next reply on; stored with the chat. Empty: no system prompt.",
        ), answered)

    def action_parameters(self) -> None:
        from localq.tui.screens.dialogs import PromptDialog

        if self.conversation is None:
            self.notify("load a model first", severity="warning")
            return
        current = self.conversation.params
        values = {name: "" if getattr(current, name) is None else getattr(current, name)
                  for name, _, _ in PARAM_FIELDS}
        values["n_ctx"] = self.session.n_ctx if self.session is not None else ""

        def answered(values: dict | None) -> None:
            if values is None or self.conversation is None:
                return
            try:
                self.conversation.params = parse_params(values, self.conversation.params)
                n_ctx = parse_context(values.get("n_ctx", ""))
            except LocalqError as exc:
                show_error(self.app, exc)
                return
            if n_ctx is not None and self.session is not None and n_ctx != self.session.n_ctx:
                self.n_ctx = n_ctx
                self.notify(f"parameters set; reloading {self.session.model_ref} with a {n_ctx}-token context",
                            timeout=3)
                self.open_model(self.session.model_ref)
                return
            self.notify("parameters set", timeout=2)

        self.app.push_screen(PromptDialog(
            "Settings", PARAM_FIELDS + [CONTEXT_FIELD], values=values,
            note="Sampling: used from the next reply on. Context: reloads the model, the chat goes on. "
                 "Both are stored with the chat.",
        ), answered)

    def action_switch_model(self) -> None:
        from localq.tui.screens.model_picker import ModelPicker

        def chosen(ref: str | None) -> None:
            if ref:
                self.open_model(ref)

        self.app.push_screen(ModelPicker(self.session.model_ref if self.session else None), chosen)
