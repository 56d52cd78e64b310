"""Batch-1 decode speed of the torch INT4 backend on an NVIDIA GPU, with every reference in the same run.

Run (on a machine with a CUDA GPU of compute capability 8.0+, no network):

    PYTHONPATH=. python benchmarks/bench_torch_int4_gpu.py [--layers 32] [--tokens 256]

It builds a Llama-3.1-8B-shaped model (32 layers, dim 4096, ffn 14336, 32
heads, 8 KV heads, vocab 128256) with random weights directly on the GPU
(speed does not depend on the values) and prints, in one run:

1. correctness: localq's Triton kernels and torch's tinygemm on CUDA against
   the CPU reference (float64 products of the dequantized weights, and torch's
   CPU INT4 kernel), then a small random model's logits on CUDA against the
   same model on CPU;
2. the measured HBM read bandwidth (a large sum), the reference for "share";
3. the 128 projections of the stack alone, per kernel, as a CUDA graph;
4. full decode: bf16, INT4 g128 and g64 with tinygemm and with localq's
   Triton kernel: tokens/s (greedy, CUDA graph, no host sync per token),
   effective GB/s (weights + KV cache read per token / time), share of the
   measured read bandwidth, ratio to bf16, time to first token for a
   512-token prompt, and peak GPU memory.

Targets (issue 14): INT4 g128 >= 330 tokens/s and >= 2.0x bf16, aiming at 500.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from localq.backends.torch_int4 import int4
from localq.backends.torch_int4.generate import Decoder
from localq.backends.torch_int4.linear import Linear, int4_linears, set_decode_dtypes
from localq.backends.torch_int4.model import ModelConfig, Transformer

GB = 1e9


def llama31_8b(layers: int) -> ModelConfig:
    return ModelConfig(dim=4096, n_layers=layers, n_heads=32, n_kv_heads=8, head_dim=128, ffn_dim=14336,
                       vocab_size=128256, norm_eps=1e-5, rope_theta=500000.0,
                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                       max_position=131072)


def random_model(cfg: ModelConfig, device, dtype=torch.bfloat16, seed=0) -> Transformer:
    """The model with random weights made in place on ``device``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.device("meta"):
        model = Transformer(cfg)
    for name, p in list(model.named_parameters()):
        *path, attr = name.split(".")
        owner = model
        for part in path:
            owner = getattr(owner, part)
        if "norm" in name:
            t = torch.ones(p.shape, dtype=dtype, device=device)
        else:
            t = (torch.randn(p.shape, generator=gen, dtype=torch.float32, device=device) * 0.02).to(dtype)
        setattr(owner, attr, torch.nn.Parameter(t, requires_grad=False))
    return model.eval()


def int4_copy(src: Transformer, codes: dict, group: int, layout: str, device) -> Transformer:
    """A model sharing ``src``'s embeddings and norms, with INT4 projections from ``codes``."""
    with torch.device("meta"):
        model = Transformer(src.cfg)
    src_params = dict(src.named_parameters())
    lins = int4_linears(model)
    for name, lin in lins.items():
        q, s, z = codes[name]
        lin.set_int4(q, s, z, group, layout, device)
    for name, p in list(model.named_parameters()):
        *path, attr = name.split(".")
        owner = model
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, attr, src_params[name])
    set_decode_dtypes(model)
    return model.eval()


def model_bytes(model: Transformer) -> int:
    """Bytes a decode step reads for weights: projections (packed + scales) + head + norms."""
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, Linear):
            for t in (m.weight, m.bias, getattr(m, "packed", None), getattr(m, "sz", None)):
                if t is not None:
                    total += t.numel() * t.element_size()
        elif name.endswith("norm"):
            total += m.weight.numel() * m.weight.element_size()
    return total


def kv_bytes(cfg: ModelConfig, max_seq: int) -> int:
    return 2 * cfg.n_layers * cfg.n_kv_heads * max_seq * cfg.head_dim * 2


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm())


# --- 1. correctness --------------------------------------------------------------------------------


