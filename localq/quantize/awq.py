"""AWQ: activation-aware per-input-channel scales, and weight clipping, chosen before INT4 rounding.

The idea (Lin et al., "AWQ: Activation-aware Weight Quantization", 2023):
a few input channels carry large activations, and their weights matter
most. Multiplying weight column ``j`` by ``s_j > 1`` (and dividing the input
by ``s_j``, which folds into the operation before) leaves the product
unchanged but gives those columns a finer share of the 4-bit grid. The
scales are ``s = mean|x|^alpha``, normalised, with ``alpha`` searched on a
grid; ``alpha = 0`` is plain round-to-nearest, so the search never does
worse than RTN on the calibration text.

As in the paper, the search is per group of projections that read one input,
block by block, and each candidate is judged by the output of the part of the
block the group feeds, with that group's weights quantized:

1. ``wqkv`` (q, k, v) reads ``attention_norm``'s output: its scale divides the
   norm's weight; judged by the attention sub-layer's output;
2. ``wo`` reads the attention's mix of v: its scale divides v's rows of
   ``wqkv``, so it is one scale per (KV head, channel), shared by the query
   heads that read that KV head; judged by wo's output;
3. ``w13`` (gate and up) reads ``ffn_norm``'s output: divides the norm's weight;
   judged by the feed-forward sub-layer's output;
4. ``w2`` reads ``silu(gate) * up``: divides the up rows of ``w13``; judged by
   w2's output.

A division of whole rows (2, 4) commutes with the per-row groups of the INT4
grid, so it does not undo the search of 1 and 3. After each group's scales,
the paper's clipping search: per row and group of columns, the range is shrunk
to ``ratio * (min, max)`` for ``ratio`` on a grid (1.0 is RTN), choosing the
one with the least error of that group's share of the output on the
calibration inputs (``sum_t (x_t . (w - Q(w)))^2``, computed from the inputs'
Gram matrix per group). The next block's inputs come from this block with its
scaled and clipped full-precision weights (not yet rounded), as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# 0 .. 0.9. The paper steps by 0.05; on the short calibration text the finer grid measured worse here
# (it fits the text, not the model: KL 0.123 against 0.118 at g64 on SmolLM2), and takes twice as long.
ALPHAS = tuple(i / 10 for i in range(10))
CLIP_RATIOS = tuple(1 - i / 20 for i in range(10))     # 1.0 .. 0.55


def fake_quantize(w: torch.Tensor, group: int, rows: int = 128) -> torch.Tensor:
    """float32 weights after INT4 round-to-nearest and back: ``int4.dequantize(*int4.quantize_rtn(w))``.

    The same operations in the same order (so the same numbers), done in
    place on blocks of ``rows`` rows that stay in the CPU's cache: the
    searches below call this hundreds of times per layer.
    """
    n, k = w.shape
    out = torch.empty(n, k)
    for r in range(0, n, rows):
        g = w[r:r + rows].float().reshape(-1, k // group, group)
        lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
        scale = ((hi - lo) / 15).clamp_(min=1e-8).to(torch.bfloat16).float()
        zero = (lo + 8 * scale).to(torch.bfloat16).float()
        o = out[r:r + rows].view(-1, k // group, group)
        torch.sub(g, zero, out=o)
        o.div_(scale).add_(8).round_().clamp_(0, 15).sub_(8).mul_(scale).add_(zero)
    return out


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean())


def _scales(mean_abs: torch.Tensor, alpha: float) -> torch.Tensor:
    s = mean_abs.clamp(min=1e-6) ** alpha
    return s / (s.max() * s.min()).sqrt()


def search_scales(lins: list, mean_abs: torch.Tensor, group: int, loss) -> tuple[torch.Tensor, float]:
    """(per-column scales, alpha): the ``ALPHAS`` candidate whose quantized ``lins`` give the least ``loss()``.

    Each candidate's weights are set as ``Q(w s) / s``: the quantized product
    the model will compute, without moving the scale into the layer before.
    The original weights are put back before returning.
    """
    originals = [lin.weight.data for lin in lins]
    best = (torch.ones_like(mean_abs), 0.0, None)
    try:
        for alpha in ALPHAS:
            s = _scales(mean_abs, alpha)
            for lin, w in zip(lins, originals):
                lin.weight.data = fake_quantize(w * s, group) / s
            err = loss()
            if best[2] is None or err < best[2]:
                best = (s, alpha, err)
    finally:
        for lin, w in zip(lins, originals):
            lin.weight.data = w
    return best[0], best[1]


def clip_weights(w: torch.Tensor, x: torch.Tensor, group: int) -> torch.Tensor:
    """``w`` with each (row, group) range shrunk by the ``CLIP_RATIOS`` entry of least output error on ``x``.

    The error of a group's share of the output over the calibration inputs,
    ``sum_t (x_t . e)^2`` for the rounding error ``e``, is ``e H e^T`` with the
    inputs' Gram matrix ``H`` of that group of columns: one [G, G] matrix per
    group instead of a pass over every token.
    """
    n, k = w.shape
    ng = k // group
    g = w.reshape(n, ng, group)
    xg = x.reshape(-1, ng, group).transpose(0, 1)                     # [groups, T, G]
    gram = xg.transpose(1, 2) @ xg                                     # [groups, G, G]
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    best_err = torch.full((n, ng), float("inf"))
    best_ratio = torch.ones(n, ng, 1)
    for ratio in CLIP_RATIOS:
        clipped = torch.minimum(torch.maximum(g, lo * ratio), hi * ratio) if ratio < 1 else g
        e = (g - fake_quantize(clipped.reshape(n, k), group).reshape(n, ng, group)).transpose(0, 1)  # [groups, n, G]
        err = ((e @ gram) * e).sum(-1).T                                # [n, groups]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_ratio[better] = ratio
    return torch.minimum(torch.maximum(g, lo * best_ratio), hi * best_ratio).reshape(n, k)


class _Capture:
    """The input of a module's next call (a forward pre-hook)."""

    def __init__(self, module):
        self.value = None
        self.hook = module.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.value = args[0].detach()
        self.hook.remove()


