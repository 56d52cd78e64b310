"""The torch INT4 backend on CPU with the real SmolLM2 (GGUF -> safetensors -> localq INT4).

References are computed in the same run: transformers' LlamaForCausalLM on the
same weights, the unquantized model, round-to-nearest beside AWQ, the model
quantized in memory beside the saved checkpoint.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from localq.backends.base import GenerationParams, LoadOptions, TextDelta  # noqa: E402  (after the skips)
from localq.errors import LocalqError  # noqa: E402

# Held-out text for perplexity (the calibration text is localq/assets/calibration.txt).
EVAL_TEXT = (
    "The history of mathematics is long. Ancient scribes in Mesopotamia kept records of grain on clay "
    "tablets, and their tables of reciprocals let them divide with ease. Greek geometers later asked not "
    "only how to compute but why a result must be true, and so the idea of proof was born. Centuries "
    "afterwards, scholars in Baghdad wrote books on algebra that travelled to Europe, where printing "
    "spread them widely. Today students learn these ideas in a few years of school, though it took "
    "humanity thousands of years to find them. A library keeps old books safe, and a good teacher "
    "explains them with patience, one small step after another."
)
CPU = LoadOptions(n_ctx=512, n_gpu_layers=0)


def eval_ids(model_dir: Path) -> list[int]:
    from localq.backends.torch_int4.tokenizer import ModelTokenizer

    return ModelTokenizer(model_dir).encode(EVAL_TEXT)


def logits_of(model, ids: list[int]) -> torch.Tensor:
    model.setup_cache(len(ids))
    with torch.inference_mode():
        return model(torch.tensor([ids]), torch.arange(len(ids)))[0].float()


@pytest.fixture(scope="session")
def permuted_hf_dir(smollm2_hf_dir: Path, tmp_path_factory) -> Path:
    """SmolLM2 with its channels reordered: the same model, off the g32 grid of its Q4_1 origin (permuted_model.py)."""
    from permuted_model import permuted_copy

    return permuted_copy(smollm2_hf_dir, tmp_path_factory.mktemp("smollm2-permuted") / "SmolLM2-135M-Instruct")


@pytest.fixture(scope="session")
def int4_checkpoints(permuted_hf_dir: Path, tmp_path_factory) -> dict[tuple[int, bool], Path]:
    """The permuted SmolLM2 by round-to-nearest and by AWQ at g32, g64 and g128.

    The source is the permuted copy: on the converted one, whose weights sit on
    Q4_1's grid, RTN at g32 reproduces the source up to the bf16 rounding of its
    scales and there is nothing to compare (permuted_model.py says why). 128
    does not divide SmolLM2's 576-wide rows: the g128 checkpoints quantize at
    g128 the projections it divides (the down projections, 1536 wide) and the
    others at g64, and say so in their metadata.
    """
    from localq.quantize.int4 import quantize_model_dir

    root = tmp_path_factory.mktemp("int4")
    return {(g, awq): quantize_model_dir(permuted_hf_dir, root / f"g{g}-{'awq' if awq else 'rtn'}", f"int4-g{g}",
                                         awq=awq, fallback_group=64 if g == 128 else None)
            for g in (32, 64, 128) for awq in (False, True)}


def test_logits_match_transformers(smollm2_hf_dir: Path):
    transformers = pytest.importorskip("transformers")
    from localq.backends.torch_int4.model import load_hf

    ids = eval_ids(smollm2_hf_dir)[:48]
    ours = logits_of(load_hf(smollm2_hf_dir, "cpu", torch.float32), ids)
    ref = transformers.LlamaForCausalLM.from_pretrained(smollm2_hf_dir, torch_dtype=torch.float32).eval()
    with torch.inference_mode():
        theirs = ref(torch.tensor([ids])).logits[0].float()
    assert float((ours - theirs).norm() / theirs.norm()) < 1e-4
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_awq_beats_rtn_at_every_group_size(permuted_hf_dir: Path, int4_checkpoints):
    """localq's evaluation (perplexity, KL, top-1 against the bf16 source): AWQ loses less perplexity than RTN
    at g32, g64 and g128 (down projections at g128, the rest at g64); each stays close to the source."""
    from localq.backends.torch_int4 import checkpoint
    from localq.evaluate import evaluate_many

    keys = sorted(int4_checkpoints)
    results = dict(zip(keys, evaluate_many([int4_checkpoints[k] for k in keys], against=permuted_hf_dir,
                                           ctx=256, chunks=2)))
    ppl0 = results[keys[0]].source_perplexity
    print(f"\nSmolLM2-135M (permuted) in localq INT4, against bf16 (perplexity {ppl0:.3f}), "
          f"{results[keys[0]].tokens_scored} tokens scored")
    for (g, awq), r in sorted(results.items()):
        label = "g128/g64" if g == 128 else f"g{g}"
        print(f"  {label:8s} {'AWQ' if awq else 'RTN'}: perplexity {r.perplexity:.3f} ({r.ppl_increase:+.2%}), "
              f"KL {r.kl_divergence:.4f}, top-1 {r.top1_agreement:.1%}")
    for g in (32, 64, 128):
        rtn, awq = results[g, False], results[g, True]
        assert awq.perplexity - ppl0 < rtn.perplexity - ppl0, f"g{g}"      # AWQ loses less perplexity than RTN
        assert rtn.ppl_increase < 1.0 and rtn.top1_agreement > 0.6           # and both stay close to the source
    # (Top-1 agreement and KL are printed, not asserted.)
    assert results[32, False].perplexity <= results[64, False].perplexity * 1.01   # smaller groups, less loss
    meta = checkpoint.read_meta(int4_checkpoints[128, True])
    assert meta["group_size"] == 128 and meta["version"] == checkpoint.MIXED_VERSION
    assert set(meta["group_sizes"].values()) == {64} and len(meta["group_sizes"]) == 3 * 30
    assert not any(name.endswith("feed_forward.w2") for name in meta["group_sizes"])     # 1536 wide: g128


def test_awq_keeps_the_function_and_searches_each_group(permuted_hf_dir: Path):
    """Without clipping, AWQ's scales change no output (each folds into the layer before); every one of
    a block's four groups gets an alpha; with clipping, some weights move, within their group's range."""
    import copy

    from localq.backends.torch_int4.model import load_hf
    from localq.quantize.awq import ALPHAS, apply_awq
    from localq.quantize.int4 import calibration_tokens

    model = load_hf(permuted_hf_dir, "cpu", torch.float32)
    model.layers = model.layers[:2]                # two blocks are enough to see each fold
    ids = eval_ids(permuted_hf_dir)[:48]
    before = logits_of(model, ids)
    tokens = calibration_tokens(permuted_hf_dir, limit=64)
    scaled = copy.deepcopy(model)
    alphas = apply_awq(scaled, tokens, 64, clip=False)
    assert float((logits_of(scaled, ids) - before).norm() / before.norm()) < 1e-4
    assert set(alphas) == {f"layers.{i}.{p}" for i in range(2)
                           for p in ("attention.wqkv", "attention.wo", "feed_forward.w13", "feed_forward.w2")}
    assert set(alphas.values()) <= set(ALPHAS) and any(a > 0 for a in alphas.values())
    clipped = copy.deepcopy(model)
    apply_awq(clipped, tokens, 64)
    # The first group searched (layer 0's q and k rows: no later fold touches them) differs only by the clipping.
    qk = slice(0, model.layers[0].attention.q_size + model.layers[0].attention.kv_size)
    w0, w1 = (m.layers[0].attention.wqkv.weight[qk].reshape(-1, 64) for m in (scaled, clipped))
    assert not torch.equal(w0, w1)
    assert bool((w1.amax(-1) <= w0.amax(-1)).all() and (w1.amin(-1) >= w0.amin(-1)).all())


def test_fake_quantize_is_the_checkpoint_rounding():
    """The searches judge the numbers the checkpoint will hold: RTN's codes, scales and zeros, dequantized."""
    from localq.backends.torch_int4 import int4
    from localq.quantize.awq import fake_quantize

    w = torch.randn(300, 1536, generator=torch.Generator().manual_seed(0)) * 0.05
    for g in (32, 64, 128):
        assert torch.equal(fake_quantize(w, g), int4.dequantize(*int4.quantize_rtn(w, g), g))


