"""The llama.cpp backend: GGUF models on CPU (and GPU when the build offloads), via llama-cpp-python.

(Over 400 lines: one engine's loading, memory and offload checks, tokenization, the
generation loop and KV-cache reuse all act on the same llama.cpp handles.)

Why the low-level API: llama-cpp-python's ``Llama.create_completion`` does
Python work per token (logits copies, stop-string scans, dict building) that
costs 10-15 % of decode speed on a small model. Here the decode loop calls
llama.cpp's C functions directly through ctypes with nothing allocated per
token: one reused single-token batch, the sampler chain in C
(``llama_sampler_sample``), a per-token text cache and an incremental UTF-8
decoder (a character split over two tokens comes out whole).

Decisions (``LoadOptions`` fields left as None):
- ``n_ctx``: 4096 (the recommender's default too), capped at the model's
  trained context (``default_context``).
- ``n_threads``: physical cores (``psutil.cpu_count(logical=False)``), for both
  prompt and decode: hyper-threads only slow llama.cpp's matrix kernels.
- ``n_gpu_layers``: on a build that offloads (CUDA, Metal ...), the layers the
  recommender's plan puts on the GPU (``default_gpu_layers``), else 0.
- The model is memory-mapped. Before loading, the memory check runs: a CPU load
  checks weights + KV cache + overhead against available RAM (``check_fits``),
  a load with GPU layers checks the plan's VRAM and RAM parts
  (``check_offload_fits``); both are ``localq.recommend``'s estimates.
- The chat template comes from the GGUF metadata (``localq.backends.templates``);
  a reply stops at any end-of-generation token the vocabulary declares.
- Consecutive turns reuse the KV cache: only the tokens after the longest
  common prefix with the previous prompt are evaluated.
- llama.cpp's log goes to localq's log file, never to the terminal; the last
  error lines are kept so a failed load can say why.
"""

from __future__ import annotations

import codecs
import ctypes
import importlib.util
import threading
import time
from collections import deque
from pathlib import Path
from typing import Iterator, Sequence

from localq.backends.base import (
    Backend, Done, GenerationParams, LoadOptions, Session, TextDelta, model_path_of, reply_limit,
)
from localq.backends.context import reusable_prefix
from localq.defaults import DEFAULT_CONTEXT
from localq.errors import BackendError, BadModelFile, LocalqError
from localq.units import GiB

INSTALL_HINT = "install it with `pip install 'localq[llamacpp]'`"


# --- defaults and checks (hooks for the recommender) ----------------------------------


def physical_cores() -> int:
    """Physical CPU cores, the thread count llama.cpp runs fastest with."""
    import os

    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def default_context(info, profile=None) -> int:
    """The context to load ``info``'s model with when the user names none.

    4096 tokens (the recommender's default, and Ollama's and LM Studio's), or
    the model's trained context if smaller. ``profile`` is the hook for a
    machine-dependent choice; today it is not needed.
    """
    return min(DEFAULT_CONTEXT, info.context_length or DEFAULT_CONTEXT)


def default_gpu_layers(info, profile=None, *, build_offloads: bool, n_ctx: int = DEFAULT_CONTEXT) -> int:
    """Layers to offload when the user names none: the recommender's plan.

    None on a CPU-only build; otherwise the layers ``localq.recommend.offload_plan``
    puts on the GPU at this context (all of them when the model fits, part of
    them when it does not), so the split ``localq recommend`` shows is the one
    that loads. Every layer when the model's numbers are missing from its header.
    """
    if not build_offloads:
        return 0
    from localq.recommend import ModelSpec, offload_plan

    try:
        spec = ModelSpec.from_gguf_info(info)
    except LocalqError:
        return -1
    if profile is None:
        from localq.probe import probe

        profile = probe(bandwidth=False)
    planned = offload_plan(profile, spec, n_ctx)
    if planned is None or planned.gpu_layers is None:
        return 0 if planned is None else spec.layers
    return planned.gpu_layers


