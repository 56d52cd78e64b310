"""Chat templates: turning a list of messages into the prompt text a model was trained on.

Models carry their template as a Jinja2 program (GGUF key
``tokenizer.chat_template``, the same text as Hugging Face's
``tokenizer_config.json``). It is rendered here with Jinja2's sandboxed
environment and the variables Hugging Face's ``apply_chat_template`` provides
(``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``, plus the
``raise_exception`` and ``strftime_now`` helpers templates call).

A template comes from a file someone else wrote, so it is treated as hostile:
- the sandbox refuses attribute escapes (``__class__``, ``__subclasses__``...)
  and ranges over ``MAX_RANGE`` items;
- here, ``*`` and ``**`` are checked so ``'x' * 10**10`` cannot fill memory
  and ``10**10**10`` cannot hang, and calls with huge numbers are refused
  (``'x'.center(10**12)``);
- rendering has a time bound (``RENDER_TIMEOUT_S``, checked by a trace hook
  on the rendering thread), so nested loops that would run for hours stop;
- every failure while compiling or rendering (the sandbox's SecurityError and
  OverflowError, TypeError, RecursionError, undefined variables, the
  template's own ``raise_exception``) is one BackendError naming the model.

A model file without a template gets ChatML (``<|im_start|>role ... <|im_end|>``),
which is also what llama.cpp assumes then; localq says so in the log.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Sequence

from localq.errors import BackendError

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
RENDER_TIMEOUT_S = 2.0        # real templates render in milliseconds
MAX_RESULT_ITEMS = 10_000_000   # the longest string or list a template operator may build
MAX_NUMBER_ARG = 10_000_000     # the largest number a template may pass to a call
MAX_EXPONENT = 1_000
_CHECK_EVERY = 1000           # trace events between two looks at the clock


class _TooSlow(BaseException):
    """Raised inside rendering when it runs past its time bound (a BaseException: no template code catches it)."""


class ChatTemplate:
    """A compiled chat template with the model's special token texts."""

    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = "",
                 model_name: str = "the model"):
        self.is_fallback = not source
        self.source = source or CHATML
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.model_name = model_name
        self._template = _compile(self.source, model_name)

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages``, opening the assistant's reply when asked."""
        import jinja2

        try:
            text = _with_deadline(RENDER_TIMEOUT_S, lambda: self._template.render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            ))
        except _TooSlow:
            raise BackendError(
                f"{self.model_name}'s chat template ran for more than {RENDER_TIMEOUT_S:g} s and was stopped",
                "the file's template is broken or hostile; use another copy of the model",
            ) from None
        except jinja2.exceptions.SecurityError as exc:
            raise BackendError(
                f"{self.model_name}'s chat template was stopped by the sandbox: {_one_line(exc)}",
                "the file's template is broken or hostile; use another copy of the model",
            ) from None
        except jinja2.TemplateError as exc:
            raise BackendError(
                f"{self.model_name}'s chat template failed on this conversation: {_one_line(exc)}",
                "check the roles and order of the messages (some templates demand user/assistant turns alternating)",
            ) from exc
        except (Exception, RecursionError) as exc:  # noqa: BLE001 - a file's program fails in any way it likes
            raise BackendError(
                f"{self.model_name}'s chat template failed: {type(exc).__name__}: {_one_line(exc)}",
                "the file's template is broken or hostile; use another copy of the model",
            ) from None
        if not isinstance(text, str):
            raise BackendError(f"{self.model_name}'s chat template did not produce text")
        return text


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _with_deadline(seconds: float, call):
    """Run ``call()`` on this thread, raising _TooSlow inside it once ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        count += 1
        if count >= _CHECK_EVERY:
            count = 0
            if time.monotonic() > deadline:
                raise _TooSlow()
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        return call()
    finally:
        sys.settrace(previous)


def _sandbox():
    """The environment class: Jinja2's immutable sandbox, with size checks on operators and calls."""
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def too_big(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_NUMBER_ARG

    class Sandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        def call_binop(self, context, operator, left, right):
            if operator == "**":
                if isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
                    raise SecurityError(f"the exponent {right} is too large")
                return left ** right
            sized = [v for v in (left, right) if isinstance(v, (str, list, tuple, bytes))]
            counts = [v for v in (left, right) if isinstance(v, int) and not isinstance(v, bool)]
            if sized and counts and len(sized[0]) * max(counts[0], 0) > MAX_RESULT_ITEMS:
                raise SecurityError("a repetition in the template would build more than "
                                    f"{MAX_RESULT_ITEMS} items")
            return left * right

        def call(self, context, obj, /, *args, **kwargs):
            if any(too_big(v) for v in (*args, *kwargs.values())):
                raise SecurityError(f"a number over {MAX_NUMBER_ARG} passed to {getattr(obj, '__name__', 'a call')}")
            return super().call(context, obj, *args, **kwargs)

    return Sandbox


def _compile(source: str, model_name: str = "the model"):
    import jinja2

    def raise_exception(message: str):
        raise jinja2.TemplateError(message)

    def strftime_now(fmt: str) -> str:
        return datetime.datetime.now().strftime(fmt)

    # trim_blocks and lstrip_blocks are how Hugging Face renders these templates.
    env = _sandbox()(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return _with_deadline(RENDER_TIMEOUT_S, lambda: env.from_string(source))
    except jinja2.TemplateSyntaxError as exc:
        raise BackendError(
            f"{model_name}'s chat template is not valid Jinja2 (line {exc.lineno}: {_one_line(exc.message or exc)})",
            "the model file is damaged or was converted badly; re-download it",
        ) from exc
    except _TooSlow:
        raise BackendError(f"{model_name}'s chat template took more than {RENDER_TIMEOUT_S:g} s to compile",
                           "the file's template is broken or hostile; use another copy of the model") from None
    except (Exception, RecursionError) as exc:  # noqa: BLE001 - the compiler fails in any way a file makes it
        raise BackendError(f"{model_name}'s chat template cannot be compiled: {type(exc).__name__}: {_one_line(exc)}",
                           "the model file is damaged or was converted badly; re-download it") from None
