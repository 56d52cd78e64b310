"""Model references: parse, validate and format what users type.

A reference is one of:

- a catalog name, optionally with a tag, as Ollama writes them:
  ``llama3.2``, ``llama3.2:3b``, ``qwen2.5:7b-instruct-q4_k_m``, ``smollm2:135m-q8_0``.
  Names and tags are case-insensitive and kept in lower case. A tag is words
  joined by ``-``; a size word (``7b``, ``135m``) and a quantization at the end
  (``q4_k_m``, ``mlx-4bit``, ``int4-g128``) are recognised in it.
- a Hugging Face repository: ``hf.co/ORG/REPO[:QUANT]`` or ``ORG/REPO[:QUANT]``
  (``huggingface.co/`` is read as ``hf.co/``). Repository names keep their case,
  as the Hub's do; the quant is case-insensitive.
- a path to a file: anything that starts with ``/``, ``./``, ``../`` or ``~``,
  or ends in ``.gguf``.

A part that a separator promised but that is empty is an error
(``hf.co/org/:q4`` -> "empty repository name"), never a silent default. No
reference names a place on disk: the store files models by content digest
(``localq.store.blobs``), never by what the user typed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from localq.errors import InvalidReference

# GGUF file types as llama.cpp's quantize names them, plus the other formats localq makes.
GGUF_QUANTS = (
    "q2_k", "q2_k_s", "q3_k_s", "q3_k_m", "q3_k_l", "q4_0", "q4_1", "q4_k_s", "q4_k_m",
    "q5_0", "q5_1", "q5_k_s", "q5_k_m", "q6_k", "q8_0",
    "iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "iq3_xs",
    "iq3_s", "iq3_m", "iq4_nl", "iq4_xs", "tq1_0", "tq2_0", "mxfp4",
    "f16", "bf16", "f32",
)
MLX_QUANTS = ("mlx-3bit", "mlx-4bit", "mlx-6bit", "mlx-8bit", "mlx-bf16")
INT4_QUANTS = ("int4-g32", "int4-g64", "int4-g128")
KNOWN_QUANTS = GGUF_QUANTS + MLX_QUANTS + INT4_QUANTS

HF_HOST = "hf.co"
_HF_HOST_ALIASES = ("hf.co/", "huggingface.co/", "https://hf.co/", "https://huggingface.co/")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_HF_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_HF_QUANT_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SIZE_RE = re.compile(r"^\d+(\.\d+)?[bm]$")


def quant_format(quant: str) -> str:
    """The file format a quant tag belongs to: ``gguf``, ``mlx`` or ``int4``."""
    if quant.startswith("mlx-"):
        return "mlx"
    if quant.startswith("int4-"):
        return "int4"
    return "gguf"


def normalize_quant(text: str) -> str:
    """A quant tag in canonical (lower) case; raises InvalidReference if unknown."""
    quant = text.strip().lower()
    if quant not in KNOWN_QUANTS:
        raise InvalidReference(
            f"unknown quantization {text!r}",
            "use a GGUF type such as q4_k_m or q8_0, mlx-4bit/mlx-8bit, or int4-g32/g64/g128",
        )
    return quant


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference. Build it with :func:`parse`."""

    kind: str                     # "catalog", "hf" or "path"
    name: str = ""                # catalog name: "llama3.2"
    tag: str | None = None        # catalog tag: "7b-instruct-q4_k_m"
    org: str = ""                 # hf organisation
    repo: str = ""                # hf repository
    hf_quant: str | None = None   # hf quant: "q4_k_m" (any word the repo's files may carry)
    hf_prefix: bool = False       # written with "hf.co/"
    path: str = ""                # file path, as given

    # --- derived parts -----------------------------------------------------

    @property
    def quant(self) -> str | None:
        """The quantization the reference asks for, if it names one."""
        if self.kind == "hf":
            return self.hf_quant
        if self.kind == "catalog" and self.tag:
            for quant in sorted(KNOWN_QUANTS, key=len, reverse=True):
                if self.tag == quant or self.tag.endswith("-" + quant):
                    return quant
        return None

    @property
    def size(self) -> str | None:
        """The size word in a catalog tag (``7b``, ``135m``), if any."""
        if self.kind == "catalog" and self.tag:
            for word in self.tag.split("-"):
                if _SIZE_RE.match(word):
                    return word
        return None

    @property
    def model(self) -> str:
        """The model without its quant: ``qwen2.5:7b`` or ``hf.co/ORG/REPO``."""
        if self.kind == "catalog":
            return f"{self.name}:{self.size}" if self.size else self.name
        if self.kind == "hf":
            return f"{HF_HOST}/{self.org}/{self.repo}"
        return self.path

    @property
    def repo_id(self) -> str:
        """``ORG/REPO`` for Hub references."""
        return f"{self.org}/{self.repo}" if self.kind == "hf" else ""

    def format(self) -> str:
        """The canonical text of the reference; ``parse(ref.format()) == ref``."""
        if self.kind == "catalog":
            return f"{self.name}:{self.tag}" if self.tag is not None else self.name
        if self.kind == "hf":
            text = (f"{HF_HOST}/" if self.hf_prefix else "") + f"{self.org}/{self.repo}"
            return f"{text}:{self.hf_quant}" if self.hf_quant is not None else text
        return self.path

    def __str__(self) -> str:
        return self.format()