def correctness(device) -> bool:
    from localq.backends.torch_int4 import triton_kernels as tk

    print("== correctness: CUDA kernels against the CPU reference (relative error; bf16 outputs ~ 4e-3)")
    ok = True
    gen = torch.Generator().manual_seed(1)
    for n, k in ((256, 576), (1024, 4096), (4096, 14336)):
        for g in int4.GROUP_SIZES:
            if k % g:
                continue
            w = torch.randn(n, k, generator=gen) * 0.02
            q, s, z = int4.quantize_rtn(w, g)
            deq = int4.dequantize(q, s, z, g).double()
            x = torch.randn(k, generator=gen).to(torch.bfloat16)
            res = torch.randn(n, generator=gen).to(torch.bfloat16)
            bias = torch.randn(n, generator=gen).to(torch.bfloat16)
            ref = deq @ x.double()
            words = int4.pack_pairs(q.to(device), g)
            sz = torch.stack([s, z], -1).contiguous().to(device)
            xd = x.to(device)
            cf = tk.first_config(n, k, g)
            errs = {
                "cpu tinygemm": rel(torch.ops.aten._weight_int4pack_mm_for_cpu(
                    x[None], int4.pack_tinygemm_cpu(q), g, int4.scales_and_zeros(s, z))[0], ref),
                "triton gemv": rel(tk.int4_gemv(xd, words, sz, g, config=cf), ref),
                "+bias+residual": rel(tk.int4_gemv(xd, words, sz, g, bias=bias.to(device), residual=res.to(device),
                                                    config=cf),
                                      ref + bias.double() + res.double()),
                "silu_mul": rel(tk.int4_gemv(xd, words, sz, g, act=tk.ACT_SILU_MUL, config=cf),
                                torch.nn.functional.silu(ref[0::2]) * ref[1::2]),
                "triton dequant": rel(tk.int4_dequant(words, sz, g), deq),
                "cuda tinygemm": rel(torch.ops.aten._weight_int4pack_mm(
                    xd[None], int4.pack_tinygemm_cuda(q, device), g, int4.scales_and_zeros(s, z).to(device))[0], ref),
            }
            bad = [name for name, e in errs.items() if not e < 1e-2]
            ok &= not bad
            print(f"  {n:5d}x{k:<5d} g{g:<3d} " + "  ".join(f"{name} {e:.1e}" for name, e in errs.items())
                  + ("  FAIL: " + ", ".join(bad) if bad else "  ok"))
    # A whole small model: CUDA (Triton, pairs) against CPU (torch's CPU INT4 kernel), same codes.
    cfg = ModelConfig(dim=256, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=64, ffn_dim=512, vocab_size=1000,
                      qkv_bias=True)
    cpu = random_model(cfg, "cpu", seed=3)
    codes = {name: int4.quantize_rtn(lin.weight.data, 64) for name, lin in int4_linears(cpu).items()}
    gpu_model = int4_copy(random_model(cfg, "cpu", seed=3).to(device), codes, 64, "pairs", device)
    cpu_model = int4_copy(cpu, codes, 64, "tinygemm-cpu", "cpu")
    tokens = torch.randint(0, 1000, (40,), generator=gen).tolist()
    a, b = Decoder(cpu_model, 64), Decoder(gpu_model, 64)
    la, lb = [a.prefill(tokens[:30])], [b.prefill(tokens[:30])]
    for i, t in enumerate(tokens[30:]):
        la.append(a.step(t, 30 + i).clone())
        lb.append(b.step(t, 30 + i).clone())
    la, lb = torch.stack(la).cpu(), torch.stack(lb).cpu()
    agree = float((la.argmax(-1) == lb.argmax(-1)).float().mean())
    err = rel(lb, la)
    good = err < 2e-2 and agree >= 0.9
    ok &= good
    print(f"  small model, prefill + 10 graph-decoded steps: logits rel err {err:.1e}, top-1 agreement "
          f"{agree:.0%}  {'ok' if good else 'FAIL'}")
    return ok


# --- 2. bandwidth ---------------------------------------------------------------------------------------


def time_graph(fn, reps: int = 20) -> float:
    """Median seconds of one replay of ``fn`` captured as a CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def read_bandwidth(device) -> float:
    buf = torch.randn(2**30, device=device)           # 4 GiB of float32
    out = torch.empty((), device=device)
    best = 0.0
    for op in (lambda: torch.sum(buf, dim=0, out=out), lambda: torch.amax(buf, dim=0, out=out)):
        best = max(best, buf.numel() * 4 / time_graph(op, 10))
    return best


# --- 3. projections alone -----------------------------------------------------------------------------


def projections(model: Transformer, device) -> tuple[float, int]:
    """(seconds, bytes) for all the stack's projections at batch 1, plain products, one graph."""
    lins = list(int4_linears(model).values())
    def dtype(lin):  # the Triton kernel reads fp16, as the model's decode step gives it
        return torch.float16 if lin.layout == "pairs" else torch.bfloat16
    xs = {(lin.in_features, dtype(lin)): torch.randn(1, lin.in_features, device=device, dtype=dtype(lin))
          for lin in lins}

    def run():
        for lin in lins:
            lin(xs[lin.in_features, dtype(lin)])
    nbytes = sum(sum(t.numel() * t.element_size() for t in (lin.weight, getattr(lin, "packed", None),
                                                              getattr(lin, "sz", None)) if t is not None)
                 for lin in lins)
    return time_graph(run), nbytes


