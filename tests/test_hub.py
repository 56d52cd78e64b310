"""Hub resolution against the loopback Hub, through the real huggingface_hub client."""

from __future__ import annotations

import pytest
from hub_server import GGUF_REPO, MLX_REPOS, PRIVATE_REPO, PRIVATE_TOKEN, SOURCE_REPO, TINY_REPO

from localq import hub
from localq.catalog import find
from localq.errors import HubError, InvalidReference, ModelNotFound

SPLIT = [f"SmolLM2-135M-Instruct-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]


def remote(path: str, size: int = 1) -> hub.RemoteFile:
    return hub.RemoteFile(path, size, "0" * 64, None, f"http://hub/{path}")


# --- file names --------------------------------------------------------------


@pytest.mark.parametrize("name, quant", [
    ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "q4_k_m"),
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "q4_1"),
    ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", "q4_k_m"),
    ("Q4_K_M/Meta-Llama-3.1-70B-Instruct-Q4_K_M-00001-of-00002.gguf", "q4_k_m"),
    ("gemma-2-2b-it-IQ4_XS.gguf", "iq4_xs"),
    ("Qwen3-8B-UD-Q4_K_XL.gguf", "q4_k_xl"),
    ("model-BF16.gguf", "bf16"),
    ("tinyllama-1.1b-chat-v1.0.Q8_0.gguf", "q8_0"),
    ("ggml-model.gguf", None),
])
def test_quant_in_name(name, quant):
    assert hub.quant_in_name(name) == quant


def test_split_parts_are_one_set_and_sidecars_are_left_out():
    files = [remote(p) for p in [*SPLIT, "mmproj-model-Q8_0.gguf", "model-Q8_0.imatrix.gguf", "model-Q8_0.gguf", "README.md"]]
    sets = hub.gguf_sets(files)
    assert [(s.quant, [f.path for f in s.files]) for s in sets] == [
        ("q8_0", ["model-Q8_0.gguf"]),
        ("q4_k_m", SPLIT),
    ]


def test_an_incomplete_split_set_is_not_offered():
    sets = hub.gguf_sets([remote(SPLIT[0]), remote(SPLIT[2])])
    assert sets == []


# --- resolve: GGUF repositories ----------------------------------------------


def test_named_quant_is_matched_case_insensitively(fake_hub):
    plan = hub.resolve(f"hf.co/{GGUF_REPO}:Q8_0")
    served = fake_hub.file(GGUF_REPO, "SmolLM2-135M-Instruct-Q8_0.gguf")
    assert [f.path for f in plan.files] == [served.path]
    only = plan.files[0]
    assert (only.size, only.sha256) == (served.size, served.sha256)
    assert only.url.startswith(fake_hub.endpoint + f"/{GGUF_REPO}/resolve/{plan.revision}/")
    assert plan.revision == fake_hub.repos[GGUF_REPO].commit
    assert (plan.model, plan.quant, plan.format, plan.source_kind) == (f"hf.co/{GGUF_REPO}", "q8_0", "gguf", "hf")


def test_split_set_resolves_to_all_its_parts(fake_hub):
    plan = hub.resolve(f"hf.co/{GGUF_REPO}:q4_k_m")
    assert [f.path for f in plan.files] == SPLIT
    assert plan.size == sum(fake_hub.file(GGUF_REPO, p).size for p in SPLIT)


def test_sidecars_named_like_a_quant_are_never_the_model(fake_hub):
    # The repository's mmproj file says Q8_0 and its imatrix file says Q4_1.
    assert [f.path for f in hub.resolve(f"hf.co/{GGUF_REPO}:q8_0").files] == ["SmolLM2-135M-Instruct-Q8_0.gguf"]
    assert [f.path for f in hub.resolve(f"hf.co/{GGUF_REPO}:q4_1").files] == ["SmolLM2-135M-Instruct-Q4_1.gguf"]


