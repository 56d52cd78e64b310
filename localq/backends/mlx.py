"""The MLX backend: MLX model directories (and plain safetensors ones) through mlx-lm.

(Over 400 lines: one engine's loading, its memory check, the Metal wired-memory limit and
the generation loop act on the same mlx-lm model and cache objects.)

On Apple Silicon MLX runs on the GPU through Metal; on Linux the ``mlx[cpu]``
build runs the same code on the CPU, slowly (that is how localq's tests run
it). mlx and mlx-lm are imported inside ``load()`` only.

What it loads: a directory with ``config.json``, the tokenizer files and the
``model*.safetensors`` weights (with their index when split), as
``mlx-community`` repositories hold them and as ``localq quantize --to
mlx-4bit`` writes them. An index ``Variant`` is materialized from the blob
store with its real file names first (``localq.store.materialize``); a path
to such a directory loads as it is.

Decisions (``LoadOptions`` fields left as None):
- ``n_ctx``: 4096, capped at the model's ``max_position_embeddings``. mlx-lm's
  KV cache grows as needed; ``n_ctx`` is the limit localq trims to.
- ``n_threads``: mlx picks its own CPU threads; the session records the
  physical core count only so the history shows the machine's size.
- ``n_gpu_layers``: not used; on Metal the whole model is on the GPU.
- ``n_batch``: the prompt is evaluated in steps of this many tokens
  (mlx-lm's ``prefill_step_size``).
- On the CPU (mlx's Linux build) half-precision parameters are computed in
  float32 (``compute_in_float32``: mlx's CPU half-precision kernels are
  about 30 times slower).
- Before loading, the weights plus the KV cache of a full context must fit in
  available memory, else a LocalqError says what to pick instead.
- On Metal, generation raises the wired-memory limit to the GPU's
  recommended working set (as mlx-lm's own ``generate`` does) and a model
  bigger than about 0.9 of it gets a warning in ``session.warnings`` and the
  log: it will page and run slowly. That path is written from mlx's
  documentation and mlx-lm's source; it has not run on Apple hardware in
  localq's tests (they run mlx's CPU build on Linux).

The chat template is the tokenizer's (``tokenizer_config.json`` or
``chat_template.jinja``), rendered by localq's own sandboxed renderer, the
same one the llama.cpp backend uses; prompt tokens are encoded without added
special tokens, as Hugging Face's ``apply_chat_template`` does (templates
write their own BOS). Sampling uses the shared ``GenerationParams``: mlx-lm's
top-p, min-p, top-k and temperature samplers and its repetition penalty.
Consecutive turns reuse the KV cache: only the tokens after the longest common
prefix with the previous prompt and reply are evaluated.
"""

from __future__ import annotations

import importlib.util
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

from localq.backends.context import reusable_prefix
from localq.backends.base import (
    Backend,
    Done,
    GenerationParams,
    LoadOptions,
    Session,
    TextDelta,
)
from localq.errors import BackendError, BadModelFile, LocalqError
from localq.mlx_info import (
    kv_cache_bytes,
    read_model_dir,
    trained_context,
    weights_bytes,
)
from localq.defaults import DEFAULT_CONTEXT
from localq.units import GiB

WIRED_WARNING_SHARE = 0.9         # of Metal's recommended working set, as mlx-lm warns
INSTALL_HINT = "install it with `pip install 'localq[mlx]'`"

log = logging.getLogger(__name__)


# --- the model directory ------------------------------------------------------------


def check_architecture(config: dict, name: str) -> None:
    """BackendError when this mlx-lm has no implementation of the config's ``model_type``."""
    from mlx_lm.utils import MODEL_REMAPPING

    model_type = config["model_type"]
    module = MODEL_REMAPPING.get(model_type, model_type)
    if not module.isidentifier() or importlib.util.find_spec(f"mlx_lm.models.{module}") is None:
        raise BackendError(f"mlx-lm cannot run {name}: it has no {model_type!r} architecture",
                           "update mlx-lm (pip install -U mlx-lm), or pick a GGUF quant of the model")


