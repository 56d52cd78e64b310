"""The model's projection: a dense weight, or an INT4 weight in the layout of the kernel that runs it.

``Linear.forward(x, residual=None, act=None)`` is the one call the model
makes; ``act="silu_mul"`` means the rows are interleaved gate/up pairs and
the result is ``silu(gate) * up`` (half as wide). The Triton path fuses the
residual add and the activation into the kernel at batch 1; the other paths
do them with torch ops after the product.

Layouts (``int4.py`` says how each is packed):
- ``dense``: a bf16/fp32 ``weight`` and ``F.linear``;
- ``tinygemm-cpu``, ``tinygemm-cuda``: torch's own INT4 kernels;
- ``pairs``: localq's Triton kernel at batch 1, and at batch > 1 (prefill)
  its dequantizer feeding one bf16 matrix product per chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from localq.backends.torch_int4 import int4

LAYOUTS = ("dense", "tinygemm-cpu", "tinygemm-cuda", "pairs")


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.layout = "dense"
        self.group = 0

    def set_int4(self, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int,
                 layout: str, device) -> None:
        """Replace the dense weight by codes [N, K] with their group scales and zeros, packed for ``layout``."""
        self.group, self.layout = group, layout
        self.weight = None
        if layout == "tinygemm-cpu":
            self.register_buffer("packed", int4.pack_tinygemm_cpu(q))
            self.register_buffer("sz", int4.scales_and_zeros(scales, zeros))
        elif layout == "tinygemm-cuda":
            self.register_buffer("packed", int4.pack_tinygemm_cuda(q.to(device), device))
            self.register_buffer("sz", int4.scales_and_zeros(scales, zeros).to(device))
        elif layout == "pairs":
            self.register_buffer("packed", int4.pack_pairs(q.to(device), group))
            self.register_buffer("sz", torch.stack([scales, zeros], dim=-1).to(torch.bfloat16).to(device).contiguous())
        else:
            raise ValueError(f"unknown INT4 layout {layout!r}")
        if self.bias is not None and not self.bias.is_meta:
            self.bias = nn.Parameter(self.bias.data.to(device), requires_grad=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None, act: str | None = None) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if self.layout == "pairs" and x2.shape[0] == 1:
            from localq.backends.torch_int4 import triton_kernels as tk

            y = tk.int4_gemv(x2[0], self.packed, self.sz, self.group, bias=self.bias,
                             residual=None if residual is None else residual.reshape(-1),
                             act=tk.ACT_SILU_MUL if act == "silu_mul" else tk.ACT_NONE)
            return y.view(*shape[:-1], -1)
        y = self._product(x2)
        if self.bias is not None and self.layout != "dense":
            y = y + self.bias
        y = y.view(*shape[:-1], -1)
        if act == "silu_mul":
            y = y.view(*y.shape[:-1], -1, 2)
            y = F.silu(y[..., 0]) * y[..., 1]
        if residual is not None:
            y = y + residual
        return y

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "dense":
            return F.linear(x, self.weight, self.bias)
        if self.layout == "tinygemm-cpu":
            return torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), self.packed, self.group,
                                                              self.sz).to(x.dtype)
        if self.layout == "tinygemm-cuda":
            return torch.ops.aten._weight_int4pack_mm(x.to(torch.bfloat16), self.packed, self.group,
                                                      self.sz).to(x.dtype)
        from localq.backends.torch_int4 import triton_kernels as tk

        return F.linear(x, tk.int4_dequant(self.packed, self.sz, self.group, x.dtype))

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, layout={self.layout}, group={self.group}"


def int4_linears(model: nn.Module, head: bool = False) -> dict[str, Linear]:
    """The projections INT4 applies to, by name: every layer's, and the output head only when asked."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, Linear) and (head or name != "output")}


def set_decode_dtypes(model: nn.Module) -> None:
    """Have each layer's norms and attention write fp16 at batch 1 where a Triton (``pairs``) product reads it."""
    for layer in model.layers:
        if layer.attention.wqkv.layout == "pairs":
            layer.attention_norm.decode_dtype = torch.float16
        if layer.attention.wo.layout == "pairs":
            layer.attention.decode_dtype = torch.float16
        if layer.feed_forward.w13.layout == "pairs":
            layer.ffn_norm.decode_dtype = torch.float16


def quantize_rtn_model(model: nn.Module, group: int, layout: str, device, head: bool = False) -> None:
    """Round-to-nearest INT4 of every projection in place (the benchmark's and a quick test's path)."""
    for name, lin in int4_linears(model, head).items():
        int4.check_group(group, lin.in_features, name)
        q, s, z = int4.quantize_rtn(lin.weight.data, group)
        lin.set_int4(q, s, z, group, layout, device)
    set_decode_dtypes(model)
