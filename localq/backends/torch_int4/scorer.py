"""The torch INT4 backend as a scorer for ``localq.evaluate``: the logits of one chunk, from an empty cache.

The same interface as the llama.cpp and MLX scorers (``tokenize``,
``chunk_logits``, ``n_vocab``, ``add_bos``, ``bos``, ``close``), so
``localq eval`` measures an INT4 checkpoint with llama-perplexity's
definitions, against its safetensors source run by this same backend (bf16,
unquantized): the figures then compare quantizations and nothing else.
Runs on the CPU (torch's INT4 kernel), as CI does.
"""

from __future__ import annotations

from pathlib import Path


class Int4Scorer:
    """A localq INT4 checkpoint or a safetensors directory, run eagerly on the CPU."""

    def __init__(self, path: Path, ctx: int, threads: int | None = None):
        import torch
        from tokenizers import Tokenizer

        from localq.backends.torch_int4.session import load_model
        from localq.errors import LocalqError

        self.path = Path(path)
        if threads:
            torch.set_num_threads(threads)
        self.model, _ = load_model(self.path, torch.device("cpu"))
        cfg = self.model.cfg
        if ctx > cfg.max_position:
            raise LocalqError(f"--ctx {ctx} is more than the model's training context ({cfg.max_position})",
                              "use a smaller --ctx")
        self.model.setup_cache(ctx)
        self.n_ctx, self.n_vocab = ctx, cfg.vocab_size
        self.tok = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        probe = self.tok.encode("a", add_special_tokens=True).ids
        plain = self.tok.encode("a", add_special_tokens=False).ids
        self.add_bos = len(probe) > len(plain) and probe[1:] == plain
        self.bos = probe[0] if self.add_bos else None

    def tokenize(self, text: str) -> list[int]:
        """The text's tokens with the tokenizer's special tokens (BOS when it adds one), as llama-perplexity."""
        return self.tok.encode(text, add_special_tokens=True).ids

    def chunk_logits(self, tokens: list[int], first: int):
        """Logits (len(tokens) - first, n_vocab), float32 numpy, of positions ``first..`` of one chunk."""
        import torch

        with torch.inference_mode():
            logits = self.model(torch.tensor([tokens]), torch.arange(len(tokens)))[0, first:]
        return logits.float().numpy()

    def close(self) -> None:
        self.model = None
