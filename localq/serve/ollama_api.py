"""The Ollama-compatible subset: ``/api/tags``, ``/api/chat``, ``/api/generate``, ``/api/ps``, ``/api/show``,
``/api/embed`` and ``/api/version``, so tools written for Ollama work unchanged.

Streams are NDJSON (one JSON object a line), on by default as in Ollama; the
last object has ``done: true``, ``done_reason`` and the counts and durations
(nanoseconds). ``options`` maps onto localq's sampler: temperature, top_p,
top_k, min_p, repeat_penalty, repeat_last_n, presence_penalty,
frequency_penalty, seed, num_predict, stop. ``format`` is ``"json"`` or a JSON
Schema (a llama.cpp grammar). ``keep_alive`` is honoured: a request with no
messages (or no prompt) just loads the model, and one with ``keep_alive: 0``
too unloads it, as ``ollama stop`` does.

Not supported: images, tools, ``template``, ``suffix``, ``context``,
``options.num_ctx`` other than the server's context (start it with ``--ctx``),
and the model management endpoints (pull, push, create, copy, delete: use the
``localq`` commands).
"""

from __future__ import annotations

import asyncio
import datetime
import json

from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from localq import __version__
from localq.errors import LocalqError
from localq.serve import requests as rq
from localq.serve.config import parse_duration
from localq.serve.generation import Run, chat_work, embed_work, merge_text, text_work
from localq.serve.models import list_installed, model_details, resolve_variant
from localq.serve.requests import BadRequest

NS = 1_000_000_000


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def _params(f: rq.Fields):
    o = f.object("options")
    if o.has("num_ctx"):
        raise BadRequest("options.num_ctx is not supported per request; start the server with --ctx N",
                         param="options.num_ctx")
    fmt = f.raw("format")
    if fmt is None or fmt == "":
        schema = None
    elif fmt == "json":
        schema = json.dumps({"type": "object"})
    else:
        schema = rq.schema_text(fmt, "format")
    return rq.build_params({
        "temperature": o.number("temperature"), "top_p": o.number("top_p"), "top_k": o.integer("top_k"),
        "min_p": o.number("min_p"), "repeat_penalty": o.number("repeat_penalty"),
        "repeat_last_n": o.integer("repeat_last_n"), "presence_penalty": o.number("presence_penalty"),
        "frequency_penalty": o.number("frequency_penalty"), "seed": o.integer("seed"),
        "max_tokens": _num_predict(o), "stop": o.stop("stop"), "json_schema": schema,
    })


def _num_predict(o: rq.Fields) -> int | None:
    n = o.integer("num_predict", None, None, rq.MAX_TOKENS_LIMIT)
    return None if n is None or n < 0 else max(n, 1)   # Ollama: -1 means no limit


def _keep_alive(f: rq.Fields) -> float | None:
    value = f.raw("keep_alive")
    if value is None:
        return None
    try:
        return parse_duration(value)
    except LocalqError as exc:
        raise BadRequest(exc.one_line(), param="keep_alive") from None


def _timings(done, started_ns: int, load_ns: int) -> dict:
    import time

    return {
        "total_duration": time.perf_counter_ns() - started_ns, "load_duration": load_ns,
        "prompt_eval_count": done.prompt_tokens, "prompt_eval_duration": int(done.prompt_s * NS),
        "eval_count": done.completion_tokens, "eval_duration": int(done.decode_s * NS),
    }


