"""GGUF files that must fail to load, each in its own way (used by the backend and CLI tests)."""

from __future__ import annotations

import os
from pathlib import Path


def truncated_copy(source: Path, target: Path, keep: int = 3_000_000) -> Path:
    """The first ``keep`` bytes of a real model: a download cut short."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read(keep))
    return target


def unknown_architecture(target: Path, architecture: str = "notanarch") -> Path:
    """A structurally valid GGUF whose architecture llama.cpp does not know."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(target), architecture)
    writer.add_block_count(1)
    writer.add_context_length(128)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def sparse_huge(target: Path, weight_bytes: int = 2**40) -> Path:
    """A valid llama GGUF header claiming ``weight_bytes`` of weights, as a sparse file (no disk used)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(target), "llama")
    writer.add_block_count(1)
    writer.add_context_length(4096)
    writer.add_embedding_length(1024)
    writer.add_head_count(8)
    n = weight_bytes // 4
    writer.add_tensor_info("token_embd.weight", (n // 1024, 1024), np.dtype(np.float32), n * 4)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    header = target.stat().st_size
    alignment = 32
    os.truncate(target, (header + alignment - 1) // alignment * alignment + n * 4)
    return target
