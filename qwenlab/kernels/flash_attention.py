"""FlashAttention-2 in Triton: forward, backward and a split-K decode path, with native GQA.

Attention is softmax(q k^T * scale) v. Computed naively it writes the (T, S) score matrix to
GPU memory and reads it back, and at long context that traffic, not the arithmetic, sets the
speed. FlashAttention never materialises it: each program holds one block of queries in fast
on-chip memory and streams over blocks of keys and values, keeping for every query row
- m, the running maximum of its scores (for a numerically safe exp),
- l, the running sum of exp(score - m),
- acc, the running sum of exp(score - m) * v,
and rescales l and acc by exp(m_old - m_new) whenever the maximum grows (the *online softmax*).
The output is acc / l; m + log(l) (the logsumexp) is saved so the backward pass can rebuild
each probability exactly, tile by tile, instead of storing them.

What this kernel adds to the textbook one (Triton's fused-attention tutorial):
- native grouped-query attention: query head h reads KV head h // group, so K and V are never
  repeated in memory (Qwen2.5-7B: 28 query heads share 4 KV heads);
- any sequence length (tails are masked), causal attention aligned to the *end* of the keys
  (a chunk of T queries after a cached prefix: query t sees keys <= S - T + t), or none;
- fp16, bf16 and fp32 inputs, accumulated in fp32;
- a decode kernel: one new token (its G query heads folded into a (G, D) block) against the KV
  cache, the sequence split over several programs (split-K) whose partial results are merged
  with their logsumexps, so a single sequence still fills the GPU.

Conventions: scores are kept in base 2 (``qk_scale = scale * log2(e)``, then ``exp2``), which is
how the exponential runs on the hardware; the saved logsumexp is in base 2 as well. Inputs are
read through their strides, so views (a KV cache slice, a transposed projection) need no copy.

Importing this module imports triton. Set ``TRITON_INTERPRET=1`` *before* that to run the
kernels on CPU tensors in Triton's interpreter (slow, but you can print and step through them).
Triton under the interpreter computes ``tl.dot`` on bf16 wrongly, so there every operand is cast
to fp32 before ``tl.dot`` (the ``UPCAST`` flag); on a GPU the tensor cores take fp16/bf16 as is.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634  # log2(e): exp(x) == exp2(x * LOG2E)
HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# --------------------------------------------------------------------------- building blocks
@triton.jit
def _dot(a, b, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """a @ b with an fp32 result; UPCAST casts the operands to fp32 first (interpreter)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _online_softmax_update(acc, m_i, l_i, s, v, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """Fold one tile into the running state. s (M, N): scaled scores in base 2, masked entries
    already set to -1e30; v (N, D). Returns (acc, m, l) after the tile."""
    m_new = tl.maximum(m_i, tl.max(s, 1))       # the running max can only grow
    alpha = tl.exp2(m_i - m_new)                # rescales what was summed under the old max
    p = tl.exp2(s - m_new[:, None])             # (M, N) unnormalised probabilities
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, UPCAST, PRECISION)
    return acc, m_new, l_i


