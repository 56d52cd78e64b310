"""The architectures localq converts between Hugging Face and GGUF, and how their names map.

One table serves both directions (``gguf_convert`` HF -> GGUF, ``gguf_export``
GGUF -> HF), so a name can never be mapped one way and not back. The facts
come from the two formats' own conventions: the HF ``config.json`` keys of each
``*ForCausalLM`` class and the GGUF keys llama.cpp reads (``{arch}.block_count``
...). Mistral and the Llama family share llama.cpp's ``llama`` architecture;
Qwen2 adds biases on Q/K/V and Qwen3 a norm on Q and K, which the tensor table
covers by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from localq.errors import LocalqError

if TYPE_CHECKING:  # numpy is imported where values are computed: a conversion that copies bits needs none
    import numpy as np


class UnsupportedArchitecture(LocalqError):
    """A model of an architecture localq cannot convert."""


@dataclass(frozen=True)
class Arch:
    """One architecture: its GGUF name, its HF class names and model_type, and its rotary layout."""

    gguf: str
    hf_classes: tuple[str, ...]
    model_type: str
    # llama.cpp's `llama` architecture applies rotary embedding to interleaved
    # pairs, while HF checkpoints rotate the two halves of each head: Q and K are
    # stored permuted in GGUF. Qwen's GGUFs use llama.cpp's NEOX mode (halves), so
    # they are stored as they are.
    permute_qk: bool


ARCHS = (
    Arch("llama", ("LlamaForCausalLM", "MistralForCausalLM"), "llama", permute_qk=True),
    Arch("qwen2", ("Qwen2ForCausalLM",), "qwen2", permute_qk=False),
    Arch("qwen3", ("Qwen3ForCausalLM",), "qwen3", permute_qk=False),
)

SUPPORTED = ", ".join(sorted({c for a in ARCHS for c in a.hf_classes}))


def by_gguf(name: str) -> Arch:
    """The architecture with this GGUF ``general.architecture``, or an error naming it."""
    for arch in ARCHS:
        if arch.gguf == name:
            return arch
    raise UnsupportedArchitecture(
        f"cannot convert GGUF architecture {name!r}",
        f"localq converts {', '.join(a.gguf for a in ARCHS)}",
    )


def by_hf(config: dict) -> Arch:
    """The architecture of an HF ``config.json``, or an error naming what it declares."""
    classes = config.get("architectures") or []
    for arch in ARCHS:
        if any(c in arch.hf_classes for c in classes):
            return arch
    named = ", ".join(classes) or f"model_type {config.get('model_type')!r}"
    raise UnsupportedArchitecture(f"cannot convert architecture {named}", f"localq converts {SUPPORTED}")


# GGUF tensor name stem -> HF name stem; per-layer ones have {i}. The suffix
# (.weight / .bias) is carried over unchanged.
GLOBAL_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_HF_LAYER = {v: k for k, v in LAYER_TENSORS.items()}
_HF_GLOBAL = {v: k for k, v in GLOBAL_TENSORS.items()}
_GGUF_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_HF_RE = re.compile(r"^model\.layers\.(\d+)\.([a-z_.]+)\.(weight|bias)$")


def hf_tensor_name(gguf_name: str) -> str | None:
    """The HF name of a GGUF tensor; None for one HF checkpoints do not hold (``rope_freqs``)."""
    m = _GGUF_RE.match(gguf_name)
    if m:
        layer, stem, suffix = m.groups()
        if stem not in LAYER_TENSORS:
            raise UnsupportedArchitecture(f"GGUF tensor {gguf_name!r} has no Hugging Face equivalent localq knows")
        return f"model.layers.{layer}.{LAYER_TENSORS[stem]}.{suffix}"
    stem, _, suffix = gguf_name.rpartition(".")
    if stem == "rope_freqs":
        return None
    if stem in GLOBAL_TENSORS:
        return f"{GLOBAL_TENSORS[stem]}.{suffix}"
    raise UnsupportedArchitecture(f"GGUF tensor {gguf_name!r} has no Hugging Face equivalent localq knows")


def gguf_tensor_name(hf_name: str) -> str | None:
    """The GGUF name of an HF tensor; None for buffers GGUF does not store (``rotary_emb.inv_freq``)."""
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None
    m = _HF_RE.match(hf_name)
    if m:
        layer, stem, suffix = m.groups()
        if stem not in _HF_LAYER:
            raise UnsupportedArchitecture(f"tensor {hf_name!r} has no GGUF equivalent localq knows")
        return f"blk.{layer}.{_HF_LAYER[stem]}.{suffix}"
    stem, _, suffix = hf_name.rpartition(".")
    if stem in _HF_GLOBAL:
        return f"{_HF_GLOBAL[stem]}.{suffix}"
    raise UnsupportedArchitecture(f"tensor {hf_name!r} has no GGUF equivalent localq knows")


def rotary_to_gguf(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder each head's rows from HF's half-split rotary layout to llama.cpp's interleaved pairs.

    Within a head of ``d`` rows, HF row ``j`` of the first half and row
    ``j + d/2`` pair up; llama.cpp wants them at rows ``2j`` and ``2j + 1``.
    Works for a weight (rows x cols) and for a bias (rows).
    """
    rows = w.shape[0]
    half = rows // n_head // 2
    return w.reshape(n_head, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rotary_order(rows: int, n_head: int) -> list[int]:
    """For each row of llama.cpp's interleaved layout, in order, the HF row ``rotary_to_gguf`` takes it from."""
    half = rows // n_head // 2
    return [h * 2 * half + k * half + j for h in range(n_head) for j in range(half) for k in range(2)]


def rotary_from_gguf(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of ``rotary_to_gguf``: interleaved pairs back to HF's two halves per head."""
    rows = w.shape[0]
    half = rows // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# GGUF key (after "{arch}.") -> HF config.json key, for the numbers both hold.
CONFIG_KEYS = {
    "block_count": "num_hidden_layers",
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "attention.key_length": "head_dim",
    "vocab_size": "vocab_size",
}


def llama3_rope_factors(base: float, dim: int, factor: float, low: float, high: float, original_ctx: int) -> np.ndarray:
    """Llama 3.1's per-frequency rotary divisors (GGUF's ``rope_freqs.weight``), from its published formula.

    Wavelengths shorter than ``original_ctx / high`` keep their frequency, those
    longer than ``original_ctx / low`` are divided by ``factor``, and the band
    between is interpolated smoothly.
    """
    import numpy as np

    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    wavelen = 2 * np.pi / freqs
    smooth = np.clip((original_ctx / wavelen - low) / (high - low), 0.0, 1.0)
    divisor = 1.0 / ((1 - smooth) / factor + smooth)
    return divisor.astype(np.float32)
