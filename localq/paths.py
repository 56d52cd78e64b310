"""Where localq keeps its files.

By default the platform's own places (platformdirs): data (the blob store and
the index), cache (partial downloads), config and logs. ``LOCALQ_HOME`` moves
all of them under one directory, which is what the tests and portable installs
use. ``hf_cache_root`` is where the Hugging Face cache lives, which a pull
reuses and ``localq import --from hf-cache`` reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "localq"


@dataclass(frozen=True)
class Paths:
    data: Path
    cache: Path
    config: Path
    logs: Path

    @property
    def blobs(self) -> Path:
        """Content-addressed model files: ``blobs/sha256-<hex>``."""
        return self.data / "blobs"

    @property
    def partials(self) -> Path:
        """Downloads in progress; they survive restarts so pulls can resume."""
        return self.data / "partials"

    @property
    def index_db(self) -> Path:
        return self.data / "index.db"

    @property
    def log_file(self) -> Path:
        return self.logs / "localq.log"


def get_paths() -> Paths:
    """The locations in force now (read ``LOCALQ_HOME`` on every call)."""
    home = os.environ.get("LOCALQ_HOME")
    if home:
        root = Path(home).expanduser()
        return Paths(root / "data", root / "cache", root / "config", root / "logs")
    import platformdirs

    return Paths(
        Path(platformdirs.user_data_dir(APP_NAME)),
        Path(platformdirs.user_cache_dir(APP_NAME)),
        Path(platformdirs.user_config_dir(APP_NAME)),
        Path(platformdirs.user_log_dir(APP_NAME)),
    )


def hf_cache_root() -> Path:
    """The Hugging Face hub cache, as huggingface_hub finds it: HF_HUB_CACHE, else HF_HOME/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(hf_home) / "hub"
