"""gguf_info on the real SmolLM2 file, and on broken files made from it."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from localq.cli import cli
from localq.errors import BadModelFile, ModelNotFound
from localq.gguf_info import (
    describe_type,
    file_type_name,
    read_gguf_info,
    read_gguf_tensors,
)

# Facts about SmolLM2-135M-Instruct.Q4_1.gguf, read with gguf.GGUFReader.
DATA_OFFSET = 1_785_664          # where its tensor data starts
TENSOR_DATA_BYTES = 96_576_768   # and how much of it there is, to the end of the file
PARAMETERS = 134_515_008
ARCH_VALUE_LENGTH_AT = 24 + 8 + len("general.architecture") + 4  # first KV's string length


@pytest.fixture(scope="session")
def smollm2_head(smollm2_gguf: Path) -> bytes:
    """Header, metadata and tensor infos of the real file (its first 2 MB), plus some data."""
    with open(smollm2_gguf, "rb") as f:
        return f.read(2_000_000)


def write(tmp_path: Path, data: bytes, name: str = "model.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def patched(data: bytes, offset: int, fmt: str, value) -> bytes:
    """``data`` with one little-endian field at ``offset`` replaced."""
    raw = bytearray(data)
    struct.pack_into(fmt, raw, offset, value)
    return bytes(raw)


def bad_file_error(path: Path) -> BadModelFile:
    with pytest.raises(BadModelFile) as caught:
        read_gguf_info(path)
    return caught.value


# --- the real file -------------------------------------------------------------


def test_architecture_numbers(smollm2_gguf):
    info = read_gguf_info(smollm2_gguf)
    assert info.architecture == "llama"
    assert info.block_count == 30
    assert info.embedding_length == 576
    assert info.feed_forward_length == 1536
    assert info.head_count == 9
    assert info.head_count_kv == 3
    assert info.head_dim == 64
    assert info.vocab_size == 49152
    assert info.context_length == 8192
    assert info.rope_dimension_count == 64
    assert info.rope_freq_base == 100000.0
    assert info.rope_scaling_type is None
    assert info.expert_count is None


def test_identity_and_size(smollm2_gguf):
    info = read_gguf_info(smollm2_gguf)
    assert info.path == smollm2_gguf
    assert info.size_bytes == smollm2_gguf.stat().st_size
    assert info.gguf_version == 3
    assert info.name == "Smollm2 135M 8k Lc100K Mix1 Ep2"
    assert info.file_type == "Q4_1"
    assert info.file_type_id == 3
    assert info.parameter_count == PARAMETERS
    assert info.tensor_count == 272
    assert info.kv_count == 33
    assert info.alignment == 32
    assert info.data_offset == DATA_OFFSET
    assert info.tensor_bytes == TENSOR_DATA_BYTES
    # the data runs exactly to the end of the file
    assert info.data_offset + info.tensor_bytes == info.size_bytes


def test_tokenizer_and_chat_template(smollm2_gguf):
    info = read_gguf_info(smollm2_gguf)
    assert info.tokenizer_model == "gpt2"
    assert info.bos_token_id == 1
    assert info.eos_token_id == 2
    assert "<|im_start|>" in info.chat_template
    assert info.chat_template.startswith("{% for message in messages %}")


def test_quant_mix(smollm2_gguf):
    info = read_gguf_info(smollm2_gguf)
    # Q4_1 for the layers' matrices, Q8_0 for the (tied) token embedding, F32 norms
    assert list(info.quant_mix) == ["Q4_1", "Q8_0", "F32"]  # largest first
    assert info.quant_mix["Q4_1"] == {"count": 210, "n_elements": 106_168_320, "bytes": 66_355_200}
    assert info.quant_mix["Q8_0"] == {"count": 1, "n_elements": 576 * 49152, "bytes": 30_081_024}
    assert info.quant_mix["F32"]["count"] == 61
    assert sum(m["n_elements"] for m in info.quant_mix.values()) == PARAMETERS
    assert sum(m["bytes"] for m in info.quant_mix.values()) == TENSOR_DATA_BYTES
    assert info.bits_per_weight == pytest.approx(TENSOR_DATA_BYTES * 8 / PARAMETERS, abs=1e-4)


def test_rows_not_multiple_of_256(smollm2_gguf):
    info = read_gguf_info(smollm2_gguf)
    # 30 layers x 7 matrices + the embedding; only ffn_down's rows (1536) divide by 256
    assert info.matrix_tensor_count == 211
    assert info.rows_not_multiple_of_256 == 211 - 30


def test_tensors_match_gguf_reader(smollm2_gguf):
    from gguf import GGUFReader

    ours = read_gguf_tensors(smollm2_gguf)
    theirs = GGUFReader(smollm2_gguf).tensors
    assert [t.name for t in ours] == [t.name for t in theirs]
    for mine, ref in zip(ours, theirs):
        assert mine.shape == tuple(int(d) for d in ref.shape)
        assert mine.type_name == ref.tensor_type.name
        assert mine.offset == ref.data_offset
        assert mine.n_bytes == ref.n_bytes
    embedding = ours[0]
    assert (embedding.name, embedding.shape, embedding.type_name) == (
        "token_embd.weight", (576, 49152), "Q8_0")


def test_to_dict_is_json(smollm2_gguf):
    data = json.loads(json.dumps(read_gguf_info(smollm2_gguf).to_dict()))
    assert data["path"] == str(smollm2_gguf)
    assert data["file_type"] == "Q4_1"
    assert data["quant_mix"]["Q8_0"]["count"] == 1
    metadata = data["metadata"]
    assert metadata["general.languages"] == ["en"]
    assert metadata["llama.attention.layer_norm_rms_epsilon"] == 1e-05
    assert metadata["tokenizer.ggml.tokens"] == {
        "type": "ARRAY", "element_type": "STRING", "length": 49152}
    assert "tokenizer.chat_template" not in metadata  # it has its own field


def test_describe_type():
    assert describe_type(0) == "F32"
    assert describe_type(2) == "Q4_0"
    assert describe_type(3) == "Q4_1"
    assert describe_type(12) == "Q4_K"
    assert describe_type(9999) == "unknown(9999)"


def test_file_type_name():
    assert file_type_name(0) == "F32"
    assert file_type_name(1) == "F16"
    assert file_type_name(3) == "Q4_1"
    assert file_type_name(7) == "Q8_0"
    assert file_type_name(15) == "Q4_K_M"
    assert file_type_name(1024 + 15) == "Q4_K_M (guessed)"
    assert file_type_name(999) == "unknown(999)"


# --- files that are not GGUF ------------------------------------------------------


def test_wrong_magic(tmp_path, smollm2_head):
    path = write(tmp_path, b"PK\x03\x04" + smollm2_head[4:])
    error = bad_file_error(path)
    assert error.message == (
        f"{path} is not a GGUF file: wrong magic bytes b'PK\\x03\\x04', expected b'GGUF'")
    assert error.hint.startswith("pass a .gguf model file")


def test_text_file(tmp_path):
    error = bad_file_error(write(tmp_path, b'{"model_type": "llama"}', "config.json"))
    assert "is not a GGUF file: wrong magic bytes b'{\"mo'" in error.message


def test_empty_file(tmp_path):
    path = write(tmp_path, b"")
    error = bad_file_error(path)
    assert error.message == f"{path} is empty (0 bytes), not a GGUF file"
    assert error.hint == "re-download or re-import it"


def test_directory(tmp_path):
    error = bad_file_error(tmp_path)
    assert error.message == f"{tmp_path} is a directory, not a GGUF file"
    assert error.hint == "pass the .gguf file inside it"


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFound) as caught:
        read_gguf_info(tmp_path / "nothing.gguf")
    assert caught.value.message == f"no such file: {tmp_path / 'nothing.gguf'}"


@pytest.mark.skipif(not os.path.exists(os.devnull), reason="no null device here")
def test_device_is_not_a_regular_file():
    error = bad_file_error(Path(os.devnull))
    assert error.message == f"{os.devnull} is not a regular file, so not a GGUF file"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads any file, so a file cannot be made unreadable")
def test_unreadable_file(tmp_path, smollm2_head):
    path = write(tmp_path, smollm2_head)
    path.chmod(0)
    try:
        error = bad_file_error(path)
    finally:
        path.chmod(0o644)
    assert error.message == f"cannot read {path}: permission denied"
    assert "chmod" in error.hint


# --- truncated files ----------------------------------------------------------------


@pytest.mark.parametrize("length", [2, 10, 23])
def test_truncated_in_header(tmp_path, smollm2_head, length):
    path = write(tmp_path, smollm2_head[:length])
    error = bad_file_error(path)
    assert error.message == (
        f"{path}: truncated GGUF: the file ends at byte {length}, inside its header")
    assert error.hint == "re-download or re-import it"


def test_truncated_before_counts_fit(tmp_path, smollm2_head):
    # 272 tensor infos and 33 keys cannot fit in 3000 bytes: caught before walking them
    path = write(tmp_path, smollm2_head[:3000])
    error = bad_file_error(path)
    assert error.message == (
        f"{path}: truncated GGUF: its header lists 272 tensors and 33 metadata keys, "
        "which need at least 6981 bytes; the file has 3000")


@pytest.mark.parametrize("length", [8000, 500_000, 1_500_000])  # vocabulary; merges
def test_truncated_in_metadata(tmp_path, smollm2_head, length):
    path = write(tmp_path, smollm2_head[:length])
    assert bad_file_error(path).message == (
        f"{path}: truncated GGUF: the file ends at byte {length}, inside its metadata")


def test_truncated_in_tensor_infos(tmp_path, smollm2_head):
    length = DATA_OFFSET - 100
    path = write(tmp_path, smollm2_head[:length])
    assert bad_file_error(path).message == (
        f"{path}: truncated GGUF: the file ends at byte {length}, inside its tensor info section")


def test_truncated_at_data_start(tmp_path, smollm2_head):
    path = write(tmp_path, smollm2_head[:DATA_OFFSET + 1000])
    error = bad_file_error(path)
    assert error.message == (
        f"{path}: truncated GGUF: expected {TENSOR_DATA_BYTES} bytes of tensor data, "
        "file has 1000")
    assert error.hint == "re-download or re-import it"


def test_truncated_near_the_end(tmp_path, smollm2_gguf):
    path = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_gguf, path)
    os.truncate(path, smollm2_gguf.stat().st_size - 1000)
    assert bad_file_error(path).message == (
        f"{path}: truncated GGUF: expected {TENSOR_DATA_BYTES} bytes of tensor data, "
        f"file has {TENSOR_DATA_BYTES - 1000}")


# --- files whose numbers lie ---------------------------------------------------------


def test_unsupported_version(tmp_path, smollm2_head):
    path = write(tmp_path, patched(smollm2_head, 4, "<I", 1))
    error = bad_file_error(path)
    assert error.message == (
        f"{path}: unsupported GGUF version 1 (localq reads versions 2 and 3)")
    assert error.hint == "convert it again with a current llama.cpp"


def test_big_endian_file(tmp_path, smollm2_head):
    path = write(tmp_path, patched(smollm2_head, 4, ">I", 3))
    assert "it looks big-endian" in bad_file_error(path).message


def test_absurd_tensor_count(tmp_path, smollm2_head):
    path = write(tmp_path, patched(smollm2_head, 8, "<Q", 2**60))
    error = bad_file_error(path)
    assert error.message == (
        f"{path}: corrupt GGUF header: claims {2**60} tensors (at most 1000000 is sane)")
    assert error.hint == "the file is damaged; re-download or re-import it"


def test_absurd_kv_count(tmp_path, smollm2_head):
    path = write(tmp_path, patched(smollm2_head, 16, "<Q", 2**40))
    assert bad_file_error(path).message == (
        f"{path}: corrupt GGUF header: claims {2**40} metadata keys (at most 100000 is sane)")


def test_plausible_counts_too_big_for_the_file(tmp_path, smollm2_head):
    path = write(tmp_path, patched(smollm2_head, 8, "<Q", 999_999))
    assert "its header lists 999999 tensors and 33 metadata keys" in bad_file_error(path).message


def test_absurd_string_length(tmp_path, smollm2_head):
    path = write(tmp_path, patched(smollm2_head, ARCH_VALUE_LENGTH_AT, "<Q", 2**62))
    assert bad_file_error(path).message == (
        f"{path}: corrupt GGUF metadata: value of 'general.architecture' at byte "
        f"{ARCH_VALUE_LENGTH_AT} claims a length of {2**62} bytes (at most 67108864 is sane)")


def test_absurd_key_length(tmp_path, smollm2_head):
    path = write(tmp_path, patched(smollm2_head, 24, "<Q", 2**62))
    assert bad_file_error(path).message == (
        f"{path}: corrupt GGUF metadata: key #0 at byte 24 claims a length of {2**62} bytes "
        "(at most 65535 is sane)")


def test_string_running_past_the_end(tmp_path, smollm2_head):
    # a sane length that the (cut) file cannot hold is a truncation, not a lie
    data = patched(smollm2_head, ARCH_VALUE_LENGTH_AT, "<Q", 10_000_000)
    path = write(tmp_path, data)
    assert bad_file_error(path).message == (
        f"{path}: truncated GGUF: the file ends at byte {len(data)}, inside its metadata")


def test_unknown_value_type(tmp_path, smollm2_head):
    path = write(tmp_path, patched(smollm2_head, ARCH_VALUE_LENGTH_AT - 4, "<I", 99))
    assert bad_file_error(path).message == (
        f"{path}: corrupt GGUF metadata: value of 'general.architecture' has unknown "
        "value type 99")


def test_absurd_array_length(tmp_path, smollm2_head):
    key = b"tokenizer.ggml.tokens"
    length_at = smollm2_head.index(key) + len(key) + 4 + 4  # value type, element type
    path = write(tmp_path, patched(smollm2_head, length_at, "<Q", 2**62))
    assert bad_file_error(path).message == (
        f"{path}: corrupt GGUF metadata: value of 'tokenizer.ggml.tokens' claims an array "
        f"of {2**62} items (at most 67108864 is sane)")


def test_absurd_string_inside_vocabulary(tmp_path, smollm2_head):
    key = b"tokenizer.ggml.tokens"
    first_token_at = smollm2_head.index(key) + len(key) + 4 + 4 + 8
    path = write(tmp_path, patched(smollm2_head, first_token_at, "<Q", 2**62))
    assert bad_file_error(path).message == (
        f"{path}: corrupt GGUF metadata: a string in value of 'tokenizer.ggml.tokens' at byte "
        f"{first_token_at} claims a length of {2**62} bytes (at most 67108864 is sane)")


def tensor_info_field(head: bytes, field: str) -> int:
    """Byte offset of a field of token_embd.weight's tensor info (2 dimensions)."""
    name = b"token_embd.weight"
    n_dims_at = head.index(name) + len(name)
    return {"n_dims": n_dims_at, "type": n_dims_at + 4 + 16, "offset": n_dims_at + 4 + 16 + 4}[field]


