"""The backend interface: what runs a model, and the events a reply streams.

(Over 400 lines: the whole contract a backend implements, its parameters, options and
their validation, and the prompt handling every Session.stream shares, in one file a
backend's author reads once.)

A ``Backend`` says which model formats it runs (``formats``) and whether it can
run here (``available(profile)``); ``load(model, options)`` returns a
``Session`` holding the model in memory. ``Session.stream(messages, params)``
yields events while the reply is written:

- ``ContextTrimmed`` first, when the conversation had to lose its oldest turns
  to fit the context (the system prompt always stays);
- ``TextDelta`` for each new piece of text;
- ``Done`` last, always: the finish reason (``stop``, ``length``,
  ``cancelled``, ``error``), the token counts and the timings.

``Session.cancel()`` may be called from another thread; the reply then ends
within a token or two with ``finish_reason="cancelled"``. ``close()`` frees
the model's memory.

Backends register through the ``localq.backends`` entry-point group (see
``registry.py``); the built-in llama.cpp backend uses the same path as a third
party's. A backend module must stay cheap to import: its heavy library
(llama_cpp, mlx, torch) is imported inside ``load()``.

Everything generic lives here, once: parameter validation, context trimming
(``localq.backends.context``), turning an unexpected failure into a ``Done`` with
``finish_reason="error"``. A backend implements ``encode_chat`` (apply the chat
template and tokenize), ``generate`` (the decode loop) and ``close``.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Union

from localq.defaults import DEFAULT_CONTEXT, MIN_CONTEXT
from localq.errors import BackendError, LocalqError

FINISH_REASONS = ("stop", "length", "cancelled", "error")
ROLES = ("system", "user", "assistant")

# Limits past which a parameter is a typo rather than a choice.
MAX_TEMPERATURE = 10.0
MAX_REPEAT_PENALTY = 10.0
MAX_SEED = 2**32 - 2          # llama.cpp reads 2**32 - 1 as "pick a random seed"


# --- events ---------------------------------------------------------------------


@dataclass(frozen=True)
class TextDelta:
    """A new piece of the reply's text."""

    text: str


@dataclass(frozen=True)
class ContextTrimmed:
    """The oldest turns were left out so the conversation fits the context."""

    dropped_messages: int       # messages left out (user and assistant turns)
    prompt_tokens: int          # size of the prompt that remained
    n_ctx: int


@dataclass(frozen=True)
class Done:
    """The end of a reply: why it ended, its size and its timings.

    ``prompt_s`` is the time spent evaluating the prompt tokens that were not
    already in the cache from the previous turn; ``decode_s`` the time from
    then to the end. ``tokens_per_s`` is ``completion_tokens / decode_s``
    exactly. ``completion_tokens`` counts the reply's tokens, not the stop
    token that ended it. ``ttft_s`` is measured from the ``stream`` call to
    the first generated token (None when none came). ``peak_memory_bytes`` is
    the engine's peak allocation during the reply, when it reports one (MLX).
    """

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    prompt_s: float
    decode_s: float
    ttft_s: float | None
    cached_tokens: int = 0
    trimmed_messages: int = 0
    error: str | None = None
    peak_memory_bytes: int | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def prompt_tokens_per_s(self) -> float:
        evaluated = self.prompt_tokens - self.cached_tokens
        return evaluated / self.prompt_s if self.prompt_s > 0 else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tokens_per_s"] = self.tokens_per_s
        data["prompt_tokens_per_s"] = self.prompt_tokens_per_s
        return data


Event = Union[TextDelta, ContextTrimmed, Done]