def _mean_abs(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).abs().mean(0)


@torch.inference_mode()
def apply_awq(model, tokens: list[int], group: int, groups: dict[str, int] | None = None,
              clip: bool = True) -> dict[str, float]:
    """Scale (and clip) the float32 ``model``'s weights in place; returns the alpha chosen per projection.

    ``group`` is the INT4 group size; ``groups`` names projections quantized
    at another size (a mixed checkpoint, ``localq.quantize.int4``). The
    model's function is unchanged by the scales (up to float rounding);
    clipping moves weights a little, less than the rounding that follows.
    """
    n = len(tokens)
    model.setup_cache(n, torch.float32)
    pos = torch.arange(n)
    run = {"rope": (model.cos, model.sin), "pos": pos, "mask": model.causal_mask(pos)}
    x = model.tok_embeddings(torch.tensor([tokens])).float()
    chosen: dict[str, float] = {}
    for i, layer in enumerate(model.layers):
        names = {p: f"layers.{i}.{p}" for p in ("attention.wqkv", "attention.wo", "feed_forward.w13", "feed_forward.w2")}
        sizes = {p: (groups or {}).get(name, group) for p, name in names.items()}
        x, alphas = _block(model.cfg, layer, x, run, sizes, clip)
        chosen.update({names[p]: a for p, a in alphas.items()})
    return chosen


def _block(cfg, layer, x: torch.Tensor, run: dict, sizes: dict[str, int], clip: bool):
    """AWQ for one block (the four groups of the module docstring, in order): (its output, alphas chosen)."""
    attn, ff = layer.attention, layer.feed_forward
    rope, pos, mask = run["rope"], run["pos"], run["mask"]
    n = x.shape[1]
    alphas = {}

    # 1. q, k, v: judged by the attention sub-layer's output.
    xa = layer.attention_norm(x)
    wo_in = _Capture(attn.wo)
    ref = attn(xa, None, rope, pos, mask)
    s, alphas["attention.wqkv"] = search_scales(
        [attn.wqkv], _mean_abs(xa), sizes["attention.wqkv"], lambda: _mse(attn(xa, None, rope, pos, mask), ref))
    attn.wqkv.weight.data.mul_(s)
    layer.attention_norm.weight.data.div_(s)
    if clip:
        attn.wqkv.weight.data = clip_weights(attn.wqkv.weight.data, (xa / s).reshape(n, -1), sizes["attention.wqkv"])

    # 2. o, its scale folded into v's rows: one scale per (KV head, channel).
    xo = wo_in.value.reshape(n, -1)
    rep = cfg.n_heads // cfg.n_kv_heads
    per_kv = xo.abs().reshape(n, cfg.n_kv_heads, rep, cfg.head_dim).mean((0, 2))     # [KV heads, head_dim]
    ref = F.linear(xo, attn.wo.weight)
    t, alphas["attention.wo"] = search_scales(
        [attn.wo], per_kv.repeat_interleave(rep, 0).reshape(-1), sizes["attention.wo"],
        lambda: _mse(F.linear(xo, attn.wo.weight), ref))
    t_kv = t.reshape(cfg.n_heads, cfg.head_dim)[::rep].reshape(-1)                  # [KV heads * head_dim]
    attn.wo.weight.data.mul_(t)
    v_rows = slice(attn.q_size + attn.kv_size, attn.q_size + 2 * attn.kv_size)
    attn.wqkv.weight.data[v_rows] /= t_kv[:, None]
    if attn.wqkv.bias is not None:
        attn.wqkv.bias.data[v_rows] /= t_kv
    if clip:
        attn.wo.weight.data = clip_weights(attn.wo.weight.data, xo / t, sizes["attention.wo"])
    h = attn(layer.attention_norm(x), x, rope, pos, mask)

    # 3. gate and up: judged by the feed-forward sub-layer's output.
    xf = layer.ffn_norm(h)
    w2_in = _Capture(ff.w2)
    ref = ff(xf, None)
    s, alphas["feed_forward.w13"] = search_scales(
        [ff.w13], _mean_abs(xf), sizes["feed_forward.w13"], lambda: _mse(ff(xf, None), ref))
    ff.w13.weight.data.mul_(s)
    layer.ffn_norm.weight.data.div_(s)
    if clip:
        ff.w13.weight.data = clip_weights(ff.w13.weight.data, (xf / s).reshape(n, -1), sizes["feed_forward.w13"])

    # 4. down, its scale folded into the up rows of w13.
    xd = w2_in.value.reshape(n, -1)
    ref = F.linear(xd, ff.w2.weight)
    s, alphas["feed_forward.w2"] = search_scales(
        [ff.w2], _mean_abs(xd), sizes["feed_forward.w2"], lambda: _mse(F.linear(xd, ff.w2.weight), ref))
    ff.w2.weight.data.mul_(s)
    ff.w13.weight.data[1::2] /= s[:, None]
    if clip:
        ff.w2.weight.data = clip_weights(ff.w2.weight.data, xd / s, sizes["feed_forward.w2"])
    return ff(layer.ffn_norm(h), h), alphas
