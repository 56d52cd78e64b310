"""Model references: the grammar, its errors, and that no reference leaves the cache."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localq.errors import InvalidReference
from localq.names import KNOWN_QUANTS, normalize_quant, parse, quant_format


@pytest.mark.parametrize(
    "text, kind, model, quant, size",
    [
        ("llama3.2", "catalog", "llama3.2", None, None),
        ("llama3.2:3b", "catalog", "llama3.2:3b", None, "3b"),
        ("qwen2.5:7b-instruct-q4_k_m", "catalog", "qwen2.5:7b", "q4_k_m", "7b"),
        ("Qwen2.5:7B-Instruct-Q4_K_M", "catalog", "qwen2.5:7b", "q4_k_m", "7b"),
        ("smollm2:135m-q8_0", "catalog", "smollm2:135m", "q8_0", "135m"),
        ("smollm2:135m-mlx-4bit", "catalog", "smollm2:135m", "mlx-4bit", "135m"),
        ("llama3.1:8b-int4-g128", "catalog", "llama3.1:8b", "int4-g128", "8b"),
        ("phi4-mini:iq4_xs", "catalog", "phi4-mini", "iq4_xs", None),
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF", "hf", "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF", None, None),
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "hf", "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF", "q4_k_m", None),
        ("huggingface.co/Qwen/Qwen2.5-7B-Instruct-GGUF:q8_0", "hf", "hf.co/Qwen/Qwen2.5-7B-Instruct-GGUF", "q8_0", None),
        ("Qwen/Qwen2.5-0.5B-Instruct", "hf", "hf.co/Qwen/Qwen2.5-0.5B-Instruct", None, None),
        ("unsloth/Qwen3-4B-GGUF:UD-Q4_K_XL", "hf", "hf.co/unsloth/Qwen3-4B-GGUF", "ud-q4_k_xl", None),
        ("./models/x.gguf", "path", "./models/x.gguf", None, None),
        ("/abs/file.gguf", "path", "/abs/file.gguf", None, None),
        ("~/m/file.GGUF", "path", "~/m/file.GGUF", None, None),
        ("Model.Q4_1.gguf", "path", "Model.Q4_1.gguf", None, None),
    ],
)
def test_parse_valid(text, kind, model, quant, size):
    ref = parse(text)
    assert ref.kind == kind
    assert ref.model == model
    assert ref.quant == quant
    assert ref.size == size


def test_quant_tags_are_case_insensitive():
    assert parse("qwen2.5:7b-Q4_K_M") == parse("qwen2.5:7b-q4_k_m")
    assert parse("hf.co/a/b:Q8_0").quant == parse("hf.co/a/b:q8_0").quant == "q8_0"
    assert normalize_quant("MLX-4BIT") == "mlx-4bit"
    assert quant_format("mlx-8bit") == "mlx" and quant_format("int4-g64") == "int4" and quant_format("q4_k_m") == "gguf"


def test_hf_names_keep_their_case():
    assert parse("hf.co/Qwen/Qwen2.5-7B-Instruct-GGUF").repo_id == "Qwen/Qwen2.5-7B-Instruct-GGUF"


@pytest.mark.parametrize(
    "text, message",
    [
        ("hf.co/org/:q4", "empty repository name"),
        ("hf.co//repo", "empty organisation name"),
        ("hf.co/org/repo:", "empty quantization after ':'"),
        ("llama3.2:", "empty tag after ':'"),
        (":3b", "empty model name"),
        ("", "empty model reference"),
        ("   ", "empty model reference"),
        ("llama 3", "contains whitespace"),
        ("a:b:c", "more than one ':'"),
        ("hf.co/a/b/c", "is not ORG/REPO"),
        ("org/re..po", "invalid repository name"),
        ("-llama", "invalid model name"),
        ("llama:-3b", "invalid tag"),
        ("x" * 65, "invalid model name"),
        ("llama\x00", "NUL character"),
        ("lla$ma", "invalid model name"),
    ],
)
def test_parse_invalid_names_the_bad_part(text, message):
    with pytest.raises(InvalidReference) as err:
        parse(text)
    assert message in err.value.message
    assert err.value.hint or "NUL" in message or "whitespace" in message


def test_unknown_quant_lists_what_is_known():
    with pytest.raises(InvalidReference) as err:
        normalize_quant("q9_z")
    assert "unknown quantization 'q9_z'" in err.value.message
    assert "q4_k_m" in err.value.hint


# --- properties ---------------------------------------------------------------

_word = st.from_regex(r"[a-z0-9][a-z0-9_]{0,8}", fullmatch=True)
_names = st.builds(lambda a, b: a + ("." + b if b else ""), _word, st.one_of(st.none(), _word))
_tags = st.one_of(
    st.none(),
    st.builds(lambda s, q: "-".join(x for x in (s, q) if x), st.sampled_from(["", "7b", "135m", "0.5b", "instruct"]),
              st.sampled_from([""] + list(KNOWN_QUANTS))).filter(bool),
)
_hf_part = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,12}", fullmatch=True)
_catalog_refs = st.builds(lambda n, t: n if t is None else f"{n}:{t}", _names, _tags)
_hf_refs = st.builds(
    lambda prefix, org, repo, q: f"{prefix}{org}/{repo}" + (f":{q}" if q else ""),
    st.sampled_from(["", "hf.co/"]), _hf_part, _hf_part, st.one_of(st.none(), st.sampled_from(KNOWN_QUANTS)),
)


@given(st.one_of(_catalog_refs, _hf_refs))
@settings(max_examples=300)
def test_format_parse_roundtrip(text):
    ref = parse(text)
    assert ref.format() == text
    assert parse(ref.format()) == ref


# --- the paths the store builds: blobs by digest, partial downloads by the Hub's ids -----------


@given(st.one_of(st.text(max_size=80), st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
                 st.from_regex(r"[0-9a-f]{60}/\.\./", fullmatch=True)))
@settings(max_examples=300)
def test_a_blob_path_is_a_digest_in_the_blob_folder_or_an_error(text):
    from localq.errors import StoreError
    from localq.store.blobs import blob_path

    root = Path("/cache-root/blobs")
    try:
        path = blob_path(text, root)
    except StoreError:
        return
    assert path.parent == root and path.name == f"sha256-{text}" and len(text) == 64


_hub_ids = st.one_of(st.none(), st.text(max_size=80), st.sampled_from(["../../etc/passwd", "a/b", "..", "x\x00y"]))


@given(_hub_ids, _hub_ids, st.text(max_size=80))
@settings(max_examples=300)
def test_a_partial_download_stays_in_the_partials_folder_whatever_the_hub_says(sha256, git_oid, url):
    """The Hub's sha256 and git ids name the partial file; a hostile listing must not steer it."""
    from localq.download import partial_path
    from localq.hub import RemoteFile

    remote = RemoteFile(path="model.gguf", size=1, sha256=sha256, git_oid=git_oid, url=url)
    path = partial_path(remote)
    assert path.parent == partial_path(RemoteFile("x", 1, None, None, "u")).parent
    assert "/" not in remote.key and "\x00" not in remote.key and remote.key not in (".", "..")
    assert path.name == remote.key + ".partial"


@pytest.mark.parametrize("text", ["../../etc/passwd", "..", "/etc/passwd", "a/../../b", "hf.co/../x", "hf.co/a/..", "a\x00b"])
def test_escape_attempts_are_paths_or_errors(text):
    try:
        ref = parse(text)
    except InvalidReference:
        return
    assert ref.kind == "path"
