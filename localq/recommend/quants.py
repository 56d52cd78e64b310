"""The quantization table: each quant localq knows, its bits per weight and its expected quality loss.

Data, with where each figure comes from. ``QUANTS_BY_TAG`` is looked up by every other module.
"""
from __future__ import annotations

from dataclasses import dataclass

from localq.units import GiB


# llama.cpp's tools/quantize/quantize.cpp (QUANT_OPTIONS) lists each type's file
# size and perplexity increase for Llama-3-8B (8.03e9 parameters), e.g.
# "Q4_K_M: 4.58G, +0.1754 ppl @ Llama-3-8B". The sizes are GiB; bits per weight
# follow as size * 2^30 * 8 / parameters (Q4_K_M: 4.90, Q8_0: 8.51), and include
# the larger types these mixes keep for embeddings and output.
LLAMA3_8B_PARAMETERS = 8_030_261_248


LLAMACPP_QUANTIZE_TABLE = {  # tag: (GiB @ Llama-3-8B, ppl increase @ Llama-3-8B)
    "q2_k": (2.96, 3.5199),
    "q3_k_s": (3.41, 1.6321),
    "q3_k_m": (3.74, 0.6569),
    "q3_k_l": (4.03, 0.5562),
    "q4_0": (4.34, 0.4685),
    "q4_1": (4.78, 0.4511),
    "q4_k_s": (4.37, 0.2689),
    "q4_k_m": (4.58, 0.1754),
    "q5_0": (5.21, 0.1316),
    "q5_1": (5.65, 0.1062),
    "q5_k_s": (5.21, 0.1049),
    "q5_k_m": (5.33, 0.0569),
    "q6_k": (6.14, 0.0217),
    "q8_0": (7.96, 0.0026),
}


LLAMACPP_SOURCE = "llama.cpp quantize table (Llama-3-8B)"


@dataclass(frozen=True)
class Quant:
    tag: str                     # as localq.names spells it: "q4_k_m", "mlx-4bit", "int4-g32"
    backend: str                 # "llamacpp", "mlx", "torch_int4"
    bits: float                  # bits per weight
    ppl_delta: float             # expected perplexity increase, on llama.cpp's Llama-3-8B scale
    quality_source: str
    k_quant: bool = False        # a llama.cpp K-quant: needs rows that are multiples of 256
    keeps_embeddings: bool = False  # the token embedding stays bf16 (torch INT4)

    @property
    def label(self) -> str:
        return self.tag.upper() if self.backend == "llamacpp" else self.tag


def _gguf(tag: str) -> Quant:
    size_gib, ppl = LLAMACPP_QUANTIZE_TABLE[tag]
    bits = round(size_gib * GiB * 8 / LLAMA3_8B_PARAMETERS, 2)
    return Quant(tag, "llamacpp", bits, ppl, LLAMACPP_SOURCE, k_quant="_k" in tag)


QUANTS: tuple[Quant, ...] = (
    *(_gguf(tag) for tag in LLAMACPP_QUANTIZE_TABLE),
    Quant("f16", "llamacpp", 16.0, 0.0020, "llama.cpp quantize table (Mistral-7B)"),
    # MLX affine quantization, group size 64 with an f16 scale and bias per group:
    # 4 + 32/64 = 4.5 and 8.5 bits. The same scheme as torch's int4-g64 below; the
    # 8-bit one loses about what llama.cpp's Q8_0 does.
    Quant("mlx-4bit", "mlx", 4.5, 0.52, "estimate: as int4-g64 (same affine scheme)"),
    Quant("mlx-8bit", "mlx", 8.5, 0.003, "estimate: as llama.cpp's Q8_0"),
    # torch INT4 (tinygemm): affine 4-bit with a bf16 scale and zero per group of
    # N, 4 + 32/N bits; embeddings stay bf16. int4-g32 is llama.cpp's Q4_1 scheme
    # (+0.4511 @ Llama-3-8B). int4-g128 from torchao's Llama 3.1 8B eval (word
    # perplexity 7.33 -> 8.25, about +0.6 on llama.cpp's token scale); g64 between.
    Quant("int4-g32", "torch_int4", 5.0, 0.45, "estimate: as llama.cpp's Q4_1 (same scheme)", keeps_embeddings=True),
    Quant("int4-g64", "torch_int4", 4.5, 0.52, "estimate: between int4-g32 and int4-g128", keeps_embeddings=True),
    Quant("int4-g128", "torch_int4", 4.25, 0.60, "estimate: torchao's Llama 3.1 8B eval", keeps_embeddings=True),
)


QUANTS_BY_TAG = {q.tag: q for q in QUANTS}


# The candidates a recommendation weighs; the other table rows size files that exist.
CANDIDATES = (
    "q2_k", "q3_k_m", "q4_0", "q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16",
    "mlx-4bit", "mlx-8bit", "int4-g32", "int4-g64", "int4-g128",
)


# llama.cpp's fallback when a K-quant meets rows that are not a multiple of 256
# (src/llama-quant.cpp): Q2_K/Q3_K -> IQ4_NL, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0.
K_QUANT_FALLBACK = "Q2_K/Q3_K -> IQ4_NL, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0"
