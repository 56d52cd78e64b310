"""Quality measured here: perplexity, and KL divergence and top-1 agreement against a source.

Perplexity follows llama.cpp's ``llama-perplexity`` tool exactly, so the
figures compare with the ones people publish: the whole text is tokenized once
(with the BOS token only if the model's tokenizer adds one), cut into
consecutive chunks of ``ctx`` tokens, each chunk is evaluated from an empty
cache (its first token replaced by BOS when the tokenizer adds one), and only
the second half of each chunk is scored: the log-probability of token ``i + 1``
from the logits at position ``i``, for ``i`` from ``ctx/2`` to ``ctx - 2``.
PPL is ``exp`` of the mean negative log-likelihood over all scored tokens.

Against a source (the unquantized model), both run on the same tokens, chunk
by chunk, and the same positions give the mean KL divergence
``sum p_src * (log p_src - log p_model)`` and the share of positions whose most
likely token is the same: llama-perplexity's ``--kl-divergence`` figures.

The default text is present on every Python install, offline: the values of
the standard library's ``pydoc_data.topics.topics``, in sorted key order,
joined by a blank line. ``localq.store.evaluations`` keeps the results.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from localq.errors import LocalqError

DEFAULT_CTX = 512
DEFAULT_CHUNKS = 24
DEFAULT_TEXT_NAME = "pydoc_data.topics"

ProgressFn = Callable[[int, int], None]  # (chunks done, chunks total)


def default_text() -> str:
    """The standard library's pydoc topics, values in sorted key order, joined by a blank line."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


@dataclass
class EvalResult:
    """What ``evaluate`` measured, and on what."""

    perplexity: float
    perplexity_stderr: float
    tokens_scored: int
    chunks: int
    ctx: int
    text_name: str
    text_sha256: str
    text_tokens: int
    seconds: float
    tokens_per_second: float       # tokens evaluated (ctx per chunk) per second of the model's own decoding and scoring
    threads: int
    source_perplexity: float | None = None
    kl_divergence: float | None = None
    top1_agreement: float | None = None

    @property
    def ppl_increase(self) -> float | None:
        """Relative perplexity increase over the source, as a fraction."""
        if self.source_perplexity is None:
            return None
        return self.perplexity / self.source_perplexity - 1

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ppl_increase"] = self.ppl_increase
        return data


