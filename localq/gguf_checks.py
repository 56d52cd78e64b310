"""The checks llama.cpp would assert on, made from a GGUF header alone, before anything loads.

llama.cpp trusts some header numbers: a layer count above ``LLAMA_MAX_LAYERS``
aborts the process (``GGML_ASSERT``), a head count of zero divides by zero, a
tensor of the wrong shape or a missing one fails deep in the load. A native
abort cannot be caught in Python, so these checks run first, on what
``gguf_info`` parsed, and each problem is one line naming the key or tensor
and the value that is wrong.

What is checked:
- ``{arch}.block_count`` in 1..512 (``LLAMA_MAX_LAYERS``);
- ``{arch}.embedding_length`` and ``{arch}.context_length`` positive when given,
  ``{arch}.rope.freq_base`` a positive finite number;
- ``attention.head_count`` and ``attention.head_count_kv`` not zero, and the
  first divisible by the second (per-layer lists are checked layer by layer;
  a layer with no attention, 0 and 0, is legal in hybrid models);
- the token embedding's width against the embedding length, and its rows
  against the vocabulary size (``{arch}.vocab_size``, else the token list);
- for the architectures with the standard transformer block (``STANDARD_BLOCK``:
  llama, mistral, qwen2, qwen3 ...) every block's attention, feed-forward and
  norm tensors present, with shapes that agree with the embedding length, the
  head counts, the head size and the feed-forward length;
- no tensor of a type llama.cpp dropped (``REMOVED_TYPES``);
- no tensor named for a block past ``block_count``.
The tensor-presence checks apply to whole files; a part of a split set
(``split.count`` > 1) gets the key and shape checks of the tensors it holds.
(Tensor data past the end of the file is refused by the parser already.)
"""

from __future__ import annotations

import math
import re

MAX_LAYERS = 512                 # LLAMA_MAX_LAYERS in llama.cpp
# ggml type ids that llama.cpp no longer loads: Q4_2, Q4_3, the Q4_0_4_4/4_8/8_8 and IQ4_NL_4_4/4_8/8_8 repacks.
REMOVED_TYPES = {4: "Q4_2", 5: "Q4_3", 31: "Q4_0_4_4", 32: "Q4_0_4_8", 33: "Q4_0_8_8",
                 36: "IQ4_NL_4_4", 37: "IQ4_NL_4_8", 38: "IQ4_NL_8_8"}
# Architectures whose blocks are attn_norm, attn_q/k/v/output, ffn_norm, ffn_gate/up/down.
STANDARD_BLOCK = {"llama", "mistral", "qwen2", "qwen3", "granite", "smollm3"}
_BLOCK_TENSOR = re.compile(r"^blk\.(\d+)\.")


def load_problems(metadata: dict, tensors) -> list[str]:
    """Every reason llama.cpp would refuse or crash on this header, as one line each (empty: fine)."""
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        return []       # not a model file llama.cpp's loader gets far with; it says so itself
    problems: list[str] = []
    key = f"{arch}."
    by_name = {t.name: t for t in tensors}

    blocks = _number(metadata, key + "block_count")
    if blocks is not None and not 1 <= blocks <= MAX_LAYERS:
        problems.append(f"{key}block_count is {blocks}; llama.cpp runs 1 to {MAX_LAYERS} layers")
        blocks = None
    for name in ("embedding_length", "context_length"):
        value = _number(metadata, key + name)
        if value is not None and value < 1:
            problems.append(f"{key}{name} is {value}; it must be 1 or more")
    problems += _head_problems(metadata, key, blocks)
    base = metadata.get(key + "rope.freq_base")
    if isinstance(base, float) and not (math.isfinite(base) and base > 0):
        problems.append(f"{key}rope.freq_base is {base}; it must be a positive number")

    for tensor in tensors:
        if tensor.type_id in REMOVED_TYPES:
            problems.append(f"tensor {tensor.name!r} has type {REMOVED_TYPES[tensor.type_id]}, "
                            f"which llama.cpp no longer loads")
            break
    if blocks is not None:
        extra = sorted({int(m.group(1)) for t in tensors if (m := _BLOCK_TENSOR.match(t.name))
                        and int(m.group(1)) >= blocks})
        if extra:
            problems.append(f"tensors for block {extra[0]} exist but {key}block_count is {blocks}")

    embd = _number(metadata, key + "embedding_length")
    problems += _embedding_problems(metadata, key, by_name.get("token_embd.weight"), embd)
    split = metadata.get("split.count")
    if isinstance(split, int) and split > 1:
        return problems   # one part of a split set holds only some tensors: the key checks are what applies
    if arch in STANDARD_BLOCK and blocks and embd and not problems:
        problems += _block_problems(metadata, key, by_name, blocks, embd)
    return problems


