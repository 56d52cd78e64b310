"""Development probe: batch-1 INT4 matrix-vector variants and tilings per Llama-3-8B shape (CUDA).

Run: PYTHONPATH=. python benchmarks/gemv_variants.py

Each variant runs on 32 distinct weight copies per shape (more than the L2
holds) inside one CUDA graph; prints effective GB/s (packed int4 + scales)
per tiling, the best of each variant, and tinygemm beside them.
"""

from __future__ import annotations

import statistics

import torch
import triton
import triton.language as tl

from localq.backends.torch_int4 import int4
from localq.backends.torch_int4 import triton_kernels as tk

ASM_H2 = tl.constexpr("""
{
.reg .b32 s0, s1, s2, t0, t1, t2, t3, a, xs, c;
.reg .b16 lo, hi;
.reg .f32 fl, fh;
mov.b32 c, 0x64086408;
shr.u32 s0, $2, 4;
shr.u32 s1, $2, 8;
shr.u32 s2, $2, 12;
lop3.b32 t0, $2, 0x000F000F, 0x64006400, 0xEA;
lop3.b32 t1, s0, 0x000F000F, 0x64006400, 0xEA;
lop3.b32 t2, s1, 0x000F000F, 0x64006400, 0xEA;
lop3.b32 t3, s2, 0x000F000F, 0x64006400, 0xEA;
sub.f16x2 t0, t0, c;
sub.f16x2 t1, t1, c;
sub.f16x2 t2, t2, c;
sub.f16x2 t3, t3, c;
mul.f16x2 a, t0, $3;
fma.rn.f16x2 a, t1, $4, a;
fma.rn.f16x2 a, t2, $5, a;
fma.rn.f16x2 a, t3, $6, a;
add.f16x2 xs, $3, $4;
add.f16x2 xs, xs, $5;
add.f16x2 xs, xs, $6;
mov.b32 {lo, hi}, a;
cvt.f32.f16 fl, lo;
cvt.f32.f16 fh, hi;
add.f32 $0, fl, fh;
mov.b32 {lo, hi}, xs;
cvt.f32.f16 fl, lo;
cvt.f32.f16 fh, hi;
add.f32 $1, fl, fh;
}
""")


