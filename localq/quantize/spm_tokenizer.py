"""SentencePiece tokenizers both ways: ``tokenizer.model`` read and written, and its ``tokenizer.json``.

A GGUF of a Llama 2, Mistral or TinyLlama model holds a SentencePiece BPE
tokenizer (``tokenizer.ggml.model = llama``): every piece with its score and
type. Going back to a Hugging Face directory, localq writes it twice:

- ``tokenizer.model``: the SentencePiece ``ModelProto`` (the pieces, a BPE
  trainer spec with byte fallback, an identity normalizer), so the
  ``sentencepiece`` library, and localq's own GGUF converter, read it as the
  original;
- ``tokenizer.json``: what the ``tokenizers`` library runs (the torch INT4
  backend, MLX). SentencePiece's BPE merges, at each step, the adjacent pair
  whose joined piece has the highest score; ``tokenizers``' BPE merges the
  pair of lowest rank. So the merges are every split ``(left, right)`` of
  every piece into two pieces, ranked by the joined piece's score, highest
  first: the same merges in the same order. Whitespace becomes ``▁`` and one
  ``▁`` goes in front (SentencePiece's dummy prefix, when the GGUF says so);
  characters outside the vocabulary fall back to byte pieces ``<0xNN>``.

The protobuf's wire format is a few lines to read and write, which spares a
protobuf dependency.
"""

from __future__ import annotations

import struct

from localq.errors import LocalqError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6   # SentencePiece's piece types
SPACE = "\u2581"   # ▁, SentencePiece's escaped whitespace
BPE_MODEL = 2      # TrainerSpec.model_type


# --- the protobuf wire format ---------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1          # negative int32s are ten bytes of two's complement
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
    return _varint(num << 3 | wire) + payload


def _string(num: int, data: bytes) -> bytes:
    return _field(num, 2, _varint(len(data)) + data)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes):
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _read_varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield num, wire, value


def read_sentencepiece_model(data: bytes) -> list[tuple[str, float, int]]:
    """``(piece, score, type)`` for every piece of a SentencePiece ``tokenizer.model``.

    The file is a protobuf ``ModelProto`` whose field 1 repeats ``SentencePiece``
    messages (1: piece, 2: score as float, 3: type, default 1 = normal).
    """
    pieces = []
    try:
        for num, wire, value in _fields(data):
            if num != 1 or wire != 2:
                continue
            piece, score, kind = "", 0.0, NORMAL
            for n, w, v in _fields(value):
                if n == 1 and w == 2:
                    piece = v.decode("utf-8")
                elif n == 2 and w == 5:
                    score = struct.unpack("<f", v)[0]
                elif n == 3 and w == 0:
                    kind = v
            pieces.append((piece, score, kind))
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise LocalqError("tokenizer.model is not a SentencePiece model or is damaged", "download it again") from exc
    if not pieces:
        raise LocalqError("tokenizer.model holds no pieces", "download it again")
    return pieces


def write_sentencepiece_model(pieces: list[tuple[str, float, int]], *, unk: int | None, bos: int | None,
                              eos: int | None, pad: int | None = None, dummy_prefix: bool = True) -> bytes:
    """A ``tokenizer.model`` (``ModelProto``) of a BPE model with these pieces, byte fallback and no normalization."""
    out = bytearray()
    for piece, score, kind in pieces:
        body = _string(1, piece.encode("utf-8")) + _field(2, 5, struct.pack("<f", score))
        if kind != NORMAL:
            body += _field(3, 0, _varint(kind))
        out += _string(1, body)
    has_bytes = any(kind == BYTE for _, _, kind in pieces)
    trainer = (_field(3, 0, _varint(BPE_MODEL)) + _field(4, 0, _varint(len(pieces)))
               + _field(35, 0, _varint(int(has_bytes))))
    for num, idx in ((40, unk), (41, bos), (42, eos), (43, pad)):
        trainer += _field(num, 0, _varint(-1 if idx is None else idx))
    normalizer = (_string(1, b"identity") + _field(3, 0, _varint(int(dummy_prefix)))
                  + _field(4, 0, _varint(0)) + _field(5, 0, _varint(1)))
    out += _string(2, trainer) + _string(3, normalizer)
    return bytes(out)


# --- tokenizer.json -------------------------------------------------------------------------


def merges_of(pieces: list[tuple[str, float, int]]) -> list[list[str]]:
    """Every split of a normal piece into two pieces, ranked as SentencePiece's BPE applies them."""
    ids = {p: i for i, (p, _, kind) in enumerate(pieces) if kind in (NORMAL, USER_DEFINED)}
    ranked = []
    for i, (piece, score, kind) in enumerate(pieces):
        if kind != NORMAL or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                ranked.append((-score, i, ids[left], ids[right], left, right))
    ranked.sort()
    return [[left, right] for *_, left, right in ranked]


def added_tokens(tokens: list[str], types: list[int], normalized_user_tokens: bool) -> list[dict]:
    """``tokenizer.json``'s added tokens: the control (special) and user-defined tokens, by id.

    Shared by both writers (here and ``hf_tokenizer``'s byte-level BPE); GGUF's
    token types are SentencePiece's numbers.
    """
    return [
        {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": normalized_user_tokens and kind != CONTROL, "special": kind == CONTROL}
        for i, (tok, kind) in enumerate(zip(tokens, types)) if kind in (CONTROL, USER_DEFINED)
    ]


def bos_eos_template(add_bos: str | None, add_eos: str | None, ids: dict[str, int]) -> dict:
    """The post-processor that puts ``add_bos`` before and ``add_eos`` after a sequence (None: that side bare)."""
    single = ([{"SpecialToken": {"id": add_bos, "type_id": 0}}] if add_bos else []) + [
        {"Sequence": {"id": "A", "type_id": 0}}] + ([{"SpecialToken": {"id": add_eos, "type_id": 0}}] if add_eos else [])
    specials = {t: {"id": t, "ids": [ids[t]], "tokens": [t]} for t in (add_bos, add_eos) if t}
    return {"type": "TemplateProcessing", "single": single, "pair": single, "special_tokens": specials}


def tokenizer_json(pieces: list[tuple[str, float, int]], *, unk: str | None, add_bos: str | None,
                   add_eos: str | None, dummy_prefix: bool = True) -> dict:
    """The ``tokenizers`` JSON of a SentencePiece BPE model (``add_bos``/``add_eos``: the token to add, or None)."""
    replace_space = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}
    normalizer = ({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPACE}, replace_space]}
                  if dummy_prefix else replace_space)
    decoders = [{"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
                {"type": "Fuse"}]
    if dummy_prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    ids = {p: i for i, (p, _, _) in enumerate(pieces)}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens([p for p, _, _ in pieces], [k for _, _, k in pieces], False),
        "normalizer": normalizer,
        "pre_tokenizer": None,
        "post_processor": bos_eos_template(add_bos, add_eos, ids),
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
            "vocab": ids,
            "merges": merges_of(pieces),
        },
    }
