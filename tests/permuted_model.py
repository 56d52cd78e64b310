"""SmolLM2 with its channels reordered: the same model, exactly, whose weights no longer sit on a g32 grid.

The test model's weights come from a Q4_1 GGUF: every row of every projection
is, block by block of 32 columns, ``d * q + m`` with 4-bit ``q``. INT4 at
group size 32 uses the same blocks, so round-to-nearest at g32 reproduces the
source up to the bf16 rounding of its scales, and no method can do better:
such a source cannot show what a quantizer loses on real (bf16) weights.

Reordering channels changes no number of the model and not its function, only
which columns share a group. Three orders, each applied on both sides:

- the residual stream (``hidden_size``): the embedding's columns, every RMSNorm
  weight, the columns of q/k/v/gate/up, the rows of o/down;
- the feed-forward hidden channels: the rows of gate and up, the columns of down;
- the channels of each attention head's values: v's rows within each KV head,
  and o's columns within each query head (attention weights do not depend on v).

q and k keep their rows (rotary embedding pairs them). Afterwards a group of 32
columns mixes values from 32 Q4_1 blocks with their own scales, as a group of
a bf16 model's weights mixes unrelated values.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def permuted_copy(source: Path, out: Path, seed: int = 0) -> Path:
    """Write ``out``: ``source`` (a llama-family safetensors directory) with its channels reordered."""
    import torch
    from safetensors.torch import load_file, save_file

    cfg = json.loads((source / "config.json").read_text())
    d, f, heads = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or heads
    hd = cfg.get("head_dim") or d // heads
    gen = torch.Generator().manual_seed(seed)
    pd, pf, ph = (torch.randperm(n, generator=gen) for n in (d, f, hd))
    tensors = load_file(str(source / "model.safetensors"))
    out_t = {}
    for name, t in tensors.items():
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            t = t[:, pd]
        elif name.endswith("norm.weight"):
            t = t[pd]
        elif name.endswith(("q_proj.weight", "k_proj.weight")):
            t = t[:, pd]
        elif name.endswith("v_proj.weight"):
            t = t.reshape(kv, hd, d)[:, ph].reshape(kv * hd, d)[:, pd]
        elif name.endswith("o_proj.weight"):
            t = t.reshape(d, heads, hd)[:, :, ph].reshape(d, heads * hd)[pd]
        elif name.endswith(("gate_proj.weight", "up_proj.weight")):
            t = t[pf][:, pd]
        elif name.endswith("down_proj.weight"):
            t = t[pd][:, pf]
        elif name.endswith(("q_proj.bias", "k_proj.bias")):
            pass
        elif name.endswith("v_proj.bias"):
            t = t.reshape(kv, hd)[:, ph].reshape(-1)
        else:
            raise ValueError(f"permuted_copy does not know where {name} sits")
        out_t[name] = t.contiguous()
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("*.safetensors"))
    save_file(out_t, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
