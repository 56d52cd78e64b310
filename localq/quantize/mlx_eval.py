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


class MLXScorer:
    """An MLX model directory as a scorer: the logits of a chunk's positions, from an empty cache.

    The same interface as ``localq.evaluate``'s llama.cpp scorer (``tokenize``,
    ``chunk_logits``, ``n_vocab``, ``add_bos``, ``bos``, ``close``), so one
    evaluation loop serves both engines.
    """

    def __init__(self, path: Path, ctx: int | None = None, threads: int | None = None):
        self.path = Path(path)
        self.model, self.tokenizer = load_model(self.path)
        self.bos = getattr(self.tokenizer, "bos_token_id", None)
        probe = list(self.tokenizer.encode("a"))
        self.add_bos = self.bos is not None and bool(probe) and probe[0] == self.bos
        args = getattr(self.model, "args", None)
        self.n_vocab = getattr(args, "vocab_size", None)
        self.n_ctx = ctx

    def tokenize(self, text: str) -> list[int]:
        """The text's tokens, with BOS when the tokenizer adds one (as llama-perplexity's add_special)."""
        return list(self.tokenizer.encode(text))

    def chunk_logits(self, tokens: list[int], first: int):
        """Logits (len(tokens) - first, n_vocab), float32 numpy, of positions ``first..`` of one chunk."""
        import mlx.core as mx
        import numpy as np
        from mlx_lm.models.cache import make_prompt_cache

        logits = self.model(mx.array(tokens)[None], cache=make_prompt_cache(self.model))[0, first:]
        logits = logits.astype(mx.float32)
        mx.eval(logits)
        found = np.array(logits)
        self.n_vocab = found.shape[-1]
        return found

    def close(self) -> None:
        self.model = None


def log_softmax(logits):
    """Row-wise log-probabilities, in float64 for the sums."""
    import numpy as np

    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def chunks(tokens: list[int], n_ctx: int, bos: int | None, max_chunks: int | None = None) -> list[list[int]]:
    """The text's tokens cut into whole chunks of ``n_ctx``, each starting with BOS when there is one."""
    if n_ctx < 8 or n_ctx % 2:
        raise LocalqError(f"evaluation context {n_ctx} is too small or odd", "use an even context of 8 tokens or more")
    count = len(tokens) // n_ctx
    if max_chunks is not None:
        count = min(count, max_chunks)
    if count == 0:
        raise LocalqError(f"the evaluation text has {len(tokens)} tokens, less than one {n_ctx}-token chunk",
                          "use a longer text or a smaller context")
    return [([bos] + tokens[i * n_ctx + 1:(i + 1) * n_ctx]) if bos is not None else tokens[i * n_ctx:(i + 1) * n_ctx]
            for i in range(count)]


def scored_logprobs(scorer: MLXScorer, chunk: list[int]):
    """Log-probabilities of the next token at the scored positions (the second half, less the last)."""
    first = len(chunk) // 2
    return log_softmax(scorer.chunk_logits(chunk, first)[:-1])


def perplexity(model_dir: Path, text: str, n_ctx: int = 512, max_chunks: int | None = None) -> float:
    """The perplexity of the model in ``model_dir`` on ``text``, by llama.cpp's definition."""
    import numpy as np

    scorer = MLXScorer(model_dir, n_ctx)
    nll, count = 0.0, 0
    for chunk in chunks(scorer.tokenize(text), n_ctx, scorer.bos if scorer.add_bos else None, max_chunks):
        logprobs = scored_logprobs(scorer, chunk)
        targets = np.array(chunk[len(chunk) // 2 + 1:])
        nll -= float(logprobs[np.arange(len(targets)), targets].sum())
        count += len(targets)
    scorer.close()
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
    scorer = MLXScorer(source_dir, n_ctx)
    pieces = chunks(scorer.tokenize(text), n_ctx, scorer.bos if scorer.add_bos else None, max_chunks)
    reference = SourceReference(Path(source_dir).name, n_ctx, pieces, [scored_logprobs(scorer, c) for c in pieces])
    scorer.close()
    return reference


def compare_to_source(quant_dir: Path, reference: SourceReference) -> MLXEvaluation:
    """Perplexity of the quant and of its source, KL(source || quant) and top-1 agreement."""
    import numpy as np

    scorer = MLXScorer(quant_dir, reference.n_ctx)
    nll_q = nll_s = kl = 0.0
    same = count = 0
    for chunk, ref in zip(reference.chunks, reference.logprobs):
        got = scored_logprobs(scorer, chunk)
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
    scorer.close()
    return MLXEvaluation(
        perplexity=float(np.exp(nll_q / count)), source_perplexity=float(np.exp(nll_s / count)),
        kl_divergence=kl / count, top1_agreement=same / count, scored_tokens=count,
        chunks=len(reference.chunks), n_ctx=reference.n_ctx,
    )


def evaluate_against_source(quant_dir: Path, source_dir: Path, text: str, n_ctx: int = 512,
                            max_chunks: int | None = None) -> MLXEvaluation:
    """One quant against its source on ``text`` (``source_reference`` + ``compare_to_source``)."""
    return compare_to_source(quant_dir, source_reference(source_dir, text, n_ctx, max_chunks))


def record_evaluation(db, variant_id: int, evaluation: MLXEvaluation, dataset: str) -> None:
    """Store the three metrics in the index's ``evaluations`` table (perplexity with the source's beside it)."""
    import json

    from localq.store.db import write_transaction
    from localq.store.migrations import now

    params = json.dumps({"n_ctx": evaluation.n_ctx, "chunks": evaluation.chunks, "engine": "mlx"})
    rows = [("perplexity", evaluation.perplexity, evaluation.source_perplexity),
            ("kl_divergence", evaluation.kl_divergence, 0.0),
            ("top1_agreement", evaluation.top1_agreement, 1.0)]
    stamp = now()
    with write_transaction(db):
        for metric, value, reference in rows:
            db.execute("INSERT INTO evaluations (variant_id, metric, value, reference_value, dataset, tokens, params,"
                       " created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       [variant_id, metric, value, reference, dataset, evaluation.scored_tokens, params, stamp])