def check_fits(path: Path, config: dict, n_ctx: int, name: str, available: int | None = None) -> None:
    """LocalqError when the weights plus a full KV cache do not fit in available memory."""
    if available is None:
        import psutil

        available = psutil.virtual_memory().available
    weights = weights_bytes(path)
    kv = kv_cache_bytes(config, n_ctx)
    need = weights + kv
    if need > available:
        raise LocalqError(
            f"{name} needs about {need / GiB:.1f} GiB of memory with a {n_ctx}-token context "
            f"(weights {weights / GiB:.1f} GiB, KV cache {kv / GiB:.1f} GiB); {available / GiB:.1f} GiB is available",
            "pick a smaller quant (`localq recommend MODEL`), a smaller --ctx, or close other programs",
        )


def import_mlx():
    """(mlx.core, mlx_lm), or BackendError naming the extra to install."""
    try:
        import mlx.core as mx
        import mlx_lm
    except ImportError as exc:
        raise BackendError(f"mlx is not installed ({exc})", INSTALL_HINT) from exc
    return mx, mlx_lm


def wired_warning(model_bytes: int, recommended: int | None) -> str | None:
    """The warning for a model near Metal's recommended working set, or None."""
    if not recommended or model_bytes <= WIRED_WARNING_SHARE * recommended:
        return None
    return (f"the model takes {model_bytes / GiB:.1f} GiB, close to the {recommended / GiB:.1f} GiB the GPU "
            "can keep wired; it will page and run slowly (pick a smaller quant or a shorter context, "
            "or close other programs)")


def compute_in_float32(mx, model) -> None:
    """Cast the model's float16/bfloat16 parameters (and quantization scales) to float32, in place.

    For mlx's CPU build: its half-precision kernels, the quantized matmul
    above all, run about 30 times slower than float32 ones on x86 (measured
    with mlx 0.32: 155 ms against 4.5 ms for a 576 x 1536 4-bit matmul), so a
    4-bit SmolLM2 decodes at 0.05 tokens/s in float16 and 1.3 in float32.
    The files are not changed: on Metal the same quant runs in float16.
    Costs memory for the unquantized tensors and the scales (twice their bytes).
    """
    model.set_dtype(mx.float32, lambda dtype: dtype in (mx.float16, mx.bfloat16))


def _chat_template(tokenizer):
    """The model's chat template, compiled by localq's sandboxed renderer.

    The one place this backend reaches into ``localq.chat``.
    """
    from localq.backends.templates import ChatTemplate

    source = getattr(tokenizer, "chat_template", None)
    if isinstance(source, dict):          # named templates: the default one
        source = source.get("default") or next(iter(source.values()), None)
    return ChatTemplate(source if isinstance(source, str) else None,
                        bos_token=getattr(tokenizer, "bos_token", None) or "",
                        eos_token=getattr(tokenizer, "eos_token", None) or "")


# --- the backend ----------------------------------------------------------------------


