"""AWQ: activation-aware per-input-channel scales chosen before INT4 rounding.

The idea (Lin et al., "AWQ: Activation-aware Weight Quantization", 2023):
a few input channels carry large activations, and their weights matter
most. Multiplying weight column ``j`` by ``s_j > 1`` (and dividing the input
by ``s_j``, which folds into the operation before) leaves the product
unchanged but gives those columns a finer share of the 4-bit grid. The
scales are ``s = mean|x|^alpha``, normalised, with ``alpha`` searched on a
grid per projection for the smallest output error on calibration
activations; ``alpha = 0`` is plain round-to-nearest, so the search never
does worse than RTN on the calibration text.

Where the division folds (localq's fused projections):
- ``wqkv`` and ``w13`` read the layer's RMSNorm output: divide the norm's weight;
- ``w2`` reads ``silu(gate) * up``: divide the ``up`` rows of ``w13``;
- ``wo`` reads attention output, which would need equal scales across the
  query heads sharing a KV head: left to RTN.

The calibration inputs are the unquantized model's (one forward pass), not
those of the partly quantized model as in the paper's layer-by-layer pass.
"""

from __future__ import annotations

import torch

from localq.backends.torch_int4 import int4

ALPHAS = tuple(i / 10 for i in range(11))


def collect_inputs(model, tokens: list[int], names: list[str]) -> dict[str, torch.Tensor]:
    """Each named projection's inputs [T, K] (float32) for one forward pass over ``tokens``."""
    mods = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    hooks = [mods[n].register_forward_pre_hook(lambda m, args, n=n: seen.__setitem__(n, args[0].detach().float()
                                                                                     .reshape(-1, args[0].shape[-1])))
             for n in names]
    try:
        model.setup_cache(len(tokens))
        with torch.inference_mode():
            model(torch.tensor([tokens]), torch.arange(len(tokens)))
    finally:
        for h in hooks:
            h.remove()
    return seen


def search_scales(w: torch.Tensor, x: torch.Tensor, group: int) -> tuple[torch.Tensor, float]:
    """(per-column scales, alpha) minimising ||x w^T - (x/s) Q(w s)^T|| over ``ALPHAS``."""
    w = w.float()
    ref = x @ w.T
    mean_abs = x.abs().mean(0).clamp(min=1e-6)
    best, best_err = (torch.ones(w.shape[1]), 0.0), None
    for alpha in ALPHAS:
        s = mean_abs ** alpha
        s = s / (s.max() * s.min()).sqrt()
        q, sc, z = int4.quantize_rtn(w * s, group)
        out = (x / s) @ int4.dequantize(q, sc, z, group).T
        err = float((out - ref).pow(2).mean())
        if best_err is None or err < best_err:
            best, best_err = (s, alpha), err
    return best


@torch.inference_mode()
def apply_awq(model, tokens: list[int], group: int) -> dict[str, float]:
    """Scale the fp32 ``model``'s weights in place; returns the alpha chosen per projection.

    The model's function is unchanged (up to float rounding): each scale is
    undone where its input is made, so one forward pass gives every
    projection's calibration inputs. Only the INT4 rounding that follows
    sees the difference.
    """
    names = [f"layers.{i}.{p}" for i in range(len(model.layers))
             for p in ("attention.wqkv", "feed_forward.w13", "feed_forward.w2")]
    xs = collect_inputs(model, tokens, names)
    chosen = {}
    for i, layer in enumerate(model.layers):
        ff = layer.feed_forward
        for name, lin, before in ((f"layers.{i}.attention.wqkv", layer.attention.wqkv, layer.attention_norm.weight),
                                  (f"layers.{i}.feed_forward.w13", ff.w13, layer.ffn_norm.weight)):
            s, chosen[name] = search_scales(lin.weight.data, xs.pop(name), group)
            lin.weight.data.mul_(s[None, :])
            before.data.div_(s.to(before.dtype))
        # w2's input is silu(gate) * up: its scale divides the up rows (the odd rows of w13).
        name = f"layers.{i}.feed_forward.w2"
        s, chosen[name] = search_scales(ff.w2.weight.data, xs.pop(name), group)
        ff.w2.weight.data.mul_(s[None, :])
        ff.w13.weight.data[1::2].div_(s[:, None])
    return chosen
