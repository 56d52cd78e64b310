"""Running the server under uvicorn, with a log that never shows a secret.

The log (stderr) has uvicorn's access lines (method, path, status: never
headers, so never the ``Authorization`` header) and localq's own lines (loads,
unloads, failures). A filter on every handler also replaces the API key and any
Hugging Face token found in the environment by ``***``, should one ever reach a
message (an exception's text, a path).
"""

from __future__ import annotations

import logging
import os

from localq.serve.config import ServeConfig, clear_state, write_state

TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "LOCALQ_API_KEY")


class Redact(logging.Filter):
    """Replaces each secret in a record's message (and its traceback) with ``***``."""

    def __init__(self, secrets):
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        for secret in self.secrets:
            message = message.replace(secret, "***")
        record.msg, record.args = message, None
        return True


def secrets_of(config: ServeConfig) -> list[str]:
    return [config.api_key or ""] + [os.environ.get(name, "") for name in TOKEN_ENV] + list(config.secrets)


def log_config(config: ServeConfig, level: str = "info") -> dict:
    """uvicorn's logging, with the redacting filter on every handler."""
    redact = {"()": Redact, "secrets": secrets_of(config)}
    fmt = {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s", "datefmt": "%H:%M:%S"}
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain",
               "filters": ["redact"]}
    return {
        "version": 1, "disable_existing_loggers": False,
        "filters": {"redact": redact}, "formatters": {"plain": fmt}, "handlers": {"stderr": handler},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "localq": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
        },
    }


def serve(config: ServeConfig, *, on_ready=None, log_level: str = "info") -> None:
    """Run the server until Ctrl-C or SIGTERM; the state file says where it listens meanwhile."""
    import uvicorn

    from localq.serve.app import create_app

    config.validate()
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, log_config=log_config(config, log_level),
        access_log=True, server_header=False, date_header=True, timeout_graceful_shutdown=5,
        limit_concurrency=1024, h11_max_incomplete_event_size=64 * 1024,
    ))

    original_startup = server.startup

    async def startup(sockets=None):
        await original_startup(sockets)
        if server.started:
            write_state(config.host, config.port)
            if on_ready:
                on_ready()

    server.startup = startup
    try:
        server.run()
    finally:
        clear_state()
