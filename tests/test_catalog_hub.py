"""The catalog against the Hub's real layouts, on the loopback Hub (tests/hub_server.py).

Qwen2.5's official GGUF repositories name their files in lower case and split the
larger quants (``qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf``; three parts for
7B's Q8_0). The test repository has that layout, with the sizes the Hub lists for
the real files claimed by the server, so fit is judged on real numbers.
"""

from __future__ import annotations

import pytest
from recorded_machines import laptop_8gb

from localq import hub
from localq.catalog import find
from localq.recommend import recommend_pull

QWEN_REPO = "Qwen/Qwen2.5-7B-Instruct-GGUF"
GB = 10**9
# the parts and, in bytes, about what the Hub lists for them
QWEN_FILES = {
    "qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf": int(3.99 * GB),
    "qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf": int(0.69 * GB),
    "qwen2.5-7b-instruct-q8_0-00001-of-00003.gguf": int(3.95 * GB),
    "qwen2.5-7b-instruct-q8_0-00002-of-00003.gguf": int(3.96 * GB),
    "qwen2.5-7b-instruct-q8_0-00003-of-00003.gguf": int(0.19 * GB),
    "qwen2.5-7b-instruct-q2_k.gguf": int(3.02 * GB),
}


@pytest.fixture
def qwen_hub(fake_hub):
    fake_hub.add_repo(QWEN_REPO, {path: f"part {path}".encode() for path in QWEN_FILES})
    for path, size in QWEN_FILES.items():
        fake_hub.fault("size", path, times=None, size=size)
    yield fake_hub
    fake_hub.repos.pop(QWEN_REPO, None)


def test_the_catalog_points_at_the_official_repository():
    assert find("qwen2.5", "7b").gguf_repo == QWEN_REPO


@pytest.mark.parametrize("ref", ["qwen2.5:7b-q4_k_m", "qwen2.5:7b-Q4_K_M", f"hf.co/{QWEN_REPO}:Q4_K_M"])
def test_lowercase_split_quants_resolve_to_every_part(qwen_hub, ref):
    plan = hub.resolve(ref)
    parts = [p for p in QWEN_FILES if "q4_k_m" in p]
    assert [f.path for f in plan.files] == parts
    assert plan.size == sum(QWEN_FILES[p] for p in parts)


def test_a_three_part_quant_counts_all_three_and_does_not_fit_8gb(qwen_hub):
    plan = hub.resolve("qwen2.5:7b-q8_0")
    assert len(plan.files) == 3
    q8_total = sum(v for p, v in QWEN_FILES.items() if "q8_0" in p)
    assert plan.size == q8_total
    assert plan.available["q8_0"] == q8_total
    assert plan.available["q4_k_m"] == sum(v for p, v in QWEN_FILES.items() if "q4_k_m" in p)
    # fit is judged on every part: 8.1 GB does not fit the 8 GB laptop, its first part alone would
    rec = recommend_pull(laptop_8gb(), "qwen2.5:7b", plan.available)
    q8 = next(p for p in rec.plans if p.quant == "q8_0")
    assert q8.weights_bytes == q8_total and not q8.fits
    assert rec.choice is not None and rec.choice.quant == "q4_k_m"
    assert rec.choice.weights_bytes == sum(v for p, v in QWEN_FILES.items() if "q4_k_m" in p)


def test_gemma3_4b_is_sized_as_its_text_model_and_names_its_projector():
    from localq.catalog import implied_parameters
    from localq.recommend import ModelSpec

    gemma = find("gemma3", "4b")
    spec = ModelSpec.from_catalog(gemma)
    assert spec.parameters == gemma.parameters == implied_parameters(gemma)   # about 3.88 B
    assert 3.8e9 < spec.parameters < 3.9e9
    assert gemma.parameters + gemma.vision_parameters == 4_300_079_472       # the published 4.3 B
    assert gemma.projector == "mmproj-*.gguf" and "mmproj-*.gguf" in gemma.description
    assert not find("gemma3", "1b").projector   # text-only


# --- gated repositories ------------------------------------------------------------

GATED_REPO = "test-org/gated-SmolLM2-tiny-GGUF"
ACCEPTED_TOKEN = "hf_accepted_licence_token"


