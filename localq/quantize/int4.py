"""Quantize a Hugging Face safetensors model to a localq INT4 checkpoint (``int4-g32/g64/g128``).

Round-to-nearest by default; ``awq=True`` first applies AWQ scales found
on the calibration text shipped in ``localq/assets/calibration.txt``
(``localq.quantize.awq``). Embeddings always stay bf16, the output head too
unless ``head_int4``. Round-to-nearest reads one tensor at a time (by mmap,
in float32), so its memory is the checkpoint's size plus one tensor; AWQ
runs the whole model in float32 on the calibration text, so it holds it.
"""

from __future__ import annotations

from pathlib import Path

TARGETS = {"int4-g32": 32, "int4-g64": 64, "int4-g128": 128}


def group_of(target: str) -> int:
    from localq.errors import LocalqError

    if target not in TARGETS:
        raise LocalqError(f"unknown INT4 target {target!r}", f"use one of {', '.join(TARGETS)}")
    return TARGETS[target]


def calibration_tokens(model_dir: Path, limit: int = 256) -> list[int]:
    """The calibration text, tokenized by the model's own tokenizer (at most ``limit`` tokens)."""
    from importlib.resources import files

    from tokenizers import Tokenizer

    text = files("localq").joinpath("assets/calibration.txt").read_text()
    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    return tok.encode(text, add_special_tokens=False).ids[:limit]


def quantize_model_dir(source: Path, out_dir: Path, target: str = "int4-g128", *, awq: bool = False,
                       head_int4: bool = False, fallback_group: int | None = None, on_progress=None) -> Path:
    """Write ``out_dir``, a localq INT4 checkpoint of the safetensors model in ``source``.

    A group size that does not divide a projection's rows is refused, unless
    ``fallback_group`` is given: those projections are then quantized at that
    size, and the checkpoint says which (``group_sizes`` in its metadata, a
    version 2 checkpoint). ``localq quantize`` never asks for this: its
    ``int4-g128`` is g128 throughout; the quality measurements use it to
    measure g128 where it applies on models whose rows it does not divide
    (SmolLM2's 576).
    """
    import contextlib
    import json

    import torch

    from localq.backends.torch_int4 import checkpoint, int4
    from localq.backends.torch_int4.linear import int4_linears
    from localq.backends.torch_int4.model import (Transformer, hf_state_dict, lazy_safetensors, load_hf,
                                                  read_config, read_parameters)

    group = group_of(target)
    source = Path(source)
    with torch.device("meta"):
        shape_only = Transformer(read_config(source))
    projections = int4_linears(shape_only, head=head_int4)
    groups = {}                              # projections at another group size than ``group``
    for name, lin in projections.items():    # refuse before any work
        if fallback_group is not None and lin.in_features % group:
            int4.check_group(fallback_group, lin.in_features, name)
            groups[name] = fallback_group
        else:
            int4.check_group(group, lin.in_features, name)
    alphas = {}
    tensors = {}
    done = 0

    def put(name: str, tensor: torch.Tensor) -> None:
        nonlocal done
        lin = name.removesuffix(".weight")
        if lin not in projections or not name.endswith(".weight"):
            tensors[name] = tensor.to(torch.bfloat16)
            return
        q, s, z = int4.quantize_rtn(tensor, groups.get(lin, group))
        tensors[f"{lin}.qweight"] = int4.pack_nibbles(q)
        tensors[f"{lin}.scales"], tensors[f"{lin}.zeros"] = s, z
        done += 1
        if on_progress:
            on_progress(done, len(projections), lin)

    if awq:        # AWQ runs the model on calibration text: all of it in float32
        from localq.quantize.awq import apply_awq

        model = load_hf(source, "cpu", torch.float32)
        alphas = apply_awq(model, calibration_tokens(source), group, groups)
        for name, p in list(model.named_parameters()):
            put(name, p.data)
        del model
    else:          # round-to-nearest: one tensor in float32 at a time, read by mmap
        with contextlib.ExitStack() as stack:
            readers = hf_state_dict(lazy_safetensors(source, stack))
            for name, tensor in read_parameters(shape_only, readers, "cpu", torch.float32):
                put(name, tensor)
    config = json.loads((source / "config.json").read_text())
    meta = {
        "format": checkpoint.FORMAT, "version": checkpoint.MIXED_VERSION if groups else checkpoint.VERSION,
        "layout": checkpoint.LAYOUT, "layout_version": checkpoint.LAYOUT_VERSION,
        "group_size": group, **({"group_sizes": groups} if groups else {}),
        "head": "int4" if head_int4 else "bf16", "awq": awq,
        "awq_alphas": alphas, "torch_version": torch.__version__,
        "source_sha256": checkpoint.source_sha256(source), "source": source.name, "config": config,
    }
    return checkpoint.save(out_dir, tensors, meta, source)


def make_int4(db, source, targets: list[str], options, on_progress=None) -> list:
    """The maker ``localq quantize`` dispatches ``int4-`` targets to (``jobs.register_target``).

    ``source`` is an HF safetensors directory, or a GGUF, first written out as
    one (with the warning that quantizing a quantized model again compounds its
    error). Each checkpoint is stored as an ``int4`` variant of the source's
    model, with its provenance; nothing stays behind on failure.
    """
    import shutil
    import time

    from localq.quantize import output
    from localq.quantize.jobs import Produced

    for target in targets:
        group_of(target.lower())
    head = getattr(options, "head", "bf16")
    awq = bool(getattr(options, "awq", False))
    notes: list[str] = []
    hf_dir, temporary = source.path, None
    if source.kind != "hf":
        from localq.quantize.gguf_export import gguf_to_hf

        temporary = output.work_path("")
        result = gguf_to_hf(source.path, temporary)
        notes.extend(getattr(result, "warnings", []) or [])
        hf_dir = temporary
    produced = []
    try:
        for target in (t.lower() for t in targets):
            started = time.perf_counter()

            def make(folder: Path, target=target) -> None:
                quantize_model_dir(hf_dir, folder, target, awq=awq, head_int4=head == "int4",
                                   on_progress=lambda d, n, w: on_progress and on_progress(target, d, n, w))

            prov = output.provenance("localq quantize", f"torch {_torch_version()}", source.path,
                                     {"to": target, "awq": awq, "head": head}, source.digest())
            variant = output.make_directory_into_store(db, make, model=source.model, quant=target, fmt="int4",
                                                       prov=prov)
            produced.append(Produced(target, variant, [], time.perf_counter() - started, None, list(notes)))
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    return produced


def _torch_version() -> str:
    import torch

    return torch.__version__
