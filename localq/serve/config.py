"""The server's settings, their checks, durations as Ollama writes them, and the state file.

Decisions:
- The default address is 127.0.0.1:11435 (one above Ollama's 11434, so both can
  run side by side; ``--port 11434`` stands in for Ollama).
- Any address but 127.0.0.1 (or ``localhost``, ``::1``) needs an API key
  (``--api-key`` or ``LOCALQ_API_KEY``): a model server on a network with no
  key is open to anyone on it, and 0.0.0.0 or a LAN address is easy to pick by
  mistake. With a key, every request must carry ``Authorization: Bearer KEY``.
- A running server writes ``serve.json`` (address and pid, never the key) in the
  data directory, so ``localq ps`` and ``localq stop`` find it on any port.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from dataclasses import dataclass, field

from localq.errors import LocalqError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11435
DEFAULT_KEEP_ALIVE_S = 300.0
DEFAULT_MAX_QUEUE = 32
DEFAULT_MAX_BODY = 8 * 2**20
API_KEY_ENV = "LOCALQ_API_KEY"
STATE_FILE = "serve.json"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def needs_api_key(host: str) -> bool:
    """True for every address but the default loopback one (127.0.0.1, ``localhost``, ``::1``)."""
    return host.strip("[]").lower() not in ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeConfig:
    """How ``localq serve`` runs. ``n_ctx=None``: each backend's default context (4096 for llama.cpp)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    max_queue: int = DEFAULT_MAX_QUEUE
    max_body_bytes: int = DEFAULT_MAX_BODY
    n_ctx: int | None = None
    n_threads: int | None = None
    max_memory: int | None = None      # bytes all loaded models may take together; None = what is free
    secrets: tuple[str, ...] = field(default=(), repr=False)   # values the log must never show

    def validate(self) -> ServeConfig:
        if not 0 <= self.port <= 65535:
            raise LocalqError(f"port {self.port} is out of range", "use a port from 1024 to 65535, e.g. --port 11435")
        if needs_api_key(self.host) and not self.api_key:
            raise LocalqError(
                f"serving on {self.host} (not 127.0.0.1) needs an API key, or anyone who reaches it can use your models",
                f"give an API key with --api-key KEY or {API_KEY_ENV}=KEY, or serve on 127.0.0.1",
            )
        if self.api_key is not None and len(self.api_key) < 8:
            raise LocalqError("the API key is too short (at least 8 characters)", "use a long random string, e.g. from `openssl rand -hex 16`")
        if self.max_queue < 1:
            raise LocalqError(f"--max-queue must be 1 or more, not {self.max_queue}")
        if self.keep_alive_s != self.keep_alive_s:  # NaN
            raise LocalqError("--keep-alive must be a duration such as 5m, 30s or -1 (forever)")
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse_duration(value, what: str = "keep_alive") -> float:
    """Seconds from an Ollama-style duration: a number of seconds, or text like ``5m``, ``1h30m``, ``-1``.

    A negative duration means forever (``math.inf``); 0 means unload as soon as the request ends.
    """
    if isinstance(value, bool) or value is None:
        raise LocalqError(f"{what} must be a duration such as 5m, 30s, 0 or -1, not {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise LocalqError(f"{what} must be a finite number of seconds, not {value!r}")
        return math.inf if value < 0 else float(value)
    if not isinstance(value, str):
        raise LocalqError(f"{what} must be a duration such as 5m, 30s, 0 or -1, not {value!r}")
    text = value.strip()
    negative = text.startswith("-")
    body = text[1:] if negative else text
    try:
        seconds = float(body)
    except ValueError:
        parts = _PART.findall(body)
        if not parts or "".join(n + u for n, u in parts) != body:
            raise LocalqError(f"{what} {value!r} is not a duration", "write it as 5m, 30s, 1h30m, 0 or -1") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if negative:
        return math.inf
    return seconds


# --- the state file -------------------------------------------------------------


def state_path():
    from localq.paths import get_paths

    return get_paths().data / STATE_FILE


def write_state(host: str, port: int) -> None:
    """Record where this server listens (atomically; no secret goes in it)."""
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"host": host, "port": port, "pid": os.getpid()}))
    os.replace(tmp, path)


def clear_state() -> None:
    """Remove the state file if this process wrote it."""
    path = state_path()
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def read_state() -> dict | None:
    """Where a running server said it listens, or None (no file, or its process is gone)."""
    try:
        state = json.loads(state_path().read_text())
        pid = int(state["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return state   # alive, another user's
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def parse_size(text: str, what: str) -> int:
    """Bytes from ``512M``, ``8G``, ``64K`` or a plain number (K, M, G, T are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text), re.IGNORECASE)
    if not match:
        raise LocalqError(f"cannot read the size {text!r} for {what}", "write it like 512M, 8G or 1048576")
    size = int(float(match[1]) * 1024 ** "_kmgt".index(match[2].lower() or "_"))
    if size <= 0:
        raise LocalqError(f"{what} must be above zero, not {text!r}")
    return size
