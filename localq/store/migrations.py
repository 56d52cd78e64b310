"""The index's schema, as named migration functions applied in order.

Each function takes a ``sqlite_utils.Database`` and changes it one step. The
``_migrations`` table records the names of those that ran, so opening the index
again runs nothing, and a new function added at the end runs once on every
existing index. Never edit or reorder a migration that has shipped: add one.
"""

from __future__ import annotations

import datetime
from typing import Callable

MIGRATIONS: list[Callable] = []


def migration(fn: Callable) -> Callable:
    """Register ``fn`` as the next migration."""
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_models_and_files(db) -> None:
    """Models, their variants (one quant in one format) and the blobs that hold them."""
    db["models"].create(
        {
            "id": int,
            "name": str,          # canonical model name: "smollm2:135m", "hf.co/org/repo", "mymodel"
            "source_kind": str,   # catalog, hf, import, starter, quantized
            "catalog_ref": str,   # catalog entry, when known
            "architecture": str,
            "parameters": int,
            "created": str,
        },
        pk="id",
        not_null={"name", "source_kind", "created"},
    )
    db["models"].create_index(["name"], unique=True)
    db["blobs"].create(
        {"sha256": str, "size": int, "created": str, "verified": str},
        pk="sha256",
        not_null={"size", "created"},
    )
    db["variants"].create(
        {
            "id": int,
            "model_id": int,
            "quant": str,         # q4_k_m, mlx-4bit, int4-g128 ...
            "format": str,        # gguf, mlx, int4
            "size": int,          # bytes, all files together
            "source": str,        # where it came from: hub URL, file path, parent variant
            "revision": str,      # hub commit, when pulled
            "provenance": str,    # JSON: how it was made (pull, import, quantize parameters)
            "created": str,
            "last_used": str,
        },
        pk="id",
        foreign_keys=[("model_id", "models", "id")],
        not_null={"model_id", "quant", "format", "size", "created"},
    )
    db["variants"].create_index(["model_id", "quant", "format"], unique=True)
    db["files"].create(
        {"id": int, "variant_id": int, "relpath": str, "sha256": str, "size": int},
        pk="id",
        foreign_keys=[("variant_id", "variants", "id"), ("sha256", "blobs", "sha256")],
        not_null={"variant_id", "relpath", "sha256", "size"},
    )
    db["files"].create_index(["variant_id", "relpath"], unique=True)
    db["files"].create_index(["sha256"])


@migration
def m002_pulls(db) -> None:
    """Downloads: what was asked, from where, and how far they got."""
    db["pulls"].create(
        {
            "id": int,
            "ref": str,
            "repo": str,
            "revision": str,
            "files": str,         # JSON list of {path, size, sha256}
            "status": str,        # queued, running, paused, done, failed, cancelled
            "bytes_total": int,
            "bytes_done": int,
            "error": str,
            "started": str,
            "finished": str,
        },
        pk="id",
        not_null={"ref", "status", "started"},
    )


@migration
def m003_chats(db) -> None:
    """Conversations and their messages, with the settings and timings of each reply."""
    db["chats"].create(
        {
            "id": int,
            "title": str,
            "model": str,         # the reference as the user gave it, canonical
            "variant_id": int,
            "backend": str,
            "params": str,        # JSON sampling parameters
            "system_prompt": str,
            "created": str,
            "updated": str,
        },
        pk="id",
        foreign_keys=[("variant_id", "variants", "id")],
        not_null={"model", "created", "updated"},
    )
    db["messages"].create(
        {
            "id": int,
            "chat_id": int,
            "role": str,          # system, user, assistant
            "content": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "tokens_per_s": float,
            "ttft_s": float,
            "finish_reason": str,
            "created": str,
        },
        pk="id",
        foreign_keys=[("chat_id", "chats", "id")],
        not_null={"chat_id", "role", "content", "created"},
    )
    db["messages"].create_index(["chat_id"])


@migration
def m004_evaluations_and_benchmarks(db) -> None:
    """Measured quality and speed of variants."""
    db["evaluations"].create(
        {
            "id": int,
            "variant_id": int,
            "metric": str,        # perplexity, kl_divergence, top1_agreement
            "value": float,
            "reference_value": float,  # the same metric on the source model
            "dataset": str,
            "tokens": int,
            "params": str,
            "created": str,
        },
        pk="id",
        foreign_keys=[("variant_id", "variants", "id")],
        not_null={"variant_id", "metric", "value", "created"},
    )
    db["benchmarks"].create(
        {
            "id": int,
            "variant_id": int,
            "backend": str,
            "prompt_tokens": int,
            "prompt_tps": float,
            "decode_tokens": int,
            "decode_tps": float,
            "ttft_s": float,
            "load_s": float,
            "peak_memory": int,
            "threads": int,
            "params": str,
            "created": str,
        },
        pk="id",
        foreign_keys=[("variant_id", "variants", "id")],
        not_null={"variant_id", "backend", "created"},
    )


@migration
def m005_hardware_profiles(db) -> None:
    """Probe results, so the bandwidth measurement runs once per machine."""
    db["hardware_profiles"].create(
        {"machine_key": str, "profile": str, "bandwidth_gbps": float, "measured": str},
        pk="machine_key",
        not_null={"profile", "measured"},
    )


@migration
def m006_benchmark_flash_attn(db) -> None:
    """The flash-attention mode a benchmark ran with (auto, on, off; NULL for older rows).

    It changes speed and memory, so a measurement is compared only with its like.
    """
    db["benchmarks"].add_column("flash_attn", str)


def now() -> str:
    """The current UTC time, as stored in the index."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def migrate(db) -> list[str]:
    """Apply the migrations that have not run; return their names."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied TEXT)")
    applied = []
    for fn in MIGRATIONS:
        if _has_run(db, fn.__name__):
            continue
        # BEGIN IMMEDIATE takes the write lock, so two processes opening a new
        # index at once apply each migration once; DDL inside it is atomic.
        db.execute("BEGIN IMMEDIATE")
        try:
            if _has_run(db, fn.__name__):
                db.execute("ROLLBACK")
                continue
            fn(db)
            db.execute("INSERT INTO _migrations (name, applied) VALUES (?, ?)", [fn.__name__, now()])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        applied.append(fn.__name__)
    return applied


def _has_run(db, name: str) -> bool:
    return db.execute("SELECT 1 FROM _migrations WHERE name = ?", [name]).fetchone() is not None
