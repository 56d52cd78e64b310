"""``localq eval``: llama-perplexity's perplexity, KL and top-1 against a source, stored and shown.

The definition is checked twice: on hand-made logits whose answer is known in
closed form, and on a tiny text against a plain loop over llama.cpp's full
logits. Then the real quants of SmolLM2 must order as quantization predicts.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from localq.cli import cli
from localq.errors import LocalqError
from localq.evaluate import (
    chunk_kl_top1,
    chunk_nll,
    default_text,
    evaluate,
    plan_chunks,
)

TINY = ("The quick brown fox jumps over the lazy dog. " * 3
        + "Pack my box with five dozen liquor jugs. How vexingly quick daft zebras jump!")


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_nll_and_kl_on_hand_made_logits():
    # probabilities (1/4, 1/4, 1/2) and (1/3, 1/3, 1/3)
    logits = np.array([[0.0, 0.0, math.log(2)], [5.0, 5.0, 5.0]], dtype=np.float32)
    nll = chunk_nll(logits, np.array([2, 0]))
    assert nll == pytest.approx([math.log(2), math.log(3)], rel=1e-6)
    kl, same = chunk_kl_top1(logits, logits[::-1].copy())
    # KL((1/4,1/4,1/2) || uniform) = sum p log(3p)
    expected = 2 * 0.25 * math.log(0.75) + 0.5 * math.log(1.5)
    assert kl[0] == pytest.approx(expected, rel=1e-6) and same.tolist() == [False, False]
    assert plan_chunks(1000, 100, None) == 10 and plan_chunks(1000, 100, 3) == 3
    with pytest.raises(LocalqError, match="needs at least 200"):
        plan_chunks(199, 100, None)


def test_float32_log_sum_exp_matches_float64_log_softmax_at_a_real_vocabulary_size():
    from localq.evaluate import log_softmax, log_sum_exp

    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((16, 49152)) * 4 + 30).astype(np.float32)   # large values: exp needs the shift
    targets = rng.integers(0, 49152, 16)
    exact = -log_softmax(logits)[np.arange(16), targets]
    assert chunk_nll(logits, targets) == pytest.approx(exact, abs=1e-6)
    assert log_sum_exp(logits) == pytest.approx(np.log(np.exp(logits.astype(np.float64)).sum(axis=1)), rel=1e-9)


def test_tiny_text_perplexity_equals_a_hand_computation(smollm2_gguf):
    pytest.importorskip("llama_cpp")
    from llama_logits import LlamaLogits

    ctx = 16
    result = evaluate(smollm2_gguf, text=TINY, ctx=ctx, chunks=None, threads=2)
    llama = LlamaLogits(smollm2_gguf, n_ctx=ctx)
    try:
        tokens = llama.tokenize(TINY, add_special=True)   # SmolLM2 adds no BOS, so none is put in
        chunks = len(tokens) // ctx
        total, count = 0.0, 0
        for c in range(chunks):
            chunk = tokens[c * ctx:(c + 1) * ctx]
            logits = llama.logits(chunk)
            for i in range(ctx // 2, ctx - 1):        # the second half scores token i+1 from position i
                row = [float(x) for x in logits[i]]
                top = max(row)
                log_z = top + math.log(sum(math.exp(x - top) for x in row))
                total += log_z - row[chunk[i + 1]]
                count += 1
    finally:
        llama.close()
    assert result.chunks == chunks >= 2
    assert result.tokens_scored == count == chunks * (ctx // 2 - 1)
    assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-3)


def test_default_text_is_the_sorted_pydoc_topics():
    from pydoc_data.topics import topics

    text = default_text()
    assert text.startswith(topics[min(topics)]) and text.endswith(topics[max(topics)])
    assert text.count("\n\n") >= len(topics) - 1
    assert "pydoc_data.topics.topics in sorted key order, joined by a blank line" in " ".join(run("eval", "--help").output.split())


@pytest.fixture(scope="module")
def quants(smollm2_f16_gguf, tmp_path_factory):
    from localq.quantize.gguf_quant import quantize_file

    out = tmp_path_factory.mktemp("quants")
    made = {"F16": smollm2_f16_gguf}
    for qtype in ("Q8_0", "Q4_K_M", "Q2_K"):
        made[qtype] = out / f"{qtype}.gguf"
        quantize_file(smollm2_f16_gguf, made[qtype], qtype, threads=2)
    return made


def test_quants_order_by_perplexity_and_top1(quants):
    results = {q: evaluate(path, against=quants["F16"], ctx=256, chunks=4, threads=2) for q, path in quants.items()}
    for q, r in results.items():
        print(q, f"PPL {r.perplexity:.4f} KL {r.kl_divergence:.5f} top-1 {r.top1_agreement:.3f}")
    f16, q8, q4, q2 = (results[q] for q in ("F16", "Q8_0", "Q4_K_M", "Q2_K"))
    assert f16.kl_divergence == pytest.approx(0, abs=1e-6) and f16.top1_agreement == 1.0
    assert f16.perplexity == pytest.approx(f16.source_perplexity, rel=1e-9)
    # Q8_0 is F16 to within noise; it may not be strictly above it
    assert f16.perplexity <= q8.perplexity * 1.002
    assert q8.perplexity <= q4.perplexity <= q2.perplexity
    assert f16.top1_agreement >= q8.top1_agreement >= q4.top1_agreement >= q2.top1_agreement
    assert q8.kl_divergence < q4.kl_divergence < q2.kl_divergence


def test_eval_stores_and_ls_show_recommend_use_it(tmp_home, quants):
    assert run("import", str(quants["Q2_K"]), "--name", "smollm2:135m").exit_code == 0
    result = run("eval", "smollm2:135m-q2_k", "--against", str(quants["F16"]), "--ctx", "128", "--chunks", "2",
                 "--json")
    assert result.exit_code == 0, result.output
    measured = json.loads(result.output)
    assert measured["stored"] is True and measured["tokens_scored"] == 2 * 63
    rows = {r["ref"]: r for r in json.loads(run("ls", "--json").output)}
    increase = measured["perplexity"] / measured["source_perplexity"] - 1
    assert rows["smollm2:135m-q2_k"]["quality"] == (
        f"{increase * 100:+.1f} % PPL, KL {measured['kl_divergence']:.3f}, {measured['top1_agreement'] * 100:.0f} % top-1")
    assert rows["smollm2:135m-q4_1"]["quality"] is None
    shown = run("show", "smollm2:135m-q2_k").output
    assert "% PPL" in shown and "pydoc_data.topics, ctx 128" in shown
    rec = json.loads(run("recommend", "smollm2:135m", "--json").output)
    plans = {p["quant"]: p for p in rec["plans"]}
    assert plans["q2_k"]["quality_source"] == "measured by localq eval"
    assert plans["q2_k"]["ppl_delta"] == pytest.approx(measured["perplexity"] - measured["source_perplexity"])
    assert all(p["quality_source"] != "measured by localq eval" for q, p in plans.items() if q != "q2_k")
    human = " ".join(run("recommend", "smollm2:135m").output.split())
    assert "Q2_K: measured on this model" in human          # the one quant localq measured
    assert "(none measured on" not in human


def test_text_too_short_is_one_line(tmp_home, smollm2_gguf, tmp_path):
    text = tmp_path / "short.txt"
    text.write_text("too short")
    result = run("eval", "smollm2:135m", "--text", str(text), "--ctx", "64")
    print(result.output)
    assert result.exit_code == 1
    assert "needs at least 128" in result.output and "--text" in result.output


def test_recorded_logits_of_a_gguf_survive_the_next_chunk(smollm2_gguf):
    """llama.cpp's scorer answers with its own output buffer; the recording of a source
    (evaluate_many) must keep a copy, or the next chunk would overwrite it."""
    from localq.evaluate import LlamaScorer, RecordedScorer

    recorded = RecordedScorer(LlamaScorer(smollm2_gguf, 64, 2))
    try:
        tokens = recorded.tokenize("The quick brown fox jumps over the lazy dog. " * 20)
        a, b = tokens[:64], tokens[64:128]
        first = recorded.chunk_logits(a, 32)
        kept = first.copy()
        recorded.chunk_logits(b, 32)        # another chunk through the same llama.cpp buffer
        assert np.array_equal(recorded.chunk_logits(a, 32), kept)
        assert not np.array_equal(kept, recorded.chunk_logits(b, 32))
    finally:
        recorded.close()


def test_an_odd_context_is_one_line(tmp_home, smollm2_gguf):
    result = run("eval", "smollm2:135m", "--ctx", "65")
    print(result.output)
    assert result.exit_code == 1
    assert "--ctx 65 is too small or odd" in result.output and "use an even context" in result.output


def test_models_of_two_engines_are_not_compared_in_one_run(smollm2_gguf, tmp_path):
    from localq.evaluate import evaluate_many

    mlx_dir = tmp_path / "an-mlx-directory"
    mlx_dir.mkdir()
    with pytest.raises(LocalqError, match=r"different engines \(llamacpp, mlx\)") as caught:
        evaluate_many([smollm2_gguf, mlx_dir], against=smollm2_gguf)
    assert "one engine at a time" in caught.value.hint


@pytest.mark.parametrize("change", [{"extra_tokens": 8}, {"swap": ("Ġthe", "Ġof")}], ids=["more-tokens", "other-ids"])
def test_a_source_of_another_vocabulary_is_one_line(tmp_home, smollm2_hf_dir, tmp_path, change):
    from random_llama import random_llama

    other = random_llama(smollm2_hf_dir, tmp_path / "other-vocab", hidden=64, layers=2, heads=4, kv_heads=2,
                         intermediate=128, **change)
    made = run("convert", str(other), "--to", "gguf-f16", "-o", str(tmp_path / "other.gguf"))
    assert made.exit_code == 0, made.output
    result = run("eval", "smollm2:135m", "--against", str(tmp_path / "other.gguf"), "--chunks", "1", "--ctx", "64")
    print(result.output)
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line == ("error: other.gguf has another vocabulary than smollm2:135m-q4_1 "
                    "(compare a quant with the model it was made from)")


def test_eval_against_an_hf_directory_compares_with_its_exact_values(tmp_home, smollm2_hf_dir, smollm2_f16_gguf, tmp_path):
    from localq.paths import get_paths
    from localq.quantize import gguf_convert

    exact = tmp_path / "exact.gguf"   # the checkpoint's own type (F32 here): what --against HF_DIR must compare with
    gguf_convert.convert(smollm2_hf_dir, exact, gguf_convert.lossless(gguf_convert.plan(smollm2_hf_dir)).out_type.lower())
    args = ("--ctx", "64", "--chunks", "2", "--threads", "2", "--json")
    against_dir = json.loads(run("eval", str(smollm2_f16_gguf), "--against", str(smollm2_hf_dir), *args).output)
    against_exact = json.loads(run("eval", str(smollm2_f16_gguf), "--against", str(exact), *args).output)
    assert against_dir["source_perplexity"] == pytest.approx(against_exact["source_perplexity"], rel=1e-9)
    assert against_dir["kl_divergence"] == pytest.approx(against_exact["kl_divergence"], rel=1e-6, abs=1e-12)
    assert against_dir["kl_divergence"] > 0    # the F16 model is not its own reference: F16 rounds the F32 values
    work = get_paths().data / "work"   # the conversion made for the comparison is gone
    assert not work.exists() or not any(work.iterdir())
