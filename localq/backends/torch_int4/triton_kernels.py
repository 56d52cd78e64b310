"""localq's Triton INT4 kernels: the batch-1 matrix-vector product (decode) and a dequantizer (prefill).

Imported only on CUDA (Triton ships with torch's CUDA builds).

Why a kernel of our own: at batch 1 a decode step only streams weights, so
its speed is bytes over bandwidth; tinygemm reads packed INT4 at little more
than a third of an H200's HBM speed. Measured there, a first version doing
the unpacking in fp32 (one shift, one mask and one FMA per weight) was
bound by integer instructions, at about 1.3 TB/s. This one does the
arithmetic two weights at a time in fp16x2, in a few lines of inline PTX:

- The ``pairs`` layout (``int4.pack_pairs``): nibbles ``n`` and ``n + 4`` of
  a word are two adjacent columns, so one ``lop3`` with mask 0x000F000F and
  the fp16 exponent 0x6400 turns them into the fp16 pair ``1024 + q`` (no
  conversion instruction), and one ``sub.f16x2`` into ``q - 8``, exactly.
  Eight weights cost 3 shifts and 4 ``lop3``, then 4 fp16x2 products with the
  matching pairs of x (x is fp16: the producers of the decode step write it
  so).
- Per group and thread the eight products are summed in fp16 (at most 8
  terms: error ~1e-3 relative), then converted once; the group's scale and
  zero apply in fp32 as ``s * sum((q-8)*x) + z * sum(x)``.
- Each thread loads 16 bytes of consecutive words; partial sums stay per
  thread across the whole row, reduced across threads once at the end.
- Epilogues fused where the model needs them: bias, the residual add, and
  ``silu(gate) * up`` on interleaved gate/up rows (the ffn's first product
  writes the ffn's activation directly).

Tiling: small programs win. Swept on the H200 (every BLOCK_N x GPI x
num_warps with 4 to 32 words per thread, 32 distinct matrices per CUDA graph
so nothing stays in L2), the best tilings at g128 are one or two warps over
two to eight rows: gate/up (28672 x 4096) 2.78 TB/s with (8, 4, 1), down
(4096 x 14336) 2.14 TB/s with (2, 16, 2), qkv (6144 x 4096) 1.67 TB/s and
o (4096 x 4096) 1.35 TB/s, the small ones bound by launch and ramp-up. The
candidates below are those winners (and their g64 equivalents, twice the
groups per iteration); the earlier list of four- to eight-warp tiles was
10 % slower per decode step. Measured too, and not kept (decode tok/s, the
same run, 431 with these tiles): prefetching the next product's weights into
L2 (``cp.async.bulk.prefetch``) during attention, 409; each program
bulk-prefetching its own rows first, 382; programmatic dependent launch of the
products (weights requested before the wait on the previous kernel), 427, and
of every kernel of the step, 425.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

ACT_NONE, ACT_SILU_MUL = 0, 1

# (BLOCK_N, GPI, num_warps) candidates, autotuned per shape on first use; the fallbacks only when none fits.
_CONFIGS = [(2, 8, 1), (2, 16, 2), (8, 4, 1), (2, 4, 1), (4, 16, 2), (4, 8, 1), (8, 8, 2), (2, 16, 1),
            (4, 16, 4), (8, 8, 1), (2, 32, 2), (4, 32, 2), (4, 16, 1), (8, 16, 2), (2, 32, 1), (8, 16, 1)]
_FALLBACKS = [(4, 2, 1), (8, 1, 1), (2, 1, 1)]

# Eight weights of one word times four fp16 pairs of x: (sum((q-8)*x), sum(x)) in fp32.
_DOT8 = tl.constexpr("""
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


