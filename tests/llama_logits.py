"""llama.cpp's own tokens and logits for a GGUF, for tests that compare other engines with it.

Uses the same library loading as localq's llama.cpp backend (its log goes to
the log file, AMX buffers are skipped where the kernel withholds AMX).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np


class LlamaLogits:
    """A GGUF loaded in llama.cpp with one context: tokenize text, get every position's logits."""

    def __init__(self, path: Path, n_ctx: int = 512, n_threads: int = 2):
        from localq.backends.llamacpp import _load_library, disable_unrunnable_repacking

        lib = self.lib = _load_library()
        mparams = lib.llama_model_default_params()
        disable_unrunnable_repacking(mparams)
        self.model = lib.llama_model_load_from_file(str(path).encode(), mparams)
        assert self.model, f"llama.cpp cannot load {path}"
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = n_ctx
        cparams.n_threads = cparams.n_threads_batch = n_threads
        self.ctx = lib.llama_init_from_model(self.model, cparams)
        assert self.ctx
        self.n_ctx = n_ctx

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        data = text.encode()
        buf = (ctypes.c_int32 * (len(data) + 8))()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), buf, len(buf), add_special, True)
        assert n >= 0
        return list(buf[:n])

    def logits(self, tokens: list[int]) -> np.ndarray:
        """The (len(tokens), n_vocab) float32 logits of one sequence, from an empty cache."""
        lib = self.lib
        assert len(tokens) <= self.n_ctx
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        batch = lib.llama_batch_init(len(tokens), 0, 1)
        try:
            for i, tok in enumerate(tokens):
                batch.token[i] = tok
                batch.pos[i] = i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = True
            batch.n_tokens = len(tokens)
            assert lib.llama_decode(self.ctx, batch) == 0
            ptr = lib.llama_get_logits(self.ctx)
            return np.ctypeslib.as_array(ptr, shape=(len(tokens), self.n_vocab)).copy()
        finally:
            lib.llama_batch_free(batch)

    def close(self) -> None:
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)
