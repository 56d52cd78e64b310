"""localq's compact llama-family decoder: Llama 2/3/3.x, Mistral, Qwen2/2.5, Qwen3, SmolLM2, TinyLlama.

One file, in the manner of gpt-fast: the model is a plain ``nn.Module`` built
on the meta device (no memory spent on random initial weights), then filled
tensor by tensor from safetensors files opened by mmap, so host memory holds
one tensor at a time rather than a copy of the whole model.

What differs between the supported architectures is data, read from
``config.json`` into ``ModelConfig``: QKV bias (Qwen2), per-head RMSNorm of q
and k (Qwen3), llama3 / linear rope scaling, tied embeddings, head_dim.

Two layout choices serve the INT4 kernels: q, k and v are one fused
projection (one matrix-vector product per layer instead of three), and gate
and up are one fused projection with their rows interleaved (gate_0, up_0,
gate_1, ...), so that a kernel's epilogue can compute silu(gate) * up for
neighbouring rows. Every projection is a ``linear.Linear``: bf16/fp32 or one
of the INT4 layouts, chosen by quantization, never by the model.

Decoding uses a static KV cache of ``max_seq`` positions and takes the
positions as a tensor, so one decode step can be captured as a CUDA graph.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from localq.backends.torch_int4.linear import Linear
from localq.errors import BackendError

SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3",
}


@dataclass
class ModelConfig:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    qkv_bias: bool = False
    qk_norm: bool = False
    tie_embeddings: bool = False
    max_position: int = 4096
    arch: str = "llama"

    @classmethod
    def from_hf(cls, cfg: dict) -> ModelConfig:
        """The config of a Hugging Face ``config.json``, or BackendError for an architecture we do not run."""
        archs = cfg.get("architectures") or []
        arch = next((SUPPORTED_ARCHITECTURES[a] for a in archs if a in SUPPORTED_ARCHITECTURES), None)
        if arch is None:
            raise BackendError(
                f"the torch INT4 backend does not run the {', '.join(archs) or cfg.get('model_type', '?')} architecture",
                f"it runs {', '.join(sorted(SUPPORTED_ARCHITECTURES))}; use a GGUF quant with llama.cpp instead",
            )
        scaling = cfg.get("rope_scaling")
        kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
        if kind not in ("default", "linear", "llama3"):
            raise BackendError(f"rope scaling {kind!r} is not supported by the torch INT4 backend",
                               "use a GGUF quant with llama.cpp instead")
        n_heads = cfg["num_attention_heads"]
        return cls(
            dim=cfg["hidden_size"], n_layers=cfg["num_hidden_layers"], n_heads=n_heads,
            n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // n_heads,
            ffn_dim=cfg["intermediate_size"], vocab_size=cfg["vocab_size"],
            norm_eps=cfg.get("rms_norm_eps", 1e-5), rope_theta=cfg.get("rope_theta", 10000.0),
            rope_scaling=scaling if kind != "default" else None,
            qkv_bias=arch == "qwen2" or bool(cfg.get("attention_bias")),
            qk_norm=arch == "qwen3",
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            max_position=cfg.get("max_position_embeddings", 4096), arch=arch,
        )


def rope_frequencies(cfg: ModelConfig) -> torch.Tensor:
    """Rotary inverse frequencies, with Llama 3's or linear scaling when the config asks."""
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim))
    s = cfg.rope_scaling
    if not s:
        return inv
    kind = s.get("rope_type", s.get("type"))
    if kind == "linear":
        return inv / s["factor"]
    # llama3: long wavelengths slowed by `factor`, short kept, a smooth blend between.
    factor, low, high = s["factor"], s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
    old = s.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / inv
    smooth = ((old / wavelen - low) / (high - low)).clamp(0, 1)
    return (1 - smooth) * inv / factor + smooth * inv


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in Hugging Face's half-split convention. x: [B, T, H, D]; cos/sin: [T, D/2]."""
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.decode_dtype = None     # fp16 when the next product is localq's Triton kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            from localq.backends.torch_int4 import cuda_decode

            one_row = x.numel() == x.shape[-1]
            return cuda_decode.rms_norm(x, self.weight, self.eps, self.decode_dtype if one_row else None)
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.q_size, self.kv_size = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        self.wqkv = Linear(cfg.dim, self.q_size + 2 * self.kv_size, bias=cfg.qkv_bias)
        self.wo = Linear(self.q_size, cfg.dim)
        if cfg.qk_norm:
            self.q_norm, self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps), RMSNorm(cfg.head_dim, cfg.norm_eps)
        self.k_cache = self.v_cache = None
        self.decode_dtype = None     # fp16 when wo is localq's Triton kernel

    def forward(self, x, residual, rope, pos, mask):
        B, T, _ = x.shape
        c = self.cfg
        if x.is_cuda and T == 1:       # one decode step: fused kernels (cuda_decode.py)
            from localq.backends.torch_int4 import cuda_decode as cd

            qn = (self.q_norm.weight, self.k_norm.weight) if c.qk_norm else (None, None)
            q = cd.rope_and_cache(self.wqkv(x).view(-1), pos, *rope, self.k_cache, self.v_cache, c.n_heads,
                                  c.n_kv_heads, c.head_dim, *qn, eps=c.norm_eps)
            out = cd.decode_attention(q, self.k_cache, self.v_cache, pos, c.n_heads, c.n_kv_heads, c.head_dim,
                                      self.decode_dtype)
            return self.wo(out.view(B, T, self.q_size), residual=residual)
        cos, sin = rope[0][pos], rope[1][pos]
        q, k, v = self.wqkv(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(B, T, c.n_heads, c.head_dim)
        k = k.view(B, T, c.n_kv_heads, c.head_dim)
        v = v.view(B, T, c.n_kv_heads, c.head_dim)
        if c.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        self.k_cache.index_copy_(2, pos, k.transpose(1, 2).to(self.k_cache.dtype))
        self.v_cache.index_copy_(2, pos, v.transpose(1, 2).to(self.v_cache.dtype))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), self.k_cache, self.v_cache, attn_mask=mask,
                                             enable_gqa=c.n_heads != c.n_kv_heads)
        return self.wo(out.transpose(1, 2).reshape(B, T, self.q_size), residual=residual)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w13 = Linear(cfg.dim, 2 * cfg.ffn_dim)     # gate and up, rows interleaved
        self.w2 = Linear(cfg.ffn_dim, cfg.dim)

    def forward(self, x, residual):
        return self.w2(self.w13(x, act="silu_mul"), residual=residual)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x, rope, pos, mask):
        h = self.attention(self.attention_norm(x), x, rope, pos, mask)
        return self.feed_forward(self.ffn_norm(h), h)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = Linear(cfg.dim, cfg.vocab_size)
        self.max_seq = 0

    def setup_cache(self, max_seq: int, dtype: torch.dtype | None = None) -> None:
        """Allocate the static KV cache and the rope and mask tables for ``max_seq`` positions."""
        c = self.cfg
        device = self.tok_embeddings.weight.device
        dtype = dtype or self.tok_embeddings.weight.dtype
        self.max_seq = max_seq
        for layer in self.layers:
            shape = (1, c.n_kv_heads, max_seq, c.head_dim)
            layer.attention.k_cache = torch.zeros(shape, dtype=dtype, device=device)
            layer.attention.v_cache = torch.zeros(shape, dtype=dtype, device=device)
        angles = torch.outer(torch.arange(max_seq, dtype=torch.float64), rope_frequencies(c))
        self.cos = angles.cos().float().to(device)
        self.sin = angles.sin().float().to(device)
        self.key_positions = torch.arange(max_seq, device=device)   # the mask is made per call: a whole
        # [max_seq, max_seq] table would be 16 GiB at Llama 3.1's 131072 positions

    def causal_mask(self, pos: torch.Tensor) -> torch.Tensor:
        """[1, 1, T, max_seq]: which cache positions each of the positions ``pos`` attends to."""
        return (self.key_positions[None, :] <= pos[:, None])[None, None]

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits (float32) for ``tokens`` [1, T] placed at positions ``pos`` [T] of the cache."""
        x = self.tok_embeddings(tokens)
        mask = self.causal_mask(pos) if tokens.shape[1] > 1 or not x.is_cuda else None
        for layer in self.layers:
            x = layer(x, (self.cos, self.sin), pos, mask)
        return self.output(self.norm(x)).float()


# --- loading ----------------------------------------------------------------------------------

_LAYER_NAMES = {
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "self_attn.q_norm.weight": "attention.q_norm.weight",
    "self_attn.k_norm.weight": "attention.k_norm.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
}


def hf_state_dict(tensors) -> dict[str, torch.Tensor]:
    """localq's parameter names from a Hugging Face llama-family state dict (a mapping, read lazily).

    ``tensors`` maps names to a zero-argument function returning the tensor,
    so the caller decides when each one is read (and freed).
    """
    out = {}
    n_layers = 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith("model.layers."))
    for i in range(n_layers):
        p, q = f"model.layers.{i}.", f"layers.{i}."
        for src, dst in _LAYER_NAMES.items():
            if p + src in tensors:
                out[q + dst] = tensors[p + src]
        a = p + "self_attn."
        out[q + "attention.wqkv.weight"] = _cat([tensors[a + f"{n}_proj.weight"] for n in "qkv"])
        if a + "q_proj.bias" in tensors:
            out[q + "attention.wqkv.bias"] = _cat([tensors[a + f"{n}_proj.bias"] for n in "qkv"])
        out[q + "feed_forward.w13.weight"] = _interleave(tensors[p + "mlp.gate_proj.weight"],
                                                         tensors[p + "mlp.up_proj.weight"])
    out["tok_embeddings.weight"] = tensors["model.embed_tokens.weight"]
    out["norm.weight"] = tensors["model.norm.weight"]
    out["output.weight"] = tensors.get("lm_head.weight", tensors["model.embed_tokens.weight"])
    return out


def _cat(parts):
    return lambda: torch.cat([p() for p in parts], dim=0)


def _interleave(gate, up):
    def read():
        g, u = gate(), up()
        return torch.stack([g, u], dim=1).reshape(2 * g.shape[0], *g.shape[1:])
    return read


def read_config(model_dir: Path) -> ModelConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise BackendError(f"{model_dir} has no config.json", "point at a Hugging Face safetensors model directory")
    return ModelConfig.from_hf(json.loads(path.read_text()))


def lazy_safetensors(model_dir: Path, stack):
    """name -> reader over every ``*.safetensors`` file of ``model_dir``, opened by mmap."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise BackendError(f"{model_dir} has no .safetensors files", "point at a Hugging Face safetensors model directory")
    readers = {}
    for f in files:
        handle = stack.enter_context(safe_open(str(f), framework="pt"))
        for name in handle.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
            readers[name] = _reader(handle, name)
    return readers