def test_checkpoint_round_trip(permuted_hf_dir: Path, int4_checkpoints):
    """Loading the saved checkpoint gives the logits of the model quantized in memory."""
    from localq.backends.torch_int4 import checkpoint
    from localq.backends.torch_int4.linear import quantize_rtn_model
    from localq.backends.torch_int4.model import load_hf

    ids = eval_ids(permuted_hf_dir)[:32]
    fresh = load_hf(permuted_hf_dir, "cpu", torch.float32)
    quantize_rtn_model(fresh, 64, "tinygemm-cpu", "cpu")
    fresh = fresh.to(torch.bfloat16)
    loaded, meta = checkpoint.load(int4_checkpoints[64, False], "cpu", "tinygemm-cpu")
    assert meta["layout"] == "nibbles" and meta["torch_version"] == torch.__version__
    assert meta["source_sha256"] == checkpoint.source_sha256(permuted_hf_dir)
    assert torch.allclose(logits_of(loaded, ids), logits_of(fresh, ids), rtol=0, atol=1e-3)


@pytest.fixture(scope="module")
def int4_session(int4_checkpoints):
    from localq.backends.torch_int4 import TorchInt4Backend

    session = TorchInt4Backend().load(int4_checkpoints[64, True], CPU)
    yield session
    session.close()