@pytest.fixture
def gated_hub(fake_hub, hub_files, tmp_home):
    fake_hub.add_repo(GATED_REPO, {"SmolLM2-tiny-Q4_1.gguf": hub_files["tiny"]}, token=ACCEPTED_TOKEN, gated=True)
    yield fake_hub
    fake_hub.repos.pop(GATED_REPO, None)


def _stored() -> tuple[list, list]:
    """The index's variants and the files under blobs/ (partial downloads included)."""
    from localq.paths import get_paths
    from localq.store.db import open_index

    db = open_index()
    try:
        variants = db.execute("SELECT model_id, quant FROM variants ORDER BY id").fetchall()
    finally:
        db.conn.close()
    blobs_dir = get_paths().blobs
    return variants, sorted(p.name for p in blobs_dir.rglob("*") if p.is_file()) if blobs_dir.exists() else []


def _nothing_stored(before) -> bool:
    return _stored() == before


def test_a_gated_pull_with_no_token_says_so_before_downloading(gated_hub):
    from click.testing import CliRunner

    from localq.cli import cli
    from localq.cli.common import open_db

    open_db().conn.close()   # the starter model, indexed by any command
    before = _stored()
    result = CliRunner().invoke(cli, ["pull", f"hf.co/{GATED_REPO}:Q4_1"])
    print(result.output)
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {GATED_REPO} is gated: pulling it needs a Hugging Face token")
    assert "accepted its licence" in result.output and "HF_TOKEN=hf_" in result.output
    assert f"{gated_hub.endpoint}/{GATED_REPO}" in result.output
    assert gated_hub.transfers() == []          # not one byte asked for
    assert not [r for r in gated_hub.requests if "/resolve/" in r[1]]
    assert _nothing_stored(before)


def test_the_login_command_is_named_only_when_installed():
    from importlib.metadata import entry_points

    from localq.hub import how_to_give_a_token

    installed = any(e.name == "hf" for e in entry_points(group="console_scripts"))
    assert ("`hf auth login`" in how_to_give_a_token()) == installed
    assert how_to_give_a_token().startswith("set HF_TOKEN=hf_...")


def test_a_gated_pull_whose_token_lacks_the_licence_is_refused(gated_hub, monkeypatch):
    from click.testing import CliRunner

    from localq.cli import cli

    monkeypatch.setenv("HF_TOKEN", "hf_someone_who_did_not_accept")
    from localq.cli.common import open_db

    open_db().conn.close()   # the starter model, indexed by any command
    before = _stored()
    result = CliRunner().invoke(cli, ["pull", f"hf.co/{GATED_REPO}:Q4_1"])
    print(result.output)
    assert result.exit_code == 1
    # the token cannot be judged before asking: the Hub's 403 on the first file is the answer
    assert result.output.splitlines()[-1].startswith(f"error: the Hub refused access to {GATED_REPO} (403)")
    assert "accept its terms" in result.output
    assert _nothing_stored(before)


def test_a_gated_pull_with_an_accepted_token_downloads(gated_hub, monkeypatch):
    from click.testing import CliRunner

    from localq.cli import cli

    monkeypatch.setenv("HF_TOKEN", ACCEPTED_TOKEN)
    from localq.cli.common import open_db

    open_db().conn.close()   # the starter model, indexed by any command
    before = _stored()
    result = CliRunner().invoke(cli, ["pull", f"hf.co/{GATED_REPO}:Q4_1"])
    assert result.exit_code == 0, result.output
    assert not _nothing_stored(before)


def test_the_catalogs_gated_sources_are_checked_before_downloading(fake_hub, tmp_home):
    # meta-llama's source repository is gated in the catalog: checked even if a listing does not say so
    from localq.errors import HubError

    entry = find("llama3.2", "1b")
    assert entry.gated
    fake_hub.add_repo(entry.source_repo, {"config.json": b'{"architectures": ["LlamaForCausalLM"]}',
                                          "model.safetensors": b"x" * 64})
    try:
        with pytest.raises(HubError) as caught:
            hub.resolve(f"hf.co/{entry.source_repo}")
        assert caught.value.message.startswith(f"{entry.source_repo} is gated")
        assert fake_hub.transfers() == []
    finally:
        fake_hub.repos.pop(entry.source_repo, None)
