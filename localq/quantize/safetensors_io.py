"""Reading and writing safetensors files one tensor at a time.

The format is small (an 8-byte header length, a JSON header of names, dtypes,
shapes and byte offsets, then the raw little-endian bytes), so localq reads and
writes it itself: a reader that hands out one tensor at a time from a memory
map, and a writer that lays out the header first and then streams each tensor
in, so converting a model never holds more than one tensor in memory.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from localq.errors import BadModelFile

if TYPE_CHECKING:  # numpy is imported where values are read: copying a tensor's bytes needs none
    import numpy as np

# safetensors dtype -> (numpy's name for the stored bytes, bytes per element)
_DTYPES = {
    "F64": ("<f8", 8),
    "F32": ("<f4", 4),
    "F16": ("<f2", 2),
    "BF16": ("<u2", 2),  # numpy has no bfloat16: kept as its bit pattern
    "I64": ("<i8", 8),
    "I32": ("<i4", 4),
    "I16": ("<i2", 2),
    "I8": ("i1", 1),
    "U8": ("u1", 1),
    "BOOL": ("?", 1),
}


@dataclass(frozen=True)
class StoredTensor:
    """One tensor of a safetensors file: where its bytes are, not the bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    start: int  # absolute offset in the file
    nbytes: int

    def raw(self) -> np.ndarray:
        """The stored values as numpy holds them (BF16 as uint16 bit patterns), memory-mapped."""
        import numpy as np

        count = self.nbytes // _DTYPES[self.dtype][1]
        mm = np.memmap(self.path, dtype=np.dtype(_DTYPES[self.dtype][0]), mode="r", offset=self.start, shape=(count,))
        return mm.reshape(self.shape)

    def read_bytes(self) -> bytes:
        """The stored bytes, read (for a tensor whose bits are kept, in another order)."""
        with open(self.path, "rb") as f:
            data = os.pread(f.fileno(), self.nbytes, self.start)
        if len(data) != self.nbytes:
            raise BadModelFile(f"{self.path.name} ends before its tensor data does", "download the shard again")
        return data

    def as_float32(self) -> np.ndarray:
        """The values as float32 (BF16 widened exactly); F32 data is the read-only memory map itself, not a copy."""
        import numpy as np

        data = self.raw()
        if self.dtype == "BF16":
            return (data.astype(np.uint32) << 16).view(np.float32)
        return data.astype(np.float32, copy=False)


def read_header(path: Path) -> list[StoredTensor]:
    """The tensors of one safetensors file, checked against the file's size."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BadModelFile(f"{path.name} is not a safetensors file: it is {size} bytes long", "download it again")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 * 1024 * 1024):
            raise BadModelFile(f"{path.name} is not a safetensors file or is truncated (header of {n} bytes)", "download it again")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadModelFile(f"{path.name} has a corrupt safetensors header", "download it again") from exc
    base = 8 + n
    tensors = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry.get("dtype")
        if dtype not in _DTYPES:
            raise BadModelFile(f"{path.name}: tensor {name} has dtype {dtype}, which localq cannot read")
        begin, end = entry["data_offsets"]
        if base + end > size:
            raise BadModelFile(
                f"{path.name} is truncated: tensor {name} ends at byte {base + end}, the file has {size}",
                "download the shard again",
            )
        tensors.append(StoredTensor(name, dtype, tuple(entry["shape"]), path, base + begin, end - begin))
    return tensors


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even, NaN kept NaN."""
    import numpy as np

    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def encode(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values as the stored array of ``dtype`` (F32, F16 or BF16)."""
    import numpy as np

    if dtype == "F32":
        return np.ascontiguousarray(x, dtype="<f4")
    if dtype == "F16":
        return np.ascontiguousarray(x, dtype="<f2")
    if dtype == "BF16":
        return to_bf16_bits(x)
    raise ValueError(dtype)


def write_streaming(
    path: Path,
    specs: list[tuple[str, str, tuple[int, ...]]],
    produce: Callable[[str], np.ndarray],
    metadata: dict[str, str] | None = None,
    on_tensor: Callable[[int, int, str], None] | None = None,
) -> None:
    """Write a safetensors file whose tensors ``produce(name)`` returns one at a time.

    ``specs`` gives each tensor's name, safetensors dtype and shape, in file
    order, so the header can be written first; each produced array must have
    exactly that shape and dtype's item size. The file is fsynced.
    """
    import numpy as np

    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, dtype, shape in specs:
        nbytes = math.prod(shape) * _DTYPES[dtype][1]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep the tensor data 8-byte aligned
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(blob)))
        out.write(blob)
        for i, (name, dtype, shape) in enumerate(specs):
            arr = produce(name)
            if tuple(arr.shape) != tuple(shape) or arr.dtype.itemsize != _DTYPES[dtype][1]:
                raise ValueError(f"{name}: produced {arr.dtype}{arr.shape}, header says {dtype}{shape}")
            out.write(np.ascontiguousarray(arr).tobytes())
            if on_tensor:
                on_tensor(i + 1, len(specs), name)
        out.flush()
        os.fsync(out.fileno())


def list_tensors(files: Iterable[Path]) -> list[StoredTensor]:
    """Every tensor of a set of shards, in shard then header order."""
    found: list[StoredTensor] = []
    for f in files:
        found.extend(read_header(f))
    return found
