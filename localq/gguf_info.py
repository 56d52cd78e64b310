"""GGUF metadata: what a model file is, read from its header alone.

(Over 400 lines: the reader of one binary format (typed values, strings, arrays, tensor
descriptions, each bounded against hostile files) and the facts derived from it; the
checks llama.cpp would assert on are in gguf_checks.py.)

A GGUF file is a small header, a list of typed key/value pairs (architecture
numbers, tokenizer, chat template), a list of tensor descriptions (name, shape,
type, offset) and then the tensor data, aligned. ``read_gguf_info`` walks the
first three parts itself with ``struct`` over a read-only memory map, so a
70 GB model costs a few megabytes of reading, and never touches tensor data.

Why our own walk instead of ``gguf.GGUFReader``: the reader trusts the counts
and lengths in the file. A truncated download or a damaged file makes it fail
with obscure numpy errors, or try to allocate whatever a corrupt length field
claims. Here every count and length is checked against the bytes the file
really has (and against sane caps) before it is used, and each problem becomes
a ``BadModelFile`` with one line saying what is wrong. The ``gguf`` package is
still the source of the format's tables: tensor type names and block sizes
(``GGMLQuantizationType``, ``GGML_QUANT_SIZES``) and llama.cpp's file type
names (``LlamaFileType``).

Decisions:
- A path that does not exist raises ``ModelNotFound`` (nothing is there); a
  path that exists but is not a readable, valid GGUF file raises ``BadModelFile``.
- Only GGUF versions 2 and 3 are read (version 1 used 32-bit counts and has not
  been written by llama.cpp since 2023).
- ``rows_not_multiple_of_256`` counts the 2-D tensors whose row length
  (``ne[0]``) is not a multiple of 256. llama.cpp's K-quants pack rows in
  256-wide super-blocks, so quantizing such a model to Q4_K_M and friends gives
  those tensors a fallback type; the recommender warns about it.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from localq.errors import BadModelFile, ModelNotFound
from localq.gguf_checks import load_problems


def gguf_constants():
    """The ``gguf`` package's ``constants`` module (type ids and names, block sizes), loaded on its own.

    ``import gguf.constants`` first runs the package's ``__init__``, which imports
    numpy, yaml and the package's reader and writer: about 0.1 s of `localq ls` or
    `localq quantize` for a few enums. The module imports only the standard
    library, so it is loaded from the package's directory under a private name
    (its enums are used here for names and sizes only, never mixed with the
    package's). Without the package's files where expected, or when the module cannot
    load on its own, the package is imported.
    """
    import importlib.util
    import sys

    name = "localq._gguf_constants"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("gguf")
    path = Path(spec.submodule_search_locations[0]) / "constants.py" if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        import gguf.constants

        return gguf.constants
    own = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(own)
    sys.modules[name] = module
    try:
        own.loader.exec_module(module)
    except Exception:  # another gguf whose constants need the package (a relative import): load it whole
        del sys.modules[name]
        import gguf.constants

        return gguf.constants
    return module

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
HEADER_BYTES = 24                 # magic 4, version 4, tensor count 8, kv count 8
DEFAULT_ALIGNMENT = 32            # used when general.alignment is absent
MAX_TENSORS = 1_000_000           # the largest real models have a few thousand
MAX_KV = 100_000                  # real files have tens
MAX_KEY_BYTES = 65_535            # the GGUF spec's limit for key names
MAX_STRING_BYTES = 64 * 2**20     # chat templates are kilobytes; 64 MiB is absurd already
MAX_ARRAY_LEN = 2**26             # vocabularies and merge lists are below a million
MAX_ARRAY_DEPTH = 4               # arrays of arrays are legal; deeper nesting is not real
MAX_DIMS = 4                      # GGML_MAX_DIMS
MIN_KV_BYTES = 13                 # key length 8 + value type 4 + a 1-byte value
MIN_TENSOR_INFO_BYTES = 24        # name length 8 + n_dims 4 + type 4 + offset 8
KEPT_ARRAY_LEN = 16               # arrays up to this long keep their values in ``metadata``
KEPT_NUMBER_ARRAY_LEN = 512       # numbers per layer (head counts ...) are kept up to LLAMA_MAX_LAYERS
K_QUANT_BLOCK = 256               # QK_K: the super-block width of llama.cpp's K-quants

REDOWNLOAD_HINT = "re-download or re-import it"

# GGUF value type id -> (struct format, byte size) for the fixed-size types.
_SCALAR_FORMATS = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9
_VALUE_TYPE_NAMES = {
    0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32", 6: "FLOAT32",
    7: "BOOL", 8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64", 12: "FLOAT64",
}


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor's description from the tensor info section (no data is read)."""

    name: str
    shape: tuple[int, ...]        # ggml order: shape[0] (ne[0]) is the row length
    type_id: int
    type_name: str                # "Q4_1", "F32", ...
    offset: int                   # absolute byte offset of its data in the file
    n_elements: int
    n_bytes: int


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF model file is: identity, size, quantization, architecture, tokenizer."""

    path: Path
    size_bytes: int                         # on disk
    gguf_version: int
    tensor_count: int
    kv_count: int
    alignment: int
    data_offset: int                        # where tensor data starts
    architecture: str | None                # general.architecture: "llama", "qwen2" ...
    name: str | None                        # general.name
    file_type: str | None                   # llama.cpp name of general.file_type: "Q4_1", "Q4_K_M"
    file_type_id: int | None
    parameter_count: int                    # sum of all tensors' element counts
    tensor_bytes: int                       # sum of all tensors' data sizes
    bits_per_weight: float                  # tensor_bytes * 8 / parameter_count
    quant_mix: dict[str, dict[str, int]]    # type name -> {count, n_elements, bytes}, largest first
    matrix_tensor_count: int                # 2-D tensors (the weights that get quantized)
    rows_not_multiple_of_256: int           # of those, rows K-quants cannot pack
    context_length: int | None
    block_count: int | None                 # layers
    embedding_length: int | None
    feed_forward_length: int | None
    head_count: int | None
    head_count_kv: int | None
    head_dim: int | None                    # attention.key_length, else embedding / heads
    vocab_size: int | None                  # {arch}.vocab_size, else the token list's length
    expert_count: int | None                # mixture-of-experts models only
    expert_used_count: int | None
    rope_dimension_count: int | None
    rope_freq_base: float | None
    rope_scaling_type: str | None
    rope_scaling_factor: float | None
    tokenizer_model: str | None             # tokenizer.ggml.model: "gpt2", "llama" ...
    bos_token_id: int | None
    eos_token_id: int | None
    chat_template: str | None               # tokenizer.chat_template
    metadata: dict = field(default_factory=dict)  # every other key; long arrays summarized
    load_problems: tuple[str, ...] = ()     # why llama.cpp would refuse or crash on it (gguf_checks)

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        data = asdict(self)
        data["path"] = str(self.path)
        return data


@dataclass
class _Layout:
    """The parsed parts of a GGUF file, before they are summarized."""

    path: Path
    size: int
    version: int
    kv_count: int
    alignment: int
    data_offset: int
    metadata: dict
    tensors: list[GGUFTensor]


class _ArraySummary(dict):
    """A long metadata array, kept as its element type and length only."""


def describe_type(type_id: int) -> str:
    """The name of a ggml tensor type id (``2`` -> ``"Q4_0"``), or ``"unknown(N)"``."""
    try:
        return gguf_constants().GGMLQuantizationType(type_id).name
    except ValueError:
        return f"unknown({type_id})"


def file_type_name(ftype_id: int) -> str:
    """llama.cpp's name for a ``general.file_type`` id (``15`` -> ``"Q4_K_M"``)."""
    LlamaFileType = gguf_constants().LlamaFileType  # noqa: N806 - the enum, under its own name
    guessed = ftype_id != LlamaFileType.GUESSED and ftype_id & LlamaFileType.GUESSED
    try:
        member = LlamaFileType(ftype_id & ~LlamaFileType.GUESSED if guessed else ftype_id)
    except ValueError:
        return f"unknown({ftype_id})"
    name = member.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return f"{name} (guessed)" if guessed else name


def read_gguf_info(path: str | os.PathLike) -> GGUFInfo:
    """Read a GGUF file's metadata and tensor table, checking it is whole and sane.

    Raises ``ModelNotFound`` when nothing is at ``path`` and ``BadModelFile`` when
    it is not a readable, complete GGUF file. Reads only the header part.
    """
    layout = _parse(Path(path))
    return _summarize(layout)


def read_gguf_tensors(path: str | os.PathLike) -> list[GGUFTensor]:
    """The tensor table of a GGUF file, checked as ``read_gguf_info`` checks it."""
    return _parse(Path(path)).tensors


# --- summary -------------------------------------------------------------------


def _summarize(layout: _Layout) -> GGUFInfo:
    meta = layout.metadata
    arch = _str(meta, "general.architecture")
    prefix = f"{arch}." if arch else "\0"  # no architecture: no architecture keys match

    quant_mix: dict[str, dict[str, int]] = {}
    matrices = narrow_rows = 0
    for tensor in layout.tensors:
        mix = quant_mix.setdefault(tensor.type_name, {"count": 0, "n_elements": 0, "bytes": 0})
        mix["count"] += 1
        mix["n_elements"] += tensor.n_elements
        mix["bytes"] += tensor.n_bytes
        if len(tensor.shape) == 2:
            matrices += 1
            if tensor.shape[0] % K_QUANT_BLOCK:
                narrow_rows += 1
    quant_mix = dict(sorted(quant_mix.items(), key=lambda item: -item[1]["bytes"]))
    params = sum(t.n_elements for t in layout.tensors)
    tensor_bytes = sum(t.n_bytes for t in layout.tensors)

    ftype_id = _int(meta, "general.file_type")
    embedding = _int(meta, prefix + "embedding_length")
    heads = _int(meta, prefix + "attention.head_count")
    head_dim = _int(meta, prefix + "attention.key_length")
    if head_dim is None and embedding and heads:
        head_dim = embedding // heads
    vocab = _int(meta, prefix + "vocab_size")
    tokens = meta.get("tokenizer.ggml.tokens")
    if vocab is None and isinstance(tokens, (list, _ArraySummary)):
        vocab = tokens["length"] if isinstance(tokens, _ArraySummary) else len(tokens)

    shown = {k: v for k, v in meta.items() if not k.startswith("tokenizer.chat_template")}
    return GGUFInfo(
        path=layout.path,
        size_bytes=layout.size,
        gguf_version=layout.version,
        tensor_count=len(layout.tensors),
        kv_count=layout.kv_count,
        alignment=layout.alignment,
        data_offset=layout.data_offset,
        architecture=arch,
        name=_str(meta, "general.name"),
        file_type=file_type_name(ftype_id) if ftype_id is not None else None,
        file_type_id=ftype_id,
        parameter_count=params,
        tensor_bytes=tensor_bytes,
        bits_per_weight=round(tensor_bytes * 8 / params, 4) if params else 0.0,
        quant_mix=quant_mix,
        matrix_tensor_count=matrices,
        rows_not_multiple_of_256=narrow_rows,
        context_length=_int(meta, prefix + "context_length"),
        block_count=_int(meta, prefix + "block_count"),
        embedding_length=embedding,
        feed_forward_length=_int(meta, prefix + "feed_forward_length"),
        head_count=heads,
        head_count_kv=_int(meta, prefix + "attention.head_count_kv"),
        head_dim=head_dim,
        vocab_size=vocab,
        expert_count=_int(meta, prefix + "expert_count"),
        expert_used_count=_int(meta, prefix + "expert_used_count"),
        rope_dimension_count=_int(meta, prefix + "rope.dimension_count"),
        rope_freq_base=_float(meta, prefix + "rope.freq_base"),
        rope_scaling_type=_str(meta, prefix + "rope.scaling.type"),
        rope_scaling_factor=_float(meta, prefix + "rope.scaling.factor"),
        tokenizer_model=_str(meta, "tokenizer.ggml.model"),
        bos_token_id=_int(meta, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_int(meta, "tokenizer.ggml.eos_token_id"),
        chat_template=_str(meta, "tokenizer.chat_template"),
        metadata=shown,
        load_problems=tuple(load_problems(meta, layout.tensors)),
    )


def check_loadable(info: GGUFInfo, name: str | None = None) -> GGUFInfo:
    """``info``, or BadModelFile with the first reason llama.cpp would refuse or crash on the file.

    Run before loading and before indexing a file, so a header that would
    abort llama.cpp's process is one line here instead.
    """
    if info.load_problems:
        more = len(info.load_problems) - 1
        extra = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise BadModelFile(f"{name or info.path.name} cannot be loaded: {info.load_problems[0]}{extra}",
                           "the file is damaged or was converted wrongly; re-download or convert it again")
    return info


def _int(meta: dict, key: str) -> int | None:
    """An integer value; per-layer lists (some architectures vary heads by layer) give their max."""
    value = meta.get(key)
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return max(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _float(meta: dict, key: str) -> float | None:
    value = meta.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _str(meta: dict, key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) else None


# --- parsing ---------------------------------------------------------------------


def _parse(path: Path) -> _Layout:
    """Open ``path`` and walk its header, metadata and tensor infos, checking everything."""
    size = _check_file(path)
    try:
        with open(path, "rb") as f:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _Walker(path, buf, size).walk()
    except PermissionError:
        raise _unreadable(path) from None
    except OSError as exc:
        raise BadModelFile(f"cannot read {path}: {exc.strerror or exc}",
                           "check the disk and the file") from None


def _check_file(path: Path) -> int:
    """The size of the regular file at ``path``; a clear error for anything else."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ModelNotFound(f"no such file: {path}",
                            "check the path; `localq ls` lists installed models") from None
    except PermissionError:
        raise _unreadable(path) from None
    except OSError as exc:
        raise BadModelFile(f"cannot read {path}: {exc.strerror or exc}",
                           "check the path and the disk") from None
    if stat.S_ISDIR(info.st_mode):
        raise BadModelFile(f"{path} is a directory, not a GGUF file",
                           "pass the .gguf file inside it")
    if not stat.S_ISREG(info.st_mode):
        raise BadModelFile(f"{path} is not a regular file, so not a GGUF file",
                           "pass a .gguf model file")
    if info.st_size == 0:
        raise BadModelFile(f"{path} is empty (0 bytes), not a GGUF file", REDOWNLOAD_HINT)
    return info.st_size


def _unreadable(path: Path) -> BadModelFile:
    return BadModelFile(f"cannot read {path}: permission denied",
                        "check the file's permissions (chmod u+r) or run localq as its owner")


class _Walker:
    """A bounds-checked cursor over the file's bytes; every read names the section it is in."""

    def __init__(self, path: Path, buf, size: int):
        self.path = path
        self.buf = buf
        self.size = size
        self.pos = 0
        self.section = "header"

    # errors

    def truncated(self) -> BadModelFile:
        return BadModelFile(
            f"{self.path}: truncated GGUF: the file ends at byte {self.size}, "
            f"inside its {self.section}", REDOWNLOAD_HINT)

    def corrupt(self, what: str) -> BadModelFile:
        return BadModelFile(f"{self.path}: corrupt GGUF {self.section}: {what}",
                            f"the file is damaged; {REDOWNLOAD_HINT}")

    # primitive reads

    def unpack(self, fmt: str, n: int):
        if self.pos + n > self.size:
            raise self.truncated()
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self) -> int:
        return self.unpack("<I", 4)

    def u64(self) -> int:
        return self.unpack("<Q", 8)

    def string(self, what: str, cap: int = MAX_STRING_BYTES) -> str:
        start = self.pos
        length = self.u64()
        if length > cap:
            raise self.corrupt(f"{what} at byte {start} claims a length of {length} bytes "
                               f"(at most {cap} is sane)")
        if self.pos + length > self.size:
            raise self.truncated()
        raw = self.buf[self.pos:self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    # the three sections

    def walk(self) -> _Layout:
        tensor_count, kv_count, version = self.header()
        self.section = "metadata"
        metadata = {}
        for index in range(kv_count):
            key = self.string(f"key #{index}", MAX_KEY_BYTES)
            metadata[key] = self.value(self.u32(), f"value of {key!r}", depth=0)
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise self.corrupt(f"general.alignment is {alignment!r}, not a power of two")

        self.section = "tensor info section"
        infos = [self.tensor_info(index) for index in range(tensor_count)]
        data_offset = -(-self.pos // alignment) * alignment
        tensors = self.check_tensor_data(infos, alignment, data_offset)
        return _Layout(self.path, self.size, version, kv_count, alignment, data_offset,
                       metadata, tensors)

    def header(self) -> tuple[int, int, int]:
        magic = bytes(self.buf[:4])
        if magic != GGUF_MAGIC[:len(magic)]:
            raise BadModelFile(
                f"{self.path} is not a GGUF file: wrong magic bytes {magic!r}, expected b'GGUF'",
                "pass a .gguf model file; other formats must be converted first")
        self.pos = len(magic)
        if len(magic) < len(GGUF_MAGIC):
            raise self.truncated()
        version = self.u32()
        if version not in SUPPORTED_VERSIONS:
            if version and version & 0xFFFF == 0:
                detail = "it looks big-endian, which localq does not read"
            else:
                detail = "localq reads versions 2 and 3"
            raise BadModelFile(f"{self.path}: unsupported GGUF version {version} ({detail})",
                               "convert it again with a current llama.cpp")
        tensor_count, kv_count = self.u64(), self.u64()
        if tensor_count >= MAX_TENSORS:
            raise self.corrupt(f"claims {tensor_count} tensors (at most {MAX_TENSORS} is sane)")
        if kv_count >= MAX_KV:
            raise self.corrupt(f"claims {kv_count} metadata keys (at most {MAX_KV} is sane)")
        least = HEADER_BYTES + kv_count * MIN_KV_BYTES + tensor_count * MIN_TENSOR_INFO_BYTES
        if least > self.size:
            raise BadModelFile(
                f"{self.path}: truncated GGUF: its header lists {tensor_count} tensors and "
                f"{kv_count} metadata keys, which need at least {least} bytes; "
                f"the file has {self.size}", REDOWNLOAD_HINT)
        return tensor_count, kv_count, version

    def value(self, type_id: int, what: str, depth: int):
        """One metadata value. Long arrays are skipped over and kept as a summary."""
        if type_id == 6:
            # float32 printed to its real precision: 1e-05, not 9.999999747378752e-06
            return float(f"{self.unpack('<f', 4):.7g}")
        if type_id in _SCALAR_FORMATS:
            return self.unpack(*_SCALAR_FORMATS[type_id])
        if type_id == _STRING:
            return self.string(what)
        if type_id != _ARRAY:
            raise self.corrupt(f"{what} has unknown value type {type_id}")
        if depth >= MAX_ARRAY_DEPTH:
            raise self.corrupt(f"{what} nests arrays more than {MAX_ARRAY_DEPTH} deep")
        element_type, length = self.u32(), self.u64()
        if length > MAX_ARRAY_LEN:
            raise self.corrupt(f"{what} claims an array of {length} items "
                               f"(at most {MAX_ARRAY_LEN} is sane)")
        if length <= KEPT_ARRAY_LEN or (length <= KEPT_NUMBER_ARRAY_LEN and element_type in _SCALAR_FORMATS):
            return [self.value(element_type, what, depth + 1) for _ in range(length)]
        if element_type in _SCALAR_FORMATS:
            end = self.pos + length * _SCALAR_FORMATS[element_type][1]
            if end > self.size:
                raise self.truncated()
            self.pos = end
        elif element_type == _STRING:
            self.skip_strings(length, what)
        else:
            for _ in range(length):
                self.value(element_type, what, depth + 1)
        return _ArraySummary(type="ARRAY",
                             element_type=_VALUE_TYPE_NAMES.get(element_type, str(element_type)),
                             length=length)

    def skip_strings(self, count: int, what: str) -> None:
        """Step over ``count`` strings (a vocabulary) without decoding them: the hot loop."""
        buf, size, pos, unpack_from = self.buf, self.size, self.pos, struct.unpack_from
        for _ in range(count):
            if pos + 8 > size:
                raise self.truncated()
            (length,) = unpack_from("<Q", buf, pos)
            if length > MAX_STRING_BYTES:
                raise self.corrupt(f"a string in {what} at byte {pos} claims a length of "
                                   f"{length} bytes (at most {MAX_STRING_BYTES} is sane)")
            pos += 8 + length
        if pos > size:
            raise self.truncated()
        self.pos = pos

    def tensor_info(self, index: int) -> tuple[str, tuple[int, ...], int, int]:
        name = self.string(f"name of tensor #{index}", MAX_KEY_BYTES)
        n_dims = self.u32()
        if not 1 <= n_dims <= MAX_DIMS:
            raise self.corrupt(f"tensor {name!r} has {n_dims} dimensions (ggml allows 1 to 4)")
        shape = tuple(self.u64() for _ in range(n_dims))
        type_id, offset = self.u32(), self.u64()
        return name, shape, type_id, offset

    def check_tensor_data(self, infos, alignment: int, data_offset: int) -> list[GGUFTensor]:
        """Turn tensor infos into ``GGUFTensor``s, checking types, offsets and that data is there."""
        constants = gguf_constants()
        GGML_QUANT_SIZES, GGMLQuantizationType = constants.GGML_QUANT_SIZES, constants.GGMLQuantizationType  # noqa: N806

        self.section = "tensor info section"
        tensors, seen, data_end = [], set(), 0
        for name, shape, type_id, offset in infos:
            if name in seen:
                raise self.corrupt(f"tensor {name!r} appears twice")
            seen.add(name)
            try:
                block_size, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
            except (ValueError, KeyError):
                raise BadModelFile(
                    f"{self.path}: tensor {name!r} has unknown type id {type_id}",
                    "the file is damaged, or newer than localq's gguf package; "
                    "update gguf or re-download it") from None
            if shape[0] % block_size:
                raise self.corrupt(f"tensor {name!r} has rows of {shape[0]} values, "
                                   f"not a multiple of its type's block of {block_size}")
            if offset % alignment:
                raise self.corrupt(f"tensor {name!r} data offset {offset} is not a multiple "
                                   f"of the alignment {alignment}")
            n_elements = 1
            for dim in shape:
                n_elements *= dim
            n_bytes = n_elements // block_size * block_bytes
            data_end = max(data_end, offset + n_bytes)
            tensors.append(GGUFTensor(name, shape, type_id, GGMLQuantizationType(type_id).name,
                                      data_offset + offset, n_elements, n_bytes))
        available = max(0, self.size - data_offset)
        if data_end > available:
            raise BadModelFile(
                f"{self.path}: truncated GGUF: expected {data_end} bytes of tensor data, "
                f"file has {available}", REDOWNLOAD_HINT)
        return tensors
