"""HF safetensors -> GGUF (localq's converter), on the real SmolLM2 made HF by the GGUF -> HF converter.

The reference for names, shapes, types and bytes is the original Q4_1 GGUF:
converting it to safetensors and back to F32 must give every tensor of it back,
dequantized, bit for bit (so names and the rotary permutation invert exactly),
and its tokenizer metadata unchanged. The F16 GGUF must then run in llama.cpp
as transformers runs the safetensors.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from localq.cli import cli
from localq.errors import LocalqError
from localq.quantize import gguf_convert
from localq.quantize.safetensors_io import read_header, write_streaming

TOKENIZER_KEYS = (
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token",
    "tokenizer.chat_template",
)
MODEL_KEYS = ("llama.block_count", "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
              "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.freq_base",
              "llama.attention.layer_norm_rms_epsilon", "llama.vocab_size", "llama.rope.dimension_count")


def run(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def f32_gguf(smollm2_hf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("f32") / "smol-F32.gguf"
    gguf_convert.convert(smollm2_hf_dir, out, "f32")
    return out


def test_round_trip_to_f32_gives_back_every_tensor_and_the_tokenizer(smollm2_gguf, f32_gguf):
    import gguf

    original, ours = gguf.GGUFReader(smollm2_gguf), gguf.GGUFReader(f32_gguf)
    theirs = {t.name: t for t in original.tensors}
    assert {t.name for t in ours.tensors} == set(theirs)
    for t in ours.tensors:
        ref = theirs[t.name]
        assert list(t.shape) == list(ref.shape), t.name
        assert t.tensor_type.name == "F32"
        expected = gguf.quants.dequantize(ref.data, ref.tensor_type).reshape(t.data.shape)
        assert np.array_equal(t.data, expected), t.name
    for key in TOKENIZER_KEYS + MODEL_KEYS:
        assert ours.fields[key].contents() == original.fields[key].contents(), key
    assert ours.fields["general.file_type"].contents() == 0


def llama_cpp_and_torch_logits(gguf_path, hf_dir, model_class: str, n_tokens: int, n_ctx: int):
    """Logits of the same tokens (BOS + the sample text) from llama.cpp on ``gguf_path`` and from
    transformers' ``model_class`` in float32 on ``hf_dir``."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("llama_cpp")
    from llama_logits import LlamaLogits
    from test_gguf_export import sample_text

    llama = LlamaLogits(gguf_path, n_ctx=n_ctx)
    try:
        tokens = [1] + llama.tokenize(sample_text())[:n_tokens - 1]
        ours = llama.logits(tokens)
    finally:
        llama.close()
    model = getattr(transformers, model_class).from_pretrained(hf_dir, dtype=torch.float32)
    with torch.no_grad():
        ref = model(torch.tensor([tokens])).logits[0].numpy()
    return ours, ref


def test_f16_gguf_runs_in_llama_cpp_as_transformers_runs_the_safetensors(smollm2_f16_gguf, smollm2_hf_dir):
    from test_gguf_export import mean_kl

    ours, ref = llama_cpp_and_torch_logits(smollm2_f16_gguf, smollm2_hf_dir, "LlamaForCausalLM", 300, 512)
    # F16 weights and llama.cpp's F16 products against float32 torch: float tolerance
    assert float((ours.argmax(-1) == ref.argmax(-1)).mean()) >= 0.98
    assert mean_kl(ref, ours) < 1e-3
    assert np.abs(ours - ref).max() < 0.25 * ref.std()


