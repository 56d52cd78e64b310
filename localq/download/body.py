"""Reading an HTTP response body in large blocks, and writing it to a partial file.

``Body`` gathers the TLS records that have arrived into one block (see its
docstring); ``write_behind`` keeps a pull's page cache small; ``write_all`` and
``file_size`` are the appends and the size of an unbuffered partial file.
"""

from __future__ import annotations

import os
from typing import Callable

TLS_RECORD = 16 * 1024       # the most one read of an HTTPS body returns (see Body)


class Body:
    """Reads a response body in blocks of what has arrived, up to a size.

    Over plain HTTP one ``read1`` takes all that the socket holds. Over HTTPS
    one read returns one TLS record, 16 KB at most: a loop around it would pay
    its per-block costs (a write, a hand-over to the hashing thread, a progress
    update) some 60 times per MB, which made localq several times slower than
    curl over HTTPS. So when a read is that small and the socket already has
    more, the records that have arrived are read on into one block. It reads on
    only while the socket has bytes ready, so a stalled connection does not hold
    back what was received, and a failing read keeps what came before it.
    """

    def __init__(self, response):
        self.response = response
        self.ready = _readiness(response)

    def read(self, most: int) -> bytes | bytearray:
        """What has arrived, up to ``most`` bytes (waiting only for the first); empty at the end."""
        first = self.response.read1(most)
        if not 0 < len(first) <= TLS_RECORD or len(first) == most or not self.ready():
            return first
        block = bytearray(most)
        n = len(first)
        block[:n] = first
        while n < most and self.ready():
            try:
                more = self._read_into(memoryview(block)[n:])
            except OSError:
                break  # what was read is kept; the next read meets the failure again
            if not more:
                break
            n += more
        del block[n:]
        return block

    def _read_into(self, view: memoryview) -> int:
        """One read (one system call at most) into ``view``, keeping http.client's count of bytes left."""
        response = self.response
        fp = response.fp
        if fp is None:
            return 0
        if response.chunked or not hasattr(fp, "readinto1"):
            data = response.read1(len(view))
            view[:len(data)] = data
            return len(data)
        if response.length is not None:
            view = view[:response.length]
        n = fp.readinto1(view)
        if response.length is not None:
            response.length -= n
        return n


def _readiness(response) -> Callable[[], bool]:
    """A check that the response's socket has bytes to read now (always False when it cannot tell)."""
    import select

    try:
        fd = response.fp.fileno()
    except (AttributeError, OSError, ValueError):
        return lambda: False
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return lambda: bool(poller.poll(0))
    return lambda: bool(select.select([fd], [], [], 0)[0])


def write_behind(out, start: int, end: int) -> None:
    """Start writing the received bytes up to ``end`` to disk, and drop from the
    page cache those from ``start`` that are on disk already (Linux; elsewhere a
    no-op).

    ``posix_fadvise(DONTNEED)`` starts the writeback of the dirty pages in its
    range and drops the clean ones. Called every :data:`WRITEBACK_EVERY` bytes
    from where the previous call began, it starts the newest stretch and drops
    the one before, written out since. So the fsync at the end finds little to
    do, and a pull holds a few tens of MB of page cache whatever the size of
    the file: it does not push out what other programs have cached, and the
    kernel reuses the pages it just dropped for the next bytes. That matters on
    virtual machines, where filling fresh page cache with 1 MB writes can cost
    several times the copy itself (the large blocks of free memory they need
    have often been handed back to the host): on a 2-core virtual machine about
    one pull in four that kept the whole file cached took 1.5 to 3 times as
    long as usual. The price: the first load of a just-pulled model reads it
    from disk rather than from memory.
    """
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(out.fileno(), start, end - start, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def file_size(out) -> int:
    """Bytes in an open partial (its write position may lag after a truncate)."""
    return os.fstat(out.fileno()).st_size


def write_all(out, data: bytes) -> None:
    """Write every byte (a raw file may take fewer; the next write then says why)."""
    view = memoryview(data)
    while view:
        written = out.write(view)
        view = view[written:]
