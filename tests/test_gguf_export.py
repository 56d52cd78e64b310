"""GGUF -> Hugging Face directory, checked against llama.cpp on the real SmolLM2.

The HF directory the converter writes (the ``smollm2_hf_dir`` fixture) is run
by transformers' ``LlamaForCausalLM`` and by llama.cpp on the original Q4_1
GGUF, on the same tokens: their next-token distributions must agree. They
cannot agree to float precision: llama.cpp computes Q4_1 matrix products with
its activations rounded to 8 bits (Q8_1), while torch multiplies the
dequantized float32 weights. So the test asserts the agreement one expects
from that (top-1 >= 90 %, mean KL < 0.02), and that a conversion without the
rotary un-permutation is far outside it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from localq.cli import cli
from localq.errors import LocalqError
from localq.quantize import archs
from localq.quantize.gguf_export import gguf_to_hf
from localq.quantize.safetensors_io import read_header


def sample_text() -> str:
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return "\n\n".join(topics[k] for k in sorted(topics))[:4000]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def mean_kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    p, q = log_softmax(p_logits.astype(np.float64)), log_softmax(q_logits.astype(np.float64))
    return float((np.exp(p) * (p - q)).sum(-1).mean())


@pytest.fixture(scope="module")
def llama(smollm2_gguf):
    pytest.importorskip("llama_cpp")
    from llama_logits import LlamaLogits

    model = LlamaLogits(smollm2_gguf, n_ctx=512)
    yield model
    model.close()


def test_config_and_tokenizer_config_carry_the_gguf_metadata(smollm2_hf_dir, smollm2_gguf):
    import gguf

    config = json.loads((smollm2_hf_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["num_key_value_heads"], config["intermediate_size"], config["vocab_size"]) == (576, 30, 9, 3, 1536, 49152)
    assert config["tie_word_embeddings"] is True      # SmolLM2's GGUF has no output.weight
    assert config["rope_theta"] == 100000.0 and config["rms_norm_eps"] == 1e-05
    reader = gguf.GGUFReader(smollm2_gguf)
    tok_config = json.loads((smollm2_hf_dir / "tokenizer_config.json").read_text())
    assert tok_config["chat_template"] == reader.fields["tokenizer.chat_template"].contents()
    assert (tok_config["bos_token"], tok_config["eos_token"]) == ("<|im_start|>", "<|im_end|>")
    tensors = {t.name: t for t in read_header(smollm2_hf_dir / "model.safetensors")}
    assert len(tensors) == 272 and "lm_head.weight" not in tensors
    assert tensors["model.layers.0.self_attn.k_proj.weight"].shape == (192, 576)
    assert {t.dtype for t in tensors.values()} == {"F32"}


def test_tokenizer_json_tokenizes_as_llama_cpp_does(smollm2_hf_dir, llama):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(smollm2_hf_dir / "tokenizer.json"))
    text = sample_text() + "\nIt's 2024-01-31: 12345 apples, naïve café, 東京 <|im_start|>user\n  x  =  [1,2]\n"
    assert tok.encode(text).ids == llama.tokenize(text)


def test_logits_agree_with_llama_cpp_on_the_original_gguf(smollm2_hf_dir, llama):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokens = [1] + llama.tokenize(sample_text())[:255]
    reference = llama.logits(tokens)

    model = transformers.LlamaForCausalLM.from_pretrained(smollm2_hf_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        ours = model(torch.tensor([tokens])).logits[0].numpy()
    top1 = float((ours.argmax(-1) == reference.argmax(-1)).mean())
    kl = mean_kl(reference, ours)
    assert top1 >= 0.90, top1
    assert kl < 0.02, kl

    # Without the rotary un-permutation the same weights give another model.
    state = model.state_dict()
    with torch.no_grad():
        for i in range(model.config.num_hidden_layers):
            for proj, heads in (("q_proj", 9), ("k_proj", 3)):
                w = state[f"model.layers.{i}.self_attn.{proj}.weight"]
                w.copy_(torch.from_numpy(archs.rotary_to_gguf(w.numpy(), heads)))
        wrong = model(torch.tensor([tokens])).logits[0].numpy()
    assert mean_kl(reference, wrong) > 10 * kl


def test_rotary_permutation_round_trips():
    rng = np.random.default_rng(0)
    for shape, heads in (((192, 576), 3), ((576, 576), 9), ((128,), 2)):
        w = rng.standard_normal(shape).astype(np.float32)
        there = archs.rotary_to_gguf(w, heads)
        assert not np.array_equal(there, w)
        assert np.array_equal(archs.rotary_from_gguf(there, heads), w)
    # head 0's first-half row j and second-half row j + d/2 become neighbours 2j, 2j + 1
    w = np.arange(8, dtype=np.float32)[:, None]
    assert archs.rotary_to_gguf(w, 1)[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_cli_writes_bfloat16_and_warns_about_requantizing(smollm2_gguf, smollm2_hf_dir, tmp_path):
    out = tmp_path / "bf16"
    result = CliRunner().invoke(cli, ["convert", str(smollm2_gguf), "--to", "safetensors", "-o", str(out),
                                      "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    assert "Q4_1" in result.stderr and "second" in result.stderr
    ours = {t.name: t for t in read_header(out / "model.safetensors")}
    exact = {t.name: t for t in read_header(smollm2_hf_dir / "model.safetensors")}
    name = "model.layers.3.self_attn.q_proj.weight"
    assert ours[name].dtype == "BF16"
    widened, f32 = ours[name].as_float32(), exact[name].as_float32()
    assert np.allclose(widened, f32, rtol=2 ** -8, atol=0)   # bfloat16 keeps 8 significant bits
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_unsupported_architecture_is_refused_by_name_and_writes_nothing(tmp_path, capsys):
    import gguf

    path = tmp_path / "mamba.gguf"
    writer = gguf.GGUFWriter(str(path), "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    out = tmp_path / "out"
    with pytest.raises(LocalqError) as err:
        gguf_to_hf(path, out)
    print(err.value.one_line())
    assert "'mamba'" in str(err.value) and "llama" in str(err.value)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["mamba.gguf"]


def test_output_directory_that_is_not_empty_is_refused(smollm2_gguf, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["convert", str(smollm2_gguf), "--to", "safetensors", "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert "not empty" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