def test_sharded_checkpoint_converts_to_the_same_bytes(smollm2_hf_dir, smollm2_f16_gguf, tmp_path):
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for f in smollm2_hf_dir.iterdir():
        if f.suffix == ".json":
            shutil.copy(f, sharded / f.name)
    tensors = read_header(smollm2_hf_dir / "model.safetensors")
    weight_map = {}
    for i, part in enumerate(np.array_split(np.arange(len(tensors)), 3)):
        name = f"model-{i + 1:05d}-of-00003.safetensors"
        chosen = [tensors[j] for j in part][::-1]   # another order than the unsharded file
        by_name = {t.name: t for t in chosen}
        write_streaming(sharded / name, [(t.name, "F32", t.shape) for t in chosen], lambda n, by_name=by_name: by_name[n].raw())
        weight_map.update({t.name: name for t in chosen})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    out = tmp_path / "sharded-F16.gguf"
    gguf_convert.convert(sharded, out, "f16")
    assert out.read_bytes()[-50_000_000:] == smollm2_f16_gguf.read_bytes()[-50_000_000:]
    import gguf

    a, b = gguf.GGUFReader(out), gguf.GGUFReader(smollm2_f16_gguf)
    assert [(t.name, t.tensor_type, t.data.tobytes()) for t in a.tensors] == [
        (t.name, t.tensor_type, t.data.tobytes()) for t in b.tensors]


def test_convert_into_the_store_records_provenance(tmp_home, smollm2_hf_dir):
    result = run("convert", str(smollm2_hf_dir), "--to", "gguf-bf16", "--name", "smolconv")
    assert result.exit_code == 0, result.output
    assert "stored smolconv:bf16" in result.output
    rows = json.loads(run("ls", "--json").output)
    row = next(r for r in rows if r["ref"] == "smolconv:bf16")
    from localq.quantize.output import source_digest
    from localq.store.db import open_index
    from localq.store.index import resolve

    v = resolve(open_index(), "smolconv:bf16")
    prov = v.provenance
    sha, files = source_digest(smollm2_hf_dir)
    assert prov["source_sha256"] == sha and set(files) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert prov["tool"] == "localq convert" and prov["parameters"] == {"to": "gguf-bf16"}
    assert prov["engine"].startswith("gguf-py ")
    assert row["size"] == v.size and v.architecture == "llama"
    import gguf

    types = {t.tensor_type.name for t in gguf.GGUFReader(v.main_path).tensors}
    assert types == {"BF16", "F32"}