class MLXBackend(Backend):
    """MLX model directories through mlx-lm: Metal on Apple Silicon, the CPU elsewhere."""

    name = "mlx"
    formats = ("mlx", "safetensors")

    def available(self, profile=None) -> tuple[bool, str]:
        for module in ("mlx", "mlx_lm"):
            if importlib.util.find_spec(module) is None:
                return False, f"{module.replace('_', '-')} is not installed; {INSTALL_HINT}"
        return True, ""

    def load(self, model, options: LoadOptions | None = None, profile=None) -> "MLXSession":
        options = options or LoadOptions()
        fmt = model.format if hasattr(model, "files") else None      # an index Variant, or a path
        if fmt is not None and fmt not in self.formats:
            raise BackendError(f"the MLX backend runs MLX and safetensors models, not {fmt}",
                               "pick an MLX quant of the model (e.g. MODEL:SIZE-mlx-4bit)")
        path, identity = self._directory(model)
        name = identity["model_ref"]
        config = read_model_dir(path, name)
        trained = trained_context(config)
        options.validate(trained)
        n_ctx = options.n_ctx or min(DEFAULT_CONTEXT, trained or DEFAULT_CONTEXT)
        if options.check_memory:
            check_fits(path, config, n_ctx, name, None if profile is None else profile.memory.available)

        mx, _ = import_mlx()
        check_architecture(config, name)
        from mlx_lm.utils import load as mlx_load

        started = time.perf_counter()
        try:
            mlx_model, tokenizer = mlx_load(str(path))
        except FileNotFoundError as exc:
            raise BadModelFile(f"mlx-lm cannot load {name}: {exc}", "pull or quantize the model again") from exc
        except (ValueError, KeyError) as exc:
            raise BackendError(f"mlx-lm cannot load {name}: {exc}",
                               "the files do not match the config; pull or quantize the model again") from exc
        on_cpu = not mx.metal.is_available()
        if on_cpu:
            compute_in_float32(mx, mlx_model)
        load_s = time.perf_counter() - started

        warnings = []
        recommended = None
        if mx.metal.is_available():
            recommended = mx.device_info().get("max_recommended_working_set_size")
            warning = wired_warning(weights_bytes(path), recommended)
            if warning:
                log.warning("%s: %s", name, warning)
                warnings.append(warning)
        from localq.backends.llamacpp import physical_cores

        return MLXSession(mx, mlx_model, tokenizer, config, n_ctx=n_ctx, n_threads=options.n_threads or physical_cores(),
                          n_batch=options.n_batch, wired_limit=recommended, warnings=warnings,
                          model_path=path, load_s=load_s, **identity)

    @staticmethod
    def _directory(model) -> tuple[Path, dict]:
        """The model directory to load and what the session records about the model."""
        if hasattr(model, "files"):
            from localq.store.materialize import materialize

            return materialize(model), {"model_ref": model.ref, "quant": model.quant, "variant_id": model.id}
        path = Path(model).expanduser()
        if not path.is_dir():
            raise BadModelFile(f"{path} is not an MLX model directory",
                               "an MLX model is a directory with config.json, tokenizer files and model*.safetensors")
        return path, {"model_ref": str(path), "quant": None, "variant_id": None}


