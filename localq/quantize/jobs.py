"""``localq quantize``: one source, one or more targets, each result stored with its provenance.

The source is a Hugging Face directory, a GGUF file or an installed model. Each
target names its maker: a llama.cpp type (``Q4_K_M``, ``Q8_0`` ...) goes to
``gguf_quant``; other formats register a prefix with ``register_target`` (as
``mlx-`` and ``int4-`` do), and get the same ``Source`` and options. For GGUF
targets an HF directory is first converted, once for all of them, to a GGUF of
the checkpoint's own float type (F32, F16 or BF16; F32 if its matrices mix
types), so no value is rounded before llama.cpp quantizes, and most tensors are
copied file to file; that intermediate is removed afterwards, or kept in the
store as the ``f32`` / ``f16`` / ``bf16`` variant when asked.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
from collections.abc import Callable
from typing import TypeVar
from dataclasses import dataclass, field
from pathlib import Path

from localq.errors import LocalqError
from localq.quantize import output

ProgressFn = Callable[[str, int, int, str], None]  # (stage, done, total, what)
T = TypeVar("T")


@dataclass
class Source:
    """What is being quantized: where it is, what it is, which model it belongs to."""

    path: Path
    kind: str            # "hf" (a Hugging Face directory) or "gguf"
    model: str           # the model name results are stored under
    _digest: tuple[str, dict] | None = None
    temporary: bool = False  # a work directory made for a stored safetensors variant: removed when done

    def digest(self) -> tuple[str, dict]:
        if self._digest is None:
            self._digest = output.source_digest(self.path)
        return self._digest


@dataclass
class Options:
    threads: int | None = None
    allow_requantize: bool = False
    keep_intermediate: bool = False
    group_size: int | None = None       # mlx- targets: weights per scale and bias (default 64)
    awq: bool = False                   # int4- targets: activation-aware scales
    head: str = "bf16"                  # int4- targets: keep the output head in bf16, or "int4"


@dataclass
class Produced:
    """One stored result: the variant, and what the maker reports (fallbacks, timings)."""

    target: str
    variant: object
    fallbacks: list = field(default_factory=list)
    seconds: float = 0.0
    log_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    bits_per_weight: float | None = None


TargetMaker = Callable[[object, Source, list[str], Options, ProgressFn | None], list[Produced]]
_MAKERS: dict[str, TargetMaker] = {}


def register_target(prefix: str, maker: TargetMaker) -> None:
    """Route targets starting with ``prefix`` (lower case, e.g. ``"mlx-"``) to ``maker``."""
    _MAKERS[prefix] = maker


def _make_mlx(db, source: Source, targets: list[str], options: Options,
              on_progress: ProgressFn | None = None) -> list[Produced]:
    """mlx- targets: mlx-lm's convert (localq.quantize.mlx), imported only when asked for."""
    from localq.quantize.mlx import make_mlx

    return make_mlx(db, source, targets, options, on_progress)


register_target("mlx-", _make_mlx)


def _make_int4(db, source: Source, targets: list[str], options: Options,
               on_progress: ProgressFn | None = None) -> list[Produced]:
    """int4- targets: localq's INT4 checkpoint for the torch backend (localq.quantize.int4)."""
    from localq.quantize.int4 import make_int4

    return make_int4(db, source, targets, options, on_progress)


register_target("int4-", _make_int4)


def maker_for(target: str) -> tuple[str, TargetMaker]:
    """The registered maker for a target (by prefix), else llama.cpp's GGUF quantizer."""
    for prefix, maker in _MAKERS.items():
        if target.lower().startswith(prefix):
            return prefix, maker
    return "gguf", make_gguf