# --------------------------------------------------------------------------- forward
@triton.jit
def _attn_fwd(Q, K, V, Out, LSE,
              stride_qb, stride_qh, stride_qt, stride_qd,
              stride_kb, stride_kh, stride_ks, stride_kd,
              stride_vb, stride_vh, stride_vs, stride_vd,
              stride_ob, stride_oh, stride_ot, stride_od,
              H, T, S, qk_scale,
              GROUP: tl.constexpr, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """One program: BLOCK_M queries of one (batch, head), streamed over all visible keys."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    h_kv = h // GROUP                            # GQA: the KV head this query head reads
    offset = S - T                               # causal: query t sees keys <= t + offset

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt \
        + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=offs_m[:, None] < T, other=0.0)           # (BLOCK_M, D)
    k_base = K + b * stride_kb + h_kv * stride_kh
    v_base = V + b * stride_vb + h_kv * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # Key blocks [0, full_end) are visible to every row of this block and hold no tail: no
    # mask. Blocks [full_end, end) cross the causal diagonal or the end of the keys: masked.
    # Blocks past `end` are invisible to all rows and are skipped (half the work when causal).
    full_end = (S // BLOCK_N) * BLOCK_N
    end = S
    if CAUSAL:
        last_seen_by_first_row = pid_m * BLOCK_M + offset
        full_end = tl.minimum(full_end, ((last_seen_by_first_row + 1) // BLOCK_N) * BLOCK_N)
        end = tl.minimum(S, (pid_m + 1) * BLOCK_M + offset)

    for start_n in range(0, full_end, BLOCK_N):
        cols = start_n + offs_n
        k = tl.load(k_base + cols[:, None] * stride_ks + offs_d[None, :] * stride_kd)
        v = tl.load(v_base + cols[:, None] * stride_vs + offs_d[None, :] * stride_vd)
        s = _dot(q, tl.trans(k), UPCAST, PRECISION) * qk_scale        # (BLOCK_M, BLOCK_N)
        acc, m_i, l_i = _online_softmax_update(acc, m_i, l_i, s, v, UPCAST, PRECISION)

    for start_n in range(full_end, end, BLOCK_N):
        cols = start_n + offs_n
        in_range = cols < S
        k = tl.load(k_base + cols[:, None] * stride_ks + offs_d[None, :] * stride_kd,
                    mask=in_range[:, None], other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vs + offs_d[None, :] * stride_vd,
                    mask=in_range[:, None], other=0.0)
        s = _dot(q, tl.trans(k), UPCAST, PRECISION) * qk_scale
        visible = in_range[None, :]
        if CAUSAL:
            visible = visible & (cols[None, :] <= offs_m[:, None] + offset)
        s = tl.where(visible, s, -1.0e30)
        acc, m_i, l_i = _online_softmax_update(acc, m_i, l_i, s, v, UPCAST, PRECISION)

    out = acc / l_i[:, None]
    o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot \
        + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=offs_m[:, None] < T)
    tl.store(LSE + pid_bh * T + offs_m, m_i + tl.log2(l_i), mask=offs_m < T)  # base-2 lse


# --------------------------------------------------------------------------- backward
# With P = softmax(S) rebuilt from the saved logsumexp as exp2(s - lse), the gradients are
#   dV = P^T dO,   dP = dO V^T,   dS = P * (dP - delta)  with delta = rowsum(dO * O),
#   dQ = scale * dS K,   dK = scale * dS^T Q.
# Two kernels, no atomics: one program per key block accumulates dK, dV over every query
# head of its KV group (that sum is GQA's backward), one program per query block builds dQ.
@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, DK, DV, LSE, DELTA,
                   stride_qb, stride_qh, stride_qt, stride_qd,
                   stride_kb, stride_kh, stride_ks, stride_kd,
                   stride_vb, stride_vh, stride_vs, stride_vd,
                   stride_dob, stride_doh, stride_dot, stride_dod,
                   stride_dkb, stride_dkh, stride_dks, stride_dkd,
                   H, H_KV, T, S, qk_scale, scale,
                   GROUP: tl.constexpr, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H_KV
    h_kv = pid_bh % H_KV
    offset = S - T

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    n_in = offs_n < S
    k = tl.load(K + b * stride_kb + h_kv * stride_kh + offs_n[:, None] * stride_ks
                + offs_d[None, :] * stride_kd, mask=n_in[:, None], other=0.0)   # (BLOCK_N, D)
    v = tl.load(V + b * stride_vb + h_kv * stride_vh + offs_n[:, None] * stride_vs
                + offs_d[None, :] * stride_vd, mask=n_in[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    start_m = 0
    if CAUSAL:  # queries before pid_n * BLOCK_N - offset see none of these keys
        start_m = (tl.maximum(pid_n * BLOCK_N - offset, 0) // BLOCK_M) * BLOCK_M
    for g in range(0, GROUP):
        h = h_kv * GROUP + g
        q_base = Q + b * stride_qb + h * stride_qh
        do_base = DO + b * stride_dob + h * stride_doh
        row_base = (b * H + h) * T
        for start in range(start_m, T, BLOCK_M):
            offs_m = start + offs_m0
            m_in = offs_m < T
            q = tl.load(q_base + offs_m[:, None] * stride_qt + offs_d[None, :] * stride_qd,
                        mask=m_in[:, None], other=0.0)                  # (BLOCK_M, D)
            do = tl.load(do_base + offs_m[:, None] * stride_dot + offs_d[None, :] * stride_dod,
                         mask=m_in[:, None], other=0.0)
            lse = tl.load(LSE + row_base + offs_m, mask=m_in, other=0.0)
            delta = tl.load(DELTA + row_base + offs_m, mask=m_in, other=0.0)
            s = _dot(q, tl.trans(k), UPCAST, PRECISION) * qk_scale        # (BLOCK_M, BLOCK_N)
            visible = m_in[:, None] & n_in[None, :]
            if CAUSAL:
                visible = visible & (offs_n[None, :] <= offs_m[:, None] + offset)
            p = tl.where(visible, tl.exp2(s - lse[:, None]), 0.0)
            dv += _dot(tl.trans(p.to(do.dtype)), do, UPCAST, PRECISION)
            dp = _dot(do, tl.trans(v), UPCAST, PRECISION)
            ds = p * (dp - delta[:, None])
            dk += _dot(tl.trans(ds.to(q.dtype)), q, UPCAST, PRECISION)

    dk_ptrs = offs_n[:, None] * stride_dks + offs_d[None, :] * stride_dkd \
        + b * stride_dkb + h_kv * stride_dkh
    tl.store(DK + dk_ptrs, (dk * scale).to(DK.dtype.element_ty), mask=n_in[:, None])
    tl.store(DV + dk_ptrs, dv.to(DV.dtype.element_ty), mask=n_in[:, None])  # same layout


@triton.jit
def _attn_bwd_dq(Q, K, V, DO, DQ, LSE, DELTA,
                 stride_qb, stride_qh, stride_qt, stride_qd,
                 stride_kb, stride_kh, stride_ks, stride_kd,
                 stride_vb, stride_vh, stride_vs, stride_vd,
                 stride_dob, stride_doh, stride_dot, stride_dod,
                 stride_dqb, stride_dqh, stride_dqt, stride_dqd,
                 H, T, S, qk_scale, scale,
                 GROUP: tl.constexpr, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    h_kv = h // GROUP
    offset = S - T

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    m_in = offs_m < T
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt
                + offs_d[None, :] * stride_qd, mask=m_in[:, None], other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot
                 + offs_d[None, :] * stride_dod, mask=m_in[:, None], other=0.0)
    lse = tl.load(LSE + pid_bh * T + offs_m, mask=m_in, other=0.0)
    delta = tl.load(DELTA + pid_bh * T + offs_m, mask=m_in, other=0.0)
    k_base = K + b * stride_kb + h_kv * stride_kh
    v_base = V + b * stride_vb + h_kv * stride_vh
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    end = S
    if CAUSAL:
        end = tl.minimum(S, (pid_m + 1) * BLOCK_M + offset)
    for start_n in range(0, end, BLOCK_N):
        offs_n = start_n + offs_n0
        n_in = offs_n < S
        k = tl.load(k_base + offs_n[:, None] * stride_ks + offs_d[None, :] * stride_kd,
                    mask=n_in[:, None], other=0.0)
        v = tl.load(v_base + offs_n[:, None] * stride_vs + offs_d[None, :] * stride_vd,
                    mask=n_in[:, None], other=0.0)
        s = _dot(q, tl.trans(k), UPCAST, PRECISION) * qk_scale
        visible = m_in[:, None] & n_in[None, :]
        if CAUSAL:
            visible = visible & (offs_n[None, :] <= offs_m[:, None] + offset)
        p = tl.where(visible, tl.exp2(s - lse[:, None]), 0.0)
        dp = _dot(do, tl.trans(v), UPCAST, PRECISION)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, UPCAST, PRECISION)

    tl.store(DQ + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqt
             + offs_d[None, :] * stride_dqd, (dq * scale).to(DQ.dtype.element_ty),
             mask=m_in[:, None])


# --------------------------------------------------------------------------- decode
@triton.jit
def _attn_decode_split(Q, K, V, KEY_MASK, O_PART, LSE_PART,
                       stride_qb, stride_qh, stride_qg, stride_qd,
                       stride_kb, stride_kh, stride_ks, stride_kd,
                       stride_vb, stride_vh, stride_vs, stride_vd,
                       stride_mb, stride_ms,
                       H_KV, G, S, chunk, qk_scale,
                       HAS_MASK: tl.constexpr, HEAD_DIM: tl.constexpr,
                       BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
                       UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """One program: the G query heads of one (batch, KV head) over keys [split * chunk, +chunk).
    Writes the split's normalised output and its base-2 logsumexp, per query head."""
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    num_splits = tl.num_programs(1)
    b = pid_bh // H_KV
    h_kv = pid_bh % H_KV

    offs_g = tl.arange(0, BLOCK_G)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b * stride_qb + h_kv * stride_qh + offs_g[:, None] * stride_qg
                + offs_d[None, :] * stride_qd, mask=offs_g[:, None] < G, other=0.0)
    k_base = K + b * stride_kb + h_kv * stride_kh
    v_base = V + b * stride_vb + h_kv * stride_vh

    m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, HEAD_DIM], dtype=tl.float32)
    start = split * chunk
    stop = tl.minimum(start + chunk, S)
    for start_n in range(start, stop, BLOCK_N):
        offs_n = start_n + offs_n0
        n_in = offs_n < stop
        k = tl.load(k_base + offs_n[:, None] * stride_ks + offs_d[None, :] * stride_kd,
                    mask=n_in[:, None], other=0.0)
        v = tl.load(v_base + offs_n[:, None] * stride_vs + offs_d[None, :] * stride_vd,
                    mask=n_in[:, None], other=0.0)
        s = _dot(q, tl.trans(k), UPCAST, PRECISION) * qk_scale        # (BLOCK_G, BLOCK_N)
        visible = n_in
        if HAS_MASK:  # left padding: pad keys are invisible
            keep = tl.load(KEY_MASK + b * stride_mb + offs_n * stride_ms, mask=n_in, other=0)
            visible = visible & (keep != 0)
        s = tl.where(visible[None, :], s, -1.0e30)
        acc, m_i, l_i = _online_softmax_update(acc, m_i, l_i, s, v, UPCAST, PRECISION)

    row = (pid_bh * num_splits + split) * BLOCK_G + offs_g
    tl.store(O_PART + row[:, None] * HEAD_DIM + offs_d[None, :], acc / l_i[:, None])
    tl.store(LSE_PART + row, m_i + tl.log2(l_i))


