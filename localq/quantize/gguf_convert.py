"""Hugging Face safetensors directory -> GGUF (F32, F16 or BF16).

What llama.cpp needs, as its loader reads it: the architecture's hyperparameters
under ``{arch}.*``, the tokenizer (``hf_tokenizer.gguf_tokenizer``), tensors
named as llama.cpp names them (``archs``), Q/K rows of the ``llama``
architecture permuted to its interleaved rotary layout, Llama 3's rope scaling
as a ``rope_freqs`` tensor. Matrices take the requested type, vectors (norms,
biases) stay F32, as llama.cpp computes them in F32.

The checks come first: the architecture (refused by name), the config and the
tokenizer are read before any tensor, so a model localq cannot convert costs
nothing. Then tensors are read from the shards one at a time through a memory
map and written in order, so memory stays near the largest tensor however big
the model. The GGUF (its head by ``gguf_header``) is written under a temporary
name beside the target and renamed when complete.

A tensor whose stored type is the one it gets in the GGUF, and that needs no
rotary permutation, is copied file to file (``os.copy_file_range``: in the
kernel, no pass through numpy). ``lossless`` retargets a plan to the type that
holds every matrix of the checkpoint exactly (its own F32, F16 or BF16), which
``localq quantize`` uses as its intermediate: most tensors are then copied,
and llama.cpp's quantizer reads the checkpoint's own values.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from localq.errors import BadModelFile, LocalqError
from localq.quantize import archs, gguf_header, safetensors_io
from localq.quantize.hf_tokenizer import gguf_tokenizer

if TYPE_CHECKING:  # numpy is imported where values change: a lossless conversion needs none
    import numpy as np

OUT_TYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
FILE_TYPES = {"F32": 0, "F16": 1, "BF16": 32}  # general.file_type, llama.cpp's LLAMA_FTYPE_ALL_F32 / MOSTLY_F16 / MOSTLY_BF16

ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Plan:
    """What a conversion will write, known before any tensor is read."""

    source: Path
    arch: archs.Arch
    config: dict
    out_type: str
    tensors: list[tuple[str, safetensors_io.StoredTensor]]  # (GGUF name, where its bytes are)
    metadata: dict
    shards: list[Path]

    @property
    def largest_tensor_bytes(self) -> int:
        return max(math.prod(t.shape) * 4 for _, t in self.tensors)


def read_config(hf_dir: Path) -> dict:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise LocalqError(f"{hf_dir} has no config.json", "point at a Hugging Face model directory (config.json, tokenizer, *.safetensors)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadModelFile(f"{path} is not valid JSON: {exc}", "download config.json again") from exc


def shard_files(hf_dir: Path) -> list[Path]:
    """The safetensors files of a model: those the index names, else every ``*.safetensors``."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError) as exc:
            raise BadModelFile(f"{index.name} is damaged", "download it again") from exc
        files = [hf_dir / name for name in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise BadModelFile(f"{hf_dir} lacks the shard(s) {', '.join(missing)} that {index.name} lists",
                               "download the missing shards")
        return files
    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise LocalqError(f"{hf_dir} has no .safetensors weights", "localq converts safetensors checkpoints (not .bin or .pth)")
    return files


def model_metadata(config: dict, arch: archs.Arch, out_type: str, name: str) -> dict:
    """The general.* and {arch}.* keys for a config.json."""
    p = arch.gguf + "."
    text = config.get("text_config") or {}

    def get(key, default=None):
        return config.get(key, text.get(key, default))

    heads = get("num_attention_heads")
    hidden = get("hidden_size")
    for key in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads"):
        if get(key) is None:
            raise BadModelFile(f"config.json lacks {key}", "download config.json again")
    head_dim = get("head_dim") or hidden // heads
    meta = {
        "general.type": "model",
        "general.name": name,
        p + "block_count": int(get("num_hidden_layers")),
        p + "context_length": int(get("max_position_embeddings", 4096)),
        p + "embedding_length": int(hidden),
        p + "feed_forward_length": int(get("intermediate_size")),
        p + "attention.head_count": int(heads),
        p + "attention.head_count_kv": int(get("num_key_value_heads") or heads),
        p + "rope.freq_base": float(get("rope_theta", 10000.0)),
        p + "attention.layer_norm_rms_epsilon": float(get("rms_norm_eps", 1e-6)),
    }
    if get("head_dim") is not None:
        meta[p + "attention.key_length"] = meta[p + "attention.value_length"] = int(head_dim)
    meta["general.file_type"] = FILE_TYPES[out_type]
    meta[p + "vocab_size"] = None  # filled from the tokenizer
    meta[p + "rope.dimension_count"] = int(head_dim)
    scaling = get("rope_scaling") or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind == "linear":
        meta[p + "rope.scaling.type"] = "linear"
        meta[p + "rope.scaling.factor"] = float(scaling["factor"])
    elif kind not in (None, "default", "llama3"):
        raise LocalqError(f"cannot convert rope scaling {kind!r}", "localq converts linear and llama3 rope scaling")
    meta["general.quantization_version"] = 2
    return meta


def size_label(n_params: int) -> str:
    """A parameter count as model names give it: 135M, 1.2B, 70B."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n_params >= scale:
            amount = n_params / scale
            return f"{amount:.0f}{suffix}" if amount >= 10 or suffix in "MK" else f"{amount:.1f}{suffix}"
    return str(n_params)


def plan(hf_dir: str | Path, out_type: str = "f16") -> Plan:
    """Check an HF directory and lay out its conversion, reading no tensor data."""
    hf_dir = Path(hf_dir)
    if out_type not in OUT_TYPES:
        raise LocalqError(f"unknown GGUF output type {out_type!r}", f"use one of {', '.join('gguf-' + t for t in OUT_TYPES)}")
    if not hf_dir.is_dir():
        raise LocalqError(f"{hf_dir} is not a directory", "point at a Hugging Face model directory")
    config = read_config(hf_dir)
    arch = archs.by_hf(config)  # an unsupported architecture stops here, before any work
    meta = model_metadata(config, arch, OUT_TYPES[out_type], hf_dir.name)
    meta.update(gguf_tokenizer(hf_dir, config))
    meta[f"{arch.gguf}.vocab_size"] = len(meta["tokenizer.ggml.tokens"])
    shards = shard_files(hf_dir)
    stored = safetensors_io.list_tensors(shards)
    meta["general.size_label"] = size_label(sum(math.prod(t.shape) for t in stored if t.name != "lm_head.weight"
                                                or not config.get("tie_word_embeddings")))
    tied = bool(config.get("tie_word_embeddings", False))
    names = {t.name for t in stored}
    tensors = []
    for t in sorted(stored, key=lambda t: t.name):  # by name, whatever the shard layout
        if t.name == "lm_head.weight" and tied:
            continue
        gguf_name = archs.gguf_tensor_name(t.name)
        if gguf_name is not None:
            tensors.append((gguf_name, t))
    if "model.embed_tokens.weight" not in names:
        raise BadModelFile(f"{hf_dir} has no model.embed_tokens.weight", "download every shard of the model")
    return Plan(hf_dir, arch, config, OUT_TYPES[out_type], tensors, meta, shards)


STORED_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16"}  # safetensors dtype -> the GGUF type that holds it exactly


def lossless(p: Plan) -> Plan:
    """The plan retargeted to the GGUF type that holds every matrix exactly: the checkpoint's own.

    F32, F16 or BF16 when all matrices share it; F32 when they mix types (or are
    stored in another one), as every such value is an F32 exactly except F64's.
    """
    kinds = {t.dtype for _, t in p.tensors if len(t.shape) >= 2}
    out_type = STORED_TYPES.get(kinds.pop(), "f32") if len(kinds) == 1 else "f32"
    meta = dict(p.metadata, **{"general.file_type": FILE_TYPES[OUT_TYPES[out_type]]})
    return dataclasses.replace(p, out_type=OUT_TYPES[out_type], metadata=meta)


def _rope_freqs(plan_: Plan) -> np.ndarray | None:
    scaling = plan_.config.get("rope_scaling") or {}
    if (scaling.get("rope_type") or scaling.get("type")) != "llama3":
        return None
    p = plan_.arch.gguf + "."
    return archs.llama3_rope_factors(
        plan_.metadata[p + "rope.freq_base"], plan_.metadata[p + "rope.dimension_count"], float(scaling["factor"]),
        float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0)),
        int(scaling.get("original_max_position_embeddings", 8192)),
    )


def tensor_type(gguf_name: str, ndim: int, out_type: str) -> str:
    """The GGUF type of one tensor: vectors (norms, biases) stay F32."""
    return "F32" if ndim <= 1 else out_type


def convert(
    hf_dir: str | Path,
    out_path: str | Path,
    out_type: str = "f16",
    *,
    on_progress: ProgressFn | None = None,
    durable: bool = True,
    planned: Plan | None = None,
) -> Plan:
    """Write the GGUF ``out_path`` from an HF directory; returns the plan it followed.

    ``durable`` fsyncs the file before it takes its name; a caller writing a
    throwaway intermediate (quantize's, removed when done) passes False.
    ``planned``: the ``plan(hf_dir, out_type)`` the caller already made (to refuse
    early), so the tokenizer is not read twice.
    """
    p = planned if planned is not None else plan(hf_dir, out_type)
    out_path = Path(out_path)
    n_head = p.metadata[f"{p.arch.gguf}.attention.head_count"]
    n_head_kv = p.metadata[f"{p.arch.gguf}.attention.head_count_kv"]
    rope_freqs = _rope_freqs(p)

    def heads(gguf_name: str) -> int | None:
        """The head count to permute a tensor's rows by, or None when it is stored as it is."""
        stem = gguf_name.split(".")[-2] if p.arch.permute_qk else None
        return n_head if stem == "attn_q" else n_head_kv if stem == "attn_k" else None

    def data(gguf_name: str, stored: safetensors_io.StoredTensor) -> bytes | np.ndarray:
        """A tensor's GGUF bytes, when they are not a plain copy of the stored ones."""
        kind = tensor_type(gguf_name, len(stored.shape), p.out_type)
        n = heads(gguf_name)
        if stored.dtype == kind:  # the stored bits with rows permuted (exact for any type), never cast
            row = stored.nbytes // stored.shape[0]
            view = memoryview(stored.read_bytes())
            return b"".join(view[i * row:(i + 1) * row] for i in archs.rotary_order(stored.shape[0], n))
        import numpy as np

        w = stored.as_float32()
        if n is not None:
            w = archs.rotary_to_gguf(w, n)
        if kind == "F32":
            return np.ascontiguousarray(w, dtype=np.float32)
        return safetensors_io.encode(w, kind)

    entries: list[tuple[str, safetensors_io.StoredTensor | None]] = list(p.tensors)
    if rope_freqs is not None:
        entries.insert(0, ("rope_freqs.weight", None))
    infos = []
    for gguf_name, stored in entries:
        shape = tuple(stored.shape if stored is not None else rope_freqs.shape)
        infos.append((gguf_name, shape, tensor_type(gguf_name, len(shape), p.out_type)))

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "wb") as fout, _Copier() as copier:
            fout.write(gguf_header.head(p.arch.gguf, p.metadata, infos))
            for i, (gguf_name, stored) in enumerate(entries):
                _pad(fout)  # each tensor's data starts aligned, as the tensor infos say
                if stored is None:
                    rope_freqs.tofile(fout)
                elif stored.dtype == tensor_type(gguf_name, len(stored.shape), p.out_type) and heads(gguf_name) is None:
                    copier.copy(stored.path, stored.start, stored.nbytes, fout)
                else:
                    fout.write(data(gguf_name, stored))
                if on_progress:
                    on_progress(i + 1, len(entries), gguf_name)
            _pad(fout)
            fout.flush()
            if durable:
                os.fsync(fout.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


def _pad(fout) -> None:
    """Zeros up to the next multiple of GGUF's alignment (its padding between tensors' data)."""
    fout.write(b"\0" * (-fout.tell() % gguf_header.ALIGNMENT))


class _Copier:
    """Byte ranges of source files appended to an output file, by ``os.copy_file_range`` where it works.

    The kernel copies between the two files' pages, without reading them into
    Python; where it cannot (another filesystem, an old kernel, no such call),
    the range is read and written in chunks. Source files stay open until the
    end, one descriptor each.
    """

    CHUNK = 64 * 1024 * 1024

    def __init__(self):
        self._files: dict[Path, object] = {}
        self._kernel = hasattr(os, "copy_file_range")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for f in self._files.values():
            f.close()

    def copy(self, path: Path, start: int, nbytes: int, fout) -> None:
        src = self._files.get(path)
        if src is None:
            src = self._files[path] = open(path, "rb")
        fout.flush()
        at = fout.tell()
        done = 0
        while self._kernel and done < nbytes:
            try:
                n = os.copy_file_range(src.fileno(), fout.fileno(), nbytes - done, start + done, at + done)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
                    raise
                self._kernel = False
                break
            if n == 0:
                raise BadModelFile(f"{path.name} ends before its tensor data does", "download the shard again")
            done += n
        src.seek(start + done)
        fout.seek(at + done)
        while done < nbytes:
            chunk = src.read(min(self.CHUNK, nbytes - done))
            if not chunk:
                raise BadModelFile(f"{path.name} ends before its tensor data does", "download the shard again")
            fout.write(chunk)
            done += len(chunk)
