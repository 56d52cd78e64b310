"""GPU memory at load: how much a model needs, a check before loading, and out-of-memory as an error.

Loading a model the GPU cannot hold must end in a one-line error, not a dead
process or a half-loaded model. Two guards:

- before anything is copied to the GPU, ``check_fits`` compares the estimate
  (``needed_bytes``: the weights as they will sit on the device, the static KV
  cache, one prefill chunk's logits) with what ``torch.cuda.mem_get_info``
  reports free;
- the estimate can be short (another program allocates meanwhile, the
  allocator's own overhead), so ``out_of_memory`` turns the allocator's error
  (CUDA's ``torch.OutOfMemoryError``, or the CPU allocator's failure) into the
  same kind of message.

The weights' size is read from the safetensors headers, without loading a
tensor: packed INT4 codes (uint8) keep their size on the device (every packing
localq uses holds 4 bits a weight), floating-point tensors are loaded in bf16.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from localq.errors import BackendError
from localq.units import GiB

FLOAT_BYTES_ON_DEVICE = 2            # floating-point weights, the KV cache and activations are bf16
_ITEM_BYTES = {"U8": 1, "I8": 1, "BOOL": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4,
               "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_FLOATS = ("F16", "BF16", "F32", "F64")


@dataclass(frozen=True)
class MemoryNeed:
    """What one load needs on the device, in bytes."""

    weights: int
    kv_cache: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations


def weights_on_device(model_dir: Path) -> int:
    """Bytes the weights of ``model_dir`` take on the device: INT4 codes as stored, floats in bf16."""
    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= dim
            dtype = entry["dtype"]
            total += count * (FLOAT_BYTES_ON_DEVICE if dtype in _FLOATS else _ITEM_BYTES.get(dtype, 4))
    return total


def needed_bytes(model_dir: Path, cfg, n_ctx: int, prefill_chunk: int) -> MemoryNeed:
    """The estimate for loading ``model_dir`` (its ``ModelConfig`` ``cfg``) with an ``n_ctx``-token cache."""
    kv = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * n_ctx * FLOAT_BYTES_ON_DEVICE
    logits = min(prefill_chunk, n_ctx) * cfg.vocab_size * 4          # float32 logits of one prefill chunk
    return MemoryNeed(weights_on_device(model_dir), kv, logits)


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def _free_of(free: int, total: int) -> str:
    return f"{free / GiB:.1f} of {total / GiB:.1f} GiB free"


GPU_HINT = ("pick a smaller model or a more compact quant (int4-g128 is the smallest INT4), a smaller --ctx, "
            "close other GPU programs, or run a GGUF quant with llama.cpp (`localq recommend MODEL` names one)")
HOST_HINT = "pick a smaller model or a more compact quant, a smaller --ctx, or close other programs"


def check_fits(name: str, need: MemoryNeed, free: int, total: int, n_ctx: int) -> None:
    """BackendError when ``need`` is more than the ``free`` bytes of a ``total``-byte GPU."""
    if need.total > free:
        raise BackendError(
            f"not enough GPU memory for {name}: it needs about {_gib(need.total)} (weights {_gib(need.weights)}, "
            f"KV cache for {n_ctx} tokens {_gib(need.kv_cache)}), {_free_of(free, total)}", GPU_HINT)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocator's out-of-memory error: CUDA's (``torch.OutOfMemoryError``) or the CPU's."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def out_of_memory(name: str, kind: str, device: str, need: MemoryNeed | None,
                  free: int | None, total: int | None, n_ctx: int) -> BackendError:
    """The one-line error for an allocation (of error class ``kind``) that failed loading ``name`` on ``device``."""
    where = "GPU" if device == "cuda" else "host"
    needs = f"; it needs about {_gib(need.total)}" if need is not None else ""
    room = f", {_free_of(free, total)}" if free is not None and total is not None else ""
    return BackendError(f"out of {where} memory loading {name} with a {n_ctx}-token context{needs}{room} ({kind})",
                        GPU_HINT if device == "cuda" else HOST_HINT)
