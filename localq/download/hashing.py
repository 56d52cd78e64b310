"""Hashing a file as it arrives, on a thread of its own, and checking it against the Hub's digest."""

from __future__ import annotations

import hashlib
import queue
import threading
from typing import TYPE_CHECKING

from localq.errors import BadModelFile

if TYPE_CHECKING:
    from localq.hub import RemoteFile


class Hasher:
    """The sha256 of a file (and its git blob id when that is what the Hub gives),
    computed on a thread of its own so that hashing overlaps the network and the
    disk (hashlib releases the GIL on large buffers)."""

    def __init__(self, remote: RemoteFile):
        self.remote = remote
        self.thread = None
        self.reset()

    def reset(self) -> None:
        """Start again from zero bytes."""
        self.close()
        self.sha256 = hashlib.sha256()
        self.git = hashlib.sha1(b"blob %d\0" % self.remote.size) if not self.remote.sha256 else None
        self.queue: queue.Queue = queue.Queue(maxsize=16)
        self.thread = threading.Thread(target=self._run, daemon=True, name="localq-hash")
        self.thread.start()

    def _run(self) -> None:
        while (data := self.queue.get()) is not None:
            self.sha256.update(data)
            if self.git is not None:
                self.git.update(data)

    def update(self, data: bytes) -> None:
        self.queue.put(data)

    def close(self) -> None:
        """Stop the hashing thread after the bytes it was given."""
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
            self.thread = None

    def check(self, repo_id: str) -> str:
        """The sha256 if the bytes are the Hub's; else BadModelFile."""
        self.close()
        got = self.sha256.hexdigest()
        if self.remote.sha256:
            expected, actual, kind = self.remote.sha256, got, "sha256"
        else:
            expected, actual, kind = self.remote.git_oid, self.git.hexdigest(), "git blob id"
        if expected and actual != expected:
            raise BadModelFile(
                f"{self.remote.path} from {repo_id} is corrupt: its {kind} is {actual[:16]}..., the Hub says "
                f"{expected[:16]}...; the partial download was removed",
                "run the same command to download it again",
            )
        return got