class OllamaRoutes:
    def __init__(self, manager, read_json):
        self.manager = manager
        self.read_json = read_json

    def routes(self) -> list[Route]:
        return [
            Route("/api/version", self.version, methods=["GET"]),
            Route("/api/tags", self.tags, methods=["GET"]),
            Route("/api/ps", self.ps, methods=["GET"]),
            Route("/api/show", self.show, methods=["POST"]),
            Route("/api/chat", self.chat, methods=["POST"]),
            Route("/api/generate", self.generate, methods=["POST"]),
            Route("/api/embed", self.embed, methods=["POST"]),
        ]

    async def version(self, request):
        return JSONResponse({"version": __version__, "server": "localq"})

    async def tags(self, request):
        variants = await asyncio.to_thread(list_installed)
        models = [{
            "name": v.ref, "model": v.ref, "modified_at": v.created, "size": v.size,
            "digest": v.files[0].sha256 if v.files else "", "details": model_details(v),
        } for v in variants]
        return JSONResponse({"models": models})

    async def ps(self, request):
        return JSONResponse({"models": self.manager.describe()})

    async def show(self, request):
        f = rq.Fields(await self.read_json(request))
        name = f.string("model") or f.string("name")
        if not name:
            raise BadRequest("model is required", param="model")
        variant = await asyncio.to_thread(resolve_variant, name)
        body = {"modelfile": "", "parameters": "", "template": "", "details": model_details(variant),
                "model_info": {}, "capabilities": ["completion"], "modified_at": variant.created}
        if variant.format == "gguf":
            from localq.gguf_info import read_gguf_info

            info = await asyncio.to_thread(read_gguf_info, variant.main_path)
            arch = info.architecture or "unknown"
            body["template"] = info.chat_template or ""
            body["model_info"] = {k: v for k, v in {
                "general.architecture": arch, "general.parameter_count": info.parameter_count,
                f"{arch}.context_length": info.context_length, f"{arch}.embedding_length": info.embedding_length,
                f"{arch}.block_count": info.block_count, f"{arch}.attention.head_count": info.head_count,
                f"{arch}.attention.head_count_kv": info.head_count_kv,
            }.items() if v is not None}
            body["capabilities"] = ["completion", "embedding"]
        return JSONResponse(body)

    # --- generation

    async def chat(self, request):
        f = rq.Fields(await self.read_json(request))
        model = f.string("model", required=True)
        if f.raw("tools"):
            raise BadRequest("tools are not supported: localq's server does not call tools", param="tools")
        raw_messages = f.raw("messages")
        if not raw_messages:
            return await self._load_or_unload(model, f, {"message": {"role": "assistant", "content": ""}})
        messages = rq.messages(raw_messages)
        run = Run(self.manager, request, model, chat_work(messages, _params(f), model), _keep_alive(f))
        return await self._respond(run, f, lambda text: {"message": {"role": "assistant", "content": text}})

    async def generate(self, request):
        f = rq.Fields(await self.read_json(request))
        model = f.string("model", required=True)
        for key in ("images", "template", "suffix", "context"):
            if f.raw(key):
                raise BadRequest(f"{key} is not supported", param=key)
        prompt = f.string("prompt", "")
        if not prompt:
            return await self._load_or_unload(model, f, {"response": ""})
        params = _params(f)
        if f.boolean("raw"):
            work = text_work(prompt, params, model)
        else:
            system = f.string("system")
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
            work = chat_work(messages, params, model)
        run = Run(self.manager, request, model, work, _keep_alive(f))
        return await self._respond(run, f, lambda text: {"response": text})

    async def _load_or_unload(self, model: str, f: rq.Fields, empty: dict):
        """Ollama's idiom: a request with nothing to say loads the model (keep_alive 0: unloads it)."""
        keep_alive = _keep_alive(f)
        if keep_alive == 0:
            await self.manager.unload_ref(model)
            reason = "unload"
            name = (await asyncio.to_thread(resolve_variant, model)).ref
        else:
            loaded = await self.manager.get(model, keep_alive)
            reason, name = "load", loaded.name
        return JSONResponse({"model": name, "created_at": _now(), **empty, "done": True, "done_reason": reason})

    async def _respond(self, run: Run, f: rq.Fields, shape):
        import time

        started = time.perf_counter_ns()
        requested = time.time()
        await run.start()
        # Ollama's load_duration: the load this request waited for, if it caused one.
        load_ns = int(run.model.session.load_s * NS) if run.model.loaded_at >= requested else 0
        if not f.boolean("stream", True):
            items = await run.collect()
            text, done, error = merge_text(items)
            _raise_failure(done, error)
            return JSONResponse({"model": run.model.name, "created_at": _now(), **shape(text), "done": True,
                                 "done_reason": done.finish_reason, **_timings(done, started, load_ns)})
        return StreamingResponse(self._stream(run, shape, started, load_ns), media_type="application/x-ndjson")

    async def _stream(self, run: Run, shape, started: int, load_ns: int):
        def line(data: dict) -> bytes:
            return (json.dumps(data, separators=(",", ":")) + "\n").encode()

        name = run.model.name
        try:
            async for items in run.batches():
                text, done, error = merge_text(items)
                if error is not None or (done is not None and done.finish_reason == "error"):
                    yield line({"error": str(error) if error is not None else f"the model failed: {done.error}"})
                    return
                if text:
                    yield line({"model": name, "created_at": _now(), **shape(text), "done": False})
                if done is not None:
                    yield line({"model": name, "created_at": _now(), **shape(""), "done": True,
                                "done_reason": done.finish_reason, **_timings(done, started, load_ns)})
        finally:
            run.cancel()

    async def embed(self, request):
        f = rq.Fields(await self.read_json(request))
        model = f.string("model", required=True)
        value = f.raw("input")
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise BadRequest("input must be a string or a non-empty list of strings", param="input")
        run = Run(self.manager, request, model, embed_work(texts), _keep_alive(f))
        await run.start()
        items = await run.collect()
        _, vectors, tokens = next(i for i in items if isinstance(i, tuple) and i[0] == "embeddings")
        return JSONResponse({"model": run.model.name, "embeddings": vectors, "prompt_eval_count": tokens})


def _raise_failure(done, error) -> None:
    from localq.errors import BackendError

    if error is not None:
        raise error
    if done is None or done.finish_reason == "error":
        raise BackendError(f"the model failed: {done.error if done else 'no reply'}")