@triton.jit
def gemv_h2(x_ptr, w_ptr, sz_ptr, out_ptr, N, K, n_groups, G: tl.constexpr, BLOCK_N: tl.constexpr,
            GPI: tl.constexpr):
    W: tl.constexpr = G // 8
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    r3 = rows[:, None, None]
    gi = tl.arange(0, GPI)[None, :, None]
    jj = tl.arange(0, W)[None, None, :]
    w_ptrs = w_ptr + r3 * (K // 8) + gi * W + jj
    s_ptrs = sz_ptr + r3 * n_groups + gi
    x_ptrs = x_ptr + gi * (G // 2) + jj
    acc = tl.zeros([BLOCK_N, GPI, W], dtype=tl.float32)
    for _ in range(0, n_groups, GPI):
        words = tl.load(w_ptrs)
        sz = tl.load(s_ptrs)
        x0 = tl.load(x_ptrs)
        x1 = tl.load(x_ptrs + W)
        x2 = tl.load(x_ptrs + 2 * W)
        x3 = tl.load(x_ptrs + 3 * W)
        t, xs = tl.inline_asm_elementwise(ASM_H2, "=f,=f,r,r,r,r,r", [words, x0, x1, x2, x3],
                                          dtype=(tl.float32, tl.float32), is_pure=True, pack=1)
        s = (sz << 16).to(tl.float32, bitcast=True)
        z = (sz & -65536).to(tl.float32, bitcast=True)
        acc += t * s + xs * z
        w_ptrs += GPI * W
        s_ptrs += GPI
        x_ptrs += GPI * (G // 2)
    y = tl.sum(tl.sum(acc, axis=2), axis=1)
    tl.store(out_ptr + rows, y.to(out_ptr.dtype.element_ty))


def pack_pairs(q: torch.Tensor, group: int) -> torch.Tensor:
    """Word j of a group: columns 2(nW+j) in nibble n, 2(nW+j)+1 in nibble n+4 (n = 0..3)."""
    n, k = q.shape
    w = group // 8
    g = q.to(torch.int64).reshape(n, k // group, 4, w, 2)     # [N, groups, n, j, pair]
    shifts = (4 * torch.arange(4, device=q.device)).view(1, 1, 4, 1)
    words = (g[..., 0] << shifts).sum(2) + (g[..., 1] << (shifts + 16)).sum(2)
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32).reshape(n, k // 8).contiguous()


def time_graph(fn, reps=20):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return statistics.median(ts)


CONFIGS = [(4, 4, 2), (8, 4, 4), (8, 2, 2), (16, 2, 4), (8, 8, 8), (16, 4, 4), (32, 4, 4), (16, 4, 8), (4, 8, 4)]


def main():
    dev = "cuda"
    copies = 16
    print(f"{'shape':<14}{'G':>4} {'variant':<10}{'best cfg':<14}{'us':>8}{'GB/s':>8}   all (cfg: GB/s)")
    for n, k in ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)):
        for g in (128, 64):
            q = torch.randint(0, 16, (n, k), dtype=torch.uint8, device=dev)
            s = (torch.rand(n, k // g, device=dev) * 0.01 + 0.001).to(torch.bfloat16)
            z = (torch.randn(n, k // g, device=dev) * 0.01).to(torch.bfloat16)
            x = torch.randn(k, device=dev).to(torch.bfloat16)
            ref = (int4.dequantize(q, s, z, g) @ x.float())
            sz = torch.stack([s, z], -1).contiguous()
            nbytes = n * k // 2 + sz.numel() * 2
            planes = [int4.pack_planes(q, g) for _ in range(1)] * 1
            wp = [planes[0].clone() for _ in range(copies)]
            wh = [pack_pairs(q, g) for _ in range(1)]
            wh = [wh[0].clone() for _ in range(copies)]
            szs = [sz.clone() for _ in range(copies)]
            x16 = x.to(torch.float16).view(torch.int32)
            out = torch.empty(n, device=dev, dtype=torch.bfloat16)
            results = {}
            y = tk.int4_gemv(x, wp[0], szs[0], g, config=tk.first_config(n, k, g))
            e_a = float((y.float() - ref).norm() / ref.norm())
            gemv_h2[(n // 8,)](x16, wh[0], szs[0].view(torch.int32), out, n, k, k // g, G=g, BLOCK_N=8, GPI=1)
            e_h = float((out.float() - ref).norm() / ref.norm())
            for variant in ("fp32", "h2"):
                res = {}
                for bn, gpi, nw in CONFIGS:
                    if n % bn or (k // g) % gpi:
                        continue
                    if variant == "fp32":
                        def run(bn=bn, gpi=gpi, nw=nw):
                            for i in range(copies):
                                tk.int4_gemv(x, wp[i], szs[i], g, config=(bn, gpi, nw))  # noqa: B023
                    else:
                        def run(bn=bn, gpi=gpi, nw=nw):
                            for i in range(copies):
                                gemv_h2[(n // bn,)](x16, wh[i], szs[i].view(torch.int32), out, n, k, k // g, G=g,  # noqa: B023
                                                    BLOCK_N=bn, GPI=gpi, num_warps=nw)
                    try:
                        t = time_graph(run) / copies
                    except Exception as exc:  # a tiling that does not compile  # noqa: BLE001
                        print("   fail", variant, (bn, gpi, nw), type(exc).__name__, str(exc)[:200])
                        continue
                    res[(bn, gpi, nw)] = t
                best = min(res, key=res.get)
                results[variant] = res[best]
                allc = " ".join(f"{c[0]}/{c[1]}/{c[2]}:{nbytes / t / 1e9:.0f}" for c, t in res.items())
                print(f"{n}x{k:<6}{g:>4} {variant:<10}{best!s:<14}{res[best] * 1e6:>8.1f}"
                      f"{nbytes / res[best] / 1e9:>8.0f}   {allc}")
            tg = [int4.pack_tinygemm_cuda(q, dev)] * 1
            tg = [tg[0].clone() for _ in range(copies)]
            tsz = int4.scales_and_zeros(s, z).to(dev)
            xb = x[None]

            def run_tg():
                for i in range(copies):
                    torch.ops.aten._weight_int4pack_mm(xb, tg[i], g, tsz)  # noqa: B023
            t = time_graph(run_tg) / copies
            print(f"{n}x{k:<6}{g:>4} {'tinygemm':<10}{'':<14}{t * 1e6:>8.1f}{nbytes / t / 1e9:>8.0f}"
                  f"   errors: fp32 {e_a:.1e} h2 {e_h:.1e}")


if __name__ == "__main__":
    main()