class LlamaScorer:
    """A GGUF in llama.cpp with one context of ``ctx`` tokens: logits of a chunk's second half."""

    def __init__(self, path: Path, ctx: int, threads: int):
        from localq.backends.llamacpp import _load_library, disable_unrunnable_repacking

        lib = self.lib = _load_library()
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = 0
        disable_unrunnable_repacking(mparams)
        self.model = lib.llama_model_load_from_file(str(path).encode(), mparams)
        if not self.model:
            raise LocalqError(f"llama.cpp cannot load {Path(path).name}", "check the file with `localq verify`")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.add_bos = bool(lib.llama_vocab_get_add_bos(self.vocab))
        self.bos = lib.llama_vocab_bos(self.vocab)
        train_ctx = lib.llama_model_n_ctx_train(self.model)
        if ctx > train_ctx:
            lib.llama_model_free(self.model)
            raise LocalqError(f"--ctx {ctx} is more than the model's training context ({train_ctx})", "use a smaller --ctx")
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = ctx
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.n_seq_max = 1
        self.ctx = lib.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            lib.llama_model_free(self.model)
            raise LocalqError(f"llama.cpp cannot create a {ctx}-token context", "use a smaller --ctx")
        self.n_ctx = ctx
        batch = self.batch = lib.llama_batch_init(ctx, 0, 1)
        for i in range(ctx):          # positions and the one sequence are the same for every chunk
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
        self._tokens = np.ctypeslib.as_array(batch.token, shape=(ctx,))
        self._wants_logits = np.ctypeslib.as_array(batch.logits, shape=(ctx,))
        self._warm_up()

    def _warm_up(self) -> None:
        """Decode one token, as ``localq bench`` warms up before it measures.

        It pages the memory-mapped weights in and starts llama.cpp's threads, so
        the first chunk runs at the speed of the others and tokens/s measures
        the evaluation, not page faults. The cache is cleared before every
        chunk, so it changes no figure.
        """
        try:
            self.chunk_logits([max(self.bos, 0)], 0)
        except BaseException:
            self.close()
            raise

    def tokenize(self, text: str) -> list[int]:
        """The text's tokens as llama-perplexity makes them: special tokens added, none parsed."""
        data = text.encode("utf-8")
        size = len(data) + 16
        buf = (ctypes.c_int32 * size)()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), buf, size, True, False)
        if n < 0:
            raise LocalqError("the text could not be tokenized")
        return list(buf[:n])

    def chunk_logits(self, tokens: list[int], first: int) -> np.ndarray:
        """Logits (len(tokens) - first, n_vocab) of positions ``first..`` of one chunk, from an empty cache.

        The array is llama.cpp's own output buffer, not a copy (a chunk's logits
        are 50 MB at a 49k vocabulary): it is valid until this scorer's next
        ``chunk_logits`` or ``close``, and the caller must not keep it longer.
        """
        lib, batch, n = self.lib, self.batch, len(tokens)
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        self._tokens[:n] = tokens
        self._wants_logits[:first] = 0
        self._wants_logits[first:n] = 1
        batch.n_tokens = n
        if lib.llama_decode(self.ctx, batch) != 0:
            raise LocalqError("llama.cpp failed to evaluate a chunk", "try a smaller --ctx")
        return np.ctypeslib.as_array(lib.llama_get_logits(self.ctx), shape=(n - first, self.n_vocab))

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.lib.llama_model_free(self.model)
            self.ctx = None


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities (float64 for the sums)."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def log_sum_exp(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``log(sum(exp(row)))`` in float64, from float32 passes over the rows.

    Perplexity needs only this and the target's logit per row, not the whole
    log-softmax: shifting by the row's maximum keeps ``exp`` in range, the
    shifted values stay float32 (one scratch array, no float64 copy of the
    chunk), and the sums accumulate in float64. Within 1e-7 of ``log_softmax``.
    """
    top = logits.max(axis=-1, keepdims=True)
    scratch = np.subtract(logits, top, dtype=np.float32)
    np.exp(scratch, out=scratch)
    return top[..., 0].astype(np.float64) + np.log(scratch.sum(axis=-1, dtype=np.float64))


def chunk_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target under the row of logits that predicts it."""
    picked = logits[np.arange(len(targets)), targets].astype(np.float64)
    return log_sum_exp(logits[:len(targets)]) - picked


def rows_nll(pool: ThreadPoolExecutor, logits: np.ndarray, targets: np.ndarray, parts: int) -> np.ndarray:
    """``chunk_nll`` with the rows split over ``parts`` threads of ``pool`` (numpy releases the GIL).

    The scoring runs between two chunks, while llama.cpp's threads wait, so
    the cores they use are free for it. Row by row, so the result is the same.
    """
    bounds = np.linspace(0, len(targets), max(1, parts) + 1).astype(int)
    pieces = pool.map(lambda ab: chunk_nll(logits[ab[0]:ab[1]], targets[ab[0]:ab[1]]), zip(bounds, bounds[1:]))
    return np.concatenate(list(pieces))


