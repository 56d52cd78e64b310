"""GGUF -> Hugging Face directory (``config.json``, tokenizer files, ``model.safetensors``).

So that a model held only as a GGUF can feed the formats that start from
safetensors (MLX, torch INT4). Each tensor is dequantized with the ``gguf``
package (``gguf.quants.dequantize``), renamed to its HF name and, for the
``llama`` architecture, its Q/K rows are put back from llama.cpp's interleaved
rotary layout into HF's half-split one. The directory is written under a
temporary name beside the target and renamed into place when complete.

The weights are written as float32 by default when the GGUF is quantized, which
holds the dequantized values exactly; an F16 or BF16 GGUF keeps its type. A
quantized source's rounding error is carried into the safetensors, and
quantizing them again adds a second one: the result says so in ``warnings``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from localq.errors import BadModelFile, LocalqError
from localq.quantize import archs, safetensors_io
from localq.quantize.hf_tokenizer import tokenizer_files

DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_FLOAT_TYPES = {"F32", "F16", "BF16"}

ProgressFn = Callable[[int, int, str], None]  # (tensors done, tensors total, tensor name)


@dataclass
class ExportResult:
    """What ``gguf_to_hf`` wrote."""

    directory: Path
    architecture: str
    dtype: str
    tensors: int
    source_types: dict[str, int]  # GGUF tensor type -> count
    warnings: list[str] = field(default_factory=list)


def read_metadata(reader) -> dict:
    """A GGUF's metadata as plain Python values (strings, numbers, lists)."""
    meta = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            meta[key] = f.contents()
        except (ValueError, TypeError, IndexError):  # a value this gguf version cannot decode: not needed here
            meta[key] = None
    return meta


def hf_config(meta: dict, arch: archs.Arch, tied: bool, dtype: str, rope_scaling: dict | None) -> dict:
    """The HF ``config.json`` for a GGUF's metadata."""
    prefix = arch.gguf + "."
    config: dict = {"architectures": [arch.hf_classes[0]], "model_type": arch.model_type}
    for gkey, hkey in archs.CONFIG_KEYS.items():
        value = meta.get(prefix + gkey)
        if isinstance(value, float):
            value = float(f"{value:.7g}")  # GGUF holds float32: 1e-05, not 9.999999747378752e-06
        if value is not None:
            config[hkey] = value
    if "vocab_size" not in config:
        config["vocab_size"] = len(meta["tokenizer.ggml.tokens"])
    config.setdefault("num_key_value_heads", config["num_attention_heads"])
    config.setdefault("head_dim", config["hidden_size"] // config["num_attention_heads"])
    config.setdefault("rope_theta", 10000.0)
    config["hidden_act"] = "silu"
    config["tie_word_embeddings"] = tied
    config["torch_dtype"] = dtype
    config["rope_scaling"] = rope_scaling
    if arch.model_type == "llama":
        config["attention_bias"] = False
        config["mlp_bias"] = False
    for key, hkey in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("padding", "pad_token_id")):
        if f"tokenizer.ggml.{key}_token_id" in meta:
            config[hkey] = int(meta[f"tokenizer.ggml.{key}_token_id"])
    return config


def _rope_scaling(meta: dict, arch: archs.Arch, rope_freqs: np.ndarray | None) -> dict | None:
    """The HF ``rope_scaling`` a GGUF's metadata (or its ``rope_freqs`` tensor) stands for."""
    prefix = arch.gguf + "."
    kind = meta.get(prefix + "rope.scaling.type")
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(meta[prefix + "rope.scaling.factor"])}
    if rope_freqs is None:
        if kind not in (None, "none"):
            raise LocalqError(f"cannot convert rope scaling {kind!r} to Hugging Face form", "use the original repository")
        return None
    # Llama 3.1+: the GGUF holds the divisors; find the published parameters that give them.
    dim = int(meta.get(prefix + "rope.dimension_count") or rope_freqs.size * 2)
    base = float(meta.get(prefix + "rope.freq_base", 10000.0))
    factor = float(rope_freqs.max())
    for low, high, original in ((1.0, 4.0, 8192),):
        expected = archs.llama3_rope_factors(base, dim, factor, low, high, original)
        if expected.shape == rope_freqs.shape and np.allclose(expected, rope_freqs, rtol=1e-4):
            return {
                "rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                "original_max_position_embeddings": original,
            }
    raise LocalqError("the GGUF's rope_freqs match no Llama 3 rope scaling localq knows", "use the original repository")