def check_offload_fits(info, n_ctx: int, n_gpu_layers: int, profile, name: str) -> None:
    """The memory check of a load with layers on the GPU: the plan's VRAM and RAM parts."""
    from localq.recommend import ModelSpec, offload_plan
    from localq.units import size

    try:
        spec = ModelSpec.from_gguf_info(info)
    except LocalqError:
        return
    planned = offload_plan(profile, spec, n_ctx)
    if planned is None or planned.fits_now:
        return
    raise LocalqError(
        f"{name} needs about {size(planned.gpu_bytes)} of VRAM and {size(planned.host_bytes)} of RAM with a "
        f"{n_ctx}-token context ({planned.gpu_layers} of {spec.layers} layers on the GPU), more than is free",
        "pick a smaller quant (`localq recommend MODEL`), a smaller --ctx, or close other programs",
    )


def gguf_parts(model) -> list[Path]:
    """The files of a split GGUF variant in order (one path for a single file or a path)."""
    files = getattr(model, "files", None)
    if not files:
        return [model_path_of(model)[0]]
    from localq.store.blobs import blob_path

    ordered = sorted((f for f in files if f.relpath.lower().endswith(".gguf")), key=lambda f: f.relpath)
    return [blob_path(f.sha256) for f in ordered] or [model_path_of(model)[0]]


def estimate_memory(info, n_ctx: int, weights: int | None = None) -> tuple[int, int] | None:
    """(bytes a CPU load needs, of which KV cache), by the recommender's own estimate.

    None when the file's metadata lacks the numbers (llama.cpp then has its say).
    """
    from localq.recommend import ModelSpec, host_overhead_bytes

    try:
        spec = ModelSpec.from_gguf_info(info)
    except LocalqError:
        return None
    kv = spec.kv_bytes(n_ctx)
    return (weights or info.size_bytes) + kv + host_overhead_bytes(spec), kv


def check_fits(info, n_ctx: int, available: int | None = None, profile=None, weights: int | None = None,
               name: str | None = None) -> None:
    """Raise LocalqError when the model will not fit in ``available`` bytes.

    ``available`` defaults to the probe's figure when a HardwareProfile is
    given, else to what psutil says is available now. ``weights`` is the
    size of all the model's files, when it is split.
    """
    if available is None and profile is not None:
        available = profile.memory.available
    if available is None:
        import psutil

        available = psutil.virtual_memory().available
    weights = weights or info.size_bytes
    estimate = estimate_memory(info, n_ctx, weights)
    if estimate is None:
        return
    need, kv = estimate
    if need > available:
        raise LocalqError(
            f"{name or info.path.name} needs about {need / GiB:.1f} GiB of memory with a {n_ctx}-token context "
            f"(weights {weights / GiB:.1f} GiB, KV cache {kv / GiB:.1f} GiB); "
            f"{available / GiB:.1f} GiB is available",
            "pick a smaller quant (`localq recommend MODEL`), a smaller --ctx, or close other programs",
        )


# --- llama.cpp's log --------------------------------------------------------------------------

_ERROR_LEVELS = (3, 4)    # GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR


class _LlamaLog:
    """Receives llama.cpp's log: writes it to localq's log file and keeps the recent lines."""

    def __init__(self):
        self.lock = threading.Lock()
        self.recent: deque[tuple[int, int, str]] = deque(maxlen=200)
        self.serial = 0
        self.file = None
        self.file_path: Path | None = None
        self.last_level = 0

    def write(self, level: int, text: str) -> None:
        from localq.paths import get_paths

        with self.lock:
            if level == 5:    # GGML_LOG_LEVEL_CONT: the previous message goes on
                level = self.last_level
            self.last_level = level
            self.serial += 1
            self.recent.append((self.serial, level, text))
            path = get_paths().log_file
            if path != self.file_path:
                if self.file:
                    self.file.close()
                path.parent.mkdir(parents=True, exist_ok=True)
                self.file = open(path, "a", encoding="utf-8")
                self.file_path = path
            self.file.write(text)
            self.file.flush()

    def errors_since(self, serial: int) -> list[str]:
        """The warning and error lines logged after ``serial``."""
        with self.lock:
            return [t.strip() for s, lvl, t in self.recent if s > serial and lvl in _ERROR_LEVELS and t.strip()]


