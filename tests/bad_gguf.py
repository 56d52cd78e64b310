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
    # One whole block, so the header checks pass and only the size is wrong.
    block = {"attn_norm": (1024,), "attn_q": (1024, 1024), "attn_k": (1024, 1024), "attn_v": (1024, 1024),
             "attn_output": (1024, 1024), "ffn_norm": (1024,)}
    extra = 0
    for name, shape in block.items():
        count = shape[0] * (shape[1] if len(shape) > 1 else 1)
        writer.add_tensor_info(f"blk.0.{name}.weight", shape, np.dtype(np.float32), count * 4)
        extra += -(-count * 4 // 32) * 32
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    header = target.stat().st_size
    alignment = 32
    os.truncate(target, (header + alignment - 1) // alignment * alignment + n * 4 + extra)
    return target


def rewritten(source: Path, target: Path, *, kv: dict | None = None, drop: tuple[str, ...] = (),
              tensors=None, data: str = "sparse") -> Path:
    """A copy of the GGUF ``source`` with its header rewritten.

    ``kv`` sets metadata keys: a value, or ``(value, GGUFValueType)`` for a new key
    or a new type (an existing key keeps its type otherwise). ``drop`` removes keys.
    ``tensors(list of [name, ggml_shape, type_id]) -> list`` edits the tensor
    table (a type id the gguf package does not know is written as F32 and then
    patched in place). ``data="copy"`` copies the tensor bytes of tensors whose
    size did not change (the file runs); ``"sparse"`` leaves a hole of the right
    size (for files that must be refused before anything reads their data).
    """
    import gguf
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

    reader = gguf.GGUFReader(str(source))
    arch = kv.get("general.architecture", None) if kv else None
    arch = arch or reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(target), arch)
    kv = {k: v for k, v in (kv or {}).items() if k != "general.architecture"}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name in drop:
            continue
        vtype = GGUFValueType(field.types[0])
        sub = GGUFValueType(field.types[-1]) if vtype == GGUFValueType.ARRAY else None
        value = field.contents()
        if name in kv:
            value = kv.pop(name)
            if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], GGUFValueType):
                value, vtype = value
                sub = GGUFValueType.get_type(value[0]) if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, vtype, sub)
    for name, value in kv.items():
        value, vtype = value if isinstance(value, tuple) else (value, GGUFValueType.get_type(value))
        sub = GGUFValueType.get_type(value[0]) if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, vtype, sub)

    table = [[t.name, tuple(int(d) for d in t.shape), int(t.tensor_type)] for t in reader.tensors]
    sources = {t.name: t for t in reader.tensors}
    if tensors is not None:
        table = tensors(table)
    sizes = []
    for name, shape, type_id in table:
        known = type_id in GGMLQuantizationType._value2member_map_
        raw = GGMLQuantizationType(type_id) if known else GGMLQuantizationType.F32
        block, size = GGML_QUANT_SIZES[raw]
        n = 1
        for d in shape:
            n *= d
        sizes.append(max(size, n // block * size))
        byte_shape = (*reversed(shape[1:]), max(1, shape[0] // block) * size)   # rows in bytes, as the writer wants
        writer.add_tensor_info(name, byte_shape, _u8(), sizes[-1], raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()

    with open(target, "r+b") as out:
        header = out.read()
        for name, shape, type_id in table:   # type ids the gguf package cannot write
            if type_id not in GGMLQuantizationType._value2member_map_:
                key = len(name.encode()).to_bytes(8, "little") + name.encode()
                at = header.index(key) + len(key) + 4 + 8 * len(shape)
                out.seek(at)
                out.write(type_id.to_bytes(4, "little"))
        alignment = 32
        offset = -(-len(header) // alignment) * alignment
        for (name, _, _), nbytes in zip(table, sizes):
            if data == "copy" and name in sources and int(sources[name].n_bytes) == nbytes:
                out.seek(offset)
                out.write(sources[name].data.tobytes())
            offset += -(-nbytes // alignment) * alignment
        out.truncate(offset)
    return target


def _u8():
    import numpy as np

    return np.dtype(np.uint8)


def patched(source: Path, target: Path, values: dict | None = None, *, tensors: dict | None = None,
            data: str = "sparse") -> Path:
    """A copy of ``source`` with scalar metadata values changed in place (same key, same type).

    Fast (no re-encoding of the vocabulary): the header bytes are copied, each
    key's value is overwritten, and the tensor data is copied (``data="copy"``)
    or left as a hole of the same size (``"sparse"``). ``tensors`` patches
    tensor infos in place: ``{name: {"name": same-length new name, "shape":
    dims (same count), "type": id}}``.
    """
    import struct

    from localq.gguf_info import read_gguf_info

    info = read_gguf_info(source)
    formats = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
    with open(source, "rb") as src:
        header = bytearray(src.read(info.data_offset))
        for key, value in (values or {}).items():
            marker = len(key.encode()).to_bytes(8, "little") + key.encode()
            at = header.index(marker) + len(marker)
            (vtype,) = struct.unpack_from("<I", header, at)
            struct.pack_into(formats[vtype], header, at + 4, value)
        for name, change in (tensors or {}).items():
            marker = len(name.encode()).to_bytes(8, "little") + name.encode()
            at = header.rindex(marker)   # the tensor infos come after the metadata
            if "name" in change:
                assert len(change["name"]) == len(name)
                header[at + 8:at + len(marker)] = change["name"].encode()
            at += len(marker)
            (n_dims,) = struct.unpack_from("<I", header, at)
            if "shape" in change:
                assert len(change["shape"]) == n_dims
                struct.pack_into(f"<{n_dims}Q", header, at + 4, *change["shape"])
            if "type" in change:
                struct.pack_into("<I", header, at + 4 + 8 * n_dims, change["type"])
        with open(target, "wb") as out:
            out.write(header)
            if data == "copy":
                while chunk := src.read(1 << 22):
                    out.write(chunk)
            else:
                out.truncate(info.size_bytes)
    return target


def with_template(source: Path, target: Path, template: str, *, data: str = "sparse") -> Path:
    """A copy of ``source`` whose chat template is ``template`` (data copied, or a hole).

    The new template is padded with a Jinja comment to the old one's byte length
    and written in place, so nothing else in the file moves.
    """
    import struct

    from localq.gguf_info import read_gguf_info

    info = read_gguf_info(source)
    old = info.chat_template.encode()
    new = template.encode()
    if len(new) + 5 > len(old):
        raise ValueError(f"a template of {len(new)} bytes does not fit in place of {len(old)}")
    new += b"{#" + b" " * (len(old) - len(new) - 4) + b"#}"
    with open(source, "rb") as src, open(target, "wb") as out:
        header = bytearray(src.read(info.data_offset))
        at = header.index(struct.pack("<Q", len(old)) + old) + 8
        header[at:at + len(old)] = new
        out.write(header)
        if data == "copy":
            while chunk := src.read(1 << 22):
                out.write(chunk)
        else:
            out.truncate(info.size_bytes)
    return target