def test_greedy_chat_through_session(int4_session, int4_checkpoints):
    """A greedy reply streams, ends with Done, and is the model's own argmax continuation."""
    from localq.backends.torch_int4 import checkpoint
    from localq.backends.torch_int4.generate import Decoder

    messages = [{"role": "user", "content": "Name three colours."}]
    params = GenerationParams(temperature=0, max_tokens=12)
    events = list(int4_session.stream(messages, params))
    done = events[-1]
    assert done.finish_reason in ("stop", "length") and done.completion_tokens > 0
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == done.text and done.text.strip()
    assert done.ttft_s and done.tokens_per_s > 0

    model, _ = checkpoint.load(int4_checkpoints[64, True], "cpu", "tinygemm-cpu")
    prompt = int4_session.encode_chat(messages)
    dec = Decoder(model, 512)
    logits, ref = dec.prefill(prompt), []
    for i in range(done.completion_tokens):
        ref.append(int(logits.argmax()))
        logits = dec.step(ref[-1], len(prompt) + i)
    assert int4_session.tokenizer.decode(ref) == done.text

    again = list(int4_session.stream(messages + [{"role": "assistant", "content": done.text},
                                                 {"role": "user", "content": "And three more?"}], params))[-1]
    assert again.cached_tokens > len(prompt) // 2       # the previous turn's cache was reused


def test_cancel_ends_reply(int4_session):
    params = GenerationParams(temperature=0.8, seed=1, max_tokens=200, ignore_eos=True)
    events = []
    for event in int4_session.stream([{"role": "user", "content": "Tell me a story."}], params):
        events.append(event)
        if len(events) == 3:
            threading.Thread(target=int4_session.cancel).start()
    assert events[-1].finish_reason == "cancelled" and events[-1].completion_tokens < 200


def test_registered_and_light():
    from localq.backends.registry import load_backends

    backend = load_backends()["torch_int4"]
    assert "int4" in backend.formats and backend.available()[0]


# --- bad input ----------------------------------------------------------------------------------


def test_no_cuda_is_a_clear_error(int4_checkpoints):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from localq.backends.torch_int4 import TorchInt4Backend

    with pytest.raises(LocalqError) as err:
        TorchInt4Backend().load(int4_checkpoints[32, False], LoadOptions(n_ctx=256))
    print(err.value.one_line())
    assert "NVIDIA GPU" in err.value.message and "llama.cpp" in err.value.hint