class MLXSession(Session):
    """An MLX model in memory with one KV cache (one conversation at a time)."""

    backend_name = "mlx"

    def __init__(self, mx, model, tokenizer, config: dict, *, n_ctx: int, n_threads: int, n_batch: int,
                 wired_limit: int | None, warnings: list[str], **identity):
        super().__init__(n_ctx=n_ctx, n_threads=n_threads, **identity)
        from mlx_lm.models.cache import make_prompt_cache

        self._mx = mx
        self._model = model
        self._tokenizer = tokenizer
        self.config = config
        self.n_batch = n_batch
        self.device = "metal" if mx.metal.is_available() else "cpu"
        self.warnings = warnings
        self._wired_limit = wired_limit
        self._make_cache = make_prompt_cache
        self._cache = make_prompt_cache(model)
        self._cached: list[int] = []          # the tokens whose keys and values are in the cache
        self._busy = threading.Lock()
        self._eos = frozenset(tokenizer.eos_token_ids)
        self.template = _chat_template(tokenizer)

    # --- tokens

    def tokenize(self, text: str) -> list[int]:
        self._check_open()
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def encode_chat(self, messages: Sequence[dict]) -> list[int]:
        return self.tokenize(self.template.render(messages, add_generation_prompt=True))

    # --- the KV cache

    def _reuse_prefix(self, prompt: list[int]) -> int:
        """Keep the cached tokens the prompt starts with; drop the rest; return how many were kept."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        keep = reusable_prefix(self._cached, prompt)
        if keep < len(self._cached):
            if keep and can_trim_prompt_cache(self._cache):
                trim_prompt_cache(self._cache, len(self._cached) - keep)
            else:
                self._cache = self._make_cache(self._model)
                keep = 0
            del self._cached[keep:]
        return keep

    def reset(self) -> None:
        self._check_open()
        with self._busy:
            self._forget()

    def _forget(self) -> None:
        self._cache = self._make_cache(self._model)
        self._cached.clear()

    # --- generation

    def _sampler(self, params: GenerationParams):
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        if params.temperature > 0:
            self._mx.random.seed(secrets.randbits(32) if params.seed is None else params.seed)
        sampler = make_sampler(
            temp=params.temperature, top_p=params.top_p if params.top_p < 1.0 else 0.0,
            min_p=params.min_p, top_k=params.top_k,
        )
        processors = None
        if params.repeat_penalty != 1.0 and params.repeat_last_n:
            processors = make_logits_processors(repetition_penalty=params.repeat_penalty,
                                                repetition_context_size=params.repeat_last_n)
        return sampler, processors

    def generate(self, prompt_tokens: Sequence[int], params: GenerationParams,
                 started: float | None = None) -> Iterator:
        started = time.perf_counter() if started is None else started
        self._check_open()
        prompt = self._checked_prompt(prompt_tokens)
        if not self._busy.acquire(blocking=False):
            raise BackendError("this model is already writing a reply", "wait for it, or cancel it")
        mx = self._mx
        old_limit = mx.set_wired_limit(self._wired_limit) if self._wired_limit else None
        try:
            yield from self._generate(prompt, params, started)
        except BaseException:
            self._forget()          # a failure or an abandoned reply leaves the cache uncertain
            raise
        finally:
            if old_limit is not None:
                mx.synchronize()
                mx.set_wired_limit(old_limit)
            self._busy.release()

    def _generate(self, prompt: list[int], params: GenerationParams, started: float) -> Iterator:
        """Prompt, then sample and emit until a stop token, the token limit, a full context or a cancel."""
        from mlx_lm.generate import generate_step

        from localq.backends.base import StopMatcher

        mx = self._mx
        keep = self._reuse_prefix(prompt)
        sampler, processors = self._sampler(params)
        mx.reset_peak_memory()
        t_prompt = time.perf_counter()
        steps = generate_step(mx.array(prompt[keep:]), self._model, max_tokens=-1, sampler=sampler,
                              logits_processors=processors, prompt_cache=self._cache,
                              prefill_step_size=max(1, self.n_batch))
        detok = self._tokenizer.detokenizer
        detok.reset()
        stops = StopMatcher(params.stop) if params.stop else None
        max_tokens = min(params.max_tokens or self.n_ctx, self.n_ctx - len(prompt))
        eos, ignore_eos, cancel = self._eos, params.ignore_eos, self._cancel
        generated: list[int] = []
        parts: list[str] = []
        ttft = None
        t_decode = None
        reason = "length"
        try:
            for token, _ in steps:
                if ttft is None:
                    t_decode = time.perf_counter()
                    ttft = t_decode - started
                generated.append(token)
                if not ignore_eos and token in eos:
                    reason = "stop"
                    break
                detok.add_token(token)
                text = detok.last_segment
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
                if len(generated) >= max_tokens:
                    break
                if cancel.is_set():
                    reason = "cancelled"
                    break
        finally:
            steps.close()
        if reason != "stop" or stops is None:
            detok.finalize()
            tail = detok.last_segment + (stops.flush() if stops is not None else "")
            if tail:
                parts.append(tail)
                yield TextDelta(tail)
        # generate_step feeds each token back into the cache before yielding it.
        self._cached = (prompt + generated)[:self._cache_offset(len(prompt) + len(generated))]
        end = time.perf_counter()
        t_decode = end if t_decode is None else t_decode
        completion = len(generated) - (1 if reason == "stop" and generated and generated[-1] in eos else 0)
        yield Done(text="".join(parts), finish_reason=reason, prompt_tokens=len(prompt), completion_tokens=completion,
                   prompt_s=t_decode - t_prompt, decode_s=end - t_decode, ttft_s=ttft, cached_tokens=keep,
                   peak_memory_bytes=int(mx.get_peak_memory()))

    def _cache_offset(self, expected: int) -> int:
        """How many tokens the cache holds: its first layer's offset, when it keeps one."""
        offset = getattr(self._cache[0], "offset", None) if self._cache else None
        return min(offset, expected) if isinstance(offset, int) else expected

    def _free(self) -> None:
        self._cancel.set()
        acquired = self._busy.acquire(timeout=5)
        try:
            self._model = self._cache = None
            self._mx.clear_cache()
        finally:
            if acquired:
                self._busy.release()