_LOG = _LlamaLog()
_LIB = None
_LIB_LOCK = threading.Lock()


def _load_library():
    """Import llama_cpp once, send its log to the log file, and initialise its backends."""
    global _LIB
    with _LIB_LOCK:
        if _LIB is not None:
            return _LIB
        try:
            import llama_cpp
        except ImportError as exc:
            raise BackendError(f"llama-cpp-python is not installed ({exc})", INSTALL_HINT) from exc

        @llama_cpp.llama_log_callback
        def on_log(level, text, user_data):
            try:
                _LOG.write(int(level), (text or b"").decode("utf-8", "replace"))
            except Exception:
                pass  # a log line must never break inference

        _LOG.callback = on_log  # keep the ctypes callback alive as long as the library is
        llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _LIB = llama_cpp
        return _LIB


# --- the backend ----------------------------------------------------------------------


class LlamaCppBackend(Backend):
    """GGUF models through llama.cpp."""

    name = "llamacpp"
    formats = ("gguf",)

    def available(self, profile=None) -> tuple[bool, str]:
        if importlib.util.find_spec("llama_cpp") is None:
            return False, f"llama-cpp-python is not installed; {INSTALL_HINT}"
        return True, ""

    def load(self, model, options: LoadOptions | None = None, profile=None) -> "LlamaCppSession":
        from localq.gguf_info import check_loadable, read_gguf_info

        options = options or LoadOptions()
        fmt = getattr(model, "format", "gguf")
        if fmt not in self.formats:
            raise BackendError(f"the llama.cpp backend runs GGUF models, not {fmt}", "pick a GGUF quant of the model")
        path, identity = model_path_of(model)
        name = getattr(model, "ref", None) or path.name
        info = read_gguf_info(path)           # a truncated or damaged file stops here, with why
        check_loadable(info, name)            # so does a header llama.cpp would abort on
        lib = _load_library()
        check_types_known(info, lib, name)
        options.validate(info.context_length)
        n_ctx = options.n_ctx or default_context(info, profile)
        n_threads = options.n_threads or physical_cores()

        offloads = bool(lib.llama_supports_gpu_offload())
        n_gpu_layers = options.n_gpu_layers
        if n_gpu_layers is None:
            n_gpu_layers = default_gpu_layers(info, profile, build_offloads=offloads, n_ctx=n_ctx)
        if options.check_memory and n_gpu_layers == 0:
            check_fits(info, n_ctx, profile=profile, weights=getattr(model, "size", None), name=name)
        elif options.check_memory:   # layers on the GPU: check the split's VRAM and RAM parts
            if profile is None:
                from localq.probe import probe

                profile = probe(bandwidth=False)
            check_offload_fits(info, n_ctx, n_gpu_layers, profile, name)

        started = time.perf_counter()
        mark = _LOG.serial
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        disable_unrunnable_repacking(mparams)
        if "load_mode" in {f[0] for f in type(mparams)._fields_}:
            mparams.load_mode = lib.LLAMA_LOAD_MODE_MMAP
        else:
            mparams.use_mmap = True
        parts = gguf_parts(model)
        if len(parts) > 1:   # blobs lack the -00001-of-0000N names llama.cpp would look for
            names = (ctypes.c_char_p * len(parts))(*[str(p).encode() for p in parts])
            handle = lib.llama_model_load_from_splits(names, len(parts), mparams)
        else:
            handle = lib.llama_model_load_from_file(str(path).encode(), mparams)
        if not handle:
            why = _why(mark, "the load failed")
            if "unknown model architecture" in why:
                hint = ("this llama.cpp build does not run that architecture; update llama-cpp-python "
                        "(pip install -U llama-cpp-python) or pick another model")
            else:
                hint = "the file may be damaged or made by a newer tool; re-download it, or update llama-cpp-python"
            raise BackendError(f"llama.cpp cannot load {name}: {why}", hint)
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = cparams.n_ubatch = min(options.n_batch, n_ctx)
        cparams.n_threads = cparams.n_threads_batch = n_threads
        cparams.n_seq_max = 1
        _set_flash_attn(lib, cparams, options.flash_attn)
        ctx = lib.llama_init_from_model(handle, cparams)
        if not ctx:
            lib.llama_model_free(handle)
            raise BackendError(f"llama.cpp cannot create a {n_ctx}-token context for {name}: "
                               f"{_why(mark, 'out of memory?')}", "try a smaller --ctx")
        try:
            return LlamaCppSession(lib, handle, ctx, info, n_ctx=n_ctx, n_threads=n_threads,
                                   n_batch=min(options.n_batch, n_ctx), n_gpu_layers=n_gpu_layers,
                                   flash_attn=options.flash_attn, model_path=path,
                                   load_s=time.perf_counter() - started, **identity)
        except BaseException:   # a template that does not compile: free what was loaded
            lib.llama_free(ctx)
            lib.llama_model_free(handle)
            raise


