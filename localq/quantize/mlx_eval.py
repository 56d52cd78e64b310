"""An MLX model directory as a scorer for ``localq eval`` (``localq.evaluate``).

``localq.evaluate`` holds the definitions (llama.cpp's perplexity, KL divergence
and top-1 agreement over the scored second half of each chunk) and the loop;
this module gives it the logits of a chunk from mlx-lm, so an MLX quant and its
unquantized safetensors source are measured the same way as GGUF files are.
"""

from __future__ import annotations

from pathlib import Path


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