def _reader(handle, name):
    return lambda: handle.get_tensor(name)


def load_hf(model_dir: Path, device="cpu", dtype=torch.bfloat16) -> Transformer:
    """A Transformer with the weights of a Hugging Face safetensors directory, built on meta, filled by mmap."""
    import contextlib

    cfg = read_config(model_dir)
    with torch.device("meta"):
        model = Transformer(cfg)
    with contextlib.ExitStack() as stack:
        readers = hf_state_dict(lazy_safetensors(model_dir, stack))
        fill(model, readers, device, dtype)
    return model.eval()


def fill(model: nn.Module, readers: dict, device, dtype) -> None:
    """Replace every meta parameter of ``model`` by its tensor from ``readers``, one at a time."""
    for name, tensor in read_parameters(model, readers, device, dtype):
        owner, attr = _owner(model, name)
        setattr(owner, attr, nn.Parameter(tensor, requires_grad=False))


def read_parameters(model: nn.Module, readers: dict, device, dtype):
    """(name, tensor) for each parameter of ``model``, read from ``readers`` one at a time, shapes checked."""
    params = list(model.named_parameters())
    missing = [n for n, _ in params if n not in readers]
    if missing:
        raise BackendError(f"the model files lack {len(missing)} tensors (first: {missing[0]})",
                           "the directory is incomplete or not a llama-family model")
    for name, param in params:
        tensor = readers[name]().to(device=device, dtype=dtype)
        if tuple(tensor.shape) != tuple(param.shape):
            raise BackendError(f"tensor {name} has shape {tuple(tensor.shape)}, the config says {tuple(param.shape)}",
                               "config.json does not match the weights")
        yield name, tensor


def _owner(model: nn.Module, name: str):
    *path, attr = name.split(".")
    owner = model
    for part in path:
        owner = getattr(owner, part)
    return owner, attr
