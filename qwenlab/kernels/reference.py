"""FlashAttention's algorithm in plain torch: the online softmax, one tile, the tiled loop.

This is what the Triton kernel computes, written to be read and stepped through (it is not
fast: Python loops over tiles). Chapter 06 builds each function and checks it against these.

For one query row with scores s_1..s_S and values v_1..v_S, softmax attention is
sum_j exp(s_j) v_j / sum_j exp(s_j). Visiting the keys in blocks, keep
    m   = the largest score seen so far (subtracted before exp, so nothing overflows),
    l   = sum of exp(s_j - m) so far,
    acc = sum of exp(s_j - m) v_j so far.
A new block with a larger maximum m' makes every earlier term too big by exp(m' - m), so l and
acc are first multiplied by exp(m - m'), then the block's terms are added. After the last block
the output is acc / l, and m + log(l) is the row's logsumexp.
"""

from __future__ import annotations

import math

import torch


def online_softmax_update(m: torch.Tensor, l: torch.Tensor, acc: torch.Tensor,  # noqa: E741
                          scores: torch.Tensor, v: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold one block into the running state of R query rows.

    m, l (R,), acc (R, D): the state after the earlier blocks (start: -inf, 0, 0).
    scores (R, N): this block's scores (masked ones -inf); v (N, D): its values.
    Returns the new (m, l, acc). Leading batch dimensions, if any, broadcast.
    """
    m_new = torch.maximum(m, scores.amax(dim=-1))                 # (R,) running max
    # a row that has seen only masked scores keeps m = -inf; exp(-inf - (-inf)) would be NaN
    m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
    alpha = torch.exp(m - m_safe)                                 # (R,) rescales the old sums
    p = torch.exp(scores - m_safe[..., None])                     # (R, N)
    l_new = l * alpha + p.sum(dim=-1)
    acc_new = acc * alpha[..., None] + p @ v                      # (R, D)
    return m_new, l_new, acc_new


def attention_tile(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m: torch.Tensor,
                   l: torch.Tensor, acc: torch.Tensor, q_pos: torch.Tensor,  # noqa: E741
                   k_pos: torch.Tensor, scale: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One tile of causal attention: queries q (M, D) at positions q_pos (M,) against keys k and
    values v (N, D) at positions k_pos (N,). A key is visible when k_pos <= q_pos."""
    scores = (q @ k.transpose(-2, -1)) * scale                    # (M, N)
    visible = k_pos[None, :] <= q_pos[:, None]
    scores = scores.masked_fill(~visible, float("-inf"))
    return online_softmax_update(m, l, acc, scores, v)


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                    scale: float | None = None, block_m: int = 16, block_n: int = 16
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """FlashAttention's loop in torch: q (B, H, T, D), k and v (B, Hkv, S, D) ->
    (out (B, H, T, D), logsumexp (B, H, T)), both float32. With causal=True query t is the token
    at position S - T + t (the queries are the last T of the keys)."""
    B, H, T, D = q.shape
    S, group = k.shape[2], H // k.shape[1]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    q, k, v = q.float(), k.float(), v.float()
    out = torch.empty(B, H, T, D, device=q.device)
    lse = torch.empty(B, H, T, device=q.device)
    for h in range(H):
        kh, vh = k[:, h // group], v[:, h // group]               # GQA: (B, S, D), no copy
        for t0 in range(0, T, block_m):
            qb = q[:, h, t0:t0 + block_m]                          # (B, M, D)
            M = qb.shape[1]
            q_pos = torch.arange(t0, t0 + M, device=q.device) + (S - T)
            m = torch.full((B, M), float("-inf"), device=q.device)
            l = torch.zeros(B, M, device=q.device)  # noqa: E741
            acc = torch.zeros(B, M, D, device=q.device)
            stop = min(S, int(q_pos[-1]) + 1) if causal else S  # later tiles: fully masked
            for s0 in range(0, stop, block_n):
                kb, vb = kh[:, s0:s0 + block_n], vh[:, s0:s0 + block_n]  # (B, N, D)
                if causal:
                    k_pos = torch.arange(s0, s0 + kb.shape[1], device=q.device)
                    m, l, acc = attention_tile(qb, kb, vb, m, l, acc,  # noqa: E741
                                               q_pos, k_pos, scale)
                else:
                    scores = (qb @ kb.transpose(-2, -1)) * scale   # (B, M, N)
                    m, l, acc = online_softmax_update(m, l, acc, scores, vb)  # noqa: E741
            out[:, h, t0:t0 + M] = acc / l[..., None]
            lse[:, h, t0:t0 + M] = m + torch.log(l)
    return out, lse
