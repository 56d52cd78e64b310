"""How long the hardware probe takes, against `python -c pass` measured in the same run.

Run: python benchmarks/bench_probe.py [--runs 7]

Target: after the first bandwidth measurement, a whole probe (the one the CLI
runs) takes under one second. The script uses a fresh LOCALQ_HOME, runs one
probe to measure and store the bandwidth (and reports how long that took), then
times, each as the best and median of --runs:

- the reference: a bare interpreter start, `python -c pass`;
- a probe in a new process: `python -c "from localq.machine import machine_profile; machine_profile()"`
  (the probe with the stored bandwidth, as the CLI and the app run it);
- `localq probe --json` in a new process;
- `machine_profile()` inside this process (no interpreter start).

and prints the probe's times as ratios to the reference, plus which heavy
libraries (numpy, torch, mlx, llama_cpp, pynvml, sqlite_utils) a stored-bandwidth
probe imports (it should import none of the GPU ones).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

PROBE = "from localq.machine import machine_profile; machine_profile()"
HEAVY = ("numpy", "torch", "mlx", "llama_cpp", "pynvml", "sqlite_utils", "amdsmi")


def timed(cmd: list[str], runs: int, env: dict) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "LOCALQ_HOME": home}
        os.environ["LOCALQ_HOME"] = home
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", PROBE], check=True, env=env)
        first = time.perf_counter() - start

        reference = timed([sys.executable, "-c", "pass"], args.runs, env)
        fresh = timed([sys.executable, "-c", PROBE], args.runs, env)
        cli = timed([sys.executable, "-m", "localq.cli", "probe", "--json"], args.runs, env)

        from localq.machine import machine_profile

        in_process = []
        for _ in range(args.runs):
            t = time.perf_counter()
            profile = machine_profile()
            in_process.append(time.perf_counter() - t)
        check = subprocess.run(
            [sys.executable, "-c", f"{PROBE}; import sys; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"],
            check=True, capture_output=True, text=True, env=env,
        ).stdout.strip()

    ref_best, ref_median = reference
    print(f"machine: {profile.cpu.model}, {profile.cpu.logical_cores} threads, "
          f"{len(profile.gpus)} GPU(s), bandwidth {profile.bandwidth_gbps} GB/s")
    print(f"first probe (measures bandwidth), new process: {first:.3f} s")
    print(f"{'':34} {'best':>8} {'median':>8} {'best / python -c pass':>22}")
    print(f"{'python -c pass (reference)':34} {ref_best:8.3f} {ref_median:8.3f} {1.0:22.2f}")
    for label, (best, median) in (("machine_profile(), new process", fresh), ("localq probe --json", cli)):
        print(f"{label:34} {best:8.3f} {median:8.3f} {best / ref_best:22.2f}")
    best, median = min(in_process), statistics.median(in_process)
    print(f"{'machine_profile(), in this process':34} {best:8.3f} {median:8.3f} {best / ref_best:22.2f}")
    print(f"heavy modules a stored-bandwidth probe imports: {check or 'none'}")
    verdict = "under" if cli[1] < 1.0 else "OVER"
    print(f"`localq probe --json` median {cli[1]:.3f} s: {verdict} the 1 s target")


if __name__ == "__main__":
    main()