def hf_dir_copy(src, dst, drop=(), config_patch=None):
    """A light copy of an HF directory: JSON files copied, the weights hardlinked or symlinked."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name in drop:
            continue
        if f.suffix == ".json":
            data = json.loads(f.read_text())
            if f.name == "config.json" and config_patch:
                data.update(config_patch)
            (dst / f.name).write_text(json.dumps(data))
        else:
            (dst / f.name).symlink_to(f)
    return dst


def test_unsupported_architecture_is_refused_by_name_before_any_work(smollm2_hf_dir, tmp_path):
    src = hf_dir_copy(smollm2_hf_dir, tmp_path / "gpt2", drop=("model.safetensors",),
                      config_patch={"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    result = run("convert", str(src), "--to", "gguf-f16", "-o", str(tmp_path / "out.gguf"))
    print(result.output)
    assert result.exit_code == 1
    assert "GPT2LMHeadModel" in result.output and "LlamaForCausalLM" in result.output
    assert not (tmp_path / "out.gguf").exists()


@pytest.mark.parametrize("drop, says", [
    (("config.json",), "has no config.json"),
    (("tokenizer.json",), "has no tokenizer"),
    (("model.safetensors",), "has no .safetensors"),
])
def test_missing_parts_are_named(smollm2_hf_dir, tmp_path, drop, says):
    src = hf_dir_copy(smollm2_hf_dir, tmp_path / "src", drop=drop)
    with pytest.raises(LocalqError) as err:
        gguf_convert.convert(src, tmp_path / "out.gguf", "f16")
    print(err.value.one_line())
    assert says in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_truncated_shard_is_refused_and_leaves_nothing(smollm2_hf_dir, tmp_path, tmp_home):
    src = hf_dir_copy(smollm2_hf_dir, tmp_path / "src", drop=("model.safetensors",))
    with open(smollm2_hf_dir / "model.safetensors", "rb") as f, open(src / "model.safetensors", "wb") as out:
        out.write(f.read(100_000_000))
    result = run("convert", str(src), "--to", "gguf-f16")
    print(result.output)
    assert result.exit_code == 1
    assert "model.safetensors is truncated" in result.output and "download" in result.output
    from localq.paths import get_paths

    work = get_paths().data / "work"
    assert not work.exists() or not list(work.iterdir())
    assert not get_paths().blobs.exists() or not list(get_paths().blobs.iterdir())


def test_a_shard_cut_after_its_header_was_read_is_an_error_not_short_data(tmp_path):
    from localq.errors import BadModelFile

    shard = tmp_path / "model.safetensors"
    write_streaming(shard, [("w", "F32", (4, 8))], lambda name: np.arange(32, dtype=np.float32).reshape(4, 8))
    (stored,) = read_header(shard)
    assert np.frombuffer(stored.read_bytes(), dtype="<f4").tolist() == list(range(32))
    with open(shard, "r+b") as f:       # cut short while the conversion runs (a disk or a copy going away)
        f.truncate(stored.start + stored.nbytes - 1)
    with pytest.raises(BadModelFile) as err:
        stored.read_bytes()
    assert "model.safetensors ends before its tensor data does" in err.value.one_line()
    assert "download the shard again" in err.value.one_line()


def test_unknown_target_type_is_a_usage_error(smollm2_hf_dir):
    result = run("convert", str(smollm2_hf_dir), "--to", "gguf-q4")
    assert result.exit_code == 2 and "gguf-q4" in result.output
    with pytest.raises(LocalqError, match="unknown GGUF output type 'q4'"):
        gguf_convert.plan(smollm2_hf_dir, "q4")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
    key = _varint(num << 3 | wire)
    return key + (_varint(len(payload)) + payload if wire == 2 else payload)


def test_sentencepiece_model_pieces_are_read_from_the_protobuf():
    import struct

    from localq.quantize.hf_tokenizer import read_sentencepiece_model

    def piece(text, score, kind=None):
        body = _field(1, 2, text.encode()) + _field(2, 5, struct.pack("<f", score))
        if kind is not None:
            body += _field(3, 0, _varint(kind))
        return _field(1, 2, body)

    trainer_spec = _field(2, 2, _field(3, 0, _varint(8000)))  # another field, to be skipped
    data = piece("<unk>", 0.0, 2) + piece("<s>", 0.0, 3) + piece("▁the", -1.5) + piece("<0x0A>", 0.0, 6) + trainer_spec
    assert read_sentencepiece_model(data) == [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("▁the", -1.5, 1), ("<0x0A>", 0.0, 6)]
    with pytest.raises(LocalqError, match="not a SentencePiece model"):
        read_sentencepiece_model(b"\x0a\xff\xff")


def test_qwen2_layout_biases_and_neox_rotary_run_in_llama_cpp_as_in_transformers(smollm2_hf_dir, tmp_path):
    """SmolLM2's weights relabelled Qwen2 (with Q/K/V biases added): no permutation, biases named as llama.cpp wants."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("llama_cpp")
    from test_gguf_export import mean_kl

    src = tmp_path / "qwen2"
    src.mkdir()
    for f in smollm2_hf_dir.glob("*.json"):
        shutil.copy(f, src / f.name)
    config = json.loads((src / "config.json").read_text())
    config.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2", use_sliding_window=False)
    (src / "config.json").write_text(json.dumps(config))
    tensors = {t.name: t for t in read_header(smollm2_hf_dir / "model.safetensors")}
    rng = np.random.default_rng(1)
    biases = {}
    for i in range(30):
        for proj, rows in (("q_proj", 576), ("k_proj", 192), ("v_proj", 192)):
            biases[f"model.layers.{i}.self_attn.{proj}.bias"] = (rng.standard_normal(rows) * 0.1).astype(np.float32)
    specs = [(n, "F32", t.shape) for n, t in tensors.items()] + [(n, "F32", b.shape) for n, b in biases.items()]
    write_streaming(src / "model.safetensors", specs, lambda n: biases[n] if n in biases else tensors[n].raw())
    out = tmp_path / "qwen2-F32.gguf"
    plan = gguf_convert.convert(src, out, "f32")
    assert plan.arch.gguf == "qwen2"
    import gguf

    names = {t.name: t for t in gguf.GGUFReader(out).tensors}
    assert names["blk.0.attn_q.bias"].tensor_type.name == "F32"
    # no rotary permutation for qwen2: attn_q is the HF matrix as it is
    assert np.array_equal(names["blk.0.attn_q.weight"].data, tensors["model.layers.0.self_attn.q_proj.weight"].raw())

    ours, ref = llama_cpp_and_torch_logits(out, src, "Qwen2ForCausalLM", 128, 256)
    assert float((ours.argmax(-1) == ref.argmax(-1)).mean()) >= 0.98
    assert mean_kl(ref, ours) < 1e-3


