"""GGUF quantization through llama.cpp's own quantizer (``llama_model_quantize``).

It runs in a child process (``quant_worker``) so that Ctrl-C stops it at once
and its log can be read as it goes: the ``[ i/ n] name`` lines drive the
progress callback, the ``ncols ... not divisible by ... falling back to`` lines
become the fallback report, and the whole log goes to a file instead of the
terminal. The output is written to a temporary file that the caller moves into
place; on any failure it is removed.

The types offered are every llama.cpp file type that needs no importance
matrix. The very-low-bit IQ types and Q2_K_S need one (llama.cpp refuses them
without it), and the ternary TQ types are only meaningful for models trained
ternary, so they are refused with a reason.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from localq.errors import LocalqError, StoreError

# llama.cpp file type name -> the llama_cpp constant, for every type that needs no imatrix
QUANT_TYPES = {
    "Q2_K": "LLAMA_FTYPE_MOSTLY_Q2_K",
    "Q3_K_S": "LLAMA_FTYPE_MOSTLY_Q3_K_S",
    "Q3_K_M": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "Q3_K_L": "LLAMA_FTYPE_MOSTLY_Q3_K_L",
    "IQ3_S": "LLAMA_FTYPE_MOSTLY_IQ3_S",
    "IQ3_M": "LLAMA_FTYPE_MOSTLY_IQ3_M",
    "IQ4_XS": "LLAMA_FTYPE_MOSTLY_IQ4_XS",
    "IQ4_NL": "LLAMA_FTYPE_MOSTLY_IQ4_NL",
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "Q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "Q4_K_S": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "Q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "Q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1",
    "Q5_K_S": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "F16": "LLAMA_FTYPE_MOSTLY_F16",
    "BF16": "LLAMA_FTYPE_MOSTLY_BF16",
    "F32": "LLAMA_FTYPE_ALL_F32",
}
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}
NEEDS_IMATRIX = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "Q2_K_S")
TERNARY = ("TQ1_0", "TQ2_0")
FLOAT_SOURCES = ("F32", "F16", "BF16")

_PROGRESS_RE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")
_FALLBACK_RE = re.compile(
    r"warning: (\S+)\s+- ncols\s+(\d+) not divisible by\s+(\d+) \(required for type\s+(\S+)\).*?"
    r"-> falling back to\s+(\S+)"
)
_FAILED_RE = re.compile(r"failed to quantize: (.*)")

ProgressFn = Callable[[int, int, str], None]


class QuantizeInterrupted(LocalqError):
    """Ctrl-C during a quantization: the child was stopped and nothing was kept."""

    exit_code = 130


@dataclass(frozen=True)
class Fallback:
    """A tensor llama.cpp could not give the asked type, and what it got instead."""

    tensor: str
    ncols: int
    block: int
    wanted: str
    used: str


@dataclass
class QuantizeResult:
    qtype: str
    seconds: float
    fallbacks: list[Fallback] = field(default_factory=list)
    log: str = ""
    bits_per_weight: float | None = None  # as llama.cpp reports it


def canonical_type(name: str) -> str:
    """A quant type as llama.cpp spells it, or an error saying why localq does not offer it."""
    upper = name.strip().upper()
    upper = ALIASES.get(upper, upper)
    if upper in QUANT_TYPES:
        return upper
    if upper in NEEDS_IMATRIX:
        raise LocalqError(f"{upper} needs an importance matrix, which localq does not compute",
                          "pick a type that needs none, such as Q2_K, Q3_K_M or IQ4_XS")
    if upper in TERNARY:
        raise LocalqError(f"{upper} is only for models trained ternary (BitNet-style)", "pick Q2_K or a larger type")
    raise LocalqError(f"unknown quantization type {name!r}", f"use one of {', '.join(QUANT_TYPES)}")


def check_source(info, qtype: str, allow_requantize: bool) -> None:
    """Refuse a quantized source unless allowed; the message says what requantizing costs."""
    source_type = (info.file_type or "").replace(" (guessed)", "")
    if source_type in FLOAT_SOURCES or allow_requantize:
        return
    raise LocalqError(
        f"{info.path.name} is already quantized ({source_type}): quantizing it to {qtype} adds a second rounding "
        "error to the first, so it is worse than quantizing the original",
        "quantize from an F16/BF16/F32 GGUF or the Hugging Face directory, or add --allow-requantize",
    )


_BPW_RE = re.compile(r"quant size\s*=\s*([\d.]+) MiB \(([\d.]+) BPW\)")


def wants_llamacpp(targets) -> bool:
    """Whether any of ``targets`` is a llama.cpp type (so a quantizer child will be needed)."""
    return any(ALIASES.get(t.strip().upper(), t.strip().upper()) in QUANT_TYPES for t in targets)


def _start_worker() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "localq.quantize.quant_worker"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
                            text=True, errors="replace", bufsize=1)


_SPARE: list[subprocess.Popen] = []          # started children waiting for a job
_STARTED: list[tuple[subprocess.Popen, dict]] = []  # children handed a job by ``prestart``, not yet taken
_SPARE_LOCK = threading.Lock()


def warm_up() -> None:
    """Start a quantizer child now, for the next ``Quantizer`` to take.

    The child spends its first part of a second loading llama.cpp; started at
    the top of a command, that overlaps with the parent's own start (opening
    the index, reading the source's header) instead of following it. A spare
    nobody takes ends by itself when this process exits (its stdin closes), or
    at ``discard_spare``.
    """
    with _SPARE_LOCK:
        if not _SPARE:
            _SPARE.append(_start_worker())


def prestart(src: Path, dst: Path, qtype: str, *, threads: int | None = None, allow_requantize: bool = False) -> None:
    """Hand a child its job at once, before the caller has opened the index or checked the source.

    For a command whose source is a GGUF file: the quantization starts as soon
    as llama.cpp is loaded, and the ``Quantizer`` made later for the same job
    (source, type, threads) takes this child and its ``dst``. Nothing takes it
    if a check fails first; ``discard_spare`` then stops it and removes ``dst``.
    """
    job = _job(src, dst, qtype, threads, allow_requantize)
    with _SPARE_LOCK:
        proc = _SPARE.pop() if _SPARE else _start_worker()
    _send(proc, job)
    with _SPARE_LOCK:
        _STARTED.append((proc, job))


def discard_spare() -> None:
    """End the warmed-up or prestarted children no quantization took, and remove what they wrote."""
    with _SPARE_LOCK:
        children = [(proc, None) for proc in _SPARE] + _STARTED
        _SPARE.clear()
        _STARTED.clear()
    for proc, job in children:
        proc.kill()
        proc.wait()
        if job is not None:
            Path(job["dst"]).unlink(missing_ok=True)


def _job(src: Path, dst: Path, qtype: str, threads: int | None, allow_requantize: bool) -> dict:
    """The line of JSON a child quantizes from (see ``quant_worker``)."""
    if not threads:
        from localq.backends.llamacpp import physical_cores

        threads = physical_cores()
    return {"src": str(src), "dst": str(dst), "ftype": QUANT_TYPES[canonical_type(qtype)], "threads": int(threads),
            "allow_requantize": bool(allow_requantize)}


def _send(proc: subprocess.Popen, job: dict) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(job) + "\n")
    proc.stdin.close()


def _take_worker(job: dict) -> tuple[subprocess.Popen, dict | None]:
    """A child for ``job``: one ``prestart`` gave the same job (any ``dst``), else a spare, else a new one."""
    same = {k: v for k, v in job.items() if k != "dst"}
    with _SPARE_LOCK:
        for i, (proc, given) in enumerate(_STARTED):
            if {k: v for k, v in given.items() if k != "dst"} == same:
                del _STARTED[i]
                return proc, given
        return (_SPARE.pop() if _SPARE else _start_worker()), None


class Quantizer:
    """One llama.cpp quantization in a child process: the child taken (or started), given its job, followed.

    ``start`` may come before the caller's own checks of the source, so the
    work overlaps them; a check that fails then ``cancel``s, which kills the
    child and removes what it wrote. If ``prestart`` already gave a child this
    job, that child is taken and its output path becomes ``dst``.
    """

    def __init__(self, src: Path, dst: Path, qtype: str, *, threads: int | None = None,
                 allow_requantize: bool = False, log_path: Path | None = None):
        self.qtype = canonical_type(qtype)
        self.job = _job(src, dst, qtype, threads, allow_requantize)
        self.started = time.perf_counter()
        self.proc, given = _take_worker(self.job)
        self._sent = given is not None
        if given is not None:
            self.job = given
        self.src, self.dst, self.log_path = Path(src), Path(self.job["dst"]), log_path

    def start(self) -> None:
        """Hand the child its job now (``run`` does it if not done): it quantizes while the caller goes on."""
        if not self._sent:
            self._sent = True
            _send(self.proc, self.job)

    def cancel(self) -> None:
        """Stop the child and remove what it wrote."""
        self.proc.kill()
        self.proc.wait()
        self.dst.unlink(missing_ok=True)

    def run(self, on_progress: ProgressFn | None = None) -> QuantizeResult:
        """Let the child quantize, follow its log, and return what it did; ``dst`` is removed on failure."""
        proc = self.proc
        log_lines: list[str] = []
        fallbacks: list[Fallback] = []
        try:
            assert proc.stdout is not None
            self.start()
            for line in proc.stdout:
                log_lines.append(line)
                if m := _PROGRESS_RE.match(line):
                    if on_progress:
                        on_progress(int(m.group(1)), int(m.group(2)), m.group(3))
                elif m := _FALLBACK_RE.search(line):
                    fallbacks.append(Fallback(m.group(1), int(m.group(2)), int(m.group(3)), m.group(4), m.group(5)))
            rc = proc.wait()
        except KeyboardInterrupt:
            self.cancel()
            raise QuantizeInterrupted(f"quantization to {self.qtype} interrupted; nothing was kept") from None
        except BaseException:
            self.cancel()
            raise
        finally:
            log = "".join(log_lines)
            self._write_log(log)
        if rc != 0:
            self.dst.unlink(missing_ok=True)
            self._raise_failure(log, rc)
        result = QuantizeResult(self.qtype, time.perf_counter() - self.started, fallbacks, log)
        if m := _BPW_RE.search(log):
            result.bits_per_weight = float(m.group(2))
        return result

    def _write_log(self, log: str) -> None:
        if self.log_path is None:
            return
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text(log, encoding="utf-8")
        except OSError:  # a full disk stops the log too; the error says why
            self.log_path = None

    def _raise_failure(self, log: str, rc: int) -> None:
        found = _FAILED_RE.search(log)
        why = found.group(1).strip() if found else f"the quantizer exited with status {rc}"
        free = shutil.disk_usage(self.dst.parent).free
        if "iostream error" in why or free < 1024 * 1024:  # what llama.cpp's writer says when a write fails
            raise StoreError(f"disk full (or not writable) while quantizing to {self.qtype}: {free / 1e6:.1f} MB free "
                             f"in {self.dst.parent}", "free some space or move the cache with LOCALQ_HOME")
        raise LocalqError(f"llama.cpp could not quantize {self.src.name} to {self.qtype}: {why}",
                          f"its log is {self.log_path}" if self.log_path else None)


def quantize_file(
    src: Path,
    dst: Path,
    qtype: str,
    *,
    threads: int | None = None,
    allow_requantize: bool = False,
    on_progress: ProgressFn | None = None,
    log_path: Path | None = None,
) -> QuantizeResult:
    """Quantize the GGUF ``src`` to ``qtype`` into ``dst`` with llama.cpp; ``dst`` is removed on failure."""
    return Quantizer(src, dst, qtype, threads=threads, allow_requantize=allow_requantize,
                     log_path=log_path).run(on_progress)