def _number(metadata: dict, key: str):
    value = metadata.get(key)
    if isinstance(value, bool):
        return None
    return value if isinstance(value, int) else None


def _per_layer(metadata: dict, key: str, blocks: int | None) -> list[int] | None:
    """A value that may be one number or one per layer, as a list (None when absent or not numbers)."""
    value = metadata.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return [value] * (blocks or 1)
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    return None


def _head_problems(metadata: dict, key: str, blocks: int | None) -> list[str]:
    heads = _per_layer(metadata, key + "attention.head_count", blocks)
    kv = _per_layer(metadata, key + "attention.head_count_kv", blocks)
    if heads is None:
        return []
    scalar = not isinstance(metadata.get(key + "attention.head_count"), list)
    if scalar and heads[0] < 1:
        return [f"{key}attention.head_count is {heads[0]}; it must be 1 or more"]
    if kv is None:
        return []
    if not isinstance(metadata.get(key + "attention.head_count_kv"), list) and kv[0] < 1 and scalar:
        return [f"{key}attention.head_count_kv is {kv[0]}; it must be 1 or more"]
    if len(heads) != len(kv) and len(heads) > 1 and len(kv) > 1:
        return [f"{key}attention.head_count has {len(heads)} layers but head_count_kv has {len(kv)}"]
    if len(heads) == 1:
        heads = heads * len(kv)
    if len(kv) == 1:
        kv = kv * len(heads)
    if all(h == 0 for h in heads):
        return [f"{key}attention.head_count is 0 in every layer"]
    for layer, (h, k) in enumerate(zip(heads, kv)):
        if h < 0 or k < 0 or (k and h % k):
            where = "" if scalar and not isinstance(metadata.get(key + "attention.head_count_kv"), list) \
                else f" in layer {layer}"
            return [f"{key}attention.head_count {h} is not a multiple of head_count_kv {k}{where}"]
    return []


def _embedding_problems(metadata: dict, key: str, embd_tensor, embd: int | None) -> list[str]:
    if embd_tensor is None:
        return []
    shape = embd_tensor.shape
    problems = []
    if embd and shape[0] != embd:
        problems.append(f"token_embd.weight is {shape[0]} wide but {key}embedding_length is {embd}")
    vocab = _number(metadata, key + "vocab_size")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if vocab is None and tokens is not None:
        vocab = tokens["length"] if isinstance(tokens, dict) else len(tokens)
    if vocab is not None and len(shape) == 2 and shape[1] != vocab:
        problems.append(f"token_embd.weight has {shape[1]} rows but the vocabulary has {vocab} tokens")
    return problems


def _block_problems(metadata: dict, key: str, by_name: dict, blocks: int, embd: int) -> list[str]:
    """Missing tensors and wrong shapes in the standard transformer block."""
    heads = _per_layer(metadata, key + "attention.head_count", blocks)
    kv = _per_layer(metadata, key + "attention.head_count_kv", blocks) or heads
    ff = _per_layer(metadata, key + "feed_forward_length", blocks)
    experts = _number(metadata, key + "expert_count")
    if heads is None or len(heads) not in (1, blocks) or len(kv) not in (1, blocks):
        return []
    k_size = _number(metadata, key + "attention.key_length")
    v_size = _number(metadata, key + "attention.value_length")
    for i in range(blocks):
        h, k = heads[min(i, len(heads) - 1)], kv[min(i, len(kv) - 1)]
        if not h or not k:
            continue     # a layer without attention (hybrid models)
        head_k = k_size or embd // h
        head_v = v_size or embd // h
        want = {
            "attn_norm.weight": (embd,),
            "attn_q.weight": (embd, h * head_k),
            "attn_k.weight": (embd, k * head_k),
            "attn_v.weight": (embd, k * head_v),
            "attn_output.weight": (h * head_v, embd),
            "ffn_norm.weight": (embd,),
        }
        if not experts and ff is not None and len(ff) in (1, blocks):
            n_ff = ff[min(i, len(ff) - 1)]
            want |= {"ffn_gate.weight": (embd, n_ff), "ffn_up.weight": (embd, n_ff),
                     "ffn_down.weight": (n_ff, embd)}
        for suffix, shape in want.items():
            name = f"blk.{i}.{suffix}"
            tensor = by_name.get(name)
            if tensor is None:
                return [f"tensor {name!r} is missing"]
            if tuple(tensor.shape) != shape:
                got = "x".join(map(str, tensor.shape))
                return [f"tensor {name!r} is {got}; the header's numbers make it {'x'.join(map(str, shape))}"]
    return []
