"""Reading and writing safetensors files one tensor at a time.

The format is small (an 8-byte header length, a JSON header of names, dtypes,
shapes and byte offsets, then the raw little-endian bytes), so localq reads and
writes it itself: a reader that hands out one tensor at a time from a memory
map, and a writer that lays out the header first and then streams each tensor
in, so converting a model never holds more than one tensor in memory.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from localq.errors import BadModelFile

# safetensors dtype -> (numpy dtype of the stored bytes, bytes per element)
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # numpy has no bfloat16: kept as its bit pattern
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
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
        dt = _DTYPES[self.dtype]
        count = int(np.prod(self.shape)) if self.shape else 1
        mm = np.memmap(self.path, dtype=dt, mode="r", offset=self.start, shape=(count,))
        return mm.reshape(self.shape)

    def as_float32(self) -> np.ndarray:
        """The values as float32 (BF16 widened exactly); F32 data is the read-only memory map itself, not a copy."""
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
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def encode(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values as the stored array of ``dtype`` (F32, F16 or BF16)."""
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
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, dtype, shape in specs:
        nbytes = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize if shape else _DTYPES[dtype].itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep the tensor data 8-byte aligned
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(blob)))
        out.write(blob)
        for i, (name, dtype, shape) in enumerate(specs):
            arr = produce(name)
            if tuple(arr.shape) != tuple(shape) or arr.dtype.itemsize != _DTYPES[dtype].itemsize:
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
