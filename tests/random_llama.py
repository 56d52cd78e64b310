"""A llama-architecture Hugging Face directory of any shape, with random weights and SmolLM2's tokenizer.

For what depends on a model's shape, not its values: speed (a TinyLlama-sized
model for the eval benchmark, with no weights to download) or a second
vocabulary (a tiny model whose tokenizer has tokens SmolLM2's has not). The
tokenizer files are copied from an HF directory (the SmolLM2 one that localq's
GGUF -> safetensors writes); ``extra_tokens`` appends added tokens to it and
``swap`` trades two tokens' ids.
The weights are written by localq's own safetensors writer, one tensor at a
time: a block of random normal values (std 0.02, as models are initialised)
repeated to each tensor's size, so even a billion weights take seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from localq.quantize.safetensors_io import write_streaming

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
NUMPY = {"F16": np.float16, "F32": np.float32}


def random_llama(tokenizer_dir: Path, out: Path, *, hidden: int, layers: int, heads: int, kv_heads: int,
                 intermediate: int, tied: bool = False, extra_tokens: int = 0, swap: tuple[str, str] | None = None,
                 dtype: str = "F16", seed: int = 0) -> Path:
    """Write ``out`` (config.json, tokenizer files, model.safetensors) and return it.

    ``swap``: two tokens of the vocabulary that trade ids (the same size, other ids).
    """
    out.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, out / name)
    tokenizer = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = len(tokenizer["model"]["vocab"]) + extra_tokens
    if swap:
        ids = tokenizer["model"]["vocab"]
        ids[swap[0]], ids[swap[1]] = ids[swap[1]], ids[swap[0]]
    for i in range(extra_tokens):
        tokenizer["added_tokens"].append({"id": vocab - extra_tokens + i, "content": f"<|localq_extra_{i}|>",
                                          "single_word": False, "lstrip": False, "rstrip": False,
                                          "normalized": False, "special": True})
    (out / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    base = json.loads((tokenizer_dir / "config.json").read_text(encoding="utf-8"))
    head_dim = hidden // heads
    config = {**base, "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
              "intermediate_size": intermediate, "head_dim": head_dim, "vocab_size": vocab,
              "tie_word_embeddings": tied, "max_position_embeddings": 2048, "rope_theta": 10000.0,
              "torch_dtype": {"F16": "float16", "F32": "float32"}[dtype]}
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")

    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    if not tied:
        shapes["lm_head.weight"] = (vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": (hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": (intermediate, hidden), p + "mlp.up_proj.weight": (intermediate, hidden),
            p + "mlp.down_proj.weight": (hidden, intermediate),
        })
    block = (np.random.default_rng(seed).standard_normal(1 << 20) * 0.02).astype(NUMPY[dtype])
    ones = np.ones(1, dtype=NUMPY[dtype])

    def produce(name: str) -> np.ndarray:
        shape = shapes[name]
        return np.resize(ones if len(shape) == 1 else block, shape)  # norms of 1, as initialised

    write_streaming(out / "model.safetensors", [(n, dtype, s) for n, s in shapes.items()], produce)
    return out
