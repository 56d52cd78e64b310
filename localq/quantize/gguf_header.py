"""The head of a GGUF file as localq's converter writes it: header, metadata, tensor infos.

GGUF version 3 (llama.cpp's ``docs/gguf.md``), little-endian: the magic ``GGUF``,
the version (u32), the tensor count and the metadata count (u64 each); each
metadata entry as its key (a string: u64 byte length, then UTF-8), its value
type (u32) and its value (an array: item type u32, count u64, the items); then
each tensor's name, dimension count (u32), dimensions (u64 each, innermost
first), ggml type (u32) and data offset (u64, counted from the start of the
data and a multiple of the alignment). The data starts at the next multiple of
the alignment after the head, and each tensor's data is padded to it.

Written here rather than with ``gguf.GGUFWriter``: importing the ``gguf``
package (numpy, yaml, its reader and writer) took 0.06 s of every conversion's
start, and the converter used only this part of it. A test checks that the
bytes are the writer's for the same metadata and tensors.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

ALIGNMENT = 32  # GGUF's default; the converter sets no general.alignment
VERSION = 3

# GGUF metadata value types
UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY = 4, 5, 6, 7, 8, 9
# ggml tensor types the converter writes, and their bytes per value
TENSOR_TYPES = {"F32": (0, 4), "F16": (1, 2), "BF16": (30, 2)}

# metadata arrays of numbers whose item type is not the one Python's type gives (int -> INT32)
ARRAY_TYPES = {"tokenizer.ggml.token_type": INT32, "tokenizer.ggml.scores": FLOAT32}
_NUMBER_FORMATS = {UINT32: "I", INT32: "i", FLOAT32: "f", BOOL: "?"}


def _string(text: str) -> bytes:
    encoded = text.encode("utf-8")
    return struct.pack("<Q", len(encoded)) + encoded


def _item_type(value) -> int:
    """GGUF's type for one array item, as gguf-py's ``GGUFValueType.get_type`` decides it."""
    if isinstance(value, str):
        return STRING
    if isinstance(value, float):
        return FLOAT32
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT32
    raise ValueError(f"no GGUF type for a metadata array item of type {type(value).__name__}")


def _strings(key: str, values: list | tuple) -> bytes:
    """An array of strings' items: each one's u64 byte length, then its UTF-8 (a vocabulary: 50k-250k of them)."""
    try:
        encoded = [v.encode("utf-8") for v in values]
    except AttributeError:
        raise ValueError(f"metadata array {key} mixes item types") from None
    lengths = struct.pack(f"<{len(encoded)}Q", *map(len, encoded))
    parts: list[bytes] = [b""] * (2 * len(encoded))
    parts[0::2] = [lengths[i:i + 8] for i in range(0, len(lengths), 8)]
    parts[1::2] = encoded
    return b"".join(parts)


def _array(key: str, values: list | tuple) -> bytes:
    item = ARRAY_TYPES.get(key) or _item_type(values[0])
    if item == STRING:
        body = _strings(key, values)
    else:
        if key not in ARRAY_TYPES and any(_item_type(v) != item for v in values):
            raise ValueError(f"metadata array {key} mixes item types")
        body = struct.pack(f"<{len(values)}{_NUMBER_FORMATS[item]}", *values)
    return struct.pack("<IIQ", ARRAY, item, len(values)) + body


def _value(key: str, value) -> bytes | None:
    """One metadata value with its type, or None for a value the file leaves out (None, "" or [])."""
    if value is None or (isinstance(value, (str, list, tuple)) and not value):
        return None
    if isinstance(value, bool):
        return struct.pack("<I?", BOOL, value)
    if isinstance(value, int):
        return struct.pack("<II", UINT32, value)
    if isinstance(value, float):
        return struct.pack("<If", FLOAT32, value)
    if isinstance(value, str):
        return struct.pack("<I", STRING) + _string(value)
    if isinstance(value, (list, tuple)):
        return _array(key, value)
    raise ValueError(f"no GGUF type for metadata {key} of type {type(value).__name__}")


def padded(nbytes: int) -> int:
    """``nbytes`` rounded up to the alignment."""
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


def head(architecture: str, metadata: dict, tensors: Iterable[tuple[str, tuple[int, ...], str]]) -> bytes:
    """The file's bytes up to its tensor data, padding included.

    ``metadata`` is written after ``general.architecture``, in its order (its
    own ``general.architecture`` is ignored); ``tensors`` are (name, shape
    outermost first, type name in ``TENSOR_TYPES``) in the order of their data.
    """
    entries = [_string("general.architecture") + _value("general.architecture", architecture)]
    for key, value in metadata.items():
        if key != "general.architecture" and (packed := _value(key, value)) is not None:
            entries.append(_string(key) + packed)
    infos = []
    offset = 0
    for name, shape, kind in tensors:
        type_id, itemsize = TENSOR_TYPES[kind]
        dims = tuple(reversed(shape))
        infos.append(_string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, type_id, offset))
        offset += padded(math.prod(shape) * itemsize)
    out = b"GGUF" + struct.pack("<IQQ", VERSION, len(infos), len(entries)) + b"".join(entries) + b"".join(infos)
    return out + b"\0" * (padded(len(out)) - len(out))
