"""Known models: their architecture numbers and where their files live.

The catalog is ``localq/assets/catalog.json`` (shipped inside the package so it
works offline). Each entry is one model at one size, named as Ollama names
them: ``llama3.1:8b``, ``qwen2.5:7b``, ``smollm2:135m``. The numbers come from
each model's own ``config.json`` on the Hub; the repositories are the real ones
that hold its GGUF quants, its safetensors source and its MLX quants.

The recommender reads the architecture numbers (KV cache size, bytes per
token); ``pull`` reads the repositories.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class CatalogModel:
    name: str                 # family name as users type it: "llama3.1"
    size: str                 # size tag: "8b", "135m"
    title: str                # "Llama 3.1 8B Instruct"
    architecture: str         # GGUF general.architecture: "llama", "qwen2", "gemma2" ...
    parameters: int           # total parameter count
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    context_length: int       # the model's trained context (max_position_embeddings or documented)
    vocab_size: int
    tie_embeddings: bool
    license: str
    gguf_repo: str            # Hub repo with GGUF quants
    source_repo: str          # Hub repo with safetensors weights
    mlx_repos: dict[str, str] = field(default_factory=dict)  # {"mlx-4bit": "mlx-community/..."}
    default: bool = False     # the size a bare family name picks
    description: str = ""
    # The GGUF quants the gguf_repo holds, as its listing showed them; empty when not
    # recorded (then every candidate is assumed). Offline the recommender chooses among
    # these; online, the repository's own listing wins.
    gguf_quants: tuple[str, ...] = ()
    gated: bool = False       # source_repo needs a Hub token and an accepted licence
    # A multimodal model: ``parameters`` is the text decoder's (what decoding reads and
    # what the recommender sizes), ``vision_parameters`` the vision tower's, and
    # ``projector`` the file pattern of the vision projector images need beside the model.
    vision_parameters: int = 0
    projector: str = ""

    def __post_init__(self):
        object.__setattr__(self, "gguf_quants", tuple(self.gguf_quants))

    @property
    def ref(self) -> str:
        """The catalog reference, ``name:size``."""
        return f"{self.name}:{self.size}"


@lru_cache(maxsize=1)
def load_catalog() -> tuple[CatalogModel, ...]:
    """All catalog entries, in the file's order."""
    text = resources.files("localq").joinpath("assets/catalog.json").read_text("utf-8")
    return tuple(CatalogModel(**entry) for entry in json.loads(text)["models"])


def find(name: str, size: str | None = None) -> CatalogModel | None:
    """The entry for ``name`` at ``size``, or the family's default size when ``size`` is None."""
    name = name.lower()
    family = [m for m in load_catalog() if m.name == name]
    if not family:
        return None
    if size is None:
        return next((m for m in family if m.default), family[0])
    return next((m for m in family if m.size == size.lower()), None)


def search(text: str) -> list[CatalogModel]:
    """Entries whose name, title, architecture or description contain ``text`` (case-insensitive)."""
    needle = text.lower().strip()
    return [
        m
        for m in load_catalog()
        if needle in m.ref or needle in m.title.lower() or needle in m.architecture
        or needle in m.description.lower()
    ]


# Architectures whose attention width (heads * head_dim) differs from the hidden
# size because their config.json sets ``head_dim`` explicitly.
EXPLICIT_HEAD_DIM_ARCHITECTURES = frozenset({"gemma2", "gemma3", "qwen3"})


def implied_parameters(model: CatalogModel) -> int:
    """The parameter count of the text decoder that the architecture numbers imply.

    Counts what a llama-style decoder holds: the token embedding (and a separate
    output matrix when embeddings are untied); per layer the attention
    projections (q and o: ``hidden * heads * head_dim`` each; k and v:
    ``hidden * kv_heads * head_dim`` each), a gated MLP (gate, up, down:
    ``3 * hidden * intermediate``) and the RMSNorm weights; and the final norm.
    Per-architecture details that are big enough to notice: qwen2 has q/k/v
    biases; gemma2 and gemma3 have four norms per layer instead of two; qwen3
    and gemma3 add a norm of ``head_dim`` on queries and keys.

    The recommender reuses this to estimate weight bytes when only the
    architecture numbers are known. Vision towers (gemma3:4b's ``vision_parameters``)
    are not counted.
    """
    hidden = model.hidden_size
    q_width = model.heads * model.head_dim
    kv_width = model.kv_heads * model.head_dim

    embeddings = model.vocab_size * hidden * (1 if model.tie_embeddings else 2)
    attention = 2 * hidden * q_width + 2 * hidden * kv_width
    if model.architecture == "qwen2":
        attention += q_width + 2 * kv_width  # q, k and v biases
    mlp = 3 * hidden * model.intermediate_size
    norms = (4 if model.architecture in ("gemma2", "gemma3") else 2) * hidden
    if model.architecture in ("qwen3", "gemma3"):
        norms += 2 * model.head_dim  # q_norm and k_norm
    return embeddings + model.layers * (attention + mlp + norms) + hidden


def format_parameters(count: int) -> str:
    """A parameter count as people write it: ``8.0B``, ``1.5B``, ``135M``."""
    if count >= 999_500_000:  # so 999.9M reads 1.0B, not 1000M
        return f"{count / 1e9:.1f}B"
    if count >= 1_000_000:
        return f"{round(count / 1e6)}M"
    return f"{count / 1e3:.0f}K"


def format_context(tokens: int) -> str:
    """A context length as people write it: ``128K``, ``40K``, ``2K``; odd sizes stay exact."""
    if tokens % 1024 == 0:
        return f"{tokens // 1024}K"
    return str(tokens)