@triton.jit
def _attn_decode_combine(O_PART, LSE_PART, Out,
                         stride_ob, stride_oh, stride_og, stride_od,
                         H_KV, G, num_splits,
                         HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr):
    """Merge the splits: the same online-softmax rule, with each split's logsumexp as its
    score and its normalised output as its value."""
    pid_bh = tl.program_id(0)
    b = pid_bh // H_KV
    h_kv = pid_bh % H_KV
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, HEAD_DIM)
    m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, HEAD_DIM], dtype=tl.float32)
    for split in range(0, num_splits):
        row = (pid_bh * num_splits + split) * BLOCK_G + offs_g
        lse = tl.load(LSE_PART + row)
        part = tl.load(O_PART + row[:, None] * HEAD_DIM + offs_d[None, :])
        m_new = tl.maximum(m_i, lse)
        alpha = tl.exp2(m_i - m_new)
        weight = tl.exp2(lse - m_new)
        acc = acc * alpha[:, None] + part * weight[:, None]
        l_i = l_i * alpha + weight
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(Out + b * stride_ob + h_kv * stride_oh + offs_g[:, None] * stride_og
             + offs_d[None, :] * stride_od, out.to(Out.dtype.element_ty),
             mask=offs_g[:, None] < G)


# --------------------------------------------------------------------------- launchers
# Kernels decorated while TRITON_INTERPRET=1 run in the interpreter (on CPU tensors).
INTERPRETED = not isinstance(_attn_fwd, triton.runtime.JITFunction)


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs: full fp32 products (tf32 would round them to ~3 decimal digits)
    return "ieee" if dtype == torch.float32 else "tf32"