def resolve_source(db, ref: str, name: str | None = None) -> Source:
    """SOURCE as given on the command line: an HF directory, a GGUF file, or an installed GGUF model."""
    from localq.importer import check_name, default_name
    from localq.store.index import find

    path = Path(ref).expanduser()
    model = check_name(name) if name else None
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LocalqError(f"{path} has no config.json", "point at a Hugging Face model directory, or a GGUF file")
        return Source(path, "hf", model or default_name(path))
    if path.is_file():
        return Source(path, "gguf", model or default_name(path))
    found = find(db, ref)
    if not found:
        raise LocalqError(f"{ref!r} is neither a file, a directory nor an installed model",
                          "check the path, or see `localq ls`")
    return source_of_variant(found[0], model)


def source_of_variant(v, model: str | None = None) -> Source:
    """An installed variant as a source: a GGUF's file, or a safetensors model linked into a work directory."""
    if v.format == "safetensors":
        return Source(output.variant_directory(v), "hf", model or v.model, temporary=True)
    if v.format != "gguf":
        raise LocalqError(f"{v.ref} is {v.format}", "quantize from a GGUF or a Hugging Face safetensors model")
    return Source(v.main_path, "gguf", model or v.model)


def quantize(db, source: Source, targets: list[str], options: Options,
             on_progress: ProgressFn | None = None) -> list[Produced]:
    """Make every target from ``source``; checks all targets before making any."""
    try:
        groups: dict[str, tuple[TargetMaker, list[str]]] = {}
        for target in targets:
            key, maker = maker_for(target)
            groups.setdefault(key, (maker, []))[1].append(target)
        if "gguf" in groups:
            from localq.quantize.gguf_quant import canonical_type

            groups["gguf"] = (make_gguf, list(dict.fromkeys(canonical_type(t) for t in groups["gguf"][1])))
        produced: list[Produced] = []
        for maker, names in groups.values():
            produced.extend(maker(db, source, names, options, on_progress))
        return produced
    finally:
        if source.temporary:
            import shutil

            shutil.rmtree(source.path, ignore_errors=True)


def _file_stem(model: str) -> str:
    return model.replace(":", "-").replace("/", "-")


def _log_path(model: str, qtype: str) -> Path:
    from localq.paths import get_paths

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return get_paths().logs / f"quantize-{_file_stem(model)}-{qtype}-{stamp}.log"


