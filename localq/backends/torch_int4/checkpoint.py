"""The localq INT4 checkpoint: one safetensors file, a JSON file that says what it holds, the tokenizer.

A checkpoint directory holds:

- ``model.safetensors``: for each INT4 projection ``NAME`` (localq's names,
  e.g. ``layers.0.attention.wqkv``) the tensors ``NAME.qweight`` (uint8
  [N, K/2], the canonical ``nibbles`` packing of ``int4.py``), ``NAME.scales``
  and ``NAME.zeros`` (bf16 [N, K/G]); every other tensor (embeddings, norms,
  biases, the head when it stays bf16) under its own name, in bf16;
- ``localq-int4.json``: ``format``, ``version``, ``layout`` and
  ``layout_version``, ``group_size``, ``head`` (``bf16``/``int4``), ``awq``,
  (version 2 only) ``group_sizes``, the projections quantized at another
  group size, by name (``quantize_model_dir``'s ``fallback_group``),
  ``torch_version`` that wrote it, ``source_sha256`` (of the source's
  safetensors files, in name order) and the model's ``config``;
- the source's ``config.json`` and tokenizer files, so it loads on its own.

The layout is read from the JSON, never inferred from a file name. The
canonical packing does not depend on torch; the kernels' own packings do, so
they are made at load time for the running torch. A checkpoint of a layout
this version does not know, or of a torch-specific layout written by another
torch version, is refused with a message.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from localq.backends.torch_int4 import CHECKPOINT_META
from localq.errors import BackendError

META_FILE = CHECKPOINT_META
WEIGHTS_FILE = "model.safetensors"
FORMAT, VERSION = "localq-int4", 1
MIXED_VERSION = 2           # adds ``group_sizes``: projections at another group size than ``group_size``
LAYOUT, LAYOUT_VERSION = "nibbles", 1
TORCH_SPECIFIC_LAYOUTS = ("tinygemm-cpu", "tinygemm-cuda")
COPIED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "generation_config.json")


def is_checkpoint(path: Path) -> bool:
    return (Path(path) / META_FILE).is_file()


def read_meta(path: Path) -> dict:
    """The checkpoint's metadata, or BackendError when it is not one this localq can load."""
    meta_path = Path(path) / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise BackendError(f"{meta_path} is missing or not JSON ({exc})", "quantize the model again") from exc
    if meta.get("format") != FORMAT or not isinstance(meta.get("version"), int) or meta["version"] > MIXED_VERSION:
        raise BackendError(f"{path} is a {meta.get('format')} v{meta.get('version')} checkpoint; this localq "
                           f"reads {FORMAT} v{VERSION} and v{MIXED_VERSION}", "upgrade localq, or quantize the model again")
    layout, lv = meta.get("layout"), meta.get("layout_version")
    if layout in TORCH_SPECIFIC_LAYOUTS and meta.get("torch_version") != torch.__version__:
        raise BackendError(f"{path} was packed as {layout} by torch {meta.get('torch_version')}; this is torch "
                           f"{torch.__version__}, whose packing may differ",
                           "quantize the model again with this torch (localq quantize SOURCE --to int4-g128)")
    if layout != LAYOUT or lv != LAYOUT_VERSION:
        raise BackendError(f"{path} uses INT4 layout {layout!r} v{lv}, which this localq cannot repack "
                           f"(it reads {LAYOUT!r} v{LAYOUT_VERSION})", "quantize the model again")
    sizes = meta.get("group_sizes", {})
    bad = [g for g in [meta.get("group_size"), *(sizes.values() if isinstance(sizes, dict) else [sizes])]
           if g not in (32, 64, 128)]
    if bad:
        raise BackendError(f"{path} has INT4 group size {bad[0]!r}", "quantize the model again")
    return meta


def group_of(meta: dict, name: str) -> int:
    """The group size of projection ``name`` in a checkpoint with metadata ``meta``."""
    return meta.get("group_sizes", {}).get(name, meta["group_size"])


def source_sha256(model_dir: Path) -> str:
    """sha256 of the source's safetensors files, read in name order (one file: that file's sha256)."""
    import hashlib

    digest = hashlib.sha256()
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def save(out_dir: Path, tensors: dict[str, torch.Tensor], meta: dict, source_dir: Path) -> Path:
    """Write the checkpoint into ``out_dir`` atomically: a temporary directory beside it, then a rename."""
    from localq.quantize.safetensors_io import write_streaming

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise BackendError(f"{out_dir} already exists", "remove it or choose another output directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        # One tensor's bytes at a time (safetensors' save_file builds the whole file in memory first).
        specs = [(name, _SAFETENSORS_DTYPES[t.dtype], tuple(t.shape)) for name, t in tensors.items()]
        write_streaming(tmp / WEIGHTS_FILE, specs, lambda name: _as_numpy(tensors[name]))
        for name in COPIED_FILES:
            if (Path(source_dir) / name).is_file():
                shutil.copyfile(Path(source_dir) / name, tmp / name)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


_SAFETENSORS_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.uint8: "U8",
                       torch.int8: "I8", torch.int32: "I32", torch.int64: "I64"}


def _as_numpy(t: torch.Tensor):
    """The tensor's bytes as a numpy array, without a copy (bf16 as its 16-bit pattern)."""
    t = t.contiguous()
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()


def load(path: Path, device, layout: str, dtype=torch.bfloat16):
    """A Transformer from a checkpoint, its INT4 projections packed for ``layout`` on ``device``."""
    import contextlib

    from safetensors import safe_open

    from localq.backends.torch_int4.linear import Linear, set_decode_dtypes
    from localq.backends.torch_int4.model import ModelConfig, Transformer, fill

    meta = read_meta(path)
    cfg = ModelConfig.from_hf(meta["config"])
    with torch.device("meta"):
        model = Transformer(cfg)
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(safe_open(str(Path(path) / WEIGHTS_FILE), framework="pt"))
        names = set(f.keys())
        for name, lin in model.named_modules():
            if isinstance(lin, Linear) and f"{name}.qweight" in names:
                from localq.backends.torch_int4 import int4

                group = group_of(meta, name)
                int4.check_group(group, lin.in_features, name)
                q = int4.unpack_nibbles(f.get_tensor(f"{name}.qweight"))
                lin.set_int4(q, f.get_tensor(f"{name}.scales"), f.get_tensor(f"{name}.zeros"), group, layout, device)
        readers = {n: (lambda n=n: f.get_tensor(n)) for n in names}
        fill(model, readers, device, dtype)
    set_decode_dtypes(model)
    return model.eval(), meta
