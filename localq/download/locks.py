"""The per-file lock: a second process pulling the same file waits for the first."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from localq.errors import StoreError


class FileLock:
    """An exclusive lock on a file (flock; msvcrt on Windows), released when the process dies."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = None

    def try_acquire(self) -> bool:
        """True when taken; False when another process holds it; StoreError when it cannot be taken at all.

        Only "held" answers wait: a filesystem that has no locks (ENOLCK on some
        network mounts) is reported, not waited on for ever.
        """
        self.handle = self.handle or open(self.path, "a+b")
        try:
            if os.name == "nt":
                import msvcrt

                msvcrt.locking(self.handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                # The holder before us may have removed the file: a lock on that
                # unlinked inode excludes no one, so take the new file's instead.
                try:
                    current = os.stat(self.path).st_ino
                except FileNotFoundError:
                    current = None
                if current != os.fstat(self.handle.fileno()).st_ino:
                    self.release()
                    return False
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK):
                return False
            self.release()
            raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}",
                             "the filesystem may not support file locks (a network mount?); "
                             "set LOCALQ_HOME to a local disk") from exc
        return True

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing releases the lock
            self.handle = None

    def remove(self) -> None:
        """Delete the lock file while holding it (POSIX; Windows cannot delete open files)."""
        if os.name != "nt":
            self.path.unlink(missing_ok=True)
