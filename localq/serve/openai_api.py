"""OpenAI-compatible routes: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``.

Parameters mapped onto localq's sampler (``GenerationParams``): temperature,
top_p, max_tokens (or max_completion_tokens), stop, seed, presence_penalty,
frequency_penalty; llama.cpp's top_k, min_p, repeat_penalty and ignore_eos are
accepted as extras, as llama.cpp's own server does, and so is Ollama's
keep_alive. ``response_format`` ``json_object`` or ``json_schema`` constrains
the reply through a llama.cpp grammar. Streams are server-sent events ending
with ``data: [DONE]``; ``stream_options.include_usage`` adds the usage chunk.

Not supported, and refused with a 400 naming the field: ``n`` > 1, logprobs,
tools / functions, non-text message parts, token-array prompts and inputs,
``suffix``, ``echo``, ``best_of`` > 1. ``logit_bias`` and ``user`` are ignored.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid

from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from localq.errors import LocalqError
from localq.serve import requests as rq
from localq.serve.config import parse_duration
from localq.serve.generation import Run, chat_work, embed_work, merge_text, text_work
from localq.serve.requests import BadRequest

FINISH = {"stop": "stop", "length": "length", "cancelled": "stop", "error": "stop"}


def _refuse_unsupported(f: rq.Fields) -> None:
    n = f.integer("n", 1)
    if n != 1:
        raise BadRequest(f"n={n} is not supported; localq writes one choice per request", param="n")
    if f.integer("best_of", 1) != 1:
        raise BadRequest("best_of is not supported", param="best_of")
    for key in ("tools", "functions", "tool_choice", "function_call"):
        if f.has(key) and f.raw(key) not in ("none", []):
            raise BadRequest(f"{key} is not supported: localq's server does not call tools", param=key)
    if f.raw("logprobs") not in (None, False, 0):
        raise BadRequest("logprobs are not supported", param="logprobs")
    if f.boolean("echo"):
        raise BadRequest("echo is not supported", param="echo")
    if f.has("suffix"):
        raise BadRequest("suffix (fill in the middle) is not supported", param="suffix")


def _json_schema(f: rq.Fields) -> str | None:
    fmt = f.object("response_format")
    kind = fmt.string("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return json.dumps({"type": "object"})
    if kind == "json_schema":
        spec = fmt.object("json_schema")
        schema = spec.raw("schema")
        if schema is None:
            raise BadRequest("response_format.json_schema.schema is required", param="response_format.json_schema.schema")
        return rq.schema_text(schema, "response_format.json_schema.schema")
    raise BadRequest(f"response_format.type {kind!r} is not one of text, json_object, json_schema",
                     param="response_format.type")


def _params(f: rq.Fields):
    max_tokens = f.integer("max_completion_tokens", None, 1, rq.MAX_TOKENS_LIMIT)
    if max_tokens is None:
        max_tokens = f.integer("max_tokens", None, 1, rq.MAX_TOKENS_LIMIT)
    return rq.build_params({
        "temperature": f.number("temperature"), "top_p": f.number("top_p"), "top_k": f.integer("top_k"),
        "min_p": f.number("min_p"), "repeat_penalty": f.number("repeat_penalty"),
        "presence_penalty": f.number("presence_penalty"), "frequency_penalty": f.number("frequency_penalty"),
        "seed": f.integer("seed"), "max_tokens": max_tokens, "stop": f.stop("stop"),
        "ignore_eos": f.boolean("ignore_eos"), "json_schema": _json_schema(f),
    })


def _keep_alive(f: rq.Fields) -> float | None:
    value = f.raw("keep_alive")
    if value is None:
        return None
    try:
        return parse_duration(value)
    except LocalqError as exc:
        raise BadRequest(exc.one_line(), param="keep_alive") from None


def _usage(done) -> dict:
    if done is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


def _sse(data: dict | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def _check_done(done, error) -> None:
    from localq.errors import BackendError

    if error is not None:
        raise error
    if done is not None and done.finish_reason == "error":
        raise BackendError(f"the model failed: {done.error}")


class OpenAIRoutes:
    """The routes, bound to the server's model manager."""

    def __init__(self, manager, read_json):
        self.manager = manager
        self.read_json = read_json

    def routes(self) -> list[Route]:
        return [
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.get_model, methods=["GET"]),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
        ]

    # --- models

    @staticmethod
    def _model_entry(v) -> dict:
        from datetime import datetime

        try:
            created = int(datetime.fromisoformat(v.created).timestamp())
        except (TypeError, ValueError):
            created = 0
        return {"id": v.ref, "object": "model", "created": created, "owned_by": "localq"}

    async def list_models(self, request):
        import asyncio

        from localq.serve.models import list_installed

        variants = await asyncio.to_thread(list_installed)
        return JSONResponse({"object": "list", "data": [self._model_entry(v) for v in variants]})

    async def get_model(self, request):
        import asyncio

        from localq.serve.models import resolve_variant

        variant = await asyncio.to_thread(resolve_variant, request.path_params["model"])
        return JSONResponse(self._model_entry(variant))

    # --- generation

    async def chat(self, request):
        f = rq.Fields(await self.read_json(request))
        model = f.string("model", required=True)
        _refuse_unsupported(f)
        messages = rq.messages(f.raw("messages"))
        params = _params(f)
        run = Run(self.manager, request, model, chat_work(messages, params, model), _keep_alive(f))
        return await self._respond(run, f, "chat.completion", f"chatcmpl-{uuid.uuid4().hex[:24]}")

    async def completions(self, request):
        f = rq.Fields(await self.read_json(request))
        model = f.string("model", required=True)
        _refuse_unsupported(f)
        prompt = f.raw("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("prompt must be a string (lists of prompts and token arrays are not supported)",
                             param="prompt")
        params = _params(f)
        run = Run(self.manager, request, model, text_work(prompt, params, model), _keep_alive(f))
        return await self._respond(run, f, "text_completion", f"cmpl-{uuid.uuid4().hex[:24]}")

    async def _respond(self, run: Run, f: rq.Fields, kind: str, rid: str):
        stream = f.boolean("stream")
        include_usage = f.object("stream_options").boolean("include_usage") if stream else False
        await run.start()
        created = int(time.time())
        base = {"id": rid, "created": created, "model": run.model.name, "system_fingerprint": "localq"}
        if not stream:
            items = await run.collect()
            text, done, error = merge_text(items)
            _check_done(done, error)
            reason = FINISH[done.finish_reason] if done else "stop"
            if kind == "chat.completion":
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                          "finish_reason": reason}
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
            return JSONResponse({**base, "object": kind, "choices": [choice], "usage": _usage(done)})
        return StreamingResponse(self._stream(run, base, kind, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _stream(self, run: Run, base: dict, kind: str, include_usage: bool):
        from localq.serve.app import openai_error_body

        chat = kind == "chat.completion"
        obj = {**base, "object": "chat.completion.chunk" if chat else "text_completion"}

        def chunk(text: str | None, reason: str | None = None, first: bool = False) -> bytes:
            if chat:
                delta = {"role": "assistant", "content": text or ""} if first else ({"content": text} if text else {})
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
            else:
                choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
            return _sse({**obj, "choices": [choice]})

        try:
            first = chat
            async for items in run.batches():
                text, done, error = merge_text(items)
                if error is not None or (done is not None and done.finish_reason == "error"):
                    message = str(error) if error is not None else f"the model failed: {done.error}"
                    yield _sse(openai_error_body(message, "server_error"))
                    break
                if text or first:
                    yield chunk(text, first=first)
                    first = False
                if done is not None:
                    yield chunk(None, FINISH[done.finish_reason])
                    if include_usage:
                        yield _sse({**obj, "choices": [], "usage": _usage(done)})
            yield _sse("[DONE]")
        finally:
            run.cancel()   # the client went away mid-stream (or we are done: then a no-op)

    # --- embeddings

    async def embeddings(self, request):
        f = rq.Fields(await self.read_json(request))
        model = f.string("model", required=True)
        value = f.raw("input")
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise BadRequest("input must be a string or a non-empty list of strings (token arrays are not supported)",
                             param="input")
        if len(texts) > 2048:
            raise BadRequest(f"input has {len(texts)} items; at most 2048", param="input")
        encoding = f.string("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise BadRequest(f"encoding_format must be float or base64, not {encoding!r}", param="encoding_format")
        if f.has("dimensions"):
            raise BadRequest("dimensions is not supported: the model's vectors have a fixed size", param="dimensions")
        run = Run(self.manager, request, model, embed_work(texts), _keep_alive(f))
        await run.start()
        items = await run.collect()
        result = next(i for i in items if isinstance(i, tuple) and i[0] == "embeddings")
        _, vectors, tokens = result

        def encode(vector):
            if encoding == "float":
                return vector
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()

        data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data, "model": run.model.name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