def _in_background(work: Callable[[], T]) -> Callable[[], T]:
    """Start ``work()`` in a thread at the lowest CPU priority; the returned function waits for its result.

    The work raises in the caller's thread, when waited for. The thread takes
    what the main work leaves idle: the core a one-threaded conversion leaves
    free, then the gaps between llama.cpp's threads. At the usual priority, a
    source's hash during a conversion was slower on 2 cores, not faster: it
    took a share of the cores the conversion and the quantizer's start needed
    (an HF directory's quantization took 0.4 s longer in 5 alternating runs,
    with 0.35-0.5 s more system time).
    """
    box: dict = {}

    def run() -> None:
        _to_background()
        try:
            box["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - raised again by wait(), in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def wait() -> T:
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    return wait


def _to_background() -> None:
    """Lower the calling thread's CPU priority to the lowest, on Linux only (elsewhere it would be the process's).

    A thread's nice value is its own on Linux; it can be raised by the process
    itself, not lowered back, so it is done only in a thread whose work can
    wait for the rest.
    """
    import os
    import sys

    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass


def make_gguf(db, source: Source, qtypes: list[str], options: Options,
              on_progress: ProgressFn | None = None) -> list[Produced]:
    """llama.cpp types from a GGUF, or from an HF directory through a GGUF of its own float type."""
    from localq.gguf_info import read_gguf_info
    from localq.quantize.gguf_quant import Quantizer, check_source

    intermediate: Path | None = None
    notes: list[str] = []
    if source.kind == "hf":
        from localq.quantize import gguf_convert  # the tokenizer readers: not needed for a GGUF source

        # the checkpoint's own float type, so nothing is rounded before llama.cpp quantizes
        planned = gguf_convert.lossless(gguf_convert.plan(source.path))  # refuses before any work
        kind = planned.out_type
    source_digest = _in_background(source.digest)  # GBs, hashed in what the conversion and llama.cpp leave idle
    if source.kind == "hf":

        def convert(target: Path) -> None:
            gguf_convert.convert(source.path, target, kind.lower(), durable=options.keep_intermediate, planned=planned,
                                 on_progress=lambda d, n, w: on_progress and on_progress(kind, d, n, w))

        if options.keep_intermediate:
            prov = output.provenance("localq quantize", f"gguf-py {output.package_version('gguf')}", source.path,
                                     {"to": f"gguf-{kind.lower()}", "intermediate": True}, source_digest())
            kept = output.make_into_store(db, convert, model=source.model, quant=kind.lower(),
                                          filename=f"{_file_stem(source.model)}-{kind}.gguf", prov=prov)
            intermediate = kept.main_path
            notes.append(f"kept the {kind} intermediate as {kept.ref}")
            made = {"format": f"gguf-{kind.lower()}", "sha256": kept.files[0].sha256, "kept": True}
        else:
            intermediate = output.work_path(".gguf")
            try:
                convert(intermediate)
            except OSError as exc:
                intermediate.unlink(missing_ok=True)
                from localq.store.blobs import storage_error

                raise storage_error(exc, f"the {kind} intermediate") from exc
            except BaseException:
                intermediate.unlink(missing_ok=True)
                raise
            # removed when done: not hashed (it is a function of the source, hashed above, and localq's version)
            made = {"format": f"gguf-{kind.lower()}", "kept": False}
        gguf_path = intermediate
    else:
        gguf_path = source.path
    removing: list[Callable[[], None]] = []  # the intermediate's removal, once the last quantizer is done
    try:
        produced = []
        info = None
        for qtype in qtypes:
            log_path = _log_path(source.model, qtype)
            tmp = output.work_path(".gguf")
            # started first: the child quantizes while this process reads and checks the source's
            # header; a check that fails stops it and removes what it wrote
            quantizer = Quantizer(gguf_path, tmp, qtype, threads=options.threads,
                                  allow_requantize=options.allow_requantize, log_path=log_path)
            tmp = quantizer.dst  # a child prestarted for this job writes where it was told
            try:
                quantizer.start()
                if info is None:
                    info = read_gguf_info(gguf_path)
                    for q in qtypes:
                        check_source(info, q, options.allow_requantize)
            except BaseException:
                quantizer.cancel()
                raise
            params = {"type": qtype, "threads": options.threads, "allow_requantize": options.allow_requantize,
                      "imatrix": None}
            engine = f"llama.cpp (llama-cpp-python {output.package_version('llama-cpp-python')})"
            prov: dict = {}
            box: dict = {}

            def make(target: Path, quantizer=quantizer, qtype=qtype, params=params, engine=engine, prov=prov,
                     box=box, source_type=info.file_type) -> None:
                r = box["r"] = quantizer.run(lambda d, n, w: on_progress and on_progress(qtype, d, n, w))
                if qtype == qtypes[-1] and intermediate is not None and not options.keep_intermediate:
                    # while the result is hashed: the kernel takes 0.03-0.05 s to free a GB file
                    removing.append(_in_background(lambda: intermediate.unlink(missing_ok=True)))
                if intermediate is not None:
                    params["intermediate"] = made
                prov.update(output.provenance("localq quantize", engine, source.path, params, source_digest()))
                prov["source_type"] = source_type
                prov["fallbacks"] = {f.tensor: f.used for f in r.fallbacks}
                prov["bits_per_weight"] = r.bits_per_weight

            variant = output.make_into_store(db, make, model=source.model, quant=qtype.lower(),
                                             filename=f"{_file_stem(source.model)}-{qtype}.gguf", prov=prov, tmp=tmp,
                                             known=(info.architecture, info.parameter_count))
            r = box["r"]
            produced.append(Produced(qtype, variant, r.fallbacks, r.seconds, log_path, list(notes),
                                     r.bits_per_weight))
        return produced
    finally:
        for wait in removing:
            with contextlib.suppress(OSError):  # the unlink below says why
                wait()
        if intermediate is not None and not options.keep_intermediate:
            intermediate.unlink(missing_ok=True)