def choose_dtype(types: set[str], requested: str | None) -> str:
    """float32 for a quantized GGUF (exact), else its own float type, unless ``requested``."""
    if requested:
        if requested not in DTYPES:
            raise LocalqError(f"unknown dtype {requested!r}", f"use one of {', '.join(DTYPES)}")
        return requested
    matrix_types = types - {"F32"}
    if matrix_types == {"F16"}:
        return "float16"
    if matrix_types == {"BF16"}:
        return "bfloat16"
    return "float32"


def gguf_to_hf(
    gguf_path: str | Path,
    out_dir: str | Path,
    *,
    dtype: str | None = None,
    on_progress: ProgressFn | None = None,
) -> ExportResult:
    """Write the HF directory ``out_dir`` (which must not exist or be empty) from a GGUF file."""
    import gguf

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise LocalqError(f"{out_dir} already exists and is not empty", "choose another output directory")
    try:
        reader = gguf.GGUFReader(gguf_path)
    except (ValueError, OSError) as exc:
        raise BadModelFile(f"cannot read {gguf_path.name} as GGUF: {exc}", "check the file, or download it again") from exc
    meta = read_metadata(reader)
    arch = archs.by_gguf(meta.get("general.architecture", "?"))
    by_name = {t.name: t for t in reader.tensors}
    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    dtype = choose_dtype(set(types), dtype)
    st_dtype = DTYPES[dtype]

    rope_freqs = None
    if "rope_freqs.weight" in by_name:
        rope_freqs = np.array(gguf.quants.dequantize(by_name["rope_freqs.weight"].data, by_name["rope_freqs.weight"].tensor_type))
    n_head = int(meta[f"{arch.gguf}.attention.head_count"])
    n_head_kv = int(meta.get(f"{arch.gguf}.attention.head_count_kv", n_head))
    config = hf_config(meta, arch, "output.weight" not in by_name, dtype, _rope_scaling(meta, arch, rope_freqs))
    tok_meta = dict(meta, context_length=meta.get(f"{arch.gguf}.context_length"))
    tok_files = tokenizer_files(tok_meta)  # before any heavy work: an unknown tokenizer fails fast

    specs, sources, shapes = [], {}, {}
    for t in reader.tensors:
        hf_name = archs.hf_tensor_name(t.name)
        if hf_name is None:
            continue
        shape = tuple(int(n) for n in reversed(t.shape))  # GGUF lists the fastest-varying dimension first
        specs.append((hf_name, st_dtype, shape))
        sources[hf_name], shapes[hf_name] = t, shape

    def produce(hf_name: str) -> np.ndarray:
        t = sources[hf_name]
        try:
            w = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError as exc:
            raise LocalqError(
                f"cannot dequantize tensor {t.name} of type {t.tensor_type.name}", "convert from an F16 or Q8_0 GGUF"
            ) from exc
        w = np.asarray(w, dtype=np.float32).reshape(shapes[hf_name])
        if arch.permute_qk and t.name.endswith(("attn_q.weight", "attn_q.bias")):
            w = archs.rotary_from_gguf(w, n_head)
        elif arch.permute_qk and t.name.endswith(("attn_k.weight", "attn_k.bias")):
            w = archs.rotary_from_gguf(w, n_head_kv)
        return safetensors_io.encode(w, st_dtype)

    warnings = []
    quantized = sorted(set(types) - _FLOAT_TYPES)
    if quantized:
        warnings.append(
            f"{gguf_path.name} holds {', '.join(quantized)} weights: the safetensors carry their rounding error,"
            " and quantizing them again adds a second one"
        )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        safetensors_io.write_streaming(tmp / "model.safetensors", specs, produce, on_tensor=on_progress)
        files = dict(tok_files)
        files["config.json"] = (json.dumps(config, indent=2) + "\n").encode()
        gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
        files["generation_config.json"] = (json.dumps(gen, indent=2) + "\n").encode()
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out_dir, arch.hf_classes[0], dtype, len(specs), types, warnings)
