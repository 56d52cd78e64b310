"""No stale or destroyed state: killed pulls, prune and cancel beside a live pull, rollbacks, locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from hub_server import GGUF_REPO, TINY_REPO

from localq import cache, download
from localq.download import pull, recent_pulls
from localq.download.locks import FileLock
from localq.errors import IndexDatabaseError, StoreError
from localq.paths import get_paths
from localq.store.db import open_index

TINY = "SmolLM2-tiny-Q4_1.gguf"
SPLIT = [f"SmolLM2-135M-Instruct-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
LOCALQ = [sys.executable, "-c", "from localq.cli import main; main()"]


@pytest.fixture
def db(tmp_home):
    connection = open_index()
    yield connection
    connection.close()


def wait_for(condition, timeout=60.0, what="condition"):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def partial_files():
    folder = get_paths().partials
    return sorted(folder.glob("*.partial")) if folder.is_dir() else []


def rows(db):
    return db.execute("SELECT ref, status, error FROM pulls ORDER BY id").fetchall()


def test_a_killed_pull_is_interrupted_prune_spares_it_and_pull_resumes(fake_hub, db, tmp_home):
    fake_hub.fault("stall", TINY, at=2_000_000, times=None)
    env = {**os.environ, "LOCALQ_HOME": str(tmp_home)}
    child = subprocess.Popen(LOCALQ + ["pull", f"hf.co/{TINY_REPO}"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: partial_files() and partial_files()[0].stat().st_size >= 2_000_000, what="the partial")
        [partial] = partial_files()
        week_ago = time.time() - 8 * 86400
        os.utime(partial, (week_ago, week_ago))
        plan = cache.plan_prune(db)
        assert partial in plan.stale_files          # old enough to prune, were it not in use
        cache.prune(db, plan)
        assert partial.exists(), "prune deleted the partial of a pull running in another process"
        from localq.hub import RemoteFile

        sha = fake_hub.file(TINY_REPO, TINY).sha256
        assert not download.discard_partial(RemoteFile(TINY, 1, sha, None, ""))   # the app's cancel: held
        assert partial.exists()
        assert [r[1] for r in rows(db)] == ["running"]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert [r[1] for r in rows(db)] == ["running"]   # a killed process cannot record its end
    [row] = recent_pulls(db)
    print(row)
    assert row["status"] == "interrupted" and "pull again" in row["error"]

    kept = partial.stat().st_size
    fake_hub.reset()
    result = pull(f"hf.co/{TINY_REPO}", db=db)
    assert result.status == "pulled"
    assert fake_hub.transfers(TINY)[-1].start == kept   # resumed, not sent again
    assert [r[1] for r in rows(db)] == ["interrupted", "done"]


def test_blobs_of_an_unfinished_multi_file_pull_are_not_orphans(fake_hub, db):
    import threading

    from localq.store import blobs

    # The parts download in parallel: the third stalls until the other two are in the store,
    # then its connection closes, so the pull fails with two finished parts whatever the timing.
    fake_hub.fault("stall", SPLIT[2], at=500_000, times=None)
    finished = {fake_hub.file(GGUF_REPO, p).sha256 for p in SPLIT[:2]}
    failures: list[BaseException] = []

    def run_pull() -> None:
        try:
            pull(f"hf.co/{GGUF_REPO}:q4_k_m", db=open_index(), retries=0)
        except BaseException as exc:  # noqa: BLE001 - the failure is what the test waits for
            failures.append(exc)

    worker = threading.Thread(target=run_pull)
    worker.start()
    deadline = time.monotonic() + 120
    while not finished <= set(blobs.list_blobs()) and time.monotonic() < deadline:
        time.sleep(0.05)
    fake_hub.release()
    worker.join(120)
    assert failures and not worker.is_alive()
    assert [r[1] for r in rows(db)] == ["failed"]
    assert finished <= set(blobs.list_blobs())       # two parts arrived before the third failed
    plan = cache.plan_prune(db)
    assert not finished & set(plan.orphan_blobs)
    cache.prune(db, plan)
    assert finished <= set(blobs.list_blobs())


def test_any_exception_in_a_pull_marks_it_failed_and_keeps_the_partial(fake_hub, db):
    def on_progress(event):
        if event.event == "progress" and (event.done or 0) > 1_000_000:
            raise RuntimeError("the caller's progress display broke")

    with pytest.raises(RuntimeError):
        pull(f"hf.co/{TINY_REPO}", db=db, on_progress=on_progress)
    [(ref, status, error)] = rows(db)
    print(status, error)
    assert status == "failed" and "RuntimeError: the caller's progress display broke" in error
    assert partial_files() and partial_files()[0].stat().st_size > 1_000_000
    assert pull(f"hf.co/{TINY_REPO}", db=db).status == "pulled"


def test_save_turn_leaves_the_chat_as_it_was_when_it_rolls_back(db):
    from localq.chat.history import Chat, Message, save_turn

    chat = Chat(model="smollm2:135m")
    save_turn(db, chat, [Message("user", "a"), Message("assistant", "b")])
    other = open_index()   # another process deletes the chat meanwhile
    other.execute("DELETE FROM messages WHERE chat_id = ?", [chat.id])
    other.execute("DELETE FROM chats WHERE id = ?", [chat.id])
    other.conn.commit()
    other.close()
    before = (chat.id, chat.updated, list(chat.messages))
    new = [Message("user", "c"), Message("assistant", "d")]
    with pytest.raises(IndexDatabaseError) as caught:   # sqlite3.IntegrityError before: a traceback
        save_turn(db, chat, new)
    print(caught.value.one_line())
    assert "FOREIGN KEY" in caught.value.message
    assert (chat.id, chat.updated, list(chat.messages)) == before
    assert all(m.id is None and m.created is None for m in new)


def test_a_lock_that_cannot_be_taken_is_reported_not_waited_on(tmp_home, tmp_path):
    """A flock that fails for a reason other than "held" is StoreError, not a wait for ever.

    ENOLCK needs a network filesystem; the same path is taken here by a real
    flock failure of another kind: a descriptor opened with O_PATH (EBADF).
    """
    if not hasattr(os, "O_PATH"):
        pytest.skip("O_PATH is Linux-only")
    path = tmp_path / "x.lock"
    path.write_bytes(b"")
    lock = FileLock(path)
    lock.handle = os.fdopen(os.open(path, os.O_PATH), "rb", buffering=0)
    with pytest.raises(StoreError) as caught:
        lock.try_acquire()
    print(caught.value.one_line())
    assert f"cannot lock {path}" in caught.value.message and "LOCALQ_HOME" in caught.value.hint
    assert lock.handle is None     # released, not left open
    held = FileLock(path)
    other = FileLock(path)
    assert held.try_acquire() and not other.try_acquire()   # "held" still means: wait
    held.release()
    other.release()
