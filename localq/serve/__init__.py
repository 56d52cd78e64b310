"""``localq serve``: an OpenAI- and Ollama-compatible HTTP API over localq's backends (ASGI).

Modules, one job each:

- ``config``: the server's settings, their checks (a non-loopback bind needs an
  API key), durations, and the state file that tells ``localq ps`` where the
  server listens.
- ``models``: the loaded models. ``load_session`` is the one place a model is
  loaded; ``ModelManager`` loads on first use, keeps models for their
  keep-alive and unloads them when idle or when another model needs the memory.
- ``scheduler``: one worker thread and one bounded FIFO queue per loaded model.
- ``requests``: reading request bodies: sizes, JSON, field types, into
  ``GenerationParams``.
- ``openai_api``, ``ollama_api``: the two APIs' routes and response shapes.
- ``app``: the Starlette application: security checks, errors in each API's format.
- ``server``: running it under uvicorn, with a log that never shows a secret.
- ``client``: the small HTTP client ``localq ps`` / ``localq stop`` and the app use
  (standard library only, so it is cheap to import).

Only ``client`` and ``config`` may be imported without the ``serve`` extra
(starlette, uvicorn) installed.
"""