def test_unknown_quant_lists_the_quants_the_repository_has(fake_hub):
    with pytest.raises(HubError) as caught:
        hub.resolve(f"hf.co/{GGUF_REPO}:q6_k")
    assert caught.value.message == f"{GGUF_REPO} has no Q6_K file; it has: q4_1, q4_k_m, q8_0"
    assert f"hf.co/{GGUF_REPO}:Q4_K_M" in caught.value.hint


def test_catalog_name_and_tag_resolve_to_the_catalog_repository(fake_hub):
    entry = find("smollm2", "135m")
    plan = hub.resolve("smollm2:135m-q8_0")
    assert plan.repo_id == entry.gguf_repo
    assert (plan.model, plan.catalog_ref, plan.source_kind, plan.quant) == ("smollm2:135m", "smollm2:135m", "catalog", "q8_0")
    assert [f.path for f in plan.files] == ["SmolLM2-135M-Instruct-Q8_0.gguf"]
    with pytest.raises(HubError, match="has no Q6_K file") as caught:
        hub.resolve("smollm2:135m-q6_k")
    assert "e.g. smollm2:135m-q4_k_m" in caught.value.hint


def test_no_quant_takes_the_recommenders_choice_for_a_catalog_model(fake_hub):
    from localq.download.orchestrate import recommended_quant

    plan = hub.resolve("smollm2:135m", choose_quant=recommended_quant)  # what `localq pull` passes
    # A 135M model fits any machine the suite runs on and decodes far beyond a reader's
    # speed, so the balanced choice is the offered quant that loses least: Q8_0, not the
    # Q4_K_M a repository outside the catalog would get.
    assert (plan.quant, plan.choice) == ("q8_0", "recommended")
    assert plan.available == {q: plan.available[q] for q in ("q4_1", "q4_k_m", "q8_0")}
    assert "localq recommend smollm2:135m" in plan.reason
    # Resolution alone has no policy: without a chooser the Hub's fallback decides.
    assert hub.resolve("smollm2:135m").choice == "default"


def test_no_quant_for_a_repository_the_catalog_does_not_know_takes_q4_k_m(fake_hub):
    plan = hub.resolve(f"hf.co/{GGUF_REPO}")
    assert (plan.quant, plan.choice) == ("q4_k_m", "default")
    assert [f.path for f in plan.files] == SPLIT


def test_a_caller_may_choose_the_quant(fake_hub):
    seen = {}

    def choose(model, quants):
        seen.update(quants)
        return "q4_1"

    plan = hub.resolve(f"hf.co/{GGUF_REPO}", choose_quant=choose)
    assert plan.quant == "q4_1" and plan.choice == "chosen"
    assert sorted(seen) == ["q4_1", "q4_k_m", "q8_0"]


def test_fallback_order_prefers_q4_k_m_then_nearby_quants():
    assert hub.fallback_quant({"q8_0": 8, "q4_k_m": 4, "q2_k": 2}) == "q4_k_m"
    assert hub.fallback_quant({"q8_0": 8, "q5_k_m": 5}) == "q5_k_m"
    assert hub.fallback_quant({"odd_b": 9, "odd_a": 3}) == "odd_a"


# --- resolve: safetensors repositories ----------------------------------------


def test_safetensors_repository_takes_config_tokenizer_weights_and_index(fake_hub):
    plan = hub.resolve(f"hf.co/{SOURCE_REPO}")
    assert [f.path for f in plan.files] == [
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
    ]
    assert (plan.format, plan.quant, plan.architecture) == ("safetensors", "bf16", "llama")
    config = plan.files[0]
    assert config.sha256 is None and config.git_oid == fake_hub.file(SOURCE_REPO, "config.json").git_oid


def test_an_mlx_repository_resolves_as_mlx(fake_hub):
    # a repository the test Hub serves: the catalog names no SmolLM2 MLX repository,
    # since none could be confirmed to exist and load in mlx-lm
    repo = MLX_REPOS["mlx-4bit"]
    plan = hub.resolve(f"hf.co/{repo}")
    assert (plan.repo_id, plan.format, plan.quant) == (repo, "mlx", "mlx-4bit")
    assert [f.path for f in plan.files] == ["config.json", "tokenizer.json", "model.safetensors"]
    assert find("smollm2", "135m").mlx_repos == {}


