"""Running one request on a loaded model, for both APIs: queue it, watch its client, hand back events.

The work runs on the model's worker thread (``scheduler``). Checks that need
the model happen there, before the first event, so they become a proper HTTP
error: a prompt longer than the context (400, saying so), ``max_tokens`` over
the context (400), a JSON schema on a backend that cannot constrain output
(400). ``max_tokens`` is then capped to the room the prompt leaves, so the
context is never trimmed behind the client's back.

While a request waits or runs, its client is watched: when it disconnects the
request leaves the queue, or its generation is cancelled at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from localq.backends.base import Done, GenerationParams, TextDelta
from localq.serve.requests import BadRequest
from localq.serve.scheduler import Job


class ClientGone(Exception):
    """The client disconnected before its reply began."""


def fit_reply(params: GenerationParams, prompt_tokens: int, n_ctx: int, model: str) -> GenerationParams:
    """``params`` with max_tokens capped to the context's room, or BadRequest when nothing fits."""
    if params.max_tokens is not None and params.max_tokens > n_ctx:
        raise BadRequest(f"max_tokens {params.max_tokens} is more than {model}'s context of {n_ctx} tokens",
                         f"ask for at most {n_ctx - prompt_tokens} tokens", param="max_tokens")
    if prompt_tokens >= n_ctx:
        raise BadRequest(f"the prompt takes {prompt_tokens} tokens; {model}'s context holds {n_ctx}",
                         "shorten the prompt, or start the server with a larger --ctx", param="messages")
    room = n_ctx - prompt_tokens
    return replace(params, max_tokens=min(params.max_tokens or room, room))


def _check_capabilities(session, params: GenerationParams) -> None:
    if params.json_schema is not None and not session.supports_json_schema:
        raise BadRequest(f"the {session.backend_name} backend cannot constrain output to a JSON schema",
                         "use a GGUF model (llama.cpp backend) for response_format / format",
                         param="response_format")


def _relay(session, job: Job, events) -> None:
    for event in events:
        job.send(event)
        if job.cancelled.is_set():
            session.cancel()   # again: a cancel that came before the stream began was cleared by it


def chat_work(messages: list[dict], params: GenerationParams, model: str):
    """The work of a chat request: check it against the model, then stream the reply."""
    def work(session, job: Job) -> None:
        _check_capabilities(session, params)
        prompt = session.encode_chat(messages)
        fitted = fit_reply(params, len(prompt), session.n_ctx, model)
        _relay(session, job, session.stream(messages, fitted))
    return work


def text_work(prompt: str, params: GenerationParams, model: str):
    """The work of a raw completion: the prompt as it is, no chat template."""
    def work(session, job: Job) -> None:
        _check_capabilities(session, params)
        tokens = session.tokenize(prompt)
        if not tokens:
            raise BadRequest("the prompt is empty", param="prompt")
        fitted = fit_reply(params, len(tokens), session.n_ctx, model)
        _relay(session, job, session.stream_text(prompt, fitted))
    return work


def embed_work(texts: list[str]):
    """The work of an embeddings request: vectors and the tokens they took."""
    def work(session, job: Job) -> None:
        if not session.supports_embeddings:
            raise BadRequest(f"the {session.backend_name} backend cannot compute embeddings",
                             "use a GGUF model (llama.cpp backend) for embeddings", param="model")
        vectors = session.embed(texts)
        tokens = sum(len(session.tokenize(t)) for t in texts)
        job.send(("embeddings", vectors, tokens))
    return work


async def _disconnected(request) -> None:
    """Returns when the client has gone (its connection closed)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class Run:
    """A request queued on a model: ``start`` waits for its first output, ``batches`` gives the rest."""

    def __init__(self, manager, request, model: str, work, keep_alive_s: float | None):
        self.manager, self.request, self.model_name = manager, request, model
        self.job = Job(work, asyncio.get_running_loop(), label=model)
        self.keep_alive_s = keep_alive_s
        self.model = None
        self._first: list = []
        self.ended = False

    async def start(self) -> None:
        """Queue the job and wait for its first output; raise its error, or ClientGone."""
        self.model = await self.manager.submit(self.model_name, self.job, self.keep_alive_s)
        self._first = await self._until_disconnect(self.job.channel.get())
        self._raise_early_error(self._first)

    def _raise_early_error(self, items: list) -> None:
        for item in items:
            if isinstance(item, tuple) and item[0] == "error":
                self.ended = True
                raise item[1]
            if item is Job.END:
                self.ended = True

    async def _until_disconnect(self, coro):
        """Await ``coro``; if the client disconnects first, cancel the job and raise ClientGone."""
        task = asyncio.ensure_future(coro)
        gone = asyncio.ensure_future(_disconnected(self.request))
        try:
            done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if task not in done:
            task.cancel()
            self.cancel()
            raise ClientGone()
        return task.result()

    async def batches(self):
        """Lists of items (events, ``("error", exc)``) until the job ends."""
        items = self._first
        self._first = []
        while True:
            out = [i for i in items if i is not Job.END]
            if out:
                yield out
            if Job.END in items:
                self.ended = True
                return
            items = await self.job.channel.get()

    async def collect(self) -> list:
        """Every item to the end (for a non-streamed reply), cancelling if the client goes."""
        async def gather():
            items = []
            async for batch in self.batches():
                items.extend(batch)
            return items
        return await self._until_disconnect(gather())

    def cancel(self) -> None:
        if not self.ended and self.model is not None:
            self.model.queue.cancel(self.job)


def merge_text(items: list) -> tuple[str, Done | None, Exception | None]:
    """The text of a batch's deltas, its Done (if it ended), and an error sent mid-reply."""
    text, done, error = [], None, None
    for item in items:
        if isinstance(item, TextDelta):
            text.append(item.text)
        elif isinstance(item, Done):
            done = item
        elif isinstance(item, tuple) and item[0] == "error":
            error = item[1]
    return "".join(text), done, error