def test_group_that_does_not_divide_rows(smollm2_hf_dir: Path, tmp_path: Path):
    """SmolLM2's rows are 576 wide: int4-g128 is refused before anything is written."""
    from localq.quantize.int4 import quantize_model_dir

    with pytest.raises(LocalqError) as err:
        quantize_model_dir(smollm2_hf_dir, tmp_path / "out", "int4-g128")
    print(err.value.one_line())
    assert "does not divide the 576 columns" in err.value.message
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture(smollm2_hf_dir: Path, tmp_path: Path):
    from localq.backends.torch_int4.model import read_config

    d = tmp_path / "gpt2"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(LocalqError) as err:
        read_config(d)
    print(err.value.one_line())
    assert "GPT2LMHeadModel" in err.value.message and "llama.cpp" in err.value.hint


@pytest.mark.parametrize("change, words", [
    ({"layout": "tinygemm-cuda", "torch_version": "2.11.0+cu130"}, "packed as tinygemm-cuda by torch 2.11.0"),
    ({"layout": "marlin", "layout_version": 3}, "layout 'marlin' v3"),
    ({"version": 99}, "v99 checkpoint"),
])
def test_checkpoint_of_another_layout_is_refused(int4_checkpoints, tmp_path: Path, change, words):
    from localq.backends.torch_int4 import checkpoint

    copy = tmp_path / "ckpt"
    shutil.copytree(int4_checkpoints[64, False], copy)
    meta = json.loads((copy / checkpoint.META_FILE).read_text())
    (copy / checkpoint.META_FILE).write_text(json.dumps({**meta, **change}))
    with pytest.raises(LocalqError) as err:
        checkpoint.load(copy, "cpu", "tinygemm-cpu")
    print(err.value.one_line())
    assert words in err.value.message


def test_localq_quantize_int4_stores_a_checkpoint_that_loads_and_chats(smollm2_hf_dir, tmp_home):
    """`localq quantize DIR --to int4-g32` goes through the shared quantize command into the store;
    the stored variant loads in the torch INT4 backend and answers."""
    import json

    from click.testing import CliRunner

    from localq.backends.base import GenerationParams, LoadOptions
    from localq.backends.torch_int4 import TorchInt4Backend
    from localq.cli import cli
    from localq.store.db import open_index
    from localq.store.index import find

    made = CliRunner().invoke(cli, ["quantize", str(smollm2_hf_dir), "--to", "int4-g32", "--name", "smollm2-int4",
                                    "--json"])
    assert made.exit_code == 0, made.output
    [row] = json.loads(made.output)
    assert (row["target"], row["ref"]) == ("int4-g32", "smollm2-int4:int4-g32")
    [variant] = find(open_index(), "smollm2-int4:int4-g32")
    assert variant.format == "int4" and variant.provenance["parameters"]["to"] == "int4-g32"
    assert "localq-int4.json" in {f.relpath for f in variant.files}
    session = TorchInt4Backend().load(variant, LoadOptions(n_ctx=256, n_gpu_layers=0))   # CPU: eager
    try:
        done = session.complete("Hi", GenerationParams(temperature=0.0, max_tokens=4))
    finally:
        session.close()
    assert done.finish_reason in ("stop", "length") and done.completion_tokens >= 1
    measured = CliRunner().invoke(cli, ["eval", "smollm2-int4:int4-g32", "--against", str(smollm2_hf_dir),
                                        "--ctx", "128", "--chunks", "1", "--json"])
    assert measured.exit_code == 0, measured.output
    figures = json.loads(measured.output)
    print(f"\nlocalq eval of int4-g32 (torch backend): {figures['ppl_increase']:+.2%} perplexity, "
          f"KL {figures['kl_divergence']:.4f}, top-1 {figures['top1_agreement']:.1%}")
    assert figures["stored"] and figures["source_perplexity"] > 0 and 0 < figures["top1_agreement"] <= 1
    bad = CliRunner().invoke(cli, ["quantize", str(smollm2_hf_dir), "--to", "int4-g128", "--name", "smollm2-int4"])
    assert bad.exit_code == 1 and "divide" in bad.output, bad.output
    assert len(find(open_index(), "smollm2-int4")) == 1     # the refused g128 left nothing
