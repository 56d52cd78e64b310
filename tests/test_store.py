"""The index (schema, migrations, transactions, bad databases) and the blob store."""

import hashlib
import os
import sqlite3
import threading

import pytest

from localq.errors import IndexDatabaseError, ModelNotFound
from localq.paths import get_paths
from localq.store import blobs
from localq.store.db import open_index, write_transaction
from localq.store.index import FileEntry, add_variant, find, list_variants, remove_variant, resolve
from localq.store.migrations import MIGRATIONS, migrate

def _table(columns, indexes=(), foreign_keys=()):
    return {"columns": columns.split(", "), "indexes": sorted(indexes), "foreign_keys": sorted(foreign_keys)}


# Every table, column (type, NOT NULL, primary key), index and foreign key the migrations make.
EXPECTED_SCHEMA = {
    "_migrations": _table("name TEXT PRIMARY KEY, applied TEXT"),
    "benchmarks": _table(
        "id INTEGER PRIMARY KEY, variant_id INTEGER NOT NULL, backend TEXT NOT NULL, prompt_tokens INTEGER, "
        "prompt_tps REAL, decode_tokens INTEGER, decode_tps REAL, ttft_s REAL, load_s REAL, peak_memory INTEGER, "
        "threads INTEGER, params TEXT, created TEXT NOT NULL, flash_attn TEXT",
        foreign_keys=["variant_id -> variants.id"]),
    "blobs": _table("sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, created TEXT NOT NULL, verified TEXT"),
    "chats": _table(
        "id INTEGER PRIMARY KEY, title TEXT, model TEXT NOT NULL, variant_id INTEGER, backend TEXT, params TEXT, "
        "system_prompt TEXT, created TEXT NOT NULL, updated TEXT NOT NULL",
        foreign_keys=["variant_id -> variants.id"]),
    "evaluations": _table(
        "id INTEGER PRIMARY KEY, variant_id INTEGER NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL, "
        "reference_value REAL, dataset TEXT, tokens INTEGER, params TEXT, created TEXT NOT NULL",
        foreign_keys=["variant_id -> variants.id"]),
    "files": _table(
        "id INTEGER PRIMARY KEY, variant_id INTEGER NOT NULL, relpath TEXT NOT NULL, sha256 TEXT NOT NULL, "
        "size INTEGER NOT NULL",
        indexes=["UNIQUE variant_id, relpath", "sha256"],
        foreign_keys=["sha256 -> blobs.sha256", "variant_id -> variants.id"]),
    "hardware_profiles": _table(
        "machine_key TEXT PRIMARY KEY, profile TEXT NOT NULL, bandwidth_gbps REAL, measured TEXT NOT NULL"),
    "messages": _table(
        "id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, "
        "prompt_tokens INTEGER, completion_tokens INTEGER, tokens_per_s REAL, ttft_s REAL, finish_reason TEXT, "
        "created TEXT NOT NULL",
        indexes=["chat_id"], foreign_keys=["chat_id -> chats.id"]),
    "models": _table(
        "id INTEGER PRIMARY KEY, name TEXT NOT NULL, source_kind TEXT NOT NULL, catalog_ref TEXT, "
        "architecture TEXT, parameters INTEGER, created TEXT NOT NULL",
        indexes=["UNIQUE name"]),
    "pulls": _table(
        "id INTEGER PRIMARY KEY, ref TEXT NOT NULL, repo TEXT, revision TEXT, files TEXT, status TEXT NOT NULL, "
        "bytes_total INTEGER, bytes_done INTEGER, error TEXT, started TEXT NOT NULL, finished TEXT"),
    "variants": _table(
        "id INTEGER PRIMARY KEY, model_id INTEGER NOT NULL, quant TEXT NOT NULL, format TEXT NOT NULL, "
        "size INTEGER NOT NULL, source TEXT, revision TEXT, provenance TEXT, created TEXT NOT NULL, last_used TEXT",
        indexes=["UNIQUE model_id, quant, format"], foreign_keys=["model_id -> models.id"]),
}