def disable_unrunnable_repacking(mparams) -> None:
    """Keep llama.cpp off its extra CPU buffer types where they would trap (see ``_extra_buffers_safe``).

    Every place that loads a model with llama.cpp (the backend, ``localq eval``'s
    scorer) calls this on its model parameters.
    """
    if not _extra_buffers_safe() and hasattr(mparams, "use_extra_bufts"):
        mparams.use_extra_bufts = False


def _extra_buffers_safe() -> bool:
    """Whether llama.cpp may use its extra CPU buffer types (weight repacking, AMX tiles).

    On some virtual machines the CPU advertises AMX (``amx_tile`` in /proc/cpuinfo)
    and the kernel grants the tile permission, yet the AMX kernels die of an
    illegal instruction at the first batched matrix product. With AMX present,
    localq keeps to llama.cpp's plain CPU buffers (the AVX-512 kernels still
    run) unless ``LOCALQ_LLAMA_AMX=1`` says the AMX path works on this machine.
    """
    import os

    if os.environ.get("LOCALQ_LLAMA_AMX") == "1":
        return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return "amx_tile" not in line.split()
    except OSError:
        pass
    return True


def _set_flash_attn(lib, cparams, mode: str) -> None:
    """Set llama.cpp's flash attention from ``auto``/``on``/``off``.

    Builds since mid-2025 take ``flash_attn_type`` (auto = -1, llama.cpp's default:
    on where the device supports it); older ones a boolean ``flash_attn``, whose
    default (off) stands for ``auto``.
    """
    fields = {f[0] for f in type(cparams)._fields_}
    if "flash_attn_type" in fields:
        cparams.flash_attn_type = {"auto": lib.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": lib.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                                   "off": lib.LLAMA_FLASH_ATTN_TYPE_DISABLED}[mode]
    elif "flash_attn" in fields and mode != "auto":
        cparams.flash_attn = mode == "on"


def check_types_known(info, lib, name: str | None = None) -> None:
    """BadModelFile when a tensor type of ``info`` is one this llama.cpp build cannot compute.

    The gguf package may know newer types than the installed llama.cpp, and
    llama.cpp keeps removed ones (Q4_0_4_4 ...) as entries of size 0. The build's
    own table (``ggml_blck_size`` / ``ggml_type_size``) must agree with the
    format's for every type the file uses.
    """
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    ggml = _ggml_base()
    count = getattr(lib, "GGML_TYPE_COUNT", None)
    if ggml is None or not isinstance(count, int):
        return
    for type_name in info.quant_mix:
        try:
            qtype = GGMLQuantizationType[type_name]
        except KeyError:
            continue
        if qtype.value >= count or (ggml.ggml_blck_size(qtype.value), ggml.ggml_type_size(qtype.value)) \
                != GGML_QUANT_SIZES[qtype]:
            raise BadModelFile(f"{name or info.path.name} has {type_name} tensors, a type this llama.cpp build "
                               "does not know", "update llama-cpp-python (pip install -U llama-cpp-python), "
                               "or pick another quant of the model")


_GGML = []


def _ggml_base():
    """libggml-base as llama-cpp-python ships it, with the two type-table functions (None if absent)."""
    if _GGML:
        return _GGML[0]
    import llama_cpp

    found = None
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    for candidate in ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll"):
        if (lib_dir / candidate).exists():
            try:
                found = ctypes.CDLL(str(lib_dir / candidate))
                found.ggml_blck_size.restype = ctypes.c_int64
                found.ggml_blck_size.argtypes = [ctypes.c_int]
                found.ggml_type_size.restype = ctypes.c_size_t
                found.ggml_type_size.argtypes = [ctypes.c_int]
            except (OSError, AttributeError):
                found = None
            break
    _GGML.append(found)
    return found


def _why(mark: int, fallback: str) -> str:
    """The most telling llama.cpp error logged since ``mark``."""
    lines = _LOG.errors_since(mark)
    if not lines:
        return fallback
    # llama.cpp logs the cause first, then "failed to load model"; prefer the cause.
    for line in lines:
        if "error loading model" in line:
            return line.split("error loading model:", 1)[-1].strip()
    return lines[0]


class LlamaCppSession(Session):
    """A GGUF model loaded in llama.cpp, with one context (one conversation at a time)."""

    backend_name = "llamacpp"
    supports_json_schema = True
    supports_embeddings = True

    def __init__(self, lib, model, ctx, info, *, n_ctx: int, n_threads: int, n_batch: int,
                 n_gpu_layers: int, flash_attn: str = "auto", **identity):
        super().__init__(n_ctx=n_ctx, n_threads=n_threads, **identity)
        from localq.backends.templates import ChatTemplate

        self._lib = lib
        self._model = model
        self._ctx = ctx
        self._vocab = lib.llama_model_get_vocab(model)
        self._mem = lib.llama_get_memory(ctx)
        self.info = info
        self.n_batch = n_batch
        self.n_gpu_layers = n_gpu_layers
        self.flash_attn = flash_attn
        self.n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        self._busy = threading.Lock()
        self._free_when_done = False
        self._embed_lock = threading.Lock()
        self._embed_ctx = None                # made by the first embed()
        self.embed_n_ctx = min(n_ctx, 2048)
        self._cached: list[int] = []          # the tokens whose keys and values are in the KV cache
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self._one = (lib.llama_token * 1)()   # the reused single-token batch of the decode loop
        self._one_batch = lib.llama_batch_get_one(self._one, 1)
        self._add_bos = bool(lib.llama_vocab_get_add_bos(self._vocab))
        self._bos = lib.llama_vocab_bos(self._vocab)
        self.template = ChatTemplate(info.chat_template, bos_token=self._token_text(self._bos),
                                     eos_token=self._token_text(lib.llama_vocab_eos(self._vocab)),
                                     model_name=self.model_ref)

    # --- tokens

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text = self._lib.llama_vocab_get_text(self._vocab, token)
        return text.decode("utf-8", "replace") if text else ""

    def _tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        self._check_open()
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (self._lib.llama_token * capacity)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, parse_special)
        if n < 0:
            capacity = -n
            buf = (self._lib.llama_token * capacity)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, parse_special)
        return list(buf[:n])

    def tokenize(self, text: str) -> list[int]:
        return self._tokenize(text, add_special=False, parse_special=False)

    def encode_chat(self, messages: Sequence[dict]) -> list[int]:
        text = self.template.render(messages, add_generation_prompt=True)
        tokens = self._tokenize(text, add_special=True, parse_special=True)
        # A template that writes the BOS text itself, for a model that also adds one: keep one.
        if self._add_bos and len(tokens) > 1 and tokens[0] == tokens[1] == self._bos:
            tokens = tokens[1:]
        return tokens

    def _piece(self, token: int) -> bytes:
        """The bytes of one token (control tokens give none)."""
        piece = self._pieces.get(token)
        if piece is None:
            n = self._lib.llama_token_to_piece(self._vocab, token, self._piece_buf, 256, 0, False)
            if n < 0:
                big = ctypes.create_string_buffer(-n)
                n = self._lib.llama_token_to_piece(self._vocab, token, big, -n, 0, False)
                piece = big.raw[:n]
            else:
                piece = self._piece_buf.raw[:n]
            self._pieces[token] = piece
        return piece

    # --- sampling

    def _sampler(self, params: GenerationParams, history: Sequence[int]):
        """A sampler chain for ``params``: grammar, penalties, top-k, top-p, min-p, temperature, then a draw."""
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        add = lambda s: lib.llama_sampler_chain_add(chain, s)  # noqa: E731
        if params.json_schema is not None:
            add(self._grammar_sampler(params.json_schema, chain))
        penalised = params.repeat_penalty != 1.0 or params.frequency_penalty or params.presence_penalty
        if penalised and params.repeat_last_n:
            args = (params.repeat_last_n, params.repeat_penalty, params.frequency_penalty, params.presence_penalty)
            if len(lib.llama_sampler_init_penalties.argtypes) == 5:   # builds that still take n_vocab
                penalties = lib.llama_sampler_init_penalties(self.n_vocab, *args)
            else:
                penalties = lib.llama_sampler_init_penalties(*args)
            # The penalties look back over the prompt too, as llama.cpp's own tools do (the grammar must not).
            for token in history[-params.repeat_last_n:]:
                lib.llama_sampler_accept(penalties, token)
            add(penalties)
        if params.temperature == 0:
            add(lib.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                add(lib.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                add(lib.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0.0:
                add(lib.llama_sampler_init_min_p(params.min_p, 1))
            add(lib.llama_sampler_init_temp(params.temperature))
            seed = lib.LLAMA_DEFAULT_SEED if params.seed is None else params.seed
            add(lib.llama_sampler_init_dist(seed))
        return chain

    def _grammar_sampler(self, json_schema: str, chain):
        """A grammar sampler that admits only JSON matching ``json_schema`` (llama_cpp's converter)."""
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        try:
            gbnf = json_schema_to_gbnf(json_schema)
        except Exception as exc:  # the converter raises plain exceptions for what it cannot express
            self._lib.llama_sampler_free(chain)
            raise LocalqError(f"the JSON schema cannot be turned into a grammar: {exc}",
                              "check the schema; llama.cpp supports most of JSON Schema draft 7") from exc
        grammar = self._lib.llama_sampler_init_grammar(self._vocab, gbnf.encode(), b"root")
        if not grammar:
            self._lib.llama_sampler_free(chain)
            raise LocalqError("llama.cpp rejected the grammar made from the JSON schema", "simplify the schema")
        return grammar

    # --- embeddings

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Mean-pooled, unit-length embeddings from a second context that shares the weights.

        The context is made on first use (``embeddings`` on, mean pooling, the
        whole text in one batch), so chat-only use pays nothing for it.
        """
        import math

        self._check_open()
        lib = self._lib
        with self._embed_lock:
            if self._embed_ctx is None:
                cparams = lib.llama_context_default_params()
                cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = self.embed_n_ctx
                cparams.n_threads = cparams.n_threads_batch = self.n_threads
                cparams.n_seq_max = 1
                cparams.embeddings = True
                cparams.pooling_type = lib.LLAMA_POOLING_TYPE_MEAN
                self._embed_ctx = lib.llama_init_from_model(self._model, cparams)
                if not self._embed_ctx:
                    self._embed_ctx = None
                    raise BackendError("llama.cpp cannot create an embedding context", "try again with less memory in use")
            n_embd = lib.llama_model_n_embd(self._model)
            vectors = []
            for i, text in enumerate(texts):
                tokens = self._tokenize(text, add_special=True, parse_special=False)
                if not tokens:
                    raise LocalqError(f"input {i} is empty; there is nothing to embed")
                if len(tokens) > self.embed_n_ctx:
                    raise LocalqError(f"input {i} takes {len(tokens)} tokens; embeddings take at most {self.embed_n_ctx}",
                                      "split the text into shorter pieces")
                lib.llama_memory_clear(lib.llama_get_memory(self._embed_ctx), True)
                array = (lib.llama_token * len(tokens))(*tokens)
                rc = lib.llama_decode(self._embed_ctx, lib.llama_batch_get_one(array, len(tokens)))
                pooled = lib.llama_get_embeddings_seq(self._embed_ctx, 0) if rc == 0 else None
                if not pooled:
                    raise BackendError(f"llama.cpp failed to embed input {i} (code {rc})")
                vector = pooled[:n_embd]
                norm = math.sqrt(sum(x * x for x in vector)) or 1.0
                vectors.append([x / norm for x in vector])
            return vectors

    # --- the KV cache

    def _reuse_prefix(self, prompt: list[int]) -> int:
        """Keep the cached tokens the prompt starts with; drop the rest; return how many were kept."""
        keep = reusable_prefix(self._cached, prompt)
        if keep < len(self._cached):
            if not self._lib.llama_memory_seq_rm(self._mem, 0, keep, -1):
                self._lib.llama_memory_clear(self._mem, True)
                keep = 0
            del self._cached[keep:]
        return keep

    def reset(self) -> None:
        self._check_open()
        with self._busy:
            self._lib.llama_memory_clear(self._mem, True)
            self._cached.clear()

    def next_token_logits(self, tokens: Sequence[int]) -> list[float]:
        """The logits of the token after ``tokens``, evaluated from an empty KV cache.

        For comparisons against a reference computed in the same run (load
        options, quants): a model's logits are stable where its greedy words are not.
        """
        self._check_open()
        tokens = list(tokens)
        if not tokens or len(tokens) >= self.n_ctx:
            raise LocalqError(f"{len(tokens)} tokens do not fit a {self.n_ctx}-token context")
        with self._busy:
            lib = self._lib
            lib.llama_memory_clear(self._mem, True)
            self._cached.clear()
            for start in range(0, len(tokens), self.n_batch):
                chunk = tokens[start:start + self.n_batch]
                batch = (lib.llama_token * len(chunk))(*chunk)
                if lib.llama_decode(self._ctx, lib.llama_batch_get_one(batch, len(chunk))) != 0:
                    self._forget()
                    raise BackendError("llama_decode failed on the tokens")
                self._cached.extend(chunk)
            logits = lib.llama_get_logits_ith(self._ctx, -1)
            return [logits[i] for i in range(self.n_vocab)]

    # --- generation

    def generate(self, prompt_tokens: Sequence[int], params: GenerationParams,
                 started: float | None = None) -> Iterator:
        started = time.perf_counter() if started is None else started
        self._check_open()
        prompt = self._checked_prompt(prompt_tokens)
        if not self._busy.acquire(blocking=False):
            raise BackendError("this model is already writing a reply", "wait for it, or cancel it")
        sampler = None
        try:
            lib, ctx, cancel = self._lib, self._ctx, self._cancel
            keep = self._reuse_prefix(prompt)
            t_prompt = time.perf_counter()

            def finish(reason: str, text: str = "", n: int = 0, ttft=None, t_decode=None, error=None) -> Done:
                end = time.perf_counter()
                t_decode = end if t_decode is None else t_decode
                return Done(text=text, finish_reason=reason, prompt_tokens=len(prompt), completion_tokens=n,
                            prompt_s=t_decode - t_prompt, decode_s=end - t_decode, ttft_s=ttft,
                            cached_tokens=keep, error=error)

            for start in range(keep, len(prompt), self.n_batch):
                if cancel.is_set():
                    yield finish("cancelled")
                    return
                chunk = prompt[start:start + self.n_batch]
                tokens = (lib.llama_token * len(chunk))(*chunk)   # must outlive the batch that points at it
                rc = lib.llama_decode(ctx, lib.llama_batch_get_one(tokens, len(chunk)))
                if rc != 0:
                    self._forget()
                    yield finish("error", error=f"llama_decode failed on the prompt (code {rc})")
                    return
                self._cached.extend(chunk)
            t_decode = time.perf_counter()

            sampler = self._sampler(params, prompt)
            yield from self._decode_loop(sampler, params, started, finish, t_decode)
        finally:
            if sampler is not None:
                self._lib.llama_sampler_free(sampler)
            if self._free_when_done:      # close() came while this decode ran: free now that it ended
                self._release_native()
            self._busy.release()

    def _decode_loop(self, sampler, params: GenerationParams, started: float, finish, t_decode: float):
        """Sample, emit, decode, until a stop token, the token limit, a full context or a cancel.

        The hot path: every name is a local, nothing is allocated but the event.
        """
        from localq.backends.base import StopMatcher

        lib = self._lib
        sample, decode, is_eog = lib.llama_sampler_sample, lib.llama_decode, lib.llama_vocab_is_eog
        ctx, vocab, cancel, cached = self._ctx, self._vocab, self._cancel, self._cached
        one, one_batch, piece = self._one, self._one_batch, self._piece
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        utf8 = decoder.decode
        stops = StopMatcher(params.stop) if params.stop else None
        max_tokens = reply_limit(params, self.n_ctx)
        ignore_eos = params.ignore_eos
        n_ctx = self.n_ctx
        parts: list[str] = []
        n = 0
        ttft = None
        reason = "length"
        while True:
            token = sample(sampler, ctx, -1)
            if ttft is None:
                ttft = time.perf_counter() - started
            if not ignore_eos and is_eog(vocab, token):
                reason = "stop"
                break
            n += 1
            text = utf8(piece(token))
            if stops is not None and text:
                text, hit = stops.feed(text)
                if hit:
                    if text:
                        parts.append(text)
                        yield TextDelta(text)
                    reason = "stop"
                    break
            if text:
                parts.append(text)
                yield TextDelta(text)
            if n >= max_tokens:
                break
            if cancel.is_set():
                reason = "cancelled"
                break
            if len(cached) >= n_ctx:
                break
            one[0] = token
            rc = decode(ctx, one_batch)
            if rc != 0:
                self._forget()
                yield finish("error", "".join(parts), n, ttft, t_decode, f"llama_decode failed (code {rc})")
                return
            cached.append(token)
        tail = utf8(b"", True) + (stops.flush() if stops is not None and reason != "stop" else "")
        if tail:
            parts.append(tail)
            yield TextDelta(tail)
        yield finish(reason, "".join(parts), n, ttft, t_decode)

    def _forget(self) -> None:
        """After a failed decode the cache's content is uncertain: start clean."""
        self._lib.llama_memory_clear(self._mem, True)
        self._cached.clear()

    def _free(self) -> None:
        """Free the context and model, never under a decode that still runs.

        A reply running in another thread sees the cancel within a token and
        lets go. One that does not within 5 s (a decode stuck in the engine)
        frees them itself when it ends: freeing under it would crash.
        """
        self._cancel.set()
        if not self._busy.acquire(timeout=5):
            self._free_when_done = True
            return
        try:
            self._release_native()
        finally:
            self._busy.release()

    def _release_native(self) -> None:
        with self._embed_lock:
            if self._embed_ctx is not None:
                self._lib.llama_free(self._embed_ctx)
                self._embed_ctx = None
        if self._ctx is not None:
            self._lib.llama_free(self._ctx)
        if self._model is not None:
            self._lib.llama_model_free(self._model)
        self._ctx = self._model = None