def test_tensor_with_too_many_dimensions(tmp_path, smollm2_head):
    at = tensor_info_field(smollm2_head, "n_dims")
    path = write(tmp_path, patched(smollm2_head, at, "<I", 7))
    assert bad_file_error(path).message == (
        f"{path}: corrupt GGUF tensor info section: tensor 'token_embd.weight' has 7 dimensions "
        "(ggml allows 1 to 4)")


def test_tensor_with_unknown_type(tmp_path, smollm2_head):
    at = tensor_info_field(smollm2_head, "type")
    path = write(tmp_path, patched(smollm2_head, at, "<I", 200))
    error = bad_file_error(path)
    assert error.message == f"{path}: tensor 'token_embd.weight' has unknown type id 200"
    assert "update gguf or re-download it" in error.hint


def test_tensor_offset_not_aligned(tmp_path, smollm2_head):
    at = tensor_info_field(smollm2_head, "offset")
    path = write(tmp_path, patched(smollm2_head, at, "<Q", 7))
    assert bad_file_error(path).message == (
        f"{path}: corrupt GGUF tensor info section: tensor 'token_embd.weight' data offset 7 "
        "is not a multiple of the alignment 32")


def test_tensor_offset_past_the_end(tmp_path, smollm2_head):
    at = tensor_info_field(smollm2_head, "offset")
    path = write(tmp_path, patched(smollm2_head, at, "<Q", 2**50))
    expected = 2**50 + 576 * 49152 // 32 * 34  # the claimed offset plus its Q8_0 bytes
    assert bad_file_error(path).message == (
        f"{path}: truncated GGUF: expected {expected} bytes of tensor data, "
        f"file has {len(smollm2_head) - DATA_OFFSET}")


