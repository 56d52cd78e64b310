"""The quant a GGUF file is labelled with: what it holds, not what its name says.

The label comes from the header's ``general.file_type`` when the tensors agree
with it, else from the tensors themselves (the type holding most bytes of the
2-D weights). "Agree" is coarse on purpose: a float file type (F16, BF16, F32)
over quantized weights, or a quantized file type over float weights, is a
header that lies; within quantized types llama.cpp mixes legitimately (K-quants
fall back to other types on rows that are not a multiple of 256, Q4_K_M keeps
some tensors in Q6_K).

The file name's quant (``-Q5_K_M.gguf``) is compared with that label:
- the same: nothing to say;
- a variant of the same family (bartowski's ``Q4_K_L`` / ``Q4_K_XL`` are
  Q4_K_M files with Q8_0 embeddings and output): the name's quant is kept as
  the label, since it names that variant, and a note says what the header holds;
- otherwise (a file named Q5_K_M that holds F16): the label is what the file
  holds, and a warning names both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FLOAT_TYPES = {"F16", "BF16", "F32", "F64"}
_SUFFIX = re.compile(r"_(xxs|xs|s|m|l|xl)$")


@dataclass(frozen=True)
class QuantLabel:
    """The quant to store and show, what the name said, and a warning when they differ."""

    quant: str
    named: str | None = None
    warning: str | None = None


def held_quant(info) -> str:
    """The quant ``info``'s file holds, from its file type checked against its tensor types."""
    header = (info.file_type or "").removesuffix(" (guessed)").lower()
    weights = {name: mix["bytes"] for name, mix in info.quant_mix.items()}
    dominant = max(weights, key=weights.get).upper() if weights else None
    if header and not header.startswith("unknown") and dominant is not None:
        header_float = header.upper() in FLOAT_TYPES
        if header_float == (dominant in FLOAT_TYPES):
            return header
    if dominant is not None:
        return dominant.lower()
    return header or "unknown"


def family(quant: str) -> str:
    """``q4_k_m`` -> ``q4_k``; ``iq4_xs`` -> ``iq4``; ``q8_0`` -> ``q8_0``."""
    return _SUFFIX.sub("", quant)


def label(info, filename: str) -> QuantLabel:
    """The label for the GGUF ``info`` read from a file called ``filename``."""
    from localq.hub import quant_in_name

    held = held_quant(info)
    named = quant_in_name(filename)
    if named is None or named == held:
        return QuantLabel(held, named)
    if family(named) == family(held) and held not in ("f16", "bf16", "f32"):
        return QuantLabel(named, named, f"{filename} is a {named.upper()} variant: its header says "
                                        f"{held.upper()}, with other types for some tensors")
    return QuantLabel(held, named, f"{filename} is named {named.upper()} but holds {held.upper()} "
                                   f"(its header and tensors say so); it is labelled {held}")