def gguf_library_head(architecture, metadata, tensors, tmp_path):
    """The bytes ``gguf.GGUFWriter`` writes before the tensor data for the same metadata and tensors,
    the metadata typed as localq's converter types it (int: u32, float: f32; token types i32)."""
    import gguf

    writer = gguf.GGUFWriter(tmp_path / "theirs.gguf", architecture)
    vt = gguf.GGUFValueType
    for key, value in metadata.items():
        if value is None or key == "general.architecture":
            continue
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif key == "tokenizer.ggml.token_type":
            writer.add_key_value(key, value, vt.ARRAY, sub_type=vt.INT32)
        elif key == "tokenizer.ggml.scores":
            writer.add_key_value(key, value, vt.ARRAY, sub_type=vt.FLOAT32)
        else:
            writer.add_array(key, value)
    dtypes = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
    for name, shape, kind in tensors:
        item = np.dtype(dtypes[kind])
        writer.add_tensor_info(name, shape, item, int(np.prod(shape)) * item.itemsize,
                               raw_dtype=gguf.GGMLQuantizationType.BF16 if kind == "BF16" else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.fout[0].write(b"\0" * (-writer.fout[0].tell() % writer.data_alignment))
    writer.close()
    return (tmp_path / "theirs.gguf").read_bytes()


def test_gguf_head_is_the_bytes_the_gguf_library_writes(smollm2_hf_dir, tmp_path):
    pytest.importorskip("gguf")
    from localq.quantize import gguf_header

    p = gguf_convert.plan(smollm2_hf_dir)
    real = [(name, tuple(t.shape), gguf_convert.tensor_type(name, len(t.shape), "F16")) for name, t in p.tensors]
    edge = {                                           # every kind of value, and what the file leaves out
        "general.name": "日本語 model", "general.empty": "", "general.none": None, "x.flag": True, "x.off": False,
        "x.count": 7, "x.eps": 1e-5, "x.strings": ["a", "ĠHello", "", "<|im_end|>"], "x.ints": [1, -2, 3],
        "x.floats": [0.5, -1.25], "x.bools": [True, False], "x.none": [], "general.architecture": "ignored",
        "tokenizer.ggml.token_type": [1, 3, 6], "tokenizer.ggml.scores": [0.0, -1.5, 3.25e-7],
    }
    bf16 = [("blk.0.attn_q.weight", (4, 3), "BF16"), ("blk.0.attn_norm.weight", (3,), "F32"),
            ("token_embd.weight", (5, 7), "F16")]
    for metadata, tensors in ((p.metadata, real), (edge, bf16)):
        ours = gguf_header.head("llama", metadata, tensors)
        assert ours == gguf_library_head("llama", metadata, tensors, tmp_path)
        assert len(ours) % gguf_header.ALIGNMENT == 0
    with pytest.raises(ValueError, match="mixes item types"):
        gguf_header.head("llama", {"x.mixed": [1, "a"]}, [])
    import struct

    with pytest.raises(struct.error):   # a number out of its type's range is refused, as the library refuses it
        gguf_header.head("llama", {"x.big": 2**40}, [])


def test_tensor_names_without_a_counterpart_are_refused_by_name():
    from localq.quantize.archs import UnsupportedArchitecture, gguf_tensor_name, hf_tensor_name

    assert hf_tensor_name("blk.3.attn_q.weight") == "model.layers.3.self_attn.q_proj.weight"
    assert gguf_tensor_name("model.layers.3.self_attn.q_proj.weight") == "blk.3.attn_q.weight"
    assert hf_tensor_name("rope_freqs.weight") is None and gguf_tensor_name("model.rotary_emb.inv_freq") is None
    with pytest.raises(UnsupportedArchitecture, match="'blk.0.ssm_conv1d.weight' has no Hugging Face equivalent"):
        hf_tensor_name("blk.0.ssm_conv1d.weight")
    with pytest.raises(UnsupportedArchitecture, match="'model.layers.0.mixer.in_proj.weight' has no GGUF equivalent"):
        gguf_tensor_name("model.layers.0.mixer.in_proj.weight")


def _retyped_checkpoint(src, out, dtype_of):
    """A copy of an F32 HF directory whose tensors are stored as ``dtype_of(name)`` (BF16 / F16 / F32)."""
    from localq.quantize.safetensors_io import encode

    out.mkdir()
    for f in src.iterdir():
        if f.suffix == ".json":
            shutil.copy(f, out / f.name)
    tensors = {t.name: t for t in read_header(src / "model.safetensors")}
    write_streaming(out / "model.safetensors", [(n, dtype_of(n), t.shape) for n, t in tensors.items()],
                    lambda n: encode(tensors[n].raw(), dtype_of(n)))
    return out


def test_a_checkpoint_converts_losslessly_in_its_own_type_bits_copied_or_permuted(smollm2_hf_dir, tmp_path):
    import gguf

    from localq.quantize import archs

    assert gguf_convert.lossless(gguf_convert.plan(smollm2_hf_dir)).out_type == "F32"
    mixed = _retyped_checkpoint(smollm2_hf_dir, tmp_path / "mixed",
                                lambda n: "F16" if n.endswith("o_proj.weight") else "BF16")
    assert gguf_convert.lossless(gguf_convert.plan(mixed)).out_type == "F32"   # F32 holds both exactly
    bf16 = _retyped_checkpoint(smollm2_hf_dir, tmp_path / "bf16", lambda n: "BF16")
    planned = gguf_convert.lossless(gguf_convert.plan(bf16))
    assert planned.out_type == "BF16" and planned.metadata["general.file_type"] == 32
    out = tmp_path / "bf16.gguf"
    gguf_convert.convert(bf16, out, "bf16", planned=planned)
    stored = {gguf_name: t for gguf_name, t in planned.tensors}
    config = json.loads((bf16 / "config.json").read_text())
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.file_type"].parts[-1][0] == 32
    for t in reader.tensors:
        raw = stored[t.name].raw()
        if raw.ndim == 1:      # norms: F32, widened exactly
            assert t.tensor_type == gguf.GGMLQuantizationType.F32
            assert np.array_equal(t.data, stored[t.name].as_float32())
            continue
        assert t.tensor_type == gguf.GGMLQuantizationType.BF16, t.name
        stem = t.name.split(".")[-2]
        want = archs.rotary_to_gguf(raw, heads[stem]) if stem in heads else raw
        assert t.data.view(np.uint16).tobytes() == np.ascontiguousarray(want).tobytes(), t.name