def looks_like_path(text: str) -> bool:
    """True for text that names a file rather than a model."""
    return (
        text.startswith(("/", "./", "../", "~"))
        or text in (".", "..")
        or text.lower().endswith(".gguf")
    )


def parse(text: str) -> ModelRef:
    """Parse a model reference, or raise InvalidReference naming the bad part."""
    if not isinstance(text, str):
        raise InvalidReference(f"a model reference must be text, not {type(text).__name__}")
    if "\x00" in text:
        raise InvalidReference("model reference contains a NUL character", "retype the name")
    text = text.strip()
    if not text:
        raise InvalidReference("empty model reference", "name a model, e.g. smollm2:135m")
    if any(ch.isspace() for ch in text):
        raise InvalidReference(f"model reference {text!r} contains whitespace")
    if looks_like_path(text):
        return ModelRef(kind="path", path=text)

    lowered = text.lower()
    for prefix in _HF_HOST_ALIASES:
        if lowered.startswith(prefix):
            return _parse_hf(text[len(prefix):], hf_prefix=True, original=text)
    if "/" in text:
        return _parse_hf(text, hf_prefix=False, original=text)
    return _parse_catalog(text)


def _parse_catalog(text: str) -> ModelRef:
    name, sep, tag = text.partition(":")
    if not name:
        raise InvalidReference(f"empty model name in {text!r}", "write NAME or NAME:TAG, e.g. llama3.2:3b")
    if sep and not tag:
        raise InvalidReference(f"empty tag after ':' in {text!r}", "write NAME:TAG or just NAME")
    if ":" in tag:
        raise InvalidReference(f"more than one ':' in {text!r}", "write NAME:TAG, e.g. qwen2.5:7b-q4_k_m")
    name, tag = name.lower(), tag.lower() if sep else None
    if not _NAME_RE.match(name) or ".." in name:
        raise InvalidReference(
            f"invalid model name {name!r}",
            "use letters, digits, '.', '_' and '-' (at most 64), starting with a letter or digit",
        )
    if tag is not None and (not _TAG_RE.match(tag) or ".." in tag):
        raise InvalidReference(
            f"invalid tag {tag!r}",
            "use letters, digits, '.', '_' and '-' (at most 128), starting with a letter or digit",
        )
    return ModelRef(kind="catalog", name=name, tag=tag)


def _parse_hf(rest: str, *, hf_prefix: bool, original: str) -> ModelRef:
    repo_part, sep, quant = rest.partition(":")
    parts = repo_part.split("/")
    if len(parts) != 2:
        raise InvalidReference(
            f"{original!r} is not ORG/REPO", "write hf.co/ORG/REPO[:QUANT], e.g. hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:q4_k_m"
        )
    org, repo = parts
    if not org:
        raise InvalidReference(f"empty organisation name in {original!r}", "write hf.co/ORG/REPO[:QUANT]")
    if not repo:
        raise InvalidReference(f"empty repository name in {original!r}", "write hf.co/ORG/REPO[:QUANT]")
    for label, part in (("organisation", org), ("repository", repo)):
        if not _HF_PART_RE.match(part) or ".." in part or part.endswith("."):
            raise InvalidReference(
                f"invalid {label} name {part!r} in {original!r}",
                "Hub names use letters, digits, '.', '_' and '-' (at most 96)",
            )
    if sep and not quant:
        raise InvalidReference(f"empty quantization after ':' in {original!r}", "write :Q4_K_M or leave the ':' out")
    quant = quant.lower() if sep else None
    if quant is not None and (not _HF_QUANT_RE.match(quant) or ".." in quant):
        raise InvalidReference(f"invalid quantization {quant!r} in {original!r}", "write a quant such as Q4_K_M")
    return ModelRef(kind="hf", org=org, repo=repo, hf_quant=quant, hf_prefix=hf_prefix)


def expand_path(ref: ModelRef) -> Path:
    """The file a path reference names, with ``~`` expanded."""
    return Path(ref.path).expanduser()