# --- options and parameters -------------------------------------------------------


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model. ``None`` means: the backend picks (and says how in its docstring)."""

    n_ctx: int | None = None
    n_threads: int | None = None
    n_gpu_layers: int | None = None
    n_batch: int = 512
    check_memory: bool = True   # refuse a model that does not fit in memory, before loading it
    # Flash attention: "auto" (llama.cpp's default: on where the device supports it),
    # "on" or "off". It changes speed and memory, and the exact logits (so a small
    # model's greedy words can differ), which is why benchmarks record it.
    flash_attn: str = "auto"

    def validate(self, trained_context: int | None = None) -> None:
        """Raise LocalqError for values no model can use."""
        if self.n_ctx is not None:
            if self.n_ctx < MIN_CONTEXT:
                raise LocalqError(
                    f"context size {self.n_ctx} is too small (at least {MIN_CONTEXT} tokens)",
                    f"use --ctx {DEFAULT_CONTEXT}, or leave it out",
                )
            if trained_context and self.n_ctx > trained_context:
                raise LocalqError(
                    f"context size {self.n_ctx} is larger than the model's trained context ({trained_context} tokens)",
                    f"use --ctx {trained_context} or less",
                )
        if self.n_threads is not None and self.n_threads < 1:
            raise LocalqError(f"thread count must be 1 or more, not {self.n_threads}")
        if self.n_batch < 1:
            raise LocalqError(f"batch size must be 1 or more, not {self.n_batch}")
        if self.flash_attn not in FLASH_ATTN_MODES:
            raise LocalqError(f"flash attention must be one of {', '.join(FLASH_ATTN_MODES)}, not {self.flash_attn!r}",
                              "use --flash-attn auto (the default), on or off")


FLASH_ATTN_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters: the one set of defaults every backend and front end shares.

    temperature 0.8, top_p 0.95, top_k 40, min_p 0.05 and repeat_penalty 1.0
    (off, over the last 64 tokens when set) are llama.cpp's own defaults. Not
    Ollama's 1.1: measured on SmolLM2-135M, it turns the greedy 11-token answer
    to "What is 2+2?" into a 275-token ramble. What ends a reply that never
    reaches an end token is the reply cap below, not the penalty.
    ``temperature=0`` means greedy decoding (the most likely token every time,
    reproducible without a seed). ``seed=None`` picks a random seed. ``top_k=0``,
    ``top_p=1``, ``min_p=0`` and ``repeat_penalty=1`` switch those samplers off.
    ``max_tokens=None`` caps the reply at ``DEFAULT_MAX_TOKENS`` and at half the
    context (``reply_limit``), so a reply that never reaches an end token still
    ends. ``ignore_eos`` is for benchmarks: generate exactly ``max_tokens``.
    ``frequency_penalty`` and ``presence_penalty`` (OpenAI's, in [-2, 2], 0 =
    off) apply over the last ``repeat_last_n`` tokens, as llama.cpp's penalties
    sampler does. ``json_schema`` (a JSON Schema as JSON text) constrains the
    reply to JSON matching it; only sessions with ``supports_json_schema`` take it.
    """

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    json_schema: str | None = None

    def validate(self) -> GenerationParams:
        """Return self, or raise LocalqError naming the absurd value and the range it needs."""
        def finite(name: str, value) -> float:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise LocalqError(f"{name} must be a finite number, not {value!r}")
            return float(value)

        t = finite("temperature", self.temperature)
        if t < 0:
            raise LocalqError(
                f"temperature must be 0 or more, not {self.temperature}",
                "use 0 for greedy decoding, 0.7-1.0 for varied replies",
            )
        if t > MAX_TEMPERATURE:
            raise LocalqError(
                f"temperature {self.temperature} is out of range (at most {MAX_TEMPERATURE:g})",
                "use 0 for greedy decoding, 0.7-1.0 for varied replies",
            )
        p = finite("top_p", self.top_p)
        if not 0 < p <= 1:
            raise LocalqError(f"top_p must be in (0, 1], not {self.top_p}", "use 1 to switch it off, e.g. 0.9")
        m = finite("min_p", self.min_p)
        if not 0 <= m < 1:
            raise LocalqError(f"min_p must be in [0, 1), not {self.min_p}", "use 0 to switch it off, e.g. 0.05")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise LocalqError(f"top_k must be 0 (off) or a positive whole number, not {self.top_k!r}")
        r = finite("repeat_penalty", self.repeat_penalty)
        if not 0 < r <= MAX_REPEAT_PENALTY:
            raise LocalqError(
                f"repeat_penalty must be in (0, {MAX_REPEAT_PENALTY:g}], not {self.repeat_penalty}",
                "use 1 to switch it off, e.g. 1.1",
            )
        if not isinstance(self.repeat_last_n, int) or self.repeat_last_n < 0:
            raise LocalqError(f"repeat_last_n must be 0 or more, not {self.repeat_last_n!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED):
            raise LocalqError(f"seed must be a whole number from 0 to {MAX_SEED}, not {self.seed!r}")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise LocalqError(f"max_tokens must be 1 or more, not {self.max_tokens!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise LocalqError("stop strings must be non-empty text")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2 <= finite(name, getattr(self, name)) <= 2:
                raise LocalqError(f"{name} must be in [-2, 2], not {getattr(self, name)}", "use 0 to switch it off")
        if self.json_schema is not None and not isinstance(self.json_schema, str):
            raise LocalqError("json_schema must be a JSON Schema as JSON text")
        return self

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["stop"] = list(self.stop)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> GenerationParams:
        """Parameters from a stored dict; unknown keys (from newer versions) are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "stop" in values:
            values["stop"] = tuple(values["stop"] or ())
        return cls(**values)


def check_messages(messages: Sequence[dict]) -> list[dict]:
    """The messages as plain ``{"role", "content"}`` dicts, or LocalqError for a malformed one."""
    checked = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role not in ROLES:
            raise LocalqError(f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise LocalqError(f"message {i} has no text content")
        checked.append({"role": role, "content": content})
    if not checked or checked[-1]["role"] != "user":
        raise LocalqError("the conversation must end with a user message")
    return checked


# --- backend and session ------------------------------------------------------------


class Session(ABC):
    """A loaded model that writes replies. One reply at a time; ``cancel`` from any thread."""

    backend_name: str = "?"
    supports_json_schema: bool = False   # takes GenerationParams.json_schema
    supports_embeddings: bool = False    # implements embed()

    def __init__(self, *, model_path: Path, n_ctx: int, n_threads: int, load_s: float,
                 model_ref: str | None = None, quant: str | None = None, variant_id: int | None = None):
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.load_s = load_s
        self.model_ref = model_ref or self.model_path.name
        self.quant = quant
        self.variant_id = variant_id
        self._cancel = threading.Event()
        self._closed = False

    # The backend's part.

    @abstractmethod
    def encode_chat(self, messages: Sequence[dict]) -> list[int]:
        """The prompt tokens for ``messages`` with the model's chat template and the reply's opening."""

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Plain text to tokens, with no template and no special tokens added."""

    @abstractmethod
    def generate(self, prompt_tokens: Sequence[int], params: GenerationParams,
                 started: float | None = None) -> Iterator[Event]:
        """Continue ``prompt_tokens``: TextDelta events, then one Done.

        ``started`` is the ``time.perf_counter()`` the request began at, for
        ``ttft_s``. Must raise LocalqError, before yielding, for a prompt that
        does not fit the context; must check ``self._cancel`` every token.
        """

    @abstractmethod
    def _free(self) -> None:
        """Release the model and its context."""

    def reset(self) -> None:
        """Forget cached prompt state, so the next reply evaluates its prompt from scratch."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length embedding vector per text (sessions with ``supports_embeddings``)."""
        raise BackendError(f"the {self.backend_name} backend cannot compute embeddings",
                           "use a GGUF model (llama.cpp backend) for embeddings")

    # Shared behaviour.

    def stream(self, messages: Sequence[dict], params: GenerationParams | None = None) -> Iterator[Event]:
        """Reply to a conversation, trimming its oldest turns if it outgrows the context."""
        from localq.backends.context import fit_messages

        started = time.perf_counter()
        self._check_open()
        params = (params or GenerationParams()).validate()
        messages = check_messages(messages)
        self._cancel.clear()
        try:
            fitted = fit_messages(messages, self.encode_chat, self.n_ctx, reserve=reply_reserve(params, self.n_ctx))
        except LocalqError:
            raise
        except Exception as exc:  # noqa: BLE001 - a template or tokenizer failure is one line, not a traceback
            raise BackendError(f"cannot prepare the prompt for {self.model_ref}: {type(exc).__name__}: {exc}",
                               "the model's template or tokenizer failed; use another copy of the model") from None
        if fitted.dropped:
            yield ContextTrimmed(fitted.dropped, len(fitted.tokens), self.n_ctx)
        for event in self._generate_safely(fitted.tokens, params, started):
            if isinstance(event, Done) and fitted.dropped:
                event = replace(event, trimmed_messages=fitted.dropped)
            yield event

    def stream_text(self, prompt: str, params: GenerationParams | None = None) -> Iterator[Event]:
        """Continue plain ``prompt`` with no chat template (raw completions): TextDelta events, then Done.

        Raises LocalqError, before yielding, when the prompt is empty or fills the context.
        """
        started = time.perf_counter()
        self._check_open()
        params = (params or GenerationParams()).validate()
        self._cancel.clear()
        yield from self._generate_safely(self.tokenize(prompt), params, started)

    def _generate_safely(self, tokens: list[int], params: GenerationParams, started: float) -> Iterator[Event]:
        """``generate``, with an unexpected library failure turned into a Done with finish_reason "error"."""
        try:
            yield from self.generate(tokens, params, started)
        except LocalqError:
            raise
        except Exception as exc:  # a library failure mid-reply ends the reply, not the program
            now = time.perf_counter()
            yield Done(text="", finish_reason="error", prompt_tokens=len(tokens), completion_tokens=0,
                       prompt_s=0.0, decode_s=now - started, ttft_s=None, error=f"{type(exc).__name__}: {exc}")

    def complete(self, prompt: str, params: GenerationParams | None = None) -> Done:
        """Stream a one-message chat to its end and return the Done event (for scripts and tests)."""
        done = None
        for event in self.stream([{"role": "user", "content": prompt}], params):
            if isinstance(event, Done):
                done = event
        return done

    def cancel(self) -> None:
        """Stop the reply being written; safe to call from any thread, at any time."""
        self._cancel.set()

    def close(self) -> None:
        """Free the model's memory. The session cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._free()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("this model session is closed", "load the model again")

    def _checked_prompt(self, prompt_tokens: Sequence[int]) -> list[int]:
        """The prompt as a list; refused when it is empty or fills the context (every backend's ``generate``)."""
        prompt = list(prompt_tokens)
        if not prompt:
            raise LocalqError("the prompt is empty")
        if len(prompt) >= self.n_ctx:
            raise LocalqError(f"the prompt takes {len(prompt)} tokens; the context holds {self.n_ctx}",
                              "shorten the prompt, or load the model with a larger context (--ctx)")
        return prompt

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Backend(ABC):
    """Something that runs models of some formats. Cheap to construct; ``load`` does the work."""

    name: str = "?"
    formats: tuple[str, ...] = ()

    @abstractmethod
    def available(self, profile=None) -> tuple[bool, str]:
        """(True, "") when this backend can run here, else (False, why and what to install).

        ``profile`` is a ``HardwareProfile`` when the caller has one; a backend
        that needs a GPU looks at it, one that only needs its library may not.
        """

    @abstractmethod
    def load(self, model, options: LoadOptions | None = None, profile=None) -> Session:
        """Load ``model`` (an index ``Variant`` or a file path) and return a Session.

        ``profile`` (a HardwareProfile, when the caller probed) informs the
        defaults the options leave open, and the memory check.

        Raises LocalqError before loading anything when the model or the options
        cannot work (wrong format, bad file, too big for memory, absurd context).
        """


class StopMatcher:
    """Finds stop strings in streamed text, holding back text that may be the start of one.

    ``feed`` returns the text safe to show and whether a stop string was hit
    (the text is then cut just before it); ``flush`` returns what was held back
    when the reply ends for another reason.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(stops)
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        buf = self.held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.held = ""
            return buf[:min(hits)], True
        keep = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(buf)), keep, -1):
                if buf.endswith(stop[:k]):
                    keep = k
                    break
        self.held = buf[len(buf) - keep:] if keep else ""
        return buf[:len(buf) - keep], False

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


DEFAULT_MAX_TOKENS = 1024   # a long answer; a reply that runs past it is almost always a loop


def reply_limit(params: GenerationParams, n_ctx: int) -> int:
    """The most tokens a reply may have: ``max_tokens`` when given, else
    ``DEFAULT_MAX_TOKENS`` bounded by half the context (the prompt keeps the rest)."""
    if params.max_tokens is not None:
        return params.max_tokens
    return max(1, min(DEFAULT_MAX_TOKENS, n_ctx // 2))


def reply_reserve(params: GenerationParams, n_ctx: int) -> int:
    """Tokens kept free for the reply when trimming: the reply's limit, at most a quarter of the context."""
    return max(1, min(reply_limit(params, n_ctx), n_ctx // 4))


def model_path_of(model) -> tuple[Path, dict]:
    """The file to load for ``model`` (a Variant or a path) and what the session records about it."""
    from localq.errors import ModelNotFound

    if hasattr(model, "main_path"):
        return Path(model.main_path), {"model_ref": model.ref, "quant": model.quant, "variant_id": model.id}
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelNotFound(f"{path} does not exist", "check the path, or name an installed model (localq ls)")
    return path, {"model_ref": str(path), "quant": None, "variant_id": None}


__all__ = [
    "FINISH_REASONS",
    "Backend",
    "ContextTrimmed",
    "Done",
    "Event",
    "GenerationParams",
    "LoadOptions",
    "Session",
    "TextDelta",
    "check_messages",
    "model_path_of",
    "reply_reserve",
]