def test_a_named_quant_must_match_the_safetensors_weights(fake_hub):
    with pytest.raises(HubError) as caught:
        hub.resolve(f"hf.co/{SOURCE_REPO}:mlx-4bit")
    assert caught.value.message == f"{SOURCE_REPO} holds bf16 weights, not mlx-4bit"


# --- resolve: mistakes and refusals ------------------------------------------


@pytest.mark.parametrize("text, error, message", [
    ("nosuchmodel", ModelNotFound, "no model named 'nosuchmodel' in the catalog"),
    ("smollm2:99b", ModelNotFound, "smollm2 has no size 99b"),
    ("smollm2:135m-foo-q8_0", InvalidReference, "unknown tag '135m-foo-q8_0' for smollm2: 'foo' is not a size or a quant"),
    ("smollm2:135m-int4-g128", InvalidReference, "int4-g128 variants are not on the Hub: they are made locally from the source weights"),
    ("smollm2:135m-mlx-4bit", ModelNotFound, "no mlx-4bit repository known for smollm2:135m (MLX quants: none)"),
    ("./model.gguf", InvalidReference, "'./model.gguf' is a file, not a model to pull"),
])
def test_references_that_cannot_be_pulled(fake_hub, text, error, message):
    with pytest.raises(error) as caught:
        hub.resolve(text)
    assert caught.value.message == message


def test_missing_repository_is_a_clear_404(fake_hub):
    with pytest.raises(HubError) as caught:
        hub.resolve("hf.co/test-org/no-such-repo")
    assert caught.value.message == f"no repository test-org/no-such-repo on {fake_hub.endpoint}"


def test_private_repository_names_the_repo_and_how_to_log_in(fake_hub):
    with pytest.raises(HubError) as caught:
        hub.resolve(f"hf.co/{PRIVATE_REPO}")
    assert caught.value.message.startswith(f"the Hub refused access to {PRIVATE_REPO} (401)")
    assert "hf auth login" in caught.value.hint and "HF_TOKEN" in caught.value.hint


def test_hf_token_opens_the_private_repository(fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", PRIVATE_TOKEN)
    plan = hub.resolve(f"hf.co/{PRIVATE_REPO}")
    assert plan.quant == "q4_1"
    assert fake_hub.requests[-1][2].get("authorization") == f"Bearer {PRIVATE_TOKEN}"


def test_revision_pins_a_commit_and_an_unknown_one_is_named(fake_hub):
    commit = fake_hub.repos[TINY_REPO].commit
    assert hub.resolve(f"hf.co/{TINY_REPO}", revision=commit).revision == commit
    with pytest.raises(HubError) as caught:
        hub.resolve(f"hf.co/{TINY_REPO}", revision="v9")
    assert caught.value.message == f"revision 'v9' not found in {TINY_REPO}"


def test_metadata_request_is_retried_after_a_500(fake_hub, monkeypatch):
    monkeypatch.setattr(hub, "API_BACKOFF_S", 0.01)
    fake_hub.fault("status", "api", times=2, status=500)
    plan = hub.resolve(f"hf.co/{TINY_REPO}")
    assert plan.quant == "q4_1"
    assert sum(1 for method, path, _ in fake_hub.requests if path.startswith("/api/models/")) == 3


def test_persistent_500_gives_up_with_the_status(fake_hub, monkeypatch):
    monkeypatch.setattr(hub, "API_BACKOFF_S", 0.01)
    fake_hub.fault("status", "api", times=None, status=503)
    with pytest.raises(HubError) as caught:
        hub.resolve(f"hf.co/{TINY_REPO}")
    assert caught.value.message == f"the Hub answered 503 for {TINY_REPO}"


def test_hf_endpoint_is_read_when_resolving(fake_hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(hub, "API_BACKOFF_S", 0.01)
    with pytest.raises(HubError) as caught:
        hub.resolve(f"hf.co/{TINY_REPO}")
    assert caught.value.message.startswith("cannot reach http://127.0.0.1:9")
