"""INT4 weight-only quantization: the numbers, and the packings each kernel reads.

The scheme is tinygemm's (torchao's "int4 weight-only"): per group of ``G``
consecutive input columns of a row, an asymmetric 4-bit code ``q`` in 0..15
with a bf16 ``scale`` and ``zero``, dequantized as ``w = (q - 8) * scale + zero``.
Round-to-nearest (RTN) sets ``scale = (max - min) / 15`` and
``zero = min + 8 * scale``; AWQ (``localq.quantize.awq``) changes the weights
before this step, not the scheme.

The canonical, kernel-independent form is what a localq INT4 checkpoint
stores (layout ``nibbles``, version 1): ``qweight`` uint8 [N, K/2] with
element ``2j`` of a row in the low nibble of byte ``j`` and ``2j+1`` in the
high nibble; ``scales`` and ``zeros`` bf16 [N, K/G]. From it, at load time:

- ``tinygemm-cpu``: ``torch.ops.aten._convert_weight_to_int4pack_for_cpu``
  (int32 codes [N, K]) for ``_weight_int4pack_mm_for_cpu``;
- ``tinygemm-cuda``: ``_convert_weight_to_int4pack`` (uint8 [N, K/2], even
  element in the high nibble) for ``_weight_int4pack_mm`` on sm80+;
- ``pairs``: localq's Triton kernel layout (``triton_kernels.py``).

These torch ops are private and have changed signature between versions, so
``check_ops`` asks the running torch what it has before anything is packed.
"""

from __future__ import annotations

import torch

from localq.errors import BackendError

GROUP_SIZES = (32, 64, 128)


def check_group(group: int, k: int, name: str = "a weight") -> None:
    """BackendError unless ``group`` is a supported size that divides the row length ``k``."""
    if group not in GROUP_SIZES:
        raise BackendError(f"INT4 group size {group} is not supported",
                           f"use one of {', '.join(map(str, GROUP_SIZES))}")
    if k % group:
        raise BackendError(f"group size {group} does not divide the {k} columns of {name}",
                           f"use a group size that divides {k}, e.g. int4-g32")


def quantize_rtn(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes uint8 [N, K] in 0..15, scales bf16 [N, K/G], zeros bf16 [N, K/G]) by round-to-nearest.

    The scale and zero are rounded to bf16 first and the codes computed from
    the rounded values, so dequantization reproduces what was optimised.
    """
    n, k = w.shape
    check_group(group, k)
    g = w.float().reshape(n, k // group, group)
    lo, hi = g.amin(-1), g.amax(-1)
    scale = ((hi - lo) / 15).clamp(min=1e-8).to(torch.bfloat16)
    zero = (lo + 8 * scale.float()).to(torch.bfloat16)
    s, z = scale.float()[..., None], zero.float()[..., None]
    q = ((g - z) / s + 8).round().clamp(0, 15).to(torch.uint8)
    return q.reshape(n, k), scale, zero


def dequantize(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int) -> torch.Tensor:
    """float32 [N, K] weights from codes [N, K] and their group scales and zeros."""
    n, k = q.shape
    g = q.float().reshape(n, k // group, group)
    return ((g - 8) * scales.float()[..., None] + zeros.float()[..., None]).reshape(n, k)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """Canonical uint8 [N, K/2]: even element low nibble, odd element high nibble."""
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Codes uint8 [N, K] from the canonical packing."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


# --- what the running torch offers -------------------------------------------------------------


def check_ops(device: str) -> None:
    """BackendError unless this torch has the INT4 ops (and their current signatures) for ``device``."""
    aten = torch.ops.aten
    need = (["_convert_weight_to_int4pack_for_cpu", "_weight_int4pack_mm_for_cpu"] if device == "cpu"
            else ["_convert_weight_to_int4pack", "_weight_int4pack_mm"])
    for name in need:
        if not hasattr(aten, name):
            raise BackendError(f"torch {torch.__version__} has no {name} operator",
                               "install torch 2.6 or newer (pip install 'localq[torch]')")
    if device == "cpu":
        schema = str(aten._convert_weight_to_int4pack_for_cpu.default._schema)
        if "innerKTiles" not in schema:
            raise BackendError(f"torch {torch.__version__}'s INT4 packing has an unknown signature ({schema})",
                               "install the torch version localq names (pip install 'localq[torch]')")


def inner_k_tiles(k: int) -> int:
    """The largest tinygemm inner tiling (8, 4 or 2 tiles of 16 columns) that divides ``k``."""
    for tiles in (8, 4, 2):
        if k % (16 * tiles) == 0:
            return tiles
    raise BackendError(f"a row of {k} columns cannot be packed for tinygemm (needs a multiple of 32)")


def scales_and_zeros(scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """tinygemm's bf16 [K/G, N, 2] table of (scale, zero)."""
    return torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)


def pack_tinygemm_cpu(q: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).cpu(), inner_k_tiles(q.shape[1]))


def pack_tinygemm_cuda(q: torch.Tensor, device) -> torch.Tensor:
    packed = ((q[:, 0::2] << 4) | q[:, 1::2]).to(torch.uint8).to(device)
    return torch.ops.aten._convert_weight_to_int4pack(packed, inner_k_tiles(q.shape[1]))


def pack_pairs(q: torch.Tensor, group: int) -> torch.Tensor:
    """localq's Triton layout: int32 [N, K/8]; ``triton_kernels`` says why this order.

    Within a group of ``G`` columns, word ``j`` (of ``W = G/8``) holds, for
    n = 0..3, column ``2(n*W + j)`` in bits ``4n..4n+3`` and the next column
    in bits ``16+4n..19+4n``: one mask of a shifted word yields two adjacent
    columns as an fp16 pair.
    """
    n, k = q.shape
    w = group // 8
    g = q.to(torch.int64).reshape(n, k // group, 4, w, 2)             # [N, groups, n, j, pair]
    shifts = (4 * torch.arange(4, device=q.device)).view(1, 1, 4, 1)
    words = (g[..., 0] << shifts).sum(2) + (g[..., 1] << (shifts + 16)).sum(2)
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32).reshape(n, k // 8).contiguous()


