"""The child process that hashes files for ``blobs.HashInBackground``: ``python -m localq.store.hash_worker FILE...``.

It lowers its own CPU priority to the lowest, hashes each file with
``blobs.sha256_file`` and prints one line of JSON: ``{"sha256": {path: hex}}``,
or ``{"error": {"path": ..., "errno": ..., "message": ...}}`` (status 1) for a
file it could not read. Ctrl-C at the terminal just ends it: the parent decides.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def main(paths: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if hasattr(os, "nice"):
        try:
            os.nice(19)
        except OSError:
            pass
    from localq.errors import BadModelFile
    from localq.store.blobs import sha256_file

    digests = {}
    for path in paths:
        try:
            digests[path] = sha256_file(Path(path))
        except (OSError, BadModelFile) as exc:
            errno_ = getattr(exc, "errno", None) or getattr(exc.__cause__, "errno", None)
            print(json.dumps({"error": {"path": path, "errno": errno_, "message": str(exc)}}), flush=True)
            return 1
    print(json.dumps({"sha256": digests}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