def _fwd_config(head_dim: int, dtype: torch.dtype) -> dict:
    """Tile sizes and launch settings of the forward kernel for this machine."""
    if INTERPRETED:  # every program runs one after the other in Python: small tiles
        return dict(BLOCK_M=16, BLOCK_N=16, num_warps=1, num_stages=1)
    if dtype == torch.float32:  # twice the bytes per tile: keep shared memory in budget
        return dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2)
    if head_dim <= 64:
        return dict(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=3)
    return dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3)


def _bwd_config(head_dim: int, dtype: torch.dtype) -> dict:
    if INTERPRETED:
        return dict(BLOCK_M=16, BLOCK_N=16, num_warps=1, num_stages=1)
    if dtype == torch.float32:
        return dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=1)
    if head_dim <= 64:
        return dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2)
    return dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2)


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True
                 ) -> str | None:
    """Why these tensors cannot go to the kernel, or None when they can."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        return "q, k and v must be 4-dimensional (batch, heads, tokens, head_dim)"
    B, H, T, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != D:
        return (f"k {tuple(k.shape)} and v {tuple(v.shape)} must be (batch, kv_heads, keys, "
                f"head_dim) with q's batch and head_dim (q is {tuple(q.shape)})")
    if H % k.shape[1]:
        return f"{H} query heads cannot share {k.shape[1]} KV heads evenly"
    if D not in HEAD_DIMS:
        return f"head_dim {D} is not one the kernel is built for ({HEAD_DIMS})"
    if q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        return (f"q, k and v must share one dtype of fp16, bf16 or fp32 "
                f"(got {q.dtype}, {k.dtype}, {v.dtype})")
    if causal and T > k.shape[2]:
        return (f"causal attention with {T} queries over {k.shape[2]} keys: the queries are "
                "the last T of the keys, so T must not exceed S")
    if not (q.device == k.device == v.device):
        return "q, k and v must be on the same device"
    return None


def _validate(q, k, v, causal=True) -> None:
    problem = check_inputs(q, k, v, causal)
    if problem:
        raise ValueError(problem)


def _default_scale(scale: float | None, head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


def attention_forward(q, k, v, causal: bool = True, scale: float | None = None,
                      block_m: int | None = None, block_n: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward kernel: (out (B, H, T, D) in q's dtype, base-2 logsumexp (B, H, T) fp32)."""
    _validate(q, k, v, causal)
    B, H, T, D = q.shape
    S = k.shape[2]
    scale = _default_scale(scale, D)
    cfg = _fwd_config(D, q.dtype)
    cfg["BLOCK_M"] = block_m or cfg["BLOCK_M"]
    cfg["BLOCK_N"] = block_n or cfg["BLOCK_N"]
    out = torch.empty(B, H, T, D, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, H, T, dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(T, cfg["BLOCK_M"]), B * H)
    _attn_fwd[grid](q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
                    H, T, S, scale * LOG2E,
                    GROUP=H // k.shape[1], CAUSAL=causal, HEAD_DIM=D,
                    UPCAST=INTERPRETED, PRECISION=_precision(q.dtype), **cfg)
    return out, lse


