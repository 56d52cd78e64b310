"""``localq quantize``: one source, one or more targets, each result stored with its provenance.

The source is a Hugging Face directory, a GGUF file or an installed model. Each
target names its maker: a llama.cpp type (``Q4_K_M``, ``Q8_0`` ...) goes to
``gguf_quant``; other formats register a prefix with ``register_target`` (as
``mlx-`` and ``int4-`` do), and get the same ``Source`` and options. For GGUF
targets an HF directory is first converted to an F16 GGUF, once for all of
them; that intermediate is removed afterwards, or kept in the store as the
``f16`` variant when asked.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from localq.errors import LocalqError
from localq.quantize import output

ProgressFn = Callable[[str, int, int, str], None]  # (stage, done, total, what)


@dataclass
class Source:
    """What is being quantized: where it is, what it is, which model it belongs to."""

    path: Path
    kind: str            # "hf" (a Hugging Face directory) or "gguf"
    model: str           # the model name results are stored under
    _digest: tuple[str, dict] | None = None

    def digest(self) -> tuple[str, dict]:
        if self._digest is None:
            self._digest = output.source_digest(self.path)
        return self._digest


@dataclass
class Options:
    threads: int | None = None
    allow_requantize: bool = False
    keep_intermediate: bool = False


@dataclass
class Produced:
    """One stored result: the variant, and what the maker reports (fallbacks, timings)."""

    target: str
    variant: object
    fallbacks: list = field(default_factory=list)
    seconds: float = 0.0
    log_path: Path | None = None
    notes: list[str] = field(default_factory=list)


TargetMaker = Callable[[object, Source, list[str], Options, ProgressFn | None], list[Produced]]
_MAKERS: dict[str, TargetMaker] = {}


def register_target(prefix: str, maker: TargetMaker) -> None:
    """Route targets starting with ``prefix`` (lower case, e.g. ``"mlx-"``) to ``maker``."""
    _MAKERS[prefix] = maker


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
    v = found[0]
    if v.format != "gguf":
        raise LocalqError(f"{v.ref} is {v.format}, not GGUF", "quantize from a GGUF or a Hugging Face directory")
    return Source(v.main_path, "gguf", model or v.model)


def quantize(db, source: Source, targets: list[str], options: Options,
             on_progress: ProgressFn | None = None) -> list[Produced]:
    """Make every target from ``source``; checks all targets before making any."""
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


def _log_path(model: str, qtype: str) -> Path:
    from localq.paths import get_paths

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return get_paths().logs / f"quantize-{model.replace(':', '-').replace('/', '-')}-{qtype}-{stamp}.log"


def make_gguf(db, source: Source, qtypes: list[str], options: Options,
              on_progress: ProgressFn | None = None) -> list[Produced]:
    """llama.cpp types from a GGUF, or from an HF directory through an F16 intermediate."""
    from localq.gguf_info import read_gguf_info
    from localq.quantize import gguf_convert
    from localq.quantize.gguf_quant import check_source, quantize_file

    intermediate: Path | None = None
    notes: list[str] = []
    if source.kind == "hf":
        gguf_convert.plan(source.path, "f16")  # refuses what it cannot convert before any work

        def convert(target: Path) -> None:
            gguf_convert.convert(source.path, target, "f16",
                                 on_progress=lambda d, n, w: on_progress and on_progress("F16", d, n, w))

        if options.keep_intermediate:
            prov = output.provenance("localq quantize", f"gguf-py {output.package_version('gguf')}", source.path,
                                     {"to": "gguf-f16", "intermediate": True}, source.digest())
            kept = output.make_into_store(db, convert, model=source.model, quant="f16",
                                          filename=f"{source.model}-F16.gguf", prov=prov)
            intermediate = kept.main_path
            notes.append(f"kept the F16 intermediate as {kept.ref}")
        else:
            intermediate = output.work_path(".gguf")
            try:
                convert(intermediate)
            except OSError as exc:
                intermediate.unlink(missing_ok=True)
                from localq.store.blobs import storage_error

                raise storage_error(exc, "the F16 intermediate") from exc
            except BaseException:
                intermediate.unlink(missing_ok=True)
                raise
        gguf_path = intermediate
    else:
        gguf_path = source.path
    try:
        info = read_gguf_info(gguf_path)
        for qtype in qtypes:
            check_source(info, qtype, options.allow_requantize)
        sha, files = source.digest()
        inter_sha = output.source_digest(gguf_path)[0] if intermediate is not None else None
        produced = []
        for qtype in qtypes:
            log_path = _log_path(source.model, qtype)
            result_box = {}

            def make(target: Path, qtype=qtype, log_path=log_path, box=result_box) -> None:
                box["r"] = quantize_file(gguf_path, target, qtype, threads=options.threads,
                                         allow_requantize=options.allow_requantize, log_path=log_path,
                                         on_progress=lambda d, n, w, q=qtype: on_progress and on_progress(q, d, n, w))

            params = {"type": qtype, "threads": options.threads, "allow_requantize": options.allow_requantize,
                      "imatrix": None}
            if inter_sha:
                params["intermediate"] = {"format": "gguf-f16", "sha256": inter_sha,
                                          "kept": options.keep_intermediate}
            prov = output.provenance("localq quantize", f"llama.cpp (llama-cpp-python {output.package_version('llama-cpp-python')})",
                                     source.path, params, (sha, files))
            prov["source_type"] = info.file_type

            def make_and_record(target: Path, make=make, prov=prov, box=result_box) -> None:
                make(target)
                prov["fallbacks"] = {f.tensor: f.used for f in box["r"].fallbacks}

            variant = output.make_into_store(db, make_and_record, model=source.model, quant=qtype.lower(),
                                             filename=f"{source.model}-{qtype}.gguf", prov=prov)
            r = result_box["r"]
            produced.append(Produced(qtype, variant, r.fallbacks, r.seconds, log_path, list(notes)))
        return produced
    finally:
        if intermediate is not None and not options.keep_intermediate:
            intermediate.unlink(missing_ok=True)
