"""SentencePiece tokenizers through GGUF and back, against the sentencepiece library and llama.cpp.

The tests have no Llama 2 / Mistral / TinyLlama files, so they train a small
SentencePiece BPE model (Llama's settings: byte fallback, split digits, a
dummy prefix, no whitespace folding) on the standard library's pydoc text, put
it in a tiny random-weight llama directory, convert that to GGUF with localq,
and back to a Hugging Face directory. The references, computed in the same
run: the trained model's own encoding (sentencepiece) and llama.cpp's
tokenizer reading the GGUF.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

spm = pytest.importorskip("sentencepiece")
pytest.importorskip("safetensors")

from localq.quantize import spm_tokenizer  # noqa: E402  (after the skips)

VOCAB = 512


def _corpus() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


SAMPLES = [
    "Hello world  123 and 4567.",
    " a leading space, and a trailing one ",
    "two\n\nlines\tand a tab",
    "naïve café, “quotes”, 中文 and 😀 (bytes)",
    "   ",
    "x",
]


def _train(dummy_prefix: bool = True) -> bytes:
    lines = [line for line in _corpus().splitlines() if line.strip()][:4000]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=out, model_type="bpe", vocab_size=VOCAB, byte_fallback=True,
        split_digits=True, add_dummy_prefix=dummy_prefix, remove_extra_whitespaces=False,
        normalization_rule_name="identity", allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, minloglevel=2, num_threads=1)
    return out.getvalue()


def _texts() -> list[str]:
    corpus = _corpus()
    return SAMPLES + [corpus[len(corpus) // 2:len(corpus) // 2 + 20000]]   # held out: training read the first lines


@pytest.fixture(scope="module")
def spm_model_dir(tmp_path_factory) -> Path:
    """A tiny llama with random weights and the trained SentencePiece tokenizer, as a Hugging Face directory."""
    from safetensors.numpy import save_file

    d = tmp_path_factory.mktemp("spm") / "tiny-llama"
    d.mkdir()
    (d / "tokenizer.model").write_bytes(_train())
    dim, ffn, heads, kv = 64, 128, 2, 1
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": dim, "num_hidden_layers": 1,
        "intermediate_size": ffn, "vocab_size": VOCAB, "num_attention_heads": heads, "num_key_value_heads": kv,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256, "tie_word_embeddings": True,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}))
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True}))
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)
    hd = dim // heads
    p = "model.layers.0."
    save_file({
        "model.embed_tokens.weight": w(VOCAB, dim), "model.norm.weight": np.ones(dim, np.float32),
        p + "self_attn.q_proj.weight": w(dim, dim), p + "self_attn.k_proj.weight": w(kv * hd, dim),
        p + "self_attn.v_proj.weight": w(kv * hd, dim), p + "self_attn.o_proj.weight": w(dim, dim),
        p + "mlp.gate_proj.weight": w(ffn, dim), p + "mlp.up_proj.weight": w(ffn, dim),
        p + "mlp.down_proj.weight": w(dim, ffn), p + "input_layernorm.weight": np.ones(dim, np.float32),
        p + "post_attention_layernorm.weight": np.ones(dim, np.float32),
    }, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


@pytest.fixture(scope="module")
def round_trip(spm_model_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    """(localq's GGUF of the directory, localq's Hugging Face directory of that GGUF)."""
    from localq.quantize.gguf_convert import convert
    from localq.quantize.gguf_export import gguf_to_hf

    root = tmp_path_factory.mktemp("spm-round-trip")
    gguf_path = root / "tiny.gguf"
    convert(spm_model_dir, gguf_path, "f32")
    back = root / "back"
    gguf_to_hf(gguf_path, back)
    return gguf_path, back


def test_tokenizer_json_encodes_as_sentencepiece_and_llama_cpp(spm_model_dir, round_trip):
    import llama_cpp
    from tokenizers import Tokenizer

    gguf_path, back = round_trip
    original = spm.SentencePieceProcessor(model_file=str(spm_model_dir / "tokenizer.model"))
    ours = Tokenizer.from_file(str(back / "tokenizer.json"))
    llama = llama_cpp.Llama(str(gguf_path), vocab_only=True, verbose=False)
    total = 0
    for text in _texts():
        expected = original.encode(text)
        assert ours.encode(text, add_special_tokens=False).ids == expected, text[:40]
        assert llama.tokenize(text.encode(), add_bos=False, special=False) == expected, text[:40]
        assert ours.decode(expected) == text
        total += len(expected)
    assert total > 5000                                   # the held-out text is long enough to exercise the merges
    assert ours.encode("x").ids[0] == original.bos_id()   # tokenizer_config's add_bos_token, as llama.cpp adds it


def test_tokenizer_model_is_written_back_as_sentencepiece_reads_it(spm_model_dir, round_trip):
    _, back = round_trip
    original = spm.SentencePieceProcessor(model_file=str(spm_model_dir / "tokenizer.model"))
    written = spm.SentencePieceProcessor(model_file=str(back / "tokenizer.model"))
    assert written.get_piece_size() == original.get_piece_size() == VOCAB
    for i in range(VOCAB):
        assert written.id_to_piece(i) == original.id_to_piece(i)
        assert written.get_score(i) == original.get_score(i)
        assert (written.is_control(i), written.is_byte(i), written.is_unknown(i)) == \
            (original.is_control(i), original.is_byte(i), original.is_unknown(i))
    for text in _texts():
        assert written.encode(text) == original.encode(text)
    assert (written.unk_id(), written.bos_id(), written.eos_id()) == (0, 1, 2)


def test_the_hugging_face_directory_converts_to_the_same_gguf_tokenizer(round_trip, tmp_path):
    from localq.quantize.gguf_convert import plan

    gguf_path, back = round_trip
    import gguf

    def tokenizer_of(path):
        reader = gguf.GGUFReader(str(path))
        return {k: reader.fields[k].contents() for k in reader.fields if k.startswith("tokenizer.ggml.")}

    first = tokenizer_of(gguf_path)
    again = plan(back, "f32").metadata
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
        assert again[key] == first[key], key
    assert np.allclose(again["tokenizer.ggml.scores"], first["tokenizer.ggml.scores"])


def test_without_a_dummy_prefix():
    """A model trained with no dummy prefix (tokenizer.ggml.add_space_prefix false) encodes as sentencepiece does."""
    from tokenizers import Tokenizer

    data = _train(dummy_prefix=False)
    original = spm.SentencePieceProcessor(model_proto=data)
    pieces = spm_tokenizer.read_sentencepiece_model(data)
    ours = Tokenizer.from_str(json.dumps(spm_tokenizer.tokenizer_json(pieces, unk="<unk>", add_bos=None, add_eos=None,
                                                                      dummy_prefix=False)))
    for text in _texts():
        assert ours.encode(text).ids == original.encode(text), text[:40]
        assert ours.decode(original.encode(text)) == text


def test_merges_follow_the_joined_pieces_scores():
    """The hand-checked case: "ab" (score -1) merges before "bc" (score -2); "abc" splits both ways, ranked after."""
    pieces = [("<unk>", 0.0, spm_tokenizer.UNKNOWN), ("a", -5.0, 1), ("b", -5.0, 1), ("c", -5.0, 1),
              ("ab", -1.0, 1), ("bc", -2.0, 1), ("abc", -3.0, 1), ("<s>", 0.0, spm_tokenizer.CONTROL)]
    assert spm_tokenizer.merges_of(pieces) == [["a", "b"], ["b", "c"], ["a", "bc"], ["ab", "c"]]


def test_a_tokenizer_model_localq_cannot_write_is_refused_by_name():
    from localq.quantize.hf_tokenizer import UnsupportedTokenizer, tokenizer_files

    with pytest.raises(UnsupportedTokenizer) as err:
        tokenizer_files({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["[CLS]", "a"]})
    assert "GGUF tokenizer model 'bert'" in str(err.value)
    assert "BPE (gpt2) and SentencePiece (llama)" in err.value.one_line()