# --- 4. decode ----------------------------------------------------------------------------------------------


def decode(model: Transformer, tokens: int, prompt_len: int, device) -> dict:
    max_seq = 1024
    dec = Decoder(model, max_seq)
    prompt = torch.randint(0, model.cfg.vocab_size, (prompt_len,)).tolist()
    ttfts = []
    for _ in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        first = int(dec.prefill(prompt).argmax())
        ttfts.append(time.perf_counter() - t0)
    dec.greedy_loop(first, prompt_len, 8)            # captures the graph
    rates = []
    for _ in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        dec.greedy_loop(first, prompt_len, tokens)
        torch.cuda.synchronize()
        rates.append(tokens / (time.perf_counter() - t0))
    per_token = model_bytes(model) + kv_bytes(model.cfg, max_seq)
    rate = statistics.median(rates)
    return {"tok_s": rate, "gbs": per_token * rate / GB, "ttft": min(ttfts[1:]), "bytes": per_token}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--skip-correctness", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    print(f"torch {torch.__version__}, {props.name}, compute capability {props.major}.{props.minor}, "
          f"{props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB")
    int4.check_ops("cuda")
    ok = True if args.skip_correctness else correctness(device)

    bw = read_bandwidth(device)
    torch.cuda.empty_cache()
    print(f"== HBM read bandwidth (largest of a sum and a max over 4 GiB): {bw / GB:,.0f} GB/s")

    cfg = llama31_8b(args.layers)
    torch.manual_seed(0)
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    src = random_model(cfg, device)
    rows, proj = [], []
    t, nb = projections(src, device)
    proj.append(("bf16 F.linear", t, nb))
    r = decode(src, args.tokens, args.prompt, device)
    r.update(name="bf16", peak=torch.cuda.max_memory_allocated() - base)
    rows.append(r)
    print(f"  bf16 done: {r['tok_s']:.0f} tok/s")
    for g in (128, 64):
        codes = {name: int4.quantize_rtn(lin.weight.data, g) for name, lin in int4_linears(src).items()}
        for layout, label in (("tinygemm-cuda", "tinygemm"), ("pairs", "localq triton")):
            torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            model = int4_copy(src, codes, g, layout, device)
            t, nb = projections(model, device)
            proj.append((f"{label} g{g}", t, nb))
            r = decode(model, args.tokens, args.prompt, device)
            shared = sum(p.numel() * p.element_size() for p in model.parameters())  # embeddings, head, norms
            r.update(name=f"INT4 g{g} {label}",
                     peak=torch.cuda.max_memory_allocated() - before + shared)
            rows.append(r)
            print(f"  {r['name']} done: {r['tok_s']:.0f} tok/s")
            del model
        del codes

    print(f"\n== the {len(int4_linears(src))} projections alone, batch 1, one CUDA graph (plain products)")
    print(f"{'kernel':<22}{'ms/token':>10}{'GB/s':>9}{'share':>8}")
    for name, t, nb in proj:
        print(f"{name:<22}{t * 1e3:>10.3f}{nb / t / GB:>9,.0f}{nb / t / bw:>8.0%}")

    bf16 = rows[0]["tok_s"]
    print(f"\n== decode, batch 1, {args.layers}-layer Llama-3.1-8B shape, greedy, CUDA graph, "
          f"{args.tokens} tokens after a {args.prompt}-token prompt")
    print(f"{'variant':<26}{'tok/s':>8}{'x bf16':>8}{'GB/s':>8}{'share':>7}{'GB/tok':>8}{'TTFT ms':>9}{'peak GiB':>10}")
    for r in rows:
        print(f"{r['name']:<26}{r['tok_s']:>8.0f}{r['tok_s'] / bf16:>8.2f}{r['gbs']:>8,.0f}{r['gbs'] * GB / bw:>7.0%}"
              f"{r['bytes'] / GB:>8.2f}{r['ttft'] * 1e3:>9.1f}{r['peak'] / 2**30:>10.1f}")
    best = max((r for r in rows if "g128" in r["name"]), key=lambda r: r["tok_s"])
    print(f"\nbest INT4 g128: {best['name']} {best['tok_s']:.0f} tok/s, {best['tok_s'] / bf16:.2f}x bf16 "
          f"(targets: >= 330 tok/s and >= 2.0x; aim 500); correctness {'ok' if ok else 'FAILED'}")


if __name__ == "__main__":
    main()