def _fits(c, n, k, g):
    return n % c[0] == 0 and (k // g) % c[1] == 0


def _prune(configs, named_args, **kwargs):
    n, k, g = named_args["N"], named_args["K"], kwargs.get("G", named_args.get("G"))
    ok = [c for c in configs if _fits((c.kwargs["BLOCK_N"], c.kwargs["GPI"]), n, k, g) and c.kwargs["MAIN"]]
    return ok or [c for c in configs if _fits((c.kwargs["BLOCK_N"], c.kwargs["GPI"]), n, k, g)]


@triton.jit
def _int4_gemv(x_ptr, w_ptr, sz_ptr, bias_ptr, res_ptr, out_ptr, N, K, n_groups,
               G: tl.constexpr, ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
               BLOCK_N: tl.constexpr, GPI: tl.constexpr, MAIN: tl.constexpr = True):
    W: tl.constexpr = G // 8
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    r3 = rows[:, None, None]
    gi = tl.arange(0, GPI)[None, :, None]
    jj = tl.arange(0, W)[None, None, :]
    w_ptrs = w_ptr + r3 * (K // 8) + gi * W + jj          # [BLOCK_N, GPI, W] words
    s_ptrs = sz_ptr + r3 * n_groups + gi                   # [BLOCK_N, GPI, 1] (scale, zero) bf16 pairs as int32
    x_ptrs = x_ptr + gi * (G // 2) + jj                    # [1, GPI, W] fp16 pairs of x, as int32
    acc = tl.zeros([BLOCK_N, GPI, W], dtype=tl.float32)
    for _ in range(0, n_groups, GPI):
        words = tl.load(w_ptrs)
        sz = tl.load(s_ptrs)
        x0 = tl.load(x_ptrs)
        x1 = tl.load(x_ptrs + W)
        x2 = tl.load(x_ptrs + 2 * W)
        x3 = tl.load(x_ptrs + 3 * W)
        t, xs = tl.inline_asm_elementwise(_DOT8, "=f,=f,r,r,r,r,r", [words, x0, x1, x2, x3],
                                          dtype=(tl.float32, tl.float32), is_pure=True, pack=1)
        s = (sz << 16).to(tl.float32, bitcast=True)
        z = (sz & -65536).to(tl.float32, bitcast=True)
        acc += t * s + xs * z
        w_ptrs += GPI * W
        s_ptrs += GPI
        x_ptrs += GPI * (G // 2)
    y = tl.sum(tl.sum(acc, axis=2), axis=1)
    if HAS_BIAS:
        y += tl.load(bias_ptr + rows).to(tl.float32)
    if ACT == 1:
        gate, up = tl.split(tl.reshape(y, [BLOCK_N // 2, 2]))
        out_rows = pid * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)
        tl.store(out_ptr + out_rows, (gate / (1.0 + tl.exp(-gate)) * up).to(out_ptr.dtype.element_ty))
    else:
        if HAS_RES:
            y += tl.load(res_ptr + rows).to(tl.float32)
        tl.store(out_ptr + rows, y.to(out_ptr.dtype.element_ty))


_int4_gemv_tuned = triton.autotune(
    configs=[triton.Config({"BLOCK_N": bn, "GPI": gpi, "MAIN": main}, num_warps=nw)
             for cs, main in ((_CONFIGS, True), (_FALLBACKS, False)) for bn, gpi, nw in cs],
    key=["N", "K", "G", "ACT"], prune_configs_by={"early_config_prune": _prune},
)(_int4_gemv)


def first_config(n: int, k: int, group: int) -> tuple[int, int, int]:
    """The first candidate tiling that fits an [n, k] matrix (no tuning)."""
    return next(c for c in _CONFIGS + _FALLBACKS if _fits(c, n, k, group))


def int4_gemv(x: torch.Tensor, words: torch.Tensor, sz: torch.Tensor, group: int, *, bias=None,
              residual=None, act: int = ACT_NONE, config: tuple[int, int, int] | None = None) -> torch.Tensor:
    """y = x @ W.T (+ bias) (+ residual), or silu(gate) * up of it, for one fp16 row x [K].

    The result is ``residual``'s dtype when there is one, fp16 for the
    activation (the next product's input), else bf16.

    ``config`` (BLOCK_N, GPI, num_warps) fixes the tiling; None autotunes on
    CUDA (once per shape) and takes the first fitting candidate elsewhere
    (Triton's CPU interpreter, for tests).
    """
    n, k = words.shape[0], words.shape[1] * 8
    dtype = residual.dtype if residual is not None else torch.float16 if act == ACT_SILU_MUL else torch.bfloat16
    out = torch.empty(n // 2 if act == ACT_SILU_MUL else n, dtype=dtype, device=x.device)
    sz = sz.view(torch.int32)                               # (scale, zero) bf16 pairs, one load each
    x = x.to(torch.float16).view(torch.int32)               # fp16 pairs
    args = (x, words, sz, bias if bias is not None else x, residual if residual is not None else x, out, n, k, k // group)
    flags = {"G": group, "ACT": act, "HAS_BIAS": bias is not None, "HAS_RES": residual is not None}
    if config is None and x.device.type == "cuda":
        _int4_gemv_tuned[lambda meta: (n // meta["BLOCK_N"],)](*args, **flags)
        return out
    if config is None:
        config = first_config(n, k, group)
    bn, gpi, nw = config
    _int4_gemv[(n // bn,)](*args, **flags, BLOCK_N=bn, GPI=gpi, num_warps=nw)
    return out


@triton.jit
def _int4_dequant(w_ptr, sz_ptr, out_ptr, K, G: tl.constexpr, BLOCK_N: tl.constexpr):
    W: tl.constexpr = G // 8
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)[:, None]
    g = tl.program_id(1)
    jj = tl.arange(0, W)[None, :]
    words = tl.load(w_ptr + rows * (K // 8) + g * W + jj)
    s = tl.load(sz_ptr + (rows * (K // G) + g) * 2).to(tl.float32)
    z = tl.load(sz_ptr + (rows * (K // G) + g) * 2 + 1).to(tl.float32)
    span = tl.arange(0, 2 * W)[None, :]
    for n in tl.static_range(4):             # nibble n: column 2(nW+j), nibble n+4: the next column
        lo = ((words >> (4 * n)) & 0xF).to(tl.float32)
        hi = ((words >> (4 * n + 16)) & 0xF).to(tl.float32)
        both = tl.reshape(tl.join((lo - 8.0) * s + z, (hi - 8.0) * s + z), [BLOCK_N, 2 * W])
        tl.store(out_ptr + rows * K + g * G + 2 * n * W + span, both.to(out_ptr.dtype.element_ty))


def int4_dequant(words: torch.Tensor, sz: torch.Tensor, group: int, dtype=torch.bfloat16) -> torch.Tensor:
    """The bf16 [N, K] weight of a pairs-layout matrix (for prefill, where a matrix product pays)."""
    n, k = words.shape[0], words.shape[1] * 8
    out = torch.empty(n, k, dtype=dtype, device=words.device)
    block = 16 if n % 16 == 0 else 1
    _int4_dequant[(n // block, k // group)](words, sz, out, k, G=group, BLOCK_N=block)
    return out
