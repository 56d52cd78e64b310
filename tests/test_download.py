"""Downloads from the loopback Hub: resume, verification, faults, rate, reuse, offline."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest
from hub_server import GGUF_REPO, SOURCE_REPO, TINY_REPO

from localq import units
from localq.download import PullEvent, parse_rate, pull
from localq.errors import BadModelFile, HubError, InvalidReference, StoreError
from localq.paths import get_paths
from localq.store import blobs
from localq.store.db import open_index
from localq.store.index import list_variants

TINY = "SmolLM2-tiny-Q4_1.gguf"
Q8 = "SmolLM2-135M-Instruct-Q8_0.gguf"
SPLIT = [f"SmolLM2-135M-Instruct-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]


@pytest.fixture
def db(tmp_home):
    return open_index()


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr("localq.download.transfer.BACKOFF_S", 0.05)


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def partials() -> list:
    folder = get_paths().partials
    return sorted(p.name for p in folder.glob("*.partial")) if folder.is_dir() else []


def pull_rows(db) -> list[tuple]:
    return db.execute("SELECT ref, status, bytes_done, error FROM pulls ORDER BY id").fetchall()


def wait_for(condition, timeout=30.0, what="condition"):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- a plain pull --------------------------------------------------------------


def test_pull_downloads_verifies_and_indexes(fake_hub, db):
    served = fake_hub.file(TINY_REPO, TINY)
    result = pull(f"hf.co/{TINY_REPO}:q4_1", db=db)
    v = result.variant
    assert (result.status, v.model, v.quant, v.format, v.size) == ("pulled", f"hf.co/{TINY_REPO}", "q4_1", "gguf", served.size)
    assert [(f.relpath, f.sha256) for f in v.files] == [(TINY, served.sha256)]
    assert sha256_of(v.main_path) == served.sha256
    assert (v.architecture, v.parameters, v.revision) == ("llama", 14_160_960, fake_hub.repos[TINY_REPO].commit)
    assert v.provenance["pulled_from"] == f"{fake_hub.endpoint}/{TINY_REPO}"
    assert result.downloaded == served.size and result.files == {TINY: "downloaded"}
    assert partials() == []
    assert pull_rows(db) == [(f"hf.co/{TINY_REPO}:q4_1", "done", served.size, None)]


def test_progress_events_tell_the_whole_story(fake_hub, db):
    events: list[PullEvent] = []
    pull(f"hf.co/{TINY_REPO}", db=db, on_progress=events.append)
    kinds = [e.event for e in events if e.event != "progress"]
    assert kinds == ["plan", "start", "file_done", "done"]
    progress = [e for e in events if e.event == "progress"]
    assert progress and all(a.done <= b.done for a, b in zip(progress, progress[1:]))
    assert (progress[-1].done, progress[-1].total, progress[-1].eta) == (progress[-1].total, fake_hub.file(TINY_REPO, TINY).size, 0.0)
    assert all(e.rate > 0 for e in progress)
    plan = events[0]
    assert plan.plan["files"][0]["path"] == TINY and plan.total == progress[-1].total
    assert events[-2].status == "downloaded" and events[-2].sha256 == fake_hub.file(TINY_REPO, TINY).sha256
    assert events[-1].status == "pulled" and events[-1].variant == f"hf.co/{TINY_REPO}:q4_1"
    for e in events:
        json.dumps(e.to_dict())


def test_a_second_pull_of_the_same_commit_fetches_nothing(fake_hub, db):
    pull(f"hf.co/{TINY_REPO}", db=db)
    sent = fake_hub.bytes_sent()
    result = pull(f"hf.co/{TINY_REPO}", db=db)
    assert result.status == "up to date" and fake_hub.bytes_sent() == sent


def test_split_parts_download_in_parallel(fake_hub, db):
    # Part 1 stalls after 1 MB; parts 2 and 3 must still finish meanwhile.
    fake_hub.fault("stall", SPLIT[0], at=1_000_000)
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=pull(f"hf.co/{GGUF_REPO}:q4_k_m", db=db)))
    thread.start()
    try:
        for part in SPLIT[1:]:
            size = fake_hub.file(GGUF_REPO, part).size
            wait_for(lambda: any(t.sent == size and t.finished for t in fake_hub.transfers(part)), what=part)
        assert fake_hub.bytes_sent(SPLIT[0]) == 1_000_000
    finally:
        fake_hub.release()
        thread.join(60)
    assert [f.relpath for f in box["result"].variant.files] == SPLIT
    # The stalled part was resumed, not sent again.
    assert [t.start for t in fake_hub.transfers(SPLIT[0])] == [0, 1_000_000]
    assert box["result"].variant.parameters == 134_515_008


def test_safetensors_pull_checks_git_files_by_blob_id(fake_hub, db):
    result = pull(f"hf.co/{SOURCE_REPO}", db=db)
    v = result.variant
    assert (v.format, v.quant, v.architecture) == ("safetensors", "bf16", "llama")
    assert [f.relpath for f in v.files][:2] == ["config.json", "generation_config.json"]
    config = next(f for f in v.files if f.relpath == "config.json")
    assert blobs.blob_path(config.sha256).read_bytes() == fake_hub.file(SOURCE_REPO, "config.json").source


# --- faults ------------------------------------------------------------------


def test_a_cut_connection_resumes_from_its_offset(fake_hub, db):
    cut = 4_000_000
    fake_hub.fault("cut", TINY, at=cut)
    events = []
    result = pull(f"hf.co/{TINY_REPO}", db=db, on_progress=events.append)
    size = fake_hub.file(TINY_REPO, TINY).size
    assert [(t.start, t.range) for t in fake_hub.transfers(TINY)] == [(0, None), (cut, f"bytes={cut}-")]
    assert fake_hub.bytes_sent(TINY) == size
    assert sha256_of(result.variant.main_path) == fake_hub.file(TINY_REPO, TINY).sha256
    retry = next(e for e in events if e.event == "retry")
    assert retry.done == cut and retry.message.startswith("connection dropped")


def test_corrupted_bytes_are_caught_and_the_partial_removed(fake_hub, db):
    fake_hub.fault("corrupt", TINY, at=5_000_000)
    with pytest.raises(BadModelFile) as caught:
        pull(f"hf.co/{TINY_REPO}", db=db)
    expected = fake_hub.file(TINY_REPO, TINY).sha256
    assert caught.value.message.startswith(f"{TINY} from {TINY_REPO} is corrupt: its sha256 is ")
    assert caught.value.message.endswith(f"the Hub says {expected[:16]}...; the partial download was removed")
    assert partials() == [] and list_variants(db) == [] and blobs.list_blobs() == {}
    assert pull_rows(db)[-1][1] == "failed"
    assert pull(f"hf.co/{TINY_REPO}", db=db).status == "pulled"


@pytest.mark.parametrize("path", ["config.json", "tokenizer.json"])  # read while resolving / downloaded
def test_a_corrupted_git_file_is_caught_by_its_blob_id(fake_hub, db, path):
    fake_hub.fault("corrupt", path, at=3)
    with pytest.raises(BadModelFile, match=f"{path} from {SOURCE_REPO} is corrupt: its git blob id is"):
        pull(f"hf.co/{SOURCE_REPO}", db=db)
    assert list_variants(db) == []


@pytest.mark.parametrize("on", ["resolve", "cdn"])
def test_500_then_success(fake_hub, db, on):
    fake_hub.fault("status", TINY, times=2, status=500, on=on)
    events = []
    result = pull(f"hf.co/{TINY_REPO}", db=db, on_progress=events.append)
    assert result.status == "pulled"
    assert [e.message for e in events if e.event == "retry"] == ["the server answered 500"] * 2


def test_a_404_file_fails_at_once(fake_hub, db):
    fake_hub.fault("status", TINY, times=None, status=404)
    with pytest.raises(HubError) as caught:
        pull(f"hf.co/{TINY_REPO}", db=db)
    assert caught.value.message.startswith(f"{TINY} is not in {TINY_REPO} at ")
    assert sum(1 for m, path, _ in fake_hub.requests if path.endswith(TINY)) == 1


def test_a_401_file_says_how_to_log_in(fake_hub, db):
    fake_hub.fault("status", TINY, times=None, status=401)
    with pytest.raises(HubError) as caught:
        pull(f"hf.co/{TINY_REPO}", db=db)
    assert caught.value.message.startswith(f"the Hub refused access to {TINY_REPO} (401)")
    assert "hf auth login" in caught.value.hint


def test_retries_give_up_and_keep_the_partial(fake_hub, db):
    fake_hub.fault("cut", TINY, times=None, at=3_000_000)  # every request dies at 3 MB
    with pytest.raises(HubError) as caught:
        pull(f"hf.co/{TINY_REPO}", db=db, retries=2)
    size = fake_hub.file(TINY_REPO, TINY).size
    assert caught.value.message.startswith(f"gave up on {TINY} after 3 failed attempts in a row (connection dropped: ")
    assert caught.value.message.endswith(f"; {units.size(3_000_000)} of {units.size(size)} are kept")
    assert caught.value.hint == "run the same command to resume"
    assert (get_paths().partials / f"sha256-{fake_hub.file(TINY_REPO, TINY).sha256}.partial").stat().st_size == 3_000_000
    assert list_variants(db) == []


def test_max_rate_caps_the_bandwidth(fake_hub, db):
    cap = parse_rate("32M")
    pull(f"hf.co/{GGUF_REPO}:q8_0", db=db, max_rate=cap)
    [transfer] = fake_hub.transfers(Q8)
    assert transfer.sent == fake_hub.file(GGUF_REPO, Q8).size
    # Measured by the server; generous, since socket buffers hide a few MB.
    print(f"server-measured rate {transfer.rate / cap:.2f} x the cap")
    assert transfer.rate < 1.5 * cap


def test_not_enough_disk_space_is_said_before_anything_is_fetched(fake_hub, db):
    fake_hub.fault("size", TINY, size=10**15)
    with pytest.raises(StoreError) as caught:
        pull(f"hf.co/{TINY_REPO}", db=db)
    assert caught.value.message.startswith(f"not enough disk space for hf.co/{TINY_REPO}: it needs {units.size(10**15)}, ")
    assert f"free in {get_paths().data}" in caught.value.message
    assert fake_hub.bytes_sent() == 0


# --- already there -------------------------------------------------------------


def test_a_blob_with_the_same_sha256_is_indexed_not_downloaded(fake_hub, db, smollm2_gguf):
    blobs.add_file(smollm2_gguf, link=True)
    result = pull(f"hf.co/{GGUF_REPO}:q4_1", db=db)
    assert result.files == {"SmolLM2-135M-Instruct-Q4_1.gguf": "present"}
    assert result.downloaded == 0 and fake_hub.bytes_sent() == 0
    assert result.variant.revision == fake_hub.repos[GGUF_REPO].commit


def test_a_file_in_the_hf_cache_is_hardlinked(fake_hub, db, tmp_path):
    from huggingface_hub import hf_hub_download

    cached = hf_hub_download(TINY_REPO, TINY, cache_dir=str(tmp_path / "hf-home" / "hub"), endpoint=fake_hub.endpoint)
    fake_hub.reset()
    events = []
    result = pull(f"hf.co/{TINY_REPO}", db=db, on_progress=events.append)
    assert result.files == {TINY: "linked"} and fake_hub.bytes_sent() == 0
    assert result.variant.main_path.stat().st_ino == (tmp_path / "hf-home" / "hub").joinpath(
        f"models--test-org--SmolLM2-tiny-GGUF/blobs/{fake_hub.file(TINY_REPO, TINY).sha256}").stat().st_ino
    assert any(e.event == "verify" for e in events)
    assert cached.endswith(TINY)


def test_a_damaged_hf_cache_file_is_downloaded_instead(fake_hub, db, tmp_path):
    sha = fake_hub.file(TINY_REPO, TINY).sha256
    cached = tmp_path / "hf-home" / "hub" / "models--test-org--SmolLM2-tiny-GGUF" / "blobs" / sha
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\0" * fake_hub.file(TINY_REPO, TINY).size)
    result = pull(f"hf.co/{TINY_REPO}", db=db)
    assert result.files == {TINY: "downloaded"} and fake_hub.bytes_sent(TINY) == cached.stat().st_size


# --- offline -------------------------------------------------------------------


def test_offline_answers_from_the_index(fake_hub, db):
    pull(f"hf.co/{TINY_REPO}", db=db)
    fake_hub.reset()
    result = pull(f"hf.co/{TINY_REPO}:q4_1", db=db, offline=True)
    assert result.status == "installed" and result.variant.quant == "q4_1"
    assert fake_hub.requests == []


def test_offline_says_what_is_missing(fake_hub, db, monkeypatch):
    pull(f"hf.co/{GGUF_REPO}:q8_0", db=db)
    fake_hub.fault("cut", TINY, at=2_000_000)
    with pytest.raises(HubError):
        pull(f"hf.co/{TINY_REPO}", db=db, retries=0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError) as caught:
        pull(f"hf.co/{GGUF_REPO}:q4_1", db=db)
    assert caught.value.message == f"offline: hf.co/{GGUF_REPO}:q4_1 is not installed"
    assert caught.value.hint.endswith(f"; installed: hf.co/{GGUF_REPO}:q8_0")
    with pytest.raises(HubError) as caught:
        pull(f"hf.co/{TINY_REPO}", db=db)
    size = fake_hub.file(TINY_REPO, TINY).size
    assert caught.value.message == f"offline: hf.co/{TINY_REPO} is not installed ({units.size(2_000_000)} of {units.size(size)} downloaded so far)"


# --- rates -------------------------------------------------------------------


@pytest.mark.parametrize("text, rate", [
    ("500K", 500 * 1024), ("5M", 5 * 1024**2), ("1.5MB/s", 1.5 * 1024**2), ("2g", 2 * 1024**3), ("1000", 1000.0),
])
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text, message", [
    ("fast", "cannot read the rate 'fast'"),
    ("0", "the rate must be above zero, not '0'"),
])
def test_parse_rate_refuses(text, message):
    with pytest.raises(InvalidReference) as caught:
        parse_rate(text)
    assert caught.value.message == message
