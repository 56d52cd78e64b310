"""Running the model: chunked prefill, the decode step (a CUDA graph on CUDA, eager on CPU), sampling.

The KV cache is static (``Transformer.setup_cache``), the step's inputs are
tensors that live as long as the ``Decoder`` (token, position), and the step
writes its logits into one tensor, so the whole step, all layers and the
greedy pick, can be captured once as a CUDA graph and replayed per token:
the CPU then launches one graph instead of a few hundred kernels.

Sampling follows ``GenerationParams``' definitions (llama.cpp's order):
repeat penalty, top-k, top-p, min-p, temperature; ``temperature=0`` is the
argmax.
"""

from __future__ import annotations

import torch

PREFILL_CHUNK = 512


class Decoder:
    """One model with its static cache: ``prefill`` a prompt, then ``step`` token by token."""

    def __init__(self, model, max_seq: int, *, use_graph: bool | None = None):
        self.model = model
        self.device = model.tok_embeddings.weight.device
        model.setup_cache(max_seq)
        self.max_seq = max_seq
        self.use_graph = self.device.type == "cuda" if use_graph is None else use_graph
        self.token = torch.zeros(1, 1, dtype=torch.long, device=self.device)
        self.pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self.logits = None
        self.graph = None

    @torch.inference_mode()
    def prefill(self, tokens, start: int = 0, chunk: int = PREFILL_CHUNK) -> torch.Tensor:
        """Evaluate ``tokens`` at positions ``start...`` in chunks; the last position's logits [V]."""
        ids = torch.as_tensor(list(tokens), dtype=torch.long, device=self.device)
        logits = None
        for lo in range(0, len(ids), chunk):
            part = ids[lo:lo + chunk]
            pos = torch.arange(start + lo, start + lo + len(part), device=self.device)
            logits = self.model(part[None], pos)[0, -1]
        return logits

    @torch.inference_mode()
    def step(self, token: int | torch.Tensor, pos: int) -> torch.Tensor:
        """Logits [V] for ``token`` at position ``pos`` (the KV cache holds every earlier one)."""
        self.token.fill_(token) if isinstance(token, int) else self.token.copy_(token.view(1, 1))
        self.pos.fill_(pos)
        if not self.use_graph:
            return self.model(self.token, self.pos)[0, -1]
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.logits

    def _capture(self) -> None:
        # Two eager steps first: they autotune and compile the Triton kernels, which a capture cannot.
        saved = [(layer.attention.k_cache.clone(), layer.attention.v_cache.clone()) for layer in self.model.layers]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.model(self.token, self.pos)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self.model(self.token, self.pos)[0, -1]
        for layer, (k, v) in zip(self.model.layers, saved):
            layer.attention.k_cache.copy_(k)
            layer.attention.v_cache.copy_(v)

    @torch.inference_mode()
    def greedy_loop(self, first: int, start: int, n: int) -> torch.Tensor:
        """``n`` greedy tokens after ``first`` at ``start``, with no host sync between them (benchmarks)."""
        out = torch.empty(n, dtype=torch.long, device=self.device)
        token = torch.tensor([first], device=self.device)
        for i in range(n):
            logits = self.step(token, start + i)
            token = logits.argmax().view(1)
            out[i] = token[0]
        return out


def sample(logits: torch.Tensor, params, history, generator: torch.Generator | None) -> int:
    """The next token from ``logits`` [V] under ``params`` (a GenerationParams)."""
    logits = logits.float()
    if params.repeat_penalty != 1.0 and params.repeat_last_n and history:
        recent = torch.as_tensor(list(history)[-params.repeat_last_n:], device=logits.device).unique()
        vals = logits[recent]
        logits = logits.clone()
        logits[recent] = torch.where(vals > 0, vals / params.repeat_penalty, vals * params.repeat_penalty)
    if params.temperature == 0:
        return int(logits.argmax())
    if params.top_k > 0:
        k = min(params.top_k, logits.numel())
        vals, idx = logits.topk(k)
    else:
        vals, idx = logits.sort(descending=True)
    probs = torch.softmax(vals, dim=-1)
    if params.top_p < 1.0:
        keep = probs.cumsum(-1) - probs < params.top_p      # always keeps the first
        vals, idx, probs = vals[keep], idx[keep], probs[keep]
    if params.min_p > 0:
        keep = probs >= params.min_p * probs[0]
        vals, idx = vals[keep], idx[keep]
    probs = torch.softmax(vals / params.temperature, dim=-1)
    choice = torch.multinomial(probs.cpu(), 1, generator=generator)
    return int(idx[choice.to(idx.device)])
