"""The server's commands: ``localq serve``, ``localq ps``, ``localq stop MODEL``.

``serve`` imports starlette and uvicorn (the ``serve`` extra) only when it
runs; ``ps`` and ``stop`` talk to the running server over HTTP with the
standard library, so they work wherever localq does.
"""

from __future__ import annotations

import importlib.util
import os

import click

from localq.errors import LocalqError


def register(cli: click.Group) -> None:
    """Add the server's commands to the ``localq`` group."""
    cli.add_command(serve_command)
    cli.add_command(ps_command)
    cli.add_command(stop_command)


def _address_options(fn):
    for option in reversed([
        click.option("--host", help="The server's address (default: the running server's, else 127.0.0.1)."),
        click.option("--port", type=int, help="The server's port (default: the running server's, else 11435)."),
        click.option("--api-key", help="The server's API key (default: $LOCALQ_API_KEY)."),
    ]):
        fn = option(fn)
    return fn


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any but loopback needs an API key.")
@click.option("--port", type=int, default=11435, show_default=True, help="Port to listen on.")
@click.option("--api-key", envvar="LOCALQ_API_KEY", show_envvar=True,
              help="Require `Authorization: Bearer KEY` on every request.")
@click.option("--cors-origin", "cors_origins", multiple=True,
              help="Let web pages from this origin call the API (repeatable; * for any).")
@click.option("--keep-alive", default="5m", show_default=True,
              help="How long a model stays loaded after its last request (30s, 10m, 1h; -1 = forever).")
@click.option("--max-queue", type=int, default=32, show_default=True,
              help="Requests that may wait for one model; more get 429.")
@click.option("--max-body", default="8M", show_default=True, help="Largest request body (K, M, G).")
@click.option("--max-memory", help="Memory all loaded models may use together, e.g. 8G (default: what is free).")
@click.option("--ctx", "n_ctx", type=int, help="Context size of loaded models (default 4096, or the model's if smaller).")
@click.option("--threads", type=int, help="CPU threads per model (default: the physical cores).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
def serve_command(host, port, api_key, cors_origins, keep_alive, max_queue, max_body, max_memory, n_ctx, threads,
                  log_level) -> None:
    """Serve the installed models over OpenAI's API (/v1) and Ollama's (/api).

    Models load on first use and unload after --keep-alive idle, or when another
    model needs the memory. Stop with Ctrl-C.
    """
    from localq.backends.base import LoadOptions
    from localq.serve.config import ServeConfig, parse_duration, parse_size

    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise LocalqError(f"the server needs {' and '.join(missing)}", "install them with pip install 'localq[serve]'")
    LoadOptions(n_ctx=n_ctx, n_threads=threads).validate()
    config = ServeConfig(
        host=host, port=port, api_key=api_key or None, cors_origins=tuple(cors_origins),
        keep_alive_s=parse_duration(keep_alive, "--keep-alive"), max_queue=max_queue,
        max_body_bytes=parse_size(max_body, "--max-body"),
        max_memory=parse_size(max_memory, "--max-memory") if max_memory else None,
        n_ctx=n_ctx, n_threads=threads,
    ).validate()

    from localq.cli.common import open_db
    from localq.serve.server import serve

    open_db().conn.close()   # index the starter model, migrate the index, before the first request

    def ready() -> None:
        auth = "an API key is required" if config.api_key else "no API key"
        click.echo(f"localq serve: listening on {config.url} (OpenAI API at /v1, Ollama API at /api; {auth})",
                   err=True)

    serve(config, on_ready=ready, log_level=log_level)


def _ago_or_in(stamp: str | None) -> str:
    import datetime

    if not stamp:
        return "never (kept loaded)"
    seconds = (datetime.datetime.fromisoformat(stamp) - datetime.datetime.now(datetime.UTC)).total_seconds()
    if seconds <= 0:
        return "now"
    if seconds < 120:
        return f"in {int(seconds)} s"
    if seconds < 7200:
        return f"in {int(seconds // 60)} min"
    return f"in {seconds / 3600:.1f} h"


def _url(host, port) -> str:
    from localq.serve.client import server_url

    return server_url(host, port)


@click.command("ps")
@_address_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ps_command(host, port, api_key, as_json) -> None:
    """List the models the running server has loaded, with memory and expiry."""
    from localq.units import size
    from localq.cli.render import print_json
    from localq.serve.client import loaded_models

    models = loaded_models(_url(host, port), api_key)
    if as_json:
        return print_json(models)
    if not models:
        click.echo("No models are loaded. They load on their first request.")
        return
    rows = [("NAME", "BACKEND", "MEMORY", "CONTEXT", "STATE", "UNTIL")]
    for m in models:
        state = "running" if m.get("running") else "idle"
        if m.get("queued"):
            state += f", {m['queued']} waiting"
        rows.append((m["name"], m.get("backend", "?"), size(m.get("size")), str(m.get("context_length", "?")),
                     state, _ago_or_in(m.get("expires_at"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@click.command("stop")
@click.argument("model")
@_address_options
def stop_command(model, host, port, api_key) -> None:
    """Unload MODEL from the running server (its running request is cancelled)."""
    from localq.serve.client import stop_model

    name = stop_model(model, _url(host, port), api_key or os.environ.get("LOCALQ_API_KEY"))
    click.echo(f"stopped {name}")
