"""The ``pulls`` table: one row per pull, so a pull can resume and the app can list them.

A pull records its files and ``running`` when it starts, then ``done``,
``failed`` (with the error's line) or ``cancelled``/``interrupted`` when it
ends; the app marks a stopped pull ``paused``, ``cancelled`` or ``queued`` (the
app quit mid-pull: the next start resumes it).
"""

from __future__ import annotations

import json

from localq.store.db import write_transaction
from localq.store.migrations import now


def record_start(db, ref: str, repo: str, revision: str, files: list[dict], total: int) -> int:
    """A new ``running`` row for a pull of ``files`` (path, size, sha256, key each); returns its id."""
    with write_transaction(db):
        cursor = db.execute(
            "INSERT INTO pulls (ref, repo, revision, files, status, bytes_total, bytes_done, started)"
            " VALUES (?, ?, ?, ?, 'running', ?, 0, ?)",
            [ref, repo, revision, json.dumps(files), total, now()],
        )
    return cursor.lastrowid


def record_end(db, pull_id: int, status: str, done: int, error: str | None) -> None:
    """How a pull ended: its status, the bytes done, the error's line."""
    with write_transaction(db):
        db.execute(
            "UPDATE pulls SET status = ?, bytes_done = ?, error = ?, finished = ? WHERE id = ?",
            [status, done, error, now(), pull_id],
        )


def mark_pull(db, ref: str, status: str, error: str | None = None) -> None:
    """Record ``status`` on the newest pulls row of ``ref`` (``pull`` wrote it as interrupted); the app's pause and cancel use it."""
    with write_transaction(db):
        db.execute(
            "UPDATE pulls SET status = ?, error = ? WHERE id = (SELECT MAX(id) FROM pulls WHERE ref = ?)",
            [status, error, ref],
        )


def pulls_to_resume(db) -> list[str]:
    """References whose newest pull was stopped by quitting the app (``queued``): resumed at start."""
    rows = db.execute(
        "SELECT ref, status FROM pulls p WHERE id = (SELECT MAX(id) FROM pulls WHERE ref = p.ref) ORDER BY id"
    ).fetchall()
    return [ref for ref, status in rows if status == "queued"]


def recent_pulls(db, limit: int = 50) -> list[dict]:
    """The newest pull of each reference, newest first: ref, status, bytes, error."""
    rows = db.execute(
        "SELECT ref, status, bytes_done, bytes_total, error, started FROM pulls p"
        " WHERE id = (SELECT MAX(id) FROM pulls WHERE ref = p.ref) ORDER BY id DESC LIMIT ?", [limit],
    ).fetchall()
    return [dict(zip(("ref", "status", "done", "total", "error", "started"), row)) for row in rows]


def unfinished_files(db, ref: str) -> list[dict] | None:
    """The files of the last pull of ``ref`` that did not finish, or None when there is none."""
    row = db.execute(
        "SELECT files FROM pulls WHERE ref = ? AND status != 'done' ORDER BY id DESC LIMIT 1", [ref]
    ).fetchone()
    return None if not row else json.loads(row[0] or "[]")


def running_pulls(db) -> list[int]:
    """Ids of the pulls recorded as running (alive, or killed before they could say so)."""
    return [row[0] for row in db.execute("SELECT id FROM pulls WHERE status = 'running'").fetchall()]


def mark_interrupted(db, pull_ids: list[int], why: str) -> None:
    """Record that these running pulls' processes are gone."""
    if not pull_ids:
        return
    with write_transaction(db):
        for pull_id in pull_ids:
            db.execute("UPDATE pulls SET status = 'interrupted', error = ? WHERE id = ? AND status = 'running'",
                       [why, pull_id])


def unfinished_pull_blobs(db) -> set[str]:
    """sha256 of the files of pulls not finished (the newest row of each reference): not orphans."""
    rows = db.execute(
        "SELECT files FROM pulls p WHERE id = (SELECT MAX(id) FROM pulls WHERE ref = p.ref)"
        " AND status NOT IN ('done', 'cancelled')"
    ).fetchall()
    found = set()
    for (files,) in rows:
        try:
            found |= {f["sha256"] for f in json.loads(files or "[]") if isinstance(f, dict) and f.get("sha256")}
        except (ValueError, TypeError):
            continue
    return found