def attention_backward(do, q, k, v, out, lse, causal: bool = True, scale: float | None = None,
                       block_m: int | None = None, block_n: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv from dout and what the forward saved (out and its base-2 logsumexp)."""
    B, H, T, D = q.shape
    H_kv, S = k.shape[1], k.shape[2]
    scale = _default_scale(scale, D)
    cfg = _bwd_config(D, q.dtype)
    cfg["BLOCK_M"] = block_m or cfg["BLOCK_M"]
    cfg["BLOCK_N"] = block_n or cfg["BLOCK_N"]
    # delta_i = sum_d dO_id O_id = sum_j P_ij dP_ij, the softmax backward's row term
    delta = (do.float() * out.float()).sum(-1).contiguous()           # (B, H, T)
    dq = torch.empty(B, H, T, D, dtype=q.dtype, device=q.device)
    dk = torch.empty(B, H_kv, S, D, dtype=k.dtype, device=k.device)
    dv = torch.empty(B, H_kv, S, D, dtype=v.dtype, device=v.device)
    flags = dict(GROUP=H // H_kv, CAUSAL=causal, HEAD_DIM=D, UPCAST=INTERPRETED,
                 PRECISION=_precision(q.dtype), **cfg)
    _attn_bwd_dkdv[(triton.cdiv(S, cfg["BLOCK_N"]), B * H_kv)](
        q, k, v, do, dk, dv, lse, delta,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(),
        H, H_kv, T, S, scale * LOG2E, scale, **flags)
    _attn_bwd_dq[(triton.cdiv(T, cfg["BLOCK_M"]), B * H)](
        q, k, v, do, dq, lse, delta,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
        H, T, S, scale * LOG2E, scale, **flags)
    return dq, dk, dv


class FlashAttention(torch.autograd.Function):
    """Autograd wrapper: the forward saves q, k, v, out and the logsumexp, never P."""

    @staticmethod
    def forward(ctx, q, k, v, causal=True, scale=None, block_m=None, block_n=None):
        out, lse = attention_forward(q, k, v, causal, scale, block_m, block_n)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.scale, ctx.block_m, ctx.block_n = causal, scale, block_m, block_n
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = attention_backward(dout, q, k, v, out, lse, ctx.causal, ctx.scale,
                                        ctx.block_m, ctx.block_n)
        return dq, dk, dv, None, None, None, None


def flash_attn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
               scale: float | None = None, block_m: int | None = None,
               block_n: int | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v for q (B, H, T, D), k and v (B, Hkv, S, D) -> (B, H, T, D).

    Differentiable. causal=True: query t sees keys 0..S - T + t (the queries are the last T
    positions). scale defaults to 1/sqrt(D). block_m/block_n override the tile sizes.
    """
    return FlashAttention.apply(q, k, v, causal, scale, block_m, block_n)


def _num_splits(batch_heads: int, S: int, block_n: int, device: torch.device) -> int:
    """Enough splits of the keys that the GPU has ~2 programs per SM, each >= 4 blocks long."""
    max_splits = max(1, triton.cdiv(S, 4 * block_n))
    if INTERPRETED or device.type != "cuda":
        return min(4, triton.cdiv(S, block_n))  # a few, so the merge is always exercised
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(max_splits, triton.cdiv(2 * sms, batch_heads), 64))


