"""``localq bench``: how fast a model runs here, measured and recorded in the index.

One load (timed), one warm-up reply (it pages the memory-mapped weights in),
then a fixed prompt of ``prompt_tokens`` tokens evaluated from an empty KV
cache, followed by exactly ``decode_tokens`` greedy tokens (end-of-text is
ignored so every run does the same work). Reported: load time, prompt tokens/s,
decode tokens/s, time to first token, and the process's peak resident memory
(``ru_maxrss``: the weights the model touched count, as the OS sees them).

The result goes to the ``benchmarks`` table; ``latest_benchmark`` gives the
newest one for a variant, for ``localq show``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass

from localq.backends.base import Done, GenerationParams, LoadOptions
from localq.store.db import write_transaction
from localq.store.migrations import now

FILLER = ("Local language models run on laptops, desktops and small servers. They read a prompt, "
          "then write one token at a time, each from all the tokens before it. ")


@dataclass
class BenchResult:
    model: str
    backend: str
    threads: int
    n_ctx: int
    load_s: float
    prompt_tokens: int
    prompt_tps: float
    decode_tokens: int
    decode_tps: float
    ttft_s: float
    peak_memory: int        # bytes
    flash_attn: str = "auto"  # the load option it ran with: auto, on or off

    def to_dict(self) -> dict:
        return asdict(self)


def peak_rss() -> int:
    """The process's peak resident memory in bytes."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024   # macOS reports bytes, Linux KiB


def bench(db, ref: str, *, prompt_tokens: int = 128, decode_tokens: int = 64,
          options: LoadOptions | None = None, record: bool = True) -> BenchResult:
    """Load ``ref``, measure it, and (with ``record``) store the result in the index."""
    import time

    from localq.chat.conversation import open_session
    from localq.errors import LocalqError

    if prompt_tokens < 1 or decode_tokens < 1:
        raise LocalqError("prompt and decode token counts must be 1 or more")
    session = open_session(db, ref, options)
    try:
        if prompt_tokens + decode_tokens >= session.n_ctx:
            raise LocalqError(
                f"{prompt_tokens} prompt + {decode_tokens} decode tokens do not fit the {session.n_ctx}-token context",
                "use fewer tokens or a larger --ctx",
            )
        text = FILLER
        while len(session.tokenize(text)) < prompt_tokens:
            text += FILLER
        prompt = session.tokenize(text)[:prompt_tokens]

        def measure(max_tokens: int) -> Done:
            session.reset()
            params = GenerationParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
            *_, done = session.generate(prompt, params, time.perf_counter())
            if done.finish_reason == "error":
                raise LocalqError(f"the model failed during the benchmark: {done.error}")
            return done

        measure(min(8, decode_tokens))   # warm-up
        done = measure(decode_tokens)
        result = BenchResult(
            model=session.model_ref, backend=session.backend_name, threads=session.n_threads, n_ctx=session.n_ctx,
            load_s=session.load_s, prompt_tokens=len(prompt), prompt_tps=done.prompt_tokens_per_s,
            decode_tokens=done.completion_tokens, decode_tps=done.tokens_per_s, ttft_s=done.ttft_s or 0.0,
            peak_memory=peak_rss(), flash_attn=(options or LoadOptions()).flash_attn,
        )
        if record and session.variant_id is not None:
            record_benchmark(db, session.variant_id, result)
        return result
    finally:
        session.close()


def record_benchmark(db, variant_id: int, result: BenchResult) -> int:
    """Store ``result`` for the variant; returns the row id."""
    with write_transaction(db):
        return db.execute(
            "INSERT INTO benchmarks (variant_id, backend, prompt_tokens, prompt_tps, decode_tokens, decode_tps,"
            " ttft_s, load_s, peak_memory, threads, params, flash_attn, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [variant_id, result.backend, result.prompt_tokens, result.prompt_tps, result.decode_tokens,
             result.decode_tps, result.ttft_s, result.load_s, result.peak_memory, result.threads,
             json.dumps({"n_ctx": result.n_ctx}), result.flash_attn, now()],
        ).lastrowid


def latest_benchmark(db, variant_id: int) -> dict | None:
    """The newest stored benchmark of a variant, as a dict of the ``benchmarks`` columns, or None."""
    row = db.execute(
        "SELECT * FROM benchmarks WHERE variant_id = ? ORDER BY created DESC, id DESC LIMIT 1", [variant_id]
    ).fetchone()
    if row is None:
        return None
    columns = [d[0] for d in db.execute("SELECT * FROM benchmarks LIMIT 0").description]
    data = dict(zip(columns, row))
    data["params"] = json.loads(data["params"] or "{}")
    return data
