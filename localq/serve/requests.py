"""Reading a request: its size, its JSON, and each field's type, into localq's parameters.

Every problem is a ``BadRequest`` naming the field (OpenAI's ``param``) and
what it needs; the server answers 400 (413 for a body over the limit). Unknown
fields are ignored, as both OpenAI and Ollama clients send extras.
"""

from __future__ import annotations

import json
import math

from localq.errors import LocalqError

MAX_TOKENS_LIMIT = 2**31 - 1


class BadRequest(LocalqError):
    """A malformed request: ``param`` is the field at fault (None for the whole body)."""

    status = 400

    def __init__(self, message: str, hint: str | None = None, param: str | None = None):
        super().__init__(message, hint)
        self.param = param


class BodyTooLarge(BadRequest):
    status = 413


async def read_json(request, limit: int) -> dict:
    """The request's JSON object, read with at most ``limit`` bytes of body."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest("the Content-Length header is not a number") from None
        if size > limit:
            raise BodyTooLarge(f"the request body is {size} bytes; the limit is {limit}",
                               "send a shorter prompt, or start the server with a larger --max-body")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(f"the request body is over the limit of {limit} bytes",
                               "send a shorter prompt, or start the server with a larger --max-body")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise BadRequest("the request has no body", "send a JSON object")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the request body must be a JSON object, not {type(data).__name__}")
    return data


class Fields:
    """Typed access to a request's fields; each getter raises BadRequest naming the field."""

    def __init__(self, data: dict, prefix: str = ""):
        self.data = data
        self.prefix = prefix

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, default=None):
        value = self.data.get(key)
        return default if value is None else value

    def number(self, key: str, default: float | None = None) -> float | None:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BadRequest(f"{self._name(key)} must be a number, not {value!r}", param=self._name(key))
        return float(value)

    def integer(self, key: str, default: int | None = None, minimum: int | None = None,
                maximum: int | None = None) -> int | None:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"{self._name(key)} must be a whole number, not {value!r}", param=self._name(key))
        if minimum is not None and value < minimum:
            raise BadRequest(f"{self._name(key)} must be {minimum} or more, not {value}", param=self._name(key))
        if maximum is not None and value > maximum:
            raise BadRequest(f"{self._name(key)} must be at most {maximum}, not {value}", param=self._name(key))
        return value

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise BadRequest(f"{self._name(key)} must be true or false, not {value!r}", param=self._name(key))
        return value

    def string(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise BadRequest(f"{self._name(key)} is required", param=self._name(key))
            return default
        if not isinstance(value, str):
            raise BadRequest(f"{self._name(key)} must be a string, not {value!r}", param=self._name(key))
        return value

    def stop(self, key: str = "stop") -> tuple[str, ...]:
        """A stop string or a list of them (at most 16)."""
        value = self.data.get(key)
        if value is None:
            return ()
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(s, str) for s in values):
            raise BadRequest(f"{self._name(key)} must be a string or a list of strings", param=self._name(key))
        if len(values) > 16:
            raise BadRequest(f"{self._name(key)} has {len(values)} strings; at most 16", param=self._name(key))
        return tuple(s for s in values if s)

    def object(self, key: str) -> Fields:
        value = self.data.get(key)
        if value is None:
            return Fields({}, self._name(key) + ".")
        if not isinstance(value, dict):
            raise BadRequest(f"{self._name(key)} must be an object, not {value!r}", param=self._name(key))
        return Fields(value, self._name(key) + ".")


def build_params(values: dict):
    """GenerationParams from ``values`` (None = the default), validated; BadRequest names a bad value."""
    from localq.backends.base import GenerationParams

    given = {k: v for k, v in values.items() if v is not None}
    try:
        return GenerationParams(**given).validate()
    except LocalqError as exc:
        field = next((k for k in given if exc.message.startswith(k)), None)
        raise BadRequest(exc.message, exc.hint, param=field) from None


def schema_text(schema, param: str) -> str:
    """A JSON Schema (an object) as the JSON text GenerationParams carries."""
    if not isinstance(schema, dict):
        raise BadRequest(f"{param} must be a JSON Schema object", param=param)
    return json.dumps(schema)


def text_content(content, where: str) -> str:
    """A message's text: a string, or OpenAI's list of parts of which only text parts are accepted."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise BadRequest(f"{where} has a {kind!r} part; only text parts are supported", param=where)
            texts.append(part["text"])
        return "".join(texts)
    raise BadRequest(f"{where} must be a string or a list of text parts", param=where)


def messages(value, param: str = "messages") -> list[dict]:
    """A chat's messages as ``{"role", "content"}`` dicts (system, user, assistant)."""
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{param} must be a non-empty list of messages", param=param)
    out = []
    for i, message in enumerate(value):
        where = f"{param}[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"{where} must be an object with role and content", param=where)
        role = message.get("role")
        if role == "developer":   # OpenAI's newer name for the system role
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise BadRequest(f"{where}.role is {role!r}; expected system, user or assistant", param=f"{where}.role")
        if message.get("images"):
            raise BadRequest(f"{where} has images; localq's models here take text only", param=f"{where}.images")
        content = message.get("content")
        out.append({"role": role, "content": text_content("" if content is None else content, f"{where}.content")})
    if out[-1]["role"] != "user":
        raise BadRequest(f"the last of {param} must be a user message", param=param)
    return out