def schema_of(db) -> dict:
    """Every table of the database as SQLite itself reports it (PRAGMA table_info, index_list, ...)."""
    tables = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    schema = {}
    for t in tables:
        columns = [f"{r[1]} {r[2]}" + (" NOT NULL" if r[3] else "") + (" PRIMARY KEY" if r[5] else "")
                   for r in db.execute(f"PRAGMA table_info([{t}])")]
        indexes = [("UNIQUE " if r[2] else "") + ", ".join(c[2] for c in db.execute(f"PRAGMA index_info([{r[1]}])"))
                   for r in db.execute(f"PRAGMA index_list([{t}])") if r[3] == "c"]   # made by CREATE INDEX
        keys = [f"{r[3]} -> {r[2]}.{r[4]}" for r in db.execute(f"PRAGMA foreign_key_list([{t}])")]
        schema[t] = {"columns": columns, "indexes": sorted(indexes), "foreign_keys": sorted(keys)}
    return schema


def test_exact_schema_after_migrating_from_empty(tmp_home):
    db = open_index()
    assert schema_of(db) == EXPECTED_SCHEMA   # no table, column, type, index or key more or less
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ran = [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert ran == [m.__name__ for m in MIGRATIONS]


def test_second_open_runs_nothing(tmp_home):
    open_index()
    db = open_index()
    assert migrate(db) == []
    assert db.execute("SELECT count(*) FROM _migrations").fetchone()[0] == len(MIGRATIONS)


def test_failed_migration_leaves_nothing_half_done(tmp_home, monkeypatch):
    db = open_index()

    def m999_broken(db):
        db["half"].create({"id": int}, pk="id")
        raise RuntimeError("boom")

    monkeypatch.setattr("localq.store.migrations.MIGRATIONS", MIGRATIONS + [m999_broken])
    with pytest.raises(RuntimeError):
        migrate(db)
    assert "half" not in db.table_names()
    assert not db.execute("SELECT 1 FROM _migrations WHERE name = 'm999_broken'").fetchone()


def test_corrupt_database_is_never_recreated(tmp_home):
    path = get_paths().index_db
    path.parent.mkdir(parents=True)
    garbage = b"this is not sqlite" * 300
    path.write_bytes(garbage)
    with pytest.raises(IndexDatabaseError) as err:
        open_index()
    assert "is not a valid localq database" in err.value.message
    assert "move the index aside" in err.value.hint and "blobs" in err.value.hint
    assert path.read_bytes() == garbage


def test_database_damaged_in_the_middle(tmp_home, smollm2_gguf):
    db = open_index()
    _add(db, "m1", b"x" * 10)
    db.conn.close()
    path = get_paths().index_db
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # smash the schema page
    path.write_bytes(bytes(data))
    for f in path.parent.glob("index.db-*"):
        f.unlink()
    with pytest.raises(IndexDatabaseError) as err:
        open_index()
    assert "not a valid localq database" in err.value.message


def test_directory_in_place_of_the_index(tmp_home):
    get_paths().index_db.mkdir(parents=True)
    with pytest.raises(IndexDatabaseError, match="is a directory"):
        open_index()


def test_locked_database_gives_a_clear_error(tmp_home, monkeypatch):
    monkeypatch.setattr("localq.store.db.BUSY_TIMEOUT_S", 0.2)
    open_index()  # creates the index the other connection then locks
    other = sqlite3.connect(get_paths().index_db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        db2 = open_index()
        with pytest.raises(IndexDatabaseError) as err:
            with write_transaction(db2):
                pass
        assert "locked by another localq process" in err.value.message
    finally:
        other.execute("ROLLBACK")


def test_two_processes_writing_at_once(tmp_home):
    """Concurrent writers (threads with their own connections) all land, none fails."""
    open_index()
    errors = []

    def writer(n):
        try:
            db = open_index()
            for i in range(10):
                _add(db, f"model{n}-{i}", f"{n}-{i}".encode())
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list_variants(open_index())) == 40


def _add(db, model, data, quant="q4_0"):
    sha, path = blobs.write_bytes(data)
    return add_variant(db, model=model, source_kind="import", quant=quant, format="gguf",
                       files=[FileEntry(f"{model}.gguf", sha, len(data))])


def test_blob_is_content_addressed_and_atomic(tmp_home, tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(b"hello" * 1000)
    sha, dest = blobs.add_file(src, link=False)
    assert sha == hashlib.sha256(src.read_bytes()).hexdigest()
    assert dest.name == f"sha256-{sha}" and dest.read_bytes() == src.read_bytes()
    assert blobs.stale_temp_files() == []
    # Same bytes again: one blob.
    sha2, dest2 = blobs.add_file(src)
    assert (sha2, dest2) == (sha, dest)
    assert list(blobs.list_blobs()) == [sha]


def test_hardlink_on_same_filesystem(tmp_home, tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(b"abc" * 1000)
    _, dest = blobs.add_file(src, link=True)
    assert os.stat(dest).st_ino == os.stat(src).st_ino


def test_removing_last_reference_frees_the_blob(tmp_home):
    db = open_index()
    a = _add(db, "a", b"shared-bytes")
    b = _add(db, "b", b"shared-bytes")
    path = a.main_path
    assert remove_variant(db, a.id) == 0 and path.exists()
    assert remove_variant(db, b.id) == len(b"shared-bytes") and not path.exists()
    assert db.execute("SELECT count(*) FROM models").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM blobs").fetchone()[0] == 0


def test_find_and_resolve(tmp_home):
    db = open_index()
    _add(db, "smollm2:135m", b"1", quant="q4_1")
    _add(db, "smollm2:135m", b"2", quant="q8_0")
    _add(db, "hf.co/Org/Repo-GGUF", b"3", quant="q4_k_m")
    assert {v.quant for v in find(db, "smollm2:135m")} == {"q4_1", "q8_0"}
    assert resolve(db, "smollm2:135m-q8_0").quant == "q8_0"
    assert resolve(db, "smollm2").model == "smollm2:135m"
    assert resolve(db, "hf.co/org/repo-gguf:Q4_K_M").model == "hf.co/Org/Repo-GGUF"
    assert resolve(db, "smollm2:135m-q8_0").ref == "smollm2:135m-q8_0"
    with pytest.raises(ModelNotFound) as err:
        resolve(db, "llama3.2:3b")
    assert "not installed" in err.value.message and "localq pull llama3.2:3b" in err.value.hint


def test_full_disk_error_names_sizes(tmp_home):
    err = blobs.storage_error(OSError(28, "No space left on device"), "blob x", needed=5 * 2**20)
    assert "disk full" in err.message and "needed 5.0 MiB" in err.message and "free" in err.message


def test_separate_processes_writing_at_once(tmp_home):
    """Real localq processes (not threads) adding models at the same time: every write lands."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import sys
        from localq.store import blobs
        from localq.store.db import open_index
        from localq.store.index import FileEntry, add_variant
        n = sys.argv[1]
        db = open_index()
        for i in range(15):
            data = f"{n}-{i}".encode()
            sha, _ = blobs.write_bytes(data)
            add_variant(db, model=f"p{n}-{i}", source_kind="import", quant="q4_0", format="gguf",
                        files=[FileEntry("m.gguf", sha, len(data))])
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)], stderr=subprocess.PIPE, text=True) for n in range(4)]
    errors = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    db = open_index()
    assert len(list_variants(db)) == 60
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_replacing_a_variant_keeps_its_chats_and_frees_the_old_blob(tmp_home):
    db = open_index()
    first = _add(db, "m", b"old bytes")
    old_path = first.main_path
    db.execute("INSERT INTO chats (model, variant_id, created, updated) VALUES ('m', ?, 'now', 'now')", [first.id])
    db.conn.commit()
    second = _add(db, "m", b"new bytes")
    assert second.id == first.id
    assert db.execute("SELECT variant_id FROM chats").fetchone()[0] == first.id
    assert not old_path.exists() and second.main_path.exists()
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_opening_the_index_does_not_import_numpy(tmp_home):
    import subprocess
    import sys

    code = ("import sys; from localq.store.db import open_index; db = open_index(); "
            "loaded = 'numpy' in sys.modules; db['t'].insert({'a': 1}); import numpy; "
            "print(loaded, db['t'].count, numpy.float32(2) * 2)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "LOCALQ_HOME": str(tmp_home)}).stdout.split()
    assert out == ["False", "1", "4.0"]   # and numpy imports as usual afterwards