def flash_attn_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      key_mask: torch.Tensor | None = None, scale: float | None = None,
                      num_splits: int | None = None, block_n: int | None = None
                      ) -> torch.Tensor:
    """One new token per row: q (B, Hkv, G, D) (its H = Hkv * G heads folded by KV group)
    against k, v (B, Hkv, S, D) (views into a KV cache are fine) -> (B, Hkv, G, D).

    Every key is visible except where key_mask (B, 1, 1, S) (or (B, S)) is False. The keys are
    split into ``num_splits`` ranges handled by separate programs, then merged (split-K).
    """
    B, H_kv, G, D = q.shape
    S = k.shape[2]
    if k.shape != (B, H_kv, S, D) or v.shape != k.shape:
        raise ValueError(f"decode expects q (B, Hkv, G, D) and k, v (B, Hkv, S, D); got q "
                         f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    _validate(q, k, v, causal=False)
    scale = _default_scale(scale, D)
    block_n = block_n or (16 if INTERPRETED else 64)
    block_g = max(16, triton.next_power_of_2(G))  # tl.dot needs >= 16 rows
    n_blocks = triton.cdiv(S, block_n)
    splits = num_splits or _num_splits(B * H_kv, S, block_n, q.device)
    splits = max(1, min(splits, n_blocks))
    chunk = triton.cdiv(n_blocks, splits) * block_n  # a whole number of blocks per split
    splits = triton.cdiv(S, chunk)                   # no empty split
    o_part = torch.empty(B * H_kv * splits * block_g, D, dtype=torch.float32, device=q.device)
    lse_part = torch.empty(B * H_kv * splits * block_g, dtype=torch.float32, device=q.device)
    if key_mask is not None:
        mask2d = key_mask.reshape(B, S)
        mask_args = (mask2d, *mask2d.stride())
    else:
        mask_args = (q, 0, 0)  # never read
    _attn_decode_split[(B * H_kv, splits)](
        q, k, v, mask_args[0], o_part, lse_part, *q.stride(), *k.stride(), *v.stride(),
        mask_args[1], mask_args[2], H_kv, G, S, chunk, scale * LOG2E,
        HAS_MASK=key_mask is not None, HEAD_DIM=D, BLOCK_G=block_g, BLOCK_N=block_n,
        UPCAST=INTERPRETED, PRECISION=_precision(q.dtype),
        num_warps=1 if INTERPRETED else 4)
    out = torch.empty(B, H_kv, G, D, dtype=q.dtype, device=q.device)
    _attn_decode_combine[(B * H_kv,)](o_part, lse_part, out, *out.stride(), H_kv, G, splits,
                                      HEAD_DIM=D, BLOCK_G=block_g,
                                      num_warps=1 if INTERPRETED else 4)
    return out

