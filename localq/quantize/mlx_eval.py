"""Measuring an MLX quant: perplexity, KL divergence and top-1 agreement against its source.

The definitions are llama.cpp's (``llama-perplexity``, with
``--kl-divergence`` for the comparison):

- the text is tokenized once (with the BOS token when the tokenizer adds
  one) and cut into chunks of ``n_ctx`` tokens; each chunk is evaluated on
  its own, from an empty cache, its first token replaced by BOS when the
  model uses one;
- only the second half of each chunk is scored (the first half is context),
  so every scored token sees at least ``n_ctx / 2`` tokens before it;
- perplexity = exp(mean negative log-likelihood of the next token);
- KL divergence = mean over the scored positions of
  sum_v p_source(v) (log p_source(v) - log p_quant(v));
- top-1 = the share of scored positions where both models' most likely next
  token is the same.

Both models run in mlx-lm, the source unquantized from its safetensors
directory, so the numbers compare quantizations and nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from localq.errors import LocalqError


@dataclass(frozen=True)
class MLXEvaluation:
    perplexity: float
    source_perplexity: float
    kl_divergence: float
    top1_agreement: float
    scored_tokens: int
    chunks: int
    n_ctx: int

    def to_dict(self) -> dict:
        return asdict(self)


def load_model(model_dir: Path):
    """(model, tokenizer) of an MLX or safetensors directory, with localq's checks first."""
    from localq.backends.mlx import check_architecture, compute_in_float32, import_mlx
    from localq.mlx_info import read_model_dir

    config = read_model_dir(Path(model_dir))
    mx, _ = import_mlx()
    check_architecture(config, Path(model_dir).name)
    from mlx_lm.utils import load

    model, tokenizer = load(str(model_dir))
    if not mx.metal.is_available():
        compute_in_float32(mx, model)     # as the backend runs it on the CPU
    return model, tokenizer


def tokens_of(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text))


def chunks(tokens: list[int], n_ctx: int, bos: int | None, max_chunks: int | None = None) -> list[list[int]]:
    """The text's tokens cut into whole chunks of ``n_ctx``, each starting with BOS when there is one."""
    if n_ctx < 8:
        raise LocalqError(f"evaluation context {n_ctx} is too small", "use 128 tokens or more")
    count = len(tokens) // n_ctx
    if max_chunks is not None:
        count = min(count, max_chunks)
    if count == 0:
        raise LocalqError(f"the evaluation text has {len(tokens)} tokens, less than one {n_ctx}-token chunk",
                          "use a longer text or a smaller context")
    found = []
    for i in range(count):
        chunk = tokens[i * n_ctx:(i + 1) * n_ctx]
        if bos is not None:
            chunk = [bos] + chunk[1:]
        found.append(chunk)
    return found


def chunk_logprobs(model, chunk: list[int]):
    """Log-probabilities (numpy, float32) of the next token at the scored positions of one chunk."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm.models.cache import make_prompt_cache

    logits = model(mx.array(chunk)[None], cache=make_prompt_cache(model))[0]
    first = len(chunk) // 2
    scored = logits[first:len(chunk) - 1].astype(mx.float32)
    logprobs = scored - mx.logsumexp(scored, axis=-1, keepdims=True)
    mx.eval(logprobs)
    return np.array(logprobs)


def _bos(tokenizer) -> int | None:
    """BOS when the tokenizer adds one (as llama.cpp's add_bos), else None."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    probe = list(tokenizer.encode("a"))
    return bos if probe and probe[0] == bos else None


def perplexity(model_dir: Path, text: str, n_ctx: int = 512, max_chunks: int | None = None) -> float:
    """The perplexity of the model in ``model_dir`` on ``text``, by llama.cpp's definition."""
    import numpy as np

    model, tokenizer = load_model(model_dir)
    nll, count = 0.0, 0
    for chunk in chunks(tokens_of(tokenizer, text), n_ctx, _bos(tokenizer), max_chunks):
        logprobs = chunk_logprobs(model, chunk)
        targets = np.array(chunk[len(chunk) // 2 + 1:])
        nll -= float(logprobs[np.arange(len(targets)), targets].sum())
        count += len(targets)
    return float(np.exp(nll / count))


@dataclass
class SourceReference:
    """The source's next-token log-probabilities on a text, computed once for any number of quants."""

    name: str
    n_ctx: int
    chunks: list[list[int]]
    logprobs: list            # numpy arrays, one per chunk: scored positions x vocabulary


def source_reference(source_dir: Path, text: str, n_ctx: int = 512, max_chunks: int | None = None) -> SourceReference:
    """Run the unquantized source over ``text``; its tokenizer cuts the text for every quant compared to it."""
    source, tokenizer = load_model(source_dir)
    pieces = chunks(tokens_of(tokenizer, text), n_ctx, _bos(tokenizer), max_chunks)
    return SourceReference(Path(source_dir).name, n_ctx, pieces, [chunk_logprobs(source, c) for c in pieces])


def compare_to_source(quant_dir: Path, reference: SourceReference) -> MLXEvaluation:
    """Perplexity of the quant and of its source, KL(source || quant) and top-1 agreement."""
    import numpy as np

    quant, _ = load_model(quant_dir)
    nll_q = nll_s = kl = 0.0
    same = count = 0
    for chunk, ref in zip(reference.chunks, reference.logprobs):
        got = chunk_logprobs(quant, chunk)
        if got.shape != ref.shape:
            raise LocalqError(f"{Path(quant_dir).name} has a vocabulary of {got.shape[-1]} tokens, "
                              f"{reference.name} {ref.shape[-1]}", "compare a quant with the model it was made from")
        targets = np.array(chunk[len(chunk) // 2 + 1:])
        rows = np.arange(len(targets))
        nll_q -= float(got[rows, targets].sum())
        nll_s -= float(ref[rows, targets].sum())
        kl += float((np.exp(ref) * (ref - got)).sum())
        same += int((ref.argmax(-1) == got.argmax(-1)).sum())
        count += len(targets)
    return MLXEvaluation(
        perplexity=float(np.exp(nll_q / count)), source_perplexity=float(np.exp(nll_s / count)),
        kl_divergence=kl / count, top1_agreement=same / count, scored_tokens=count,
        chunks=len(reference.chunks), n_ctx=reference.n_ctx,
    )


def evaluate_against_source(quant_dir: Path, source_dir: Path, text: str, n_ctx: int = 512,
                            max_chunks: int | None = None) -> MLXEvaluation:
    """One quant against its source on ``text`` (``source_reference`` + ``compare_to_source``)."""
    return compare_to_source(quant_dir, source_reference(source_dir, text, n_ctx, max_chunks))