def chunk_kl_top1(source_logits: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-position KL(source || model) and whether the most likely tokens agree."""
    lp_src, lp = log_softmax(source_logits), log_softmax(logits)
    kl = (np.exp(lp_src) * (lp_src - lp)).sum(axis=-1)
    same = source_logits.argmax(axis=-1) == logits.argmax(axis=-1)
    return kl, same


def plan_chunks(n_tokens: int, ctx: int, chunks: int | None) -> int:
    """How many chunks llama-perplexity would evaluate; an error when the text is too short."""
    if ctx < 8 or ctx % 2:
        raise LocalqError(f"--ctx {ctx} is too small or odd", "use an even context of 8 tokens or more, such as 512")
    if n_tokens < 2 * ctx:
        raise LocalqError(f"the text has {n_tokens} tokens; perplexity with a context of {ctx} needs at least {2 * ctx}",
                          "use a longer --text or a smaller --ctx")
    most = n_tokens // ctx
    return most if chunks is None else max(1, min(chunks, most))


def engine_of(path: Path) -> str:
    """``llamacpp`` for a GGUF file, ``torch_int4`` for a localq INT4 checkpoint, else (a directory) ``mlx``."""
    path = Path(path)
    if not path.is_dir():
        return "llamacpp"
    from localq.backends.torch_int4 import CHECKPOINT_META   # the light module: no torch for a check

    return "torch_int4" if (path / CHECKPOINT_META).is_file() else "mlx"


def scorer_for(path: Path, ctx: int, threads: int, engine: str | None = None):
    """The scorer of ``engine`` (default: ``engine_of(path)``) for ``path``: llama.cpp for a GGUF file,
    MLX (``localq.quantize.mlx_eval.MLXScorer``) or the torch INT4 backend
    (``localq.backends.torch_int4.scorer.Int4Scorer``) for a model directory."""
    engine = engine or engine_of(path)
    if engine == "torch_int4":
        from localq.backends.torch_int4.scorer import Int4Scorer

        return Int4Scorer(path, ctx, threads)
    if engine == "mlx":
        from localq.quantize.mlx_eval import MLXScorer

        return MLXScorer(path, ctx, threads)
    return LlamaScorer(path, ctx, threads)


def evaluate(
    model_path: Path,
    *,
    against: Path | None = None,
    text: str | None = None,
    text_name: str = DEFAULT_TEXT_NAME,
    ctx: int = DEFAULT_CTX,
    chunks: int | None = DEFAULT_CHUNKS,
    threads: int | None = None,
    on_progress: ProgressFn | None = None,
    source_scorer=None,
    names: tuple[str, str] | None = None,
) -> EvalResult:
    """Perplexity of a GGUF, an MLX directory or a localq INT4 checkpoint on ``text`` (default: the pydoc
    topics), and KL / top-1 against ``against``, run by the same engine (a quant against its source).

    ``source_scorer`` is ``against`` already open (``evaluate_many`` passes one that remembers its logits).
    ``names``: the model and the source as errors name them (default: their file names; a stored
    model's file is named by its digest, so the command passes its ref).
    """
    from localq.backends.llamacpp import physical_cores

    text = default_text() if text is None else text
    threads = threads or physical_cores()
    scorer = scorer_for(model_path, ctx, threads)
    pool = ThreadPoolExecutor(max_workers=threads)
    source = None
    try:
        tokens = scorer.tokenize(text)
        n_chunks = plan_chunks(len(tokens), ctx, chunks)
        if against is not None:
            source = source_scorer or scorer_for(against, ctx, threads, engine_of(model_path))  # the quant's engine
            if source.n_vocab != scorer.n_vocab or source.tokenize(text) != tokens:
                model_name, source_name = names or (Path(model_path).name, Path(against).name)
                raise LocalqError(f"{source_name} has another vocabulary than {model_name}",
                                  "compare a quant with the model it was made from")
        first = ctx // 2
        nll, nll_src, kls, same = [], [], [], []
        own_seconds = 0.0    # the model's decoding and scoring; not the source's, nor the comparison
        started = time.perf_counter()
        for c in range(n_chunks):
            chunk = tokens[c * ctx:(c + 1) * ctx]
            if scorer.add_bos:
                chunk = [scorer.bos, *chunk[1:]]
            targets = np.asarray(chunk[first + 1:], dtype=np.int64)
            t0 = time.perf_counter()
            logits = scorer.chunk_logits(chunk, first)[:-1]  # the last position predicts past the chunk
            nll.append(rows_nll(pool, logits, targets, threads))
            own_seconds += time.perf_counter() - t0
            if source is not None:
                src_logits = source.chunk_logits(chunk, first)[:-1]
                nll_src.append(chunk_nll(src_logits, targets))
                kl, agree = chunk_kl_top1(src_logits, logits)
                kls.append(kl)
                same.append(agree)
            if on_progress:
                on_progress(c + 1, n_chunks)
        seconds = time.perf_counter() - started
    finally:
        pool.shutdown()
        scorer.close()
        if source is not None and source_scorer is None:
            source.close()
    all_nll = np.concatenate(nll)
    mean = float(all_nll.mean())
    # llama-perplexity's uncertainty: the standard error of the mean NLL, carried through exp
    stderr = float(math.sqrt(max(float((all_nll ** 2).mean()) - mean ** 2, 0.0) / (len(all_nll) - 1)))
    result = EvalResult(
        perplexity=math.exp(mean), perplexity_stderr=math.exp(mean) * stderr, tokens_scored=len(all_nll),
        chunks=n_chunks, ctx=ctx, text_name=text_name,
        text_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), text_tokens=len(tokens),
        seconds=seconds, tokens_per_second=n_chunks * ctx / own_seconds if own_seconds else 0.0,
        threads=threads,
    )
    if source is not None:
        result.source_perplexity = math.exp(float(np.concatenate(nll_src).mean()))
        result.kl_divergence = float(np.concatenate(kls).mean())
        result.top1_agreement = float(np.concatenate(same).mean())
    return result


class RecordedScorer:
    """A scorer whose answers are kept: each chunk is run once, however many models are compared with it.

    Holds every chunk's logits in memory (``ctx / 2`` positions times the
    vocabulary, float32, per chunk): meant for the handful of chunks a
    comparison of quants reads.
    """

    def __init__(self, scorer):
        self.scorer = scorer
        self.n_vocab, self.add_bos, self.bos = scorer.n_vocab, scorer.add_bos, scorer.bos
        self._tokens: dict[str, list[int]] = {}
        self._logits: dict[tuple, np.ndarray] = {}

    def tokenize(self, text: str) -> list[int]:
        if text not in self._tokens:
            self._tokens[text] = self.scorer.tokenize(text)
        return self._tokens[text]

    def chunk_logits(self, tokens: list[int], first: int) -> np.ndarray:
        key = (tuple(tokens), first)
        if key not in self._logits:   # a copy: llama.cpp's scorer returns its own buffer, reused per chunk
            self._logits[key] = np.array(self.scorer.chunk_logits(tokens, first), copy=True)
        return self._logits[key]

    def close(self) -> None:
        self.scorer.close()
        self._logits.clear()


def evaluate_many(model_paths: list[Path], *, against: Path, ctx: int = DEFAULT_CTX,
                  threads: int | None = None, **options) -> list[EvalResult]:
    """``evaluate`` of each model against one source, which runs once (``RecordedScorer``).

    The models must share an engine (the source runs in it): INT4 checkpoints,
    or MLX directories, or GGUF files.
    """
    from localq.backends.llamacpp import physical_cores

    engines = {engine_of(p) for p in model_paths}
    if len(engines) != 1:
        raise LocalqError(f"these models run in different engines ({', '.join(sorted(engines))})",
                          "compare the quants of one engine at a time")
    threads = threads or physical_cores()
    source = RecordedScorer(scorer_for(against, ctx, threads, engines.pop()))
    try:
        return [evaluate(p, against=against, ctx=ctx, threads=threads, source_scorer=source, **options)
                for p in model_paths]
    finally:
        source.close()
