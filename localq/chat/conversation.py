"""A conversation with a loaded model: opening the model, the turns so far, recording them.

``open_session`` is how the CLI and the TUI get a Session for a reference: the
index resolves it (or a ``.gguf`` path is taken as it is), the registry picks
the backend for the format, the backend loads it, and the variant is marked
as used. ``Conversation.send`` streams one reply and, when it ends, records
the turn in the history (see ``localq.chat.history`` for what is stored when).
"""

from __future__ import annotations

from typing import Iterator

from localq.backends.base import Done, Event, GenerationParams, LoadOptions, Session
from localq.chat.history import Chat, Message, conversation_of, save_turn
from localq.errors import LocalqError, ModelNotFound


def open_session(db, ref: str, options: LoadOptions | None = None, profile=None, *,
                 worker: bool = False) -> Session:
    """Load the model ``ref`` names (an installed reference, a .gguf path or an MLX directory) with the right backend.

    ``worker=True`` loads it in a model process (``localq.backends.runner``),
    as the terminal app does: a crash of the engine is then an error, not the
    end of the program. The CLI loads in-process, for speed.
    """
    from localq.backends.registry import backend_for
    from localq.names import expand_path, parse
    from localq.store.index import resolve, touch

    parsed = parse(ref)
    if parsed.kind == "path":
        model = expand_path(parsed)
        if not model.exists():
            raise ModelNotFound(f"{model} does not exist", "check the path, or name an installed model (localq ls)")
        if model.is_dir() and (model / "config.json").is_file():
            fmt, variant = "mlx", None          # an MLX (or safetensors) model directory
        elif model.is_dir() or model.suffix.lower() != ".gguf":
            raise LocalqError(f"{model} is not a .gguf file or an MLX model directory",
                              "run a GGUF file or a directory with config.json and model*.safetensors by path")
        else:
            fmt, variant = "gguf", None
    else:
        model = variant = resolve(db, parsed)
        fmt = variant.format
    backend = backend_for(fmt, profile)
    if worker:
        from localq.backends import runner

        session = runner.load(backend.name, model, options or LoadOptions(), profile)
    else:
        session = backend.load(model, options or LoadOptions(), profile)
    if variant is not None:
        touch(db, variant.id)
    return session


class Conversation:
    """The turns of one chat with a session, and its record in the history (when ``db`` is given)."""

    def __init__(self, session: Session, params: GenerationParams, *, db=None,
                 system: str | None = None, chat: Chat | None = None):
        self.session = session
        self.params = params.validate()
        self.db = db
        self.chat = chat or self._new_chat()
        self.turns: list[dict] = conversation_of(chat) if chat else []
        self.system = system if system is not None else (chat.system_prompt if chat else None)
        # The system prompt the stored messages already carry, so a change is recorded once.
        self._system_saved = chat.system_prompt if chat else None
        self.last: Done | None = None

    def _new_chat(self) -> Chat:
        return Chat(model=self.session.model_ref, variant_id=self.session.variant_id,
                    backend=self.session.backend_name, params=self.settings())

    def settings(self) -> dict:
        """What the history stores as the chat's parameters: sampling, context, threads, quant."""
        return {**self.params.to_dict(), "n_ctx": self.session.n_ctx, "n_threads": self.session.n_threads,
                "quant": self.session.quant}

    def messages(self, text: str) -> list[dict]:
        """The messages the model sees for a new user message ``text``."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.turns + [{"role": "user", "content": text}]

    def send(self, text: str) -> Iterator[Event]:
        """Stream the reply to ``text``; the turn is recorded before the final Done is yielded."""
        for event in self.session.stream(self.messages(text), self.params):
            if isinstance(event, Done):
                self._record(text, event)
            yield event

    def _record(self, text: str, done: Done) -> None:
        self.last = done
        if done.finish_reason == "error" or (done.finish_reason == "cancelled" and not done.text):
            return
        turn = [{"role": "user", "content": text}, {"role": "assistant", "content": done.text}]
        if self.db is None:
            self.turns += turn
            return
        new = []
        if self.system and self.system != self._system_saved:
            new.append(Message("system", self.system))
        new += [Message("user", text), Message.reply(done)]
        self.chat.system_prompt = self.system
        self.chat.params = self.settings()
        self.chat.model, self.chat.variant_id = self.session.model_ref, self.session.variant_id
        self.chat.backend = self.session.backend_name
        save_turn(self.db, self.chat, new)   # raises, changing nothing, when its transaction rolls back
        self.turns += turn
        self._system_saved = self.system

    def set_system(self, text: str | None) -> None:
        """Use ``text`` as the system prompt from the next reply on (None or "" removes it)."""
        self.system = text or None

    def clear(self) -> None:
        """Start a new chat with the same model, settings and system prompt; the old one stays stored."""
        self.turns = []
        self.chat = self._new_chat()
        self._system_saved = None
        self.last = None
