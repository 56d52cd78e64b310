"""Chat templates: turning a list of messages into the prompt text a model was trained on.

Models carry their template as a Jinja2 program (GGUF key
``tokenizer.chat_template``, the same text as Hugging Face's
``tokenizer_config.json``). It is rendered here with Jinja2's sandboxed
environment and the variables Hugging Face's ``apply_chat_template`` provides
(``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``, plus the
``raise_exception`` and ``strftime_now`` helpers templates call).

A model file without a template gets ChatML (``<|im_start|>role ... <|im_end|>``),
which is also what llama.cpp assumes then; localq says so in the log.
"""

from __future__ import annotations

import datetime
from typing import Sequence

from localq.errors import BackendError

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ChatTemplate:
    """A compiled chat template with the model's special token texts."""

    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = ""):
        self.is_fallback = not source
        self.source = source or CHATML
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._template = _compile(self.source)

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages``, opening the assistant's reply when asked."""
        import jinja2

        try:
            return self._template.render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except jinja2.TemplateError as exc:
            raise BackendError(
                f"the model's chat template failed on this conversation: {exc}",
                "check the roles and order of the messages (some templates demand user/assistant turns alternating)",
            ) from exc


def _compile(source: str):
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise jinja2.TemplateError(message)

    def strftime_now(fmt: str) -> str:
        return datetime.datetime.now().strftime(fmt)

    # trim_blocks and lstrip_blocks are how Hugging Face renders these templates.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise BackendError(
            f"the model's chat template is not valid Jinja2 (line {exc.lineno}: {exc.message})",
            "the model file is damaged or was converted badly; re-download it",
        ) from exc
