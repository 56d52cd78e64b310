"""Fused Triton kernels for one decode step's small operations (CUDA only).

At batch 1 the matrix-vector products are a few microseconds each, and in
eager torch every RMSNorm, rotary embedding, cache write and attention is a
dozen tiny kernels more: measured on an H200, those cost more than the INT4
products themselves. Here each is one kernel (attention two), so a layer is
eight launches inside the CUDA graph:

- ``rms_norm``: one program per row.
- ``rope_and_cache``: q, k rotated (after Qwen3's per-head RMSNorm when the
  model has one), q written out, k and v written into the static cache at the
  position read from a device tensor (so the graph replays at any position).
- ``decode_attention``: split-K flash decoding over positions ``0..pos``:
  each (KV head, split) program attends the query heads sharing that KV head
  with an online softmax; a second kernel combines the splits.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

SPLITS = 16


@triton.jit
def _rms_norm(x_ptr, w_ptr, out_ptr, D, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    d = tl.arange(0, BLOCK)
    m = d < D
    x = tl.load(x_ptr + row * D + d, mask=m, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + d, mask=m, other=0.0).to(tl.float32)
    r = tl.rsqrt(tl.sum(x * x, 0) / D + eps)
    tl.store(out_ptr + row * D + d, (x * r * w).to(out_ptr.dtype.element_ty), mask=m)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, out_dtype=None) -> torch.Tensor:
    d = x.shape[-1]
    out = torch.empty_like(x, dtype=out_dtype or x.dtype)
    _rms_norm[(x.numel() // d,)](x, weight, out, d, eps, BLOCK=triton.next_power_of_2(d))
    return out


@triton.jit
def _rope_and_cache(qkv_ptr, pos_ptr, cos_ptr, sin_ptr, q_ptr, kc_ptr, vc_ptr, qn_ptr, kn_ptr, eps, max_seq,
                    HQ: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, HAS_NORM: tl.constexpr):
    h = tl.program_id(0)
    half = tl.arange(0, D // 2)
    pos = tl.load(pos_ptr)
    is_q = h < HQ
    base = h * D                                   # q heads, then k heads, in the fused projection
    x1 = tl.load(qkv_ptr + base + half).to(tl.float32)
    x2 = tl.load(qkv_ptr + base + D // 2 + half).to(tl.float32)
    if HAS_NORM:
        r = tl.rsqrt((tl.sum(x1 * x1, 0) + tl.sum(x2 * x2, 0)) / D + eps)
        wp = tl.where(is_q, qn_ptr, kn_ptr)
        x1 = x1 * r * tl.load(wp + half).to(tl.float32)
        x2 = x2 * r * tl.load(wp + D // 2 + half).to(tl.float32)
        x1 = x1.to(qkv_ptr.dtype.element_ty).to(tl.float32)   # the model rounds after the norm
        x2 = x2.to(qkv_ptr.dtype.element_ty).to(tl.float32)
    c = tl.load(cos_ptr + pos * (D // 2) + half)
    s = tl.load(sin_ptr + pos * (D // 2) + half)
    o1 = x1 * c - x2 * s
    o2 = x2 * c + x1 * s
    if is_q:
        tl.store(q_ptr + h * D + half, o1.to(q_ptr.dtype.element_ty))
        tl.store(q_ptr + h * D + D // 2 + half, o2.to(q_ptr.dtype.element_ty))
    else:
        kh = h - HQ
        dst = kh * max_seq * D + pos * D
        tl.store(kc_ptr + dst + half, o1.to(kc_ptr.dtype.element_ty))
        tl.store(kc_ptr + dst + D // 2 + half, o2.to(kc_ptr.dtype.element_ty))
        full = tl.arange(0, D)
        v = tl.load(qkv_ptr + (HQ + HKV + kh) * D + full)
        tl.store(vc_ptr + dst + full, v.to(vc_ptr.dtype.element_ty))


def rope_and_cache(qkv, pos, cos, sin, k_cache, v_cache, n_heads, n_kv_heads, head_dim, q_norm=None, k_norm=None,
                   eps: float = 1e-6) -> torch.Tensor:
    """The rotated query [n_heads, head_dim]; k and v of this position written into the caches."""
    q = torch.empty(n_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    has_norm = q_norm is not None
    _rope_and_cache[(n_heads + n_kv_heads,)](
        qkv, pos, cos, sin, q, k_cache, v_cache, q_norm if has_norm else qkv, k_norm if has_norm else qkv,
        eps, k_cache.shape[2], HQ=n_heads, HKV=n_kv_heads, D=head_dim, HAS_NORM=has_norm)
    return q


@triton.jit
def _attn_split(q_ptr, kc_ptr, vc_ptr, pos_ptr, m_ptr, l_ptr, acc_ptr, scale, max_seq,
                GQ: tl.constexpr, GQP: tl.constexpr, D: tl.constexpr, S: tl.constexpr, BT: tl.constexpr):
    kvh = tl.program_id(0)
    sid = tl.program_id(1)
    n = tl.load(pos_ptr) + 1
    chunk = tl.cdiv(tl.cdiv(n, S), BT) * BT
    start = sid * chunk
    end = tl.minimum(start + chunk, n)
    r = tl.arange(0, GQP)
    d = tl.arange(0, D)
    q = tl.load(q_ptr + (kvh * GQ + r[:, None]) * D + d[None, :], mask=r[:, None] < GQ, other=0.0)
    m = tl.full([GQP], float("-inf"), tl.float32)
    denom = tl.zeros([GQP], tl.float32)
    acc = tl.zeros([GQP, D], tl.float32)
    base = kvh * max_seq * D
    for t0 in range(start, end, BT):
        t = t0 + tl.arange(0, BT)
        tm = t < end
        k = tl.load(kc_ptr + base + t[:, None] * D + d[None, :], mask=tm[:, None], other=0.0)
        v = tl.load(vc_ptr + base + t[:, None] * D + d[None, :], mask=tm[:, None], other=0.0)
        sc = tl.dot(q, tl.trans(k)) * scale
        sc = tl.where(tm[None, :], sc, float("-inf"))
        m_new = tl.maximum(m, tl.max(sc, 1))
        p = tl.exp(sc - m_new[:, None])
        alpha = tl.exp(m - m_new)
        denom = denom * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new
    o = (kvh * S + sid) * GQP + r
    tl.store(m_ptr + o, m)
    tl.store(l_ptr + o, denom)
    tl.store(acc_ptr + o[:, None] * D + d[None, :], acc)


@triton.jit
def _attn_combine(m_ptr, l_ptr, acc_ptr, out_ptr, GQ: tl.constexpr, GQP: tl.constexpr, D: tl.constexpr,
                  S: tl.constexpr):
    h = tl.program_id(0)
    kvh, r = h // GQ, h % GQ
    s = tl.arange(0, S)
    d = tl.arange(0, D)
    o = (kvh * S + s) * GQP + r
    m = tl.load(m_ptr + o)
    denom = tl.load(l_ptr + o)
    mg = tl.max(m, 0)
    w = tl.where(m > float("-inf"), tl.exp(m - mg), 0.0)
    acc = tl.load(acc_ptr + o[:, None] * D + d[None, :])
    out = tl.sum(w[:, None] * acc, 0) / tl.sum(w * denom, 0)
    tl.store(out_ptr + h * D + d, out.to(out_ptr.dtype.element_ty))


def decode_attention(q, k_cache, v_cache, pos, n_heads, n_kv_heads, head_dim, out_dtype=None) -> torch.Tensor:
    """Attention of one query position over cache positions 0..pos: [n_heads * head_dim]."""
    gq = n_heads // n_kv_heads
    gqp = max(16, triton.next_power_of_2(gq))          # tl.dot needs 16 rows
    dev = q.device
    m = torch.empty(n_kv_heads * SPLITS * gqp, dtype=torch.float32, device=dev)
    lsum = torch.empty_like(m)
    acc = torch.empty(n_kv_heads * SPLITS * gqp, head_dim, dtype=torch.float32, device=dev)
    _attn_split[(n_kv_heads, SPLITS)](q, k_cache, v_cache, pos, m, lsum, acc, head_dim ** -0.5, k_cache.shape[2],
                                      GQ=gq, GQP=gqp, D=head_dim, S=SPLITS, BT=64)
    out = torch.empty(n_heads * head_dim, dtype=out_dtype or q.dtype, device=dev)
    _attn_combine[(n_heads,)](m, lsum, acc, out, GQ=gq, GQP=gqp, D=head_dim, S=SPLITS)
    return out
