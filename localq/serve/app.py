"""The Starlette application: both APIs, the security checks, and errors in each API's own format.

Security, in order, before any route runs:
- With an API key set (required off loopback), every request needs
  ``Authorization: Bearer KEY`` (compared in constant time), else 401.
- On a loopback address the ``Host`` header must name a loopback host, so a web
  page cannot reach the server through DNS rebinding (403).
- A request from a web page (an ``Origin`` header) is refused (403) unless the
  origin is on loopback or named with ``--cors-origin``; CORS headers are sent
  only for the origins named there.
- Bodies are read up to ``--max-body`` bytes (413 past it).
- No response carries a traceback: an unexpected error is logged and answered
  with a one-line 500.

Errors: ``/api/...`` answers ``{"error": "message"}`` as Ollama does; the other
paths answer OpenAI's ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from localq.errors import BackendError, LocalqError, ModelNotFound
from localq.serve.config import ServeConfig, is_loopback
from localq.serve.generation import ClientGone
from localq.serve.models import LoadFailed, ModelManager, NotEnoughMemory
from localq.serve.requests import BadRequest, read_json
from localq.serve.scheduler import ModelGone, QueueFull

log = logging.getLogger("localq.serve")


def status_of(exc: LocalqError) -> int:
    if isinstance(exc, ModelNotFound):
        return 404
    if isinstance(exc, BadRequest):
        return exc.status
    if isinstance(exc, QueueFull):
        return 429
    if isinstance(exc, (NotEnoughMemory, LoadFailed, ModelGone)):
        return 503
    if isinstance(exc, BackendError):
        return 500
    return 400


def openai_error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(path: str, status: int, message: str, *, param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    """An error as the API at ``path`` writes errors."""
    if path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    kind = {401: "authentication_error", 404: "invalid_request_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse(openai_error_body(message, kind, param, code), status_code=status, headers=headers)


def _codes(exc: LocalqError) -> str | None:
    if isinstance(exc, ModelNotFound):
        return "model_not_found"
    if isinstance(exc, QueueFull):
        return "rate_limit_exceeded"
    return None


class Guard:
    """ASGI middleware: the API key, the Host and Origin checks (see the module's docstring)."""

    def __init__(self, app, config: ServeConfig):
        self.app = app
        self.key = config.api_key.encode() if config.api_key else None
        self.loopback = is_loopback(config.host)
        self.origins = set(config.cors_origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope.get("path", "")
        problem = self.check(headers, scope.get("method", "GET"))
        if problem is not None:
            status, message = problem
            extra = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            response = error_response(path, status, message, code="invalid_api_key" if status == 401 else None,
                                      headers=extra)
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)

    def check(self, headers: dict, method: str) -> tuple[int, str] | None:
        origin = headers.get("origin")
        if origin and not self._origin_allowed(origin):
            return 403, (f"requests from web pages at {origin} are refused; "
                         f"start the server with --cors-origin {origin} to allow them")
        if self.loopback:
            host = headers.get("host", "")
            hostname = urlsplit(f"//{host}").hostname or ""
            if not is_loopback(hostname):
                return 403, f"the Host header {host!r} is not a loopback name; this server answers on loopback only"
        if self.key is not None and not (method == "OPTIONS" and origin):
            given = headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key):
                what = "a wrong API key" if given else "no API key"
                return 401, f"the request has {what}; send the header Authorization: Bearer KEY"
        return None

    def _origin_allowed(self, origin: str) -> bool:
        if "*" in self.origins or origin in self.origins:
            return True
        return is_loopback(urlsplit(origin).hostname or "")


def create_app(config: ServeConfig, manager: ModelManager | None = None) -> Starlette:
    """The server's ASGI application for ``config``."""
    from localq.serve.ollama_api import OllamaRoutes
    from localq.serve.openai_api import OpenAIRoutes

    config.validate()
    manager = manager or ModelManager(config)

    async def read(request: Request) -> dict:
        return await read_json(request, config.max_body_bytes)

    async def root(request):
        return PlainTextResponse("localq is running")

    async def stop(request):
        data = await read(request)
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model is required", param="model")
        unloaded = await manager.unload_ref(model)
        if unloaded is None:
            return JSONResponse({"error": f"{model} is not loaded"}, status_code=404)
        return JSONResponse({"stopped": unloaded.name})

    async def on_localq_error(request, exc: LocalqError):
        status = status_of(exc)
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QueueFull) else None
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc.one_line())
        return error_response(request.url.path, status, exc.one_line(), param=getattr(exc, "param", None),
                              code=_codes(exc), headers=headers)

    async def on_http_error(request, exc: HTTPException):
        message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        return error_response(request.url.path, exc.status_code, message.get(exc.status_code, str(exc.detail)))

    async def on_client_gone(request, exc):
        return PlainTextResponse("", status_code=499)

    async def on_unexpected(request, exc: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(request.url.path, 500, f"internal error ({type(exc).__name__}); see the server's log")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        manager.start()
        try:
            yield
        finally:
            await manager.shutdown()

    routes = [Route("/", root, methods=["GET", "HEAD"]), Route("/localq/stop", stop, methods=["POST"])]
    routes += OpenAIRoutes(manager, read).routes() + OllamaRoutes(manager, read).routes()
    app = Starlette(
        routes=routes, lifespan=lifespan,
        exception_handlers={LocalqError: on_localq_error, HTTPException: on_http_error,
                            ClientGone: on_client_gone, Exception: on_unexpected},
    )
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(Guard, config=config)
    app.state.manager = manager
    return app
