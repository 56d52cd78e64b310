"""Opening the SQLite index: WAL mode, a busy timeout, migrations, clear errors.

A corrupt or foreign file at the index's place is never silently replaced: the
user is told what is wrong and how to recover, and their model files (in
``blobs/``) are untouched. A database locked by another localq process past the
timeout gives a clear error instead of a hang.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from localq.errors import IndexDatabaseError, StoreError
from localq.paths import get_paths

BUSY_TIMEOUT_S = 10.0


def _sqlite_utils():
    """sqlite_utils, imported without numpy and pandas where nothing has loaded them yet.

    sqlite_utils imports both whenever they are installed, only to map their
    scalar types to column types when it creates a table from Python values.
    localq's tables come from its migrations, with declared types, and it stores
    plain Python values, so it has no use for them; numpy alone is 0.1 s of
    every command that opens the index. They are kept out only while this is
    the process's one thread (a thread importing numpy meanwhile would fail).
    """
    import sys
    import threading

    if "sqlite_utils" in sys.modules or threading.active_count() > 1:
        import sqlite_utils

        return sqlite_utils
    kept_out = [name for name in ("numpy", "pandas") if name not in sys.modules]
    for name in kept_out:
        sys.modules[name] = None  # an import of it raises ImportError, which sqlite_utils expects
    try:
        import sqlite_utils
    finally:
        for name in kept_out:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]
    return sqlite_utils


def open_index(path: Path | None = None):
    """Open (creating and migrating if needed) the index and return a sqlite_utils Database."""
    sqlite_utils = _sqlite_utils()

    from localq.store.migrations import migrate

    path = Path(path) if path is not None else get_paths().index_db
    if path.is_dir():
        raise IndexDatabaseError(f"the index {path} is a directory", "move it aside; localq will create a new index")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {path.parent}: {exc.strerror}", "check the permissions of the localq data directory or set LOCALQ_HOME") from exc
    if path.exists() and not os.access(path.parent, os.W_OK):
        return _open_read_only(path)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        db = sqlite_utils.Database(conn)
        db.execute("PRAGMA foreign_keys = ON")
        _set_wal(db, path)
        migrate(db)
    except sqlite3.DatabaseError as exc:
        raise _explain(exc, path) from exc
    return db


def _open_read_only(path: Path):
    """An index on read-only media: readable (ls, show, chat), every write a clear error."""
    sqlite_utils = _sqlite_utils()

    from localq.store.migrations import MIGRATIONS

    try:
        conn = sqlite3.connect(f"{path.as_uri()}?immutable=1", uri=True, check_same_thread=False)
        db = sqlite_utils.Database(conn)
        done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    except sqlite3.DatabaseError as exc:
        raise _explain(exc, path) from exc
    if any(m.__name__ not in done for m in MIGRATIONS):
        raise IndexDatabaseError(
            f"the index {path} needs an upgrade, but its directory is read-only",
            "make the localq data directory writable and run localq once",
        )
    return db


def _set_wal(db, path: Path) -> None:
    mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    if mode.lower() != "wal":
        try:
            db.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:
            # A read-only directory cannot hold the WAL files; reading still works.
            pass


def _explain(exc: sqlite3.DatabaseError, path: Path) -> IndexDatabaseError:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return IndexDatabaseError(
            f"the index {path} is locked by another localq process",
            "wait for it to finish, or close the other localq and try again",
        )
    if "readonly" in text or "read-only" in text or "unable to open" in text or not os.access(path.parent, os.W_OK):
        return IndexDatabaseError(
            f"cannot write the index {path}: the directory is read-only or not writable",
            "check the permissions of the localq data directory or set LOCALQ_HOME",
        )
    if "disk is full" in text or "disk i/o" in text:
        return IndexDatabaseError(f"cannot write the index {path}: {exc}", "free some disk space and try again")
    return IndexDatabaseError(
        f"the index {path} is not a valid localq database ({exc})",
        f"your model files are safe in {path.parent / 'blobs'}; move the index aside "
        f"(mv {path} {path}.bad) and run `localq import --blobs` to re-index them",
    )


class write_transaction:
    """``with write_transaction(db):`` runs its body as one IMMEDIATE transaction.

    IMMEDIATE takes the write lock at the start, so two localq processes writing
    at once wait for each other (up to the busy timeout) instead of failing
    halfway; any error rolls the whole body back.
    """

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise _explain(exc, Path(self.db.conn.execute("PRAGMA database_list").fetchone()[2])) from exc
        return self.db

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
            except sqlite3.DatabaseError as err:
                self.db.execute("ROLLBACK")
                raise _explain(err, Path(self.db.conn.execute("PRAGMA database_list").fetchone()[2])) from err
        else:
            self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise IndexDatabaseError(
                    f"the index refused a change that conflicts with what it holds ({exc})",
                    "another localq process may have changed the same record; run the command again",
                ) from exc
            if isinstance(exc, sqlite3.DatabaseError):
                raise _explain(exc, Path(self.db.conn.execute("PRAGMA database_list").fetchone()[2])) from exc
        return False
