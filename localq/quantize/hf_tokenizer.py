"""Hugging Face tokenizer files written from a GGUF's tokenizer metadata.

A GGUF of a BPE model (``tokenizer.ggml.model = gpt2``) carries the whole
tokenizer: the vocabulary, the merges, each token's type (normal, control,
user-defined...), the special token ids and the name of its pre-tokenizer
(``tokenizer.ggml.pre``). From those localq writes a ``tokenizer.json`` that
the ``tokenizers`` library loads as it is, plus ``tokenizer_config.json`` (with
the chat template) and ``special_tokens_map.json``.

The pre-tokenizer is the one part a GGUF names instead of spelling out; the
table below gives, for each name localq knows, the split that llama.cpp applies
for it, written as ``tokenizers`` pre-tokenizer steps. Any other name is refused
rather than guessed, since a wrong split tokenizes text differently.
"""

from __future__ import annotations

import json

from localq.errors import LocalqError

# The GPT-2 byte-level split, as `tokenizers`' ByteLevel(use_regex=True) applies it.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_BYTE_LEVEL_NO_REGEX = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}


def _split(pattern: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


_LLAMA3_RE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_RE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

PRE_TOKENIZERS = {
    "gpt-2": _BYTE_LEVEL,
    "default": _BYTE_LEVEL,
    # digits one by one, then GPT-2's split (SmolLM, StarCoder and relatives)
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
    "starcoder": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
    "llama-bpe": {"type": "Sequence", "pretokenizers": [_split(_LLAMA3_RE), _BYTE_LEVEL_NO_REGEX]},
    "qwen2": {"type": "Sequence", "pretokenizers": [_split(_QWEN2_RE), _BYTE_LEVEL_NO_REGEX]},
}

CONTROL, USER_DEFINED = 3, 4  # llama.cpp's token types that HF holds as added tokens


class UnsupportedTokenizer(LocalqError):
    """A GGUF tokenizer localq cannot write as Hugging Face files."""


def tokenizer_files(meta: dict) -> dict[str, bytes]:
    """``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` from GGUF metadata.

    ``meta`` maps GGUF keys to their values (lists as Python lists).
    """
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise UnsupportedTokenizer(
            f"cannot write a Hugging Face tokenizer for GGUF tokenizer model {model!r}",
            "localq writes BPE (gpt2) tokenizers; convert from the original Hugging Face repository instead",
        )
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise UnsupportedTokenizer(
            f"cannot write a Hugging Face tokenizer for GGUF pre-tokenizer {pre!r}",
            f"localq knows {', '.join(sorted(PRE_TOKENIZERS))}",
        )
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges: list[str] = meta.get("tokenizer.ggml.merges") or []
    added = [
        {
            "id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": types[i] != CONTROL, "special": types[i] == CONTROL,
        }
        for i, tok in enumerate(tokens)
        if types[i] in (CONTROL, USER_DEFINED)
    ]

    def token(key: str) -> str | None:
        idx = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[idx] if idx is not None and 0 <= idx < len(tokens) else None

    bos, eos, unk, pad = token("bos"), token("eos"), token("unknown"), token("padding")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    post = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    if (add_bos and bos) or (add_eos and eos):
        single = ([{"SpecialToken": {"id": bos, "type_id": 0}}] if add_bos and bos else []) + [
            {"Sequence": {"id": "A", "type_id": 0}}
        ] + ([{"SpecialToken": {"id": eos, "type_id": 0}}] if add_eos and eos else [])
        specials = {t: {"id": t, "ids": [tokens.index(t)], "tokens": [t]} for t in (bos, eos) if t}
        post = {"type": "TemplateProcessing", "single": single, "pair": single, "special_tokens": specials}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": PRE_TOKENIZERS[pre],
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": merges,
        },
    }
    special_map = {k: v for k, v in (("bos_token", bos), ("eos_token", eos), ("unk_token", unk), ("pad_token", pad)) if v}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(meta.get("context_length") or 8192),
        **special_map,
    }
    if meta.get("tokenizer.chat_template"):
        config["chat_template"] = meta["tokenizer.chat_template"]

    def dump(obj) -> bytes:
        return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()

    return {
        "tokenizer.json": dump(tokenizer),
        "tokenizer_config.json": dump(config),
        "special_tokens_map.json": dump(special_map),
    }
