"""Header checks before loading: SmolLM2 with rewritten headers, refused with one line, never loaded."""

from __future__ import annotations

import os
import subprocess
import sys

import bad_gguf
import pytest

from localq.errors import BadModelFile
from localq.gguf_info import check_loadable, read_gguf_info

LOCALQ = [sys.executable, "-c", "from localq.cli import main; main()"]
T = "blk.3.attn_k.weight"   # 576 x 192 in SmolLM2 (3 KV heads of 64)

# name -> (metadata changes, tensor changes, words the message must hold)
BAD_HEADERS = {
    "layers-4096": ({"llama.block_count": 4096}, None, "block_count is 4096"),
    "layers-0": ({"llama.block_count": 0}, None, "block_count is 0"),
    "layers-600": ({"llama.block_count": 600}, None, "1 to 512"),
    "layers-fewer-than-tensors": ({"llama.block_count": 20}, None, "tensors for block 20"),
    "heads-0": ({"llama.attention.head_count": 0}, None, "head_count is 0"),
    "kv-heads-0": ({"llama.attention.head_count_kv": 0}, None, "head_count_kv is 0"),
    "heads-not-multiple": ({"llama.attention.head_count_kv": 2}, None, "not a multiple of head_count_kv 2"),
    "heads-more": ({"llama.attention.head_count": 12}, None, "blk.0.attn_k.weight' is 576x192"),
    "embedding-0": ({"llama.embedding_length": 0}, None, "embedding_length is 0"),
    "embedding-wrong": ({"llama.embedding_length": 512}, None, "576 wide but llama.embedding_length is 512"),
    "ffn-wrong": ({"llama.feed_forward_length": 1000}, None, "blk.0.ffn_gate.weight"),
    "vocab-wrong": ({"llama.vocab_size": 100}, None, "49152 rows but the vocabulary has 100"),
    "context-0": ({"llama.context_length": 0}, None, "context_length is 0"),
    "missing-tensor": (None, {T: {"name": "blk.3.attn_x.weight"}}, "'blk.3.attn_k.weight' is missing"),
    "shape-swapped": (None, {T: {"shape": (192, 576)}}, "'blk.3.attn_k.weight' is 192x576"),
    "removed-type": (None, {T: {"type": 31}}, "unknown type id 31"),
}


@pytest.fixture(scope="module")
def bad_files(smollm2_gguf, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-headers")
    return {name: bad_gguf.patched(smollm2_gguf, root / f"{name}.gguf", kv, tensors=tensors)
            for name, (kv, tensors, _) in BAD_HEADERS.items()}


def test_the_real_file_has_no_problems(smollm2_gguf):
    info = read_gguf_info(smollm2_gguf)
    assert info.load_problems == ()
    assert check_loadable(info) is info


@pytest.mark.parametrize("name", sorted(BAD_HEADERS))
def test_bad_header_is_refused_with_one_line(bad_files, name):
    expected = BAD_HEADERS[name][2]
    with pytest.raises(BadModelFile) as caught:
        check_loadable(read_gguf_info(bad_files[name]))
    message = caught.value.one_line()
    print(message)
    assert expected in message and "\n" not in message and caught.value.hint


def test_hybrid_per_layer_kv_heads_are_legal(smollm2_gguf, tmp_path):
    """Hybrid models list KV heads per layer, with 0 for layers without attention."""
    from gguf.constants import GGUFValueType

    per_layer = [3 if i % 2 else 0 for i in range(30)]
    path = bad_gguf.rewritten(smollm2_gguf, tmp_path / "hybrid.gguf",
                              kv={"llama.attention.head_count_kv": (per_layer, GGUFValueType.ARRAY)})
    assert read_gguf_info(path).load_problems == ()
    odd = bad_gguf.rewritten(smollm2_gguf, tmp_path / "odd.gguf",
                             kv={"llama.attention.head_count_kv": ([2] * 30, GGUFValueType.ARRAY)})
    assert "in layer 0" in read_gguf_info(odd).load_problems[0]


def test_a_type_this_llama_cpp_does_not_know_is_refused(smollm2_gguf, tmp_path):
    pytest.importorskip("llama_cpp")
    from localq.backends.llamacpp import (
        LlamaCppBackend,
        _load_library,
        check_types_known,
    )

    info = read_gguf_info(smollm2_gguf)
    lib = _load_library()
    check_types_known(info, lib)      # Q4_1, Q8_0, F32: known
    faked = type("Lib", (), {"GGML_TYPE_COUNT": 3})   # a build that stops before Q4_1
    with pytest.raises(BadModelFile) as caught:
        check_types_known(info, faked, "smollm2")
    print(caught.value.one_line())
    assert "Q4_1 tensors, a type this llama.cpp build does not know" in caught.value.message
    assert LlamaCppBackend   # the backend runs this check on every load


def test_run_of_a_file_llama_cpp_would_abort_on_is_one_line(bad_files, tmp_home):
    """Before: exit 134 and a gdb backtrace (GGML_ASSERT n_layer <= LLAMA_MAX_LAYERS)."""
    pytest.importorskip("llama_cpp")
    env = {**os.environ, "LOCALQ_HOME": str(tmp_home)}
    for name in ("layers-4096", "heads-0"):
        done = subprocess.run(LOCALQ + ["run", str(bad_files[name]), "hi"], env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        print(done.stderr)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and "GGML_ASSERT" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "cannot be loaded" in lines[0]


def test_import_refuses_what_cannot_load_and_keeps_nothing(bad_files, tmp_home):
    from click.testing import CliRunner

    from localq.cli import cli
    from localq.paths import get_paths
    from localq.store.db import open_index
    from localq.store.index import list_variants

    result = CliRunner().invoke(cli, ["import", str(bad_files["layers-4096"])])
    print(result.output)
    assert result.exit_code == 1 and "block_count is 4096" in result.output
    from conftest import SMOLLM2_SHA256

    db = open_index()
    try:
        assert [v.model for v in list_variants(db)] in ([], ["smollm2:135m"])   # the starter, if set up
    finally:
        db.close()
    blobs = get_paths().blobs
    assert {p.name for p in blobs.iterdir()} <= {f"sha256-{SMOLLM2_SHA256}"} if blobs.exists() else True


def test_a_rewritten_copy_with_its_data_still_runs(smollm2_gguf, tmp_path, smollm2_session):
    """The helper's copies are real files: the same header rewritten keeps the model working."""
    from localq.backends.base import GenerationParams, LoadOptions
    from localq.backends.llamacpp import LlamaCppBackend

    copy = bad_gguf.patched(smollm2_gguf, tmp_path / "copy.gguf", {"llama.context_length": 4096}, data="copy")
    params = GenerationParams(temperature=0, max_tokens=8)
    with LlamaCppBackend().load(copy, LoadOptions(n_ctx=1024)) as session:
        assert session.complete("Say hi.", params).text == smollm2_session.complete("Say hi.", params).text
