"""How long `localq --help` takes, against `python -c pass` measured in the same run.

Run: python benchmarks/bench_startup.py [--runs 15]

Target: `localq --help` under 0.3 s; nothing heavy (textual, numpy, gguf,
huggingface_hub, llama_cpp) may be imported at start. The script also lists
which of those a bare `import localq.cli` pulls in (it should be none).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("textual", "numpy", "gguf", "huggingface_hub", "llama_cpp", "rich", "sqlite_utils", "torch", "mlx")


def best_and_median(cmd: list[str], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    ref_best, ref_med = best_and_median([sys.executable, "-c", "pass"], args.runs)
    help_best, help_med = best_and_median([sys.executable, "-m", "localq.cli", "--help"], args.runs)
    heavy = subprocess.run(
        [sys.executable, "-c", f"import sys, localq.cli; print([m for m in {HEAVY!r} if m in sys.modules])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    print(f"python -c pass : best {ref_best * 1000:6.1f} ms  median {ref_med * 1000:6.1f} ms")
    print(f"localq --help  : best {help_best * 1000:6.1f} ms  median {help_med * 1000:6.1f} ms")
    print(f"ratio (median) : {help_med / ref_med:.2f}x python start-up; target: under 300 ms "
          f"({'met' if help_med < 0.3 else 'MISSED'})")
    print(f"heavy modules imported by `import localq.cli`: {heavy}")


if __name__ == "__main__":
    main()
