"""Hub answers not trusted: hostile listings, lying file names, tokens and credentials kept in place."""

from __future__ import annotations

import bad_gguf
import pytest
from click.testing import CliRunner
from hub_server import GGUF_REPO, HOSTILE_SIBLINGS, PRIVATE_REPO, PRIVATE_TOKEN, HubFile

from localq import hub
from localq.cli import cli
from localq.download import pull
from localq.errors import HubError
from localq.paths import get_paths
from localq.store.db import open_index
from localq.store.index import list_variants


@pytest.fixture
def db(tmp_home):
    connection = open_index()
    yield connection
    connection.close()


def refusal(ref: str) -> HubError:
    with pytest.raises(HubError) as caught:
        hub.resolve(ref)
    print(caught.value.one_line())
    return caught.value


def test_hostile_names_are_refused_naming_repo_and_file(fake_hub, db):
    fake_hub.list_hostile(GGUF_REPO)
    error = refusal(f"hf.co/{GGUF_REPO}:Q5_K_M")
    assert error.message.startswith(f"{GGUF_REPO} lists ") and "refused" in error.message
    assert "\n" not in error.one_line() and "\x00" not in error.one_line()
    for quant, why in (("IQ4_XS", "not 64 hex digits"), ("IQ3_M", "not a whole number"), ("Q2_K", "absurd")):
        assert why in refusal(f"hf.co/{GGUF_REPO}:{quant}").message
    # The good files of the same listing still resolve, and nothing hostile is offered.
    plan = hub.resolve(f"hf.co/{GGUF_REPO}:q4_1")
    assert [f.path for f in plan.files] == ["SmolLM2-135M-Instruct-Q4_1.gguf"]
    assert "q5_k_m" not in plan.available


def test_every_hostile_entry_is_left_out_of_the_listing():
    for entry in HOSTILE_SIBLINGS:
        lfs = entry["lfs"]
        assert hub.listing_problem(entry["rfilename"], lfs["size"], lfs["sha256"], True), entry["rfilename"]
    assert hub.listing_problem("sub/dir/model-Q4_K_M.gguf", 10, "ab" * 32, True) is None


def test_a_hostile_pull_records_nothing(fake_hub, db):
    fake_hub.list_hostile(GGUF_REPO)
    result = CliRunner().invoke(cli, ["pull", f"hf.co/{GGUF_REPO}:Q5_K_M"])
    print(result.output)
    assert result.exit_code == 1 and result.output.startswith("error: ") and "Traceback" not in result.output
    assert db.execute("SELECT COUNT(*) FROM pulls").fetchone()[0] == 0
    assert not any("x-Q5_K_M" in f.relpath for v in list_variants(db) for f in v.files)
    assert fake_hub.bytes_sent() == 0


def test_a_file_named_q5_k_m_that_holds_something_else_is_labelled_by_what_it_holds(fake_hub, db, hub_files, tmp_path):
    liar = bad_gguf.patched(hub_files["tiny"], tmp_path / "liar.gguf", {"general.file_type": 1}, data="copy")
    repo = "test-org/liar-GGUF"
    fake_hub.add_repo(repo, {"Liar-Q5_K_M.gguf": HubFile.make("Liar-Q5_K_M.gguf", liar)})
    result = CliRunner().invoke(cli, ["pull", f"hf.co/{repo}:Q5_K_M"])
    print(result.output)
    assert result.exit_code == 0, result.output
    [variant] = [v for v in list_variants(db) if v.model == f"hf.co/{repo}"]
    assert variant.quant == "q4_1"            # F16 in the header over Q4_1 tensors: the tensors win
    warning = variant.provenance["quant_warning"]
    assert "Q5_K_M" in warning and "Q4_1" in warning and "warning: " in result.output


def test_q6_k_is_never_taken_from_a_q6_k_l_file(fake_hub, hub_files):
    repo = "test-org/bartowski-style-GGUF"
    fake_hub.add_repo(repo, {"Model-Q6_K_L.gguf": HubFile.make("Model-Q6_K_L.gguf", hub_files["tiny"])})
    error = refusal(f"hf.co/{repo}:Q6_K")
    assert error.message == f"{repo} has no Q6_K file; it has Q6_K_L, which is another quant"
    assert f"hf.co/{repo}:Q6_K_L" in error.hint
    assert hub.resolve(f"hf.co/{repo}:Q6_K_L").files[0].path == "Model-Q6_K_L.gguf"


def test_variant_names_of_a_quant_family_keep_their_name():
    from localq.quant_label import label

    class Info:
        file_type = "Q4_K_M"
        quant_mix = {"Q4_K": {"bytes": 100}, "Q8_0": {"bytes": 40}, "Q6_K": {"bytes": 20}}

    named = label(Info, "Model-Q4_K_L.gguf")
    assert named.quant == "q4_k_l" and "Q4_K_M" in named.warning
    assert label(Info, "Model-Q4_K_M.gguf").warning is None
    wrong = label(Info, "Model-Q8_0.gguf")
    assert wrong.quant == "q4_k_m" and "named Q8_0 but holds Q4_K_M" in wrong.warning


def test_the_cdn_never_gets_the_token_even_through_a_redirect(fake_hub, db, monkeypatch):
    """A mirror that answers HEAD itself and redirects only the GET: urllib would copy the header."""
    monkeypatch.setenv("HF_TOKEN", PRIVATE_TOKEN)
    fake_hub.head_without_redirect = True
    result = pull(f"hf.co/{PRIVATE_REPO}", db=db)
    assert result.status == "pulled"
    hub_requests = [h for _, path, h in fake_hub.requests if not path.startswith("/cdn/")]
    cdn_requests = [h for _, path, h in fake_hub.requests if path.startswith("/cdn/")]
    assert cdn_requests and hub_requests
    assert all(h.get("authorization") == f"Bearer {PRIVATE_TOKEN}" for h in hub_requests)
    assert not any("authorization" in h for h in cdn_requests)


def test_credentials_in_hf_endpoint_are_never_stored_or_printed(fake_hub, tmp_home, monkeypatch):
    from hub_server import TINY_REPO

    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint.replace("http://", "http://someone:s3cret-pw@"))
    result = CliRunner().invoke(cli, ["pull", f"hf.co/{TINY_REPO}"])
    print(result.output)
    assert "s3cret-pw" not in result.output
    index = get_paths().index_db
    stored = b"".join(p.read_bytes() for p in index.parent.glob(index.name + "*"))
    assert b"s3cret-pw" not in stored
    db = open_index()
    try:
        for variant in list_variants(db):
            assert "s3cret" not in str(variant.provenance) and "s3cret" not in (variant.source or "")
    finally:
        db.close()
    assert hub.public_address("https://u:p@host:8080/x") == "https://host:8080/x"