# --- localq show ------------------------------------------------------------------------


def test_show_prints_facts(smollm2_gguf):
    result = CliRunner().invoke(cli, ["show", str(smollm2_gguf)])
    assert result.exit_code == 0, result.output
    out = result.output
    for text in ("llama", "134.5M (134,515,008)", "Q4_1, 5.74 bits per weight", "9 (KV 3)",
                 "quant mix", "Q8_0", "F32", "181 of 211 weight matrices", "<|im_start|>",
                 "(368 characters)"):
        assert text in out, text
    assert "add_generation_prompt" not in out  # the template is cut after 300 characters


def test_show_json(smollm2_gguf):
    result = CliRunner().invoke(cli, ["show", "--json", str(smollm2_gguf)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["architecture"] == "llama"
    assert data["parameter_count"] == PARAMETERS
    assert data["quant_mix"]["Q4_1"]["count"] == 210
    assert data["rows_not_multiple_of_256"] == 181


def test_show_bad_file_is_one_line_and_exit_1(tmp_path, smollm2_head):
    path = write(tmp_path, b"XXXX" + smollm2_head[4:100])
    result = CliRunner().invoke(cli, ["show", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: {path} is not a GGUF file: wrong magic bytes b'XXXX', expected b'GGUF' "
        "(pass a .gguf model file; other formats must be converted first)\n")


def test_show_missing_file(tmp_path):
    result = CliRunner().invoke(cli, ["show", str(tmp_path / "gone.gguf")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: no such file: {tmp_path / 'gone.gguf'}")


def test_reading_a_gguf_loads_the_type_tables_without_the_gguf_package(smollm2_gguf):
    import subprocess
    import sys

    import gguf

    code = ("import sys; from localq.gguf_info import read_gguf_info, gguf_constants; "
            f"info = read_gguf_info({str(smollm2_gguf)!r}); "
            "print(info.file_type, 'gguf' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["Q4_1", "False", "False"]
    from localq.gguf_info import gguf_constants

    own = gguf_constants()
    assert {t.name: t.value for t in own.GGMLQuantizationType} == {t.name: t.value for t in gguf.GGMLQuantizationType}
    assert {t.name: t.value for t in own.LlamaFileType} == {t.name: t.value for t in gguf.LlamaFileType}
    assert {k.name: v for k, v in own.GGML_QUANT_SIZES.items()} == {k.name: v for k, v in gguf.GGML_QUANT_SIZES.items()}
