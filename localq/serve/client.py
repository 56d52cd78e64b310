"""Talking to a running ``localq serve`` (standard library only: cheap to import, no extra needed).

Where the server is: ``--host``/``--port`` when given, else the state file the
running server wrote (``serve.json``), else 127.0.0.1:11435. The API key comes
from ``--api-key`` or ``LOCALQ_API_KEY``.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from localq.errors import LocalqError
from localq.serve.config import API_KEY_ENV, DEFAULT_HOST, DEFAULT_PORT, read_state


class NoServer(LocalqError):
    """No server answers at the address."""


def server_url(host: str | None = None, port: int | None = None) -> str:
    state = read_state() or {}
    host = host or state.get("host") or DEFAULT_HOST
    port = port or state.get("port") or DEFAULT_PORT
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def call(method: str, path: str, body: dict | None = None, *, url: str | None = None,
         api_key: str | None = None, timeout: float = 5.0) -> dict:
    """One JSON request to the server; LocalqError with the server's message when it refuses."""
    base = url or server_url()
    key = api_key or os.environ.get(API_KEY_ENV)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read()).get("error")
        except ValueError:
            error = None
        message = error.get("message") if isinstance(error, dict) else error
        hint = f"set {API_KEY_ENV} or pass --api-key" if exc.code == 401 else None
        raise LocalqError(f"the server at {base} answered {exc.code}: {message or exc.reason}", hint) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise NoServer(f"no localq server is running at {base}",
                       "start one with `localq serve`, or give --host/--port of the one you started") from exc


def loaded_models(url: str | None = None, api_key: str | None = None, timeout: float = 5.0) -> list[dict]:
    """What ``/api/ps`` lists: the loaded models with memory, expiry, running and queued requests."""
    return call("GET", "/api/ps", url=url, api_key=api_key, timeout=timeout).get("models", [])


def stop_model(model: str, url: str | None = None, api_key: str | None = None) -> str:
    """Unload ``model`` on the server; its name as the server knows it. LocalqError when not loaded."""
    return call("POST", "/localq/stop", {"model": model}, url=url, api_key=api_key, timeout=30)["stopped"]
