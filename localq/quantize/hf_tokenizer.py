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

A SentencePiece GGUF (``tokenizer.ggml.model = llama``: Llama 2, Mistral,
TinyLlama) has no pre-tokenizer to name: ``spm_tokenizer`` writes its
``tokenizer.json`` and ``tokenizer.model`` from the pieces and their scores.
"""

from __future__ import annotations

import json

from localq.errors import LocalqError
from localq.quantize import spm_tokenizer
from localq.quantize.spm_tokenizer import (  # llama.cpp's token types are SentencePiece's numbers
    CONTROL, NORMAL, UNUSED, USER_DEFINED, read_sentencepiece_model)

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



class UnsupportedTokenizer(LocalqError):
    """A GGUF tokenizer localq cannot write as Hugging Face files."""


def tokenizer_files(meta: dict) -> dict[str, bytes]:
    """``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` from GGUF metadata.

    ``meta`` maps GGUF keys to their values (lists as Python lists). A
    SentencePiece tokenizer (``llama``) also gets its ``tokenizer.model``
    (``spm_tokenizer`` says how).
    """
    model = meta.get("tokenizer.ggml.model")
    if model not in ("gpt2", "llama"):
        raise UnsupportedTokenizer(
            f"cannot write a Hugging Face tokenizer for GGUF tokenizer model {model!r}",
            "localq writes BPE (gpt2) and SentencePiece (llama) tokenizers; convert from the original Hugging Face "
            "repository instead",
        )
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)

    def token(key: str) -> str | None:
        idx = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[idx] if idx is not None and 0 <= idx < len(tokens) else None

    bos, eos, unk, pad = token("bos"), token("eos"), token("unknown"), token("padding")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", model == "llama"))   # llama.cpp's defaults
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    if model == "gpt2":
        files = {"tokenizer.json": _dump(_bpe_tokenizer_json(meta, tokens, types, bos if add_bos else None,
                                                              eos if add_eos else None))}
    else:
        pieces = list(zip(tokens, meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens), types))
        prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
        files = {
            "tokenizer.json": _dump(spm_tokenizer.tokenizer_json(pieces, unk=unk, add_bos=bos if add_bos else None,
                                                                 add_eos=eos if add_eos else None, dummy_prefix=prefix)),
            "tokenizer.model": spm_tokenizer.write_sentencepiece_model(
                pieces, unk=tokens.index(unk) if unk else None, bos=tokens.index(bos) if bos else None,
                eos=tokens.index(eos) if eos else None, pad=tokens.index(pad) if pad else None, dummy_prefix=prefix),
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
    files.update({"tokenizer_config.json": _dump(config), "special_tokens_map.json": _dump(special_map)})
    return files


def _dump(obj) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()


def _bpe_tokenizer_json(meta: dict, tokens: list[str], types: list[int], add_bos: str | None,
                        add_eos: str | None) -> dict:
    """The ``tokenizers`` JSON of a byte-level BPE GGUF tokenizer (``add_bos``/``add_eos``: the token to add)."""
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise UnsupportedTokenizer(
            f"cannot write a Hugging Face tokenizer for GGUF pre-tokenizer {pre!r}",
            f"localq knows {', '.join(sorted(PRE_TOKENIZERS))}",
        )
    merges: list[str] = meta.get("tokenizer.ggml.merges") or []
    ids = {tok: i for i, tok in enumerate(tokens)}
    post = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    if add_bos or add_eos:
        post = spm_tokenizer.bos_eos_template(add_bos, add_eos, ids)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": spm_tokenizer.added_tokens(tokens, types, True),
        "normalizer": None,
        "pre_tokenizer": PRE_TOKENIZERS[pre],
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": ids,
            "merges": merges,
        },
    }


# --- the other way: an HF directory's tokenizer as GGUF metadata -------------------------



def _same_pre(a: dict, b: dict) -> bool:
    """Two pre-tokenizer specs that split alike (offset bookkeeping aside)."""
    def strip(spec):
        if isinstance(spec, dict):
            return {k: strip(v) for k, v in spec.items() if k not in ("trim_offsets",)}
        if isinstance(spec, list):
            return [strip(v) for v in spec]
        return spec
    return strip(a) == strip(b)


def pre_tokenizer_name(pre: dict | None) -> str:
    """llama.cpp's name for a ``tokenizer.json`` pre-tokenizer, or an error saying it is unknown."""
    for name in ("smollm", "llama-bpe", "qwen2", "gpt-2"):
        if pre is not None and _same_pre(pre, PRE_TOKENIZERS[name]):
            return name
    raise UnsupportedTokenizer(
        "the tokenizer's pre-tokenizer is not one localq knows how to name for llama.cpp",
        f"localq converts the {', '.join(sorted(PRE_TOKENIZERS))} pre-tokenizers",
    )


def _special_ids(hf_dir, token_ids: dict[str, int], config: dict) -> dict[str, int]:
    """bos/eos/unk/pad ids: tokenizer_config.json's tokens, else config.json's ids."""
    tok_config = _read_json(hf_dir / "tokenizer_config.json") or {}
    found = {}
    for key in ("bos", "eos", "unk", "pad"):
        value = tok_config.get(f"{key}_token")
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value in token_ids:
            found[key] = token_ids[value]
        elif isinstance(config.get(f"{key}_token_id"), int):
            found[key] = config[f"{key}_token_id"]
    return found


def _read_json(path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LocalqError(f"{path.name} is not valid JSON: {exc}", "download the model's tokenizer files again") from exc


def chat_templates(hf_dir) -> dict[str, str]:
    """The chat template(s): ``{"": default, NAME: other}`` from tokenizer_config.json or chat_template.jinja."""
    tok_config = _read_json(hf_dir / "tokenizer_config.json") or {}
    template = tok_config.get("chat_template")
    if isinstance(template, list):  # named templates
        return {("" if t["name"] == "default" else t["name"]): t["template"] for t in template}
    if isinstance(template, str):
        return {"": template}
    jinja = hf_dir / "chat_template.jinja"
    if jinja.is_file():
        return {"": jinja.read_text(encoding="utf-8")}
    return {}


def gguf_tokenizer(hf_dir, config: dict) -> dict:
    """GGUF tokenizer metadata (key -> value) from an HF directory's tokenizer files.

    BPE from ``tokenizer.json`` (with llama.cpp's name for its pre-tokenizer),
    else SentencePiece from ``tokenizer.model``. The vocabulary is padded to
    ``config["vocab_size"]`` with unused ``[PAD{i}]`` tokens, as the embedding
    matrix has that many rows.
    """
    tok_json = _read_json(hf_dir / "tokenizer.json")
    if tok_json is not None and tok_json.get("model", {}).get("type") == "BPE" and not tok_json["model"].get("byte_fallback"):
        meta = _bpe_metadata(tok_json, config)
    elif (hf_dir / "tokenizer.model").is_file():
        meta = _spm_metadata(hf_dir / "tokenizer.model", tok_json, config)
    elif tok_json is not None:
        raise UnsupportedTokenizer(
            f"cannot convert a {tok_json.get('model', {}).get('type')} tokenizer.json without tokenizer.model",
            "localq converts byte-level BPE tokenizer.json files and SentencePiece tokenizer.model files",
        )
    else:
        raise LocalqError(f"{hf_dir} has no tokenizer (tokenizer.json or tokenizer.model)",
                          "download the model's tokenizer files too")
    ids = {tok: i for i, tok in enumerate(meta["tokenizer.ggml.tokens"])}
    names = {"bos": "bos", "eos": "eos", "unk": "unknown", "pad": "padding"}
    for key, value in _special_ids(hf_dir, ids, config).items():
        meta[f"tokenizer.ggml.{names[key]}_token_id"] = value
    tok_config = _read_json(hf_dir / "tokenizer_config.json") or {}
    for key in ("add_bos_token", "add_eos_token"):
        if isinstance(tok_config.get(key), bool):
            meta[f"tokenizer.ggml.{key}"] = tok_config[key]
    for name, template in chat_templates(hf_dir).items():
        meta["tokenizer.chat_template" + (f".{name}" if name else "")] = template
    return meta


def _padded(tokens: list[str | None], types: list[int], size: int) -> tuple[list[str], list[int]]:
    while len(tokens) < size:
        tokens.append(None)
        types.append(UNUSED)
    for i, tok in enumerate(tokens):
        if tok is None:
            tokens[i], types[i] = f"[PAD{i}]", UNUSED
    return tokens, types


def _bpe_metadata(tok_json: dict, config: dict) -> dict:
    model = tok_json["model"]
    vocab: dict[str, int] = model["vocab"]
    added = {a["id"]: a for a in tok_json.get("added_tokens", [])}
    size = max([config.get("vocab_size") or 0, len(vocab), *(i + 1 for i in added)])
    tokens: list[str | None] = [None] * size
    types = [NORMAL] * size
    for tok, i in vocab.items():
        tokens[i] = tok
    for i, a in added.items():
        tokens[i] = a["content"]
        types[i] = CONTROL if a.get("special") else USER_DEFINED
    tokens, types = _padded(tokens, types, size)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre_tokenizer_name(tok_json.get("pre_tokenizer")),
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
    }


def _spm_metadata(path, tok_json: dict | None, config: dict) -> dict:
    pieces = read_sentencepiece_model(path.read_bytes())
    size = max(config.get("vocab_size") or 0, len(pieces))
    tokens: list[str | None] = [p[0] for p in pieces] + [None] * (size - len(pieces))
    scores = [p[1] for p in pieces] + [-1000.0] * (size - len(pieces))
    # sentencepiece's piece types: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte
    types = [p[2] for p in pieces] + [UNUSED] * (size - len(pieces))
    for a in (tok_json or {}).get("added_tokens", []):
        if a["id"] >= len(pieces):
            tokens[a["id"]] = a["content"]
            types[a["id"]] = CONTROL if a.get("special") else USER_DEFINED
    tokens, types = _padded(tokens, types, size)
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
    }
