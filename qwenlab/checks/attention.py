"""Graders for the exercises of chapter 04: grouped-query attention and the KV cache.

- ``check_repeat_kv(fn)``: fn(x (B, Hkv, S, D), n_rep) -> (B, Hkv * n_rep, S, D), query head h
  reading KV head h // n_rep (``qwenlab.attention.repeat_kv``).
- ``check_gqa_attention(fn)``: fn(q (B, H, T, D), k, v (B, Hkv, S, D)) -> (B, H, T, D), causal
  grouped-query attention whose T queries are the last T of the S positions
  (``qwenlab.attention.attend``).
- ``check_kv_cache_bytes(fn)``: fn(config, batch_size, seq_len, bytes_per_element) -> int, the
  bytes of K and V over all layers (``qwenlab.kv_cache_bytes``).

Each trial runs the learner's function on seeded random inputs, compares it with the library,
and when it is wrong, recomputes the typical wrong answers to name the mistake.
"""

from __future__ import annotations

import math
import numbers

import torch

from ..attention import attend, causal_mask, repeat_kv
from ..config import QwenConfig
from ..kv_cache import kv_cache_bytes
from ._grading import compare, first_match, grade

__all__ = ["check_gqa_attention", "check_kv_cache_bytes", "check_repeat_kv"]


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- repeat_kv

def _repeat_kv_trial(fn) -> str | None:
    x = _randn(2, 3, 5, 4, seed=0)  # (B, Hkv, S, D): three KV heads, so orders are visible
    for n_rep in (2, 4, 1):
        expected = repeat_kv(x, n_rep)
        actual = fn(x.clone(), n_rep)
        if not isinstance(actual, torch.Tensor):
            return f"fn should return a torch.Tensor, got {type(actual).__name__}"
        if compare(actual, expected) is None:
            continue
        mistake = first_match(actual, {
            f"with n_rep={n_rep} the heads come out tiled [0, 1, 2, 0, 1, 2, ...] (what "
            "x.repeat(1, n_rep, 1, 1) gives): query head h reads KV head h // n_rep, so the "
            "copies of one KV head must sit next to each other [0, 0, 1, 1, 2, 2]; use "
            "repeat_interleave on dim 1, or expand a new axis after dim 1 and reshape":
                x.repeat(1, n_rep, 1, 1),
            "you repeated along the sequence dimension (dim 2): repeat the heads (dim 1)":
                x.repeat_interleave(n_rep, dim=2),
            "you repeated along the batch dimension (dim 0): repeat the heads (dim 1)":
                x.repeat_interleave(n_rep, dim=0),
            "you repeated along head_dim (dim 3): repeat the heads (dim 1)":
                x.repeat_interleave(n_rep, dim=3),
            "you tiled along the sequence dimension (dim 2): repeat the heads (dim 1)":
                x.repeat(1, 1, n_rep, 1),
            "the result is still 5-dimensional (B, Hkv, n_rep, S, D): reshape it to "
            "(B, Hkv * n_rep, S, D)":
                x[:, :, None].expand(-1, -1, n_rep, -1, -1),
        })
        if mistake:
            return mistake
        return f"with n_rep={n_rep}: {compare(actual, expected)}"
    return None


def check_repeat_kv(fn):
    """fn(x (B, Hkv, S, D), n_rep) -> (B, Hkv * n_rep, S, D), KV head j serving query heads
    j * n_rep ... j * n_rep + n_rep - 1."""
    return grade(
        "repeat_kv", fn, _repeat_kv_trial,
        hint="query head h reads KV head h // n_rep, so the copies of one KV head sit "
             "next to each other: heads [0, 0, 1, 1, 2, 2] for 3 KV heads and n_rep = 2.",
        success="each KV head is copied to its n_rep query heads, in order [0, 0, 1, 1, ...], "
                "for n_rep = 1, 2 and 4.")


# --------------------------------------------------------------------------- GQA attention

def _softmax_attention(q, k, v, scores_fn, scale, mask, masked_value=None):
    """Eager attention with explicit choices, to rebuild typical wrong answers."""
    scores = scores_fn(q, k) * scale                         # (B, H, T, S)
    if mask is not None:
        fill = torch.finfo(scores.dtype).min if masked_value is None else masked_value
        scores = scores.masked_fill(~mask, fill)
    return torch.matmul(scores.softmax(dim=-1), v)


def _gqa_mistakes(q, k, v) -> dict[str, torch.Tensor]:
    H, Hkv, T, S, D = q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3]
    G = H // Hkv
    scale = 1 / math.sqrt(D)
    k_rep, v_rep = repeat_kv(k, G), repeat_kv(v, G)
    k_tiled, v_tiled = k.repeat(1, G, 1, 1), v.repeat(1, G, 1, 1)
    causal = causal_mask(T, S)
    top_left = torch.ones(T, S, dtype=torch.bool).tril()

    def qk(a, b):
        return a @ b.transpose(-1, -2)

    return {
        "no causal mask: every query sees all S keys, including later tokens; mask the "
        "scores above the diagonal with -inf before the softmax":
            _softmax_attention(q, k_rep, v_rep, qk, scale, None),
        "the scores are not scaled: multiply q @ k^T by 1 / sqrt(head_dim) before the softmax":
            _softmax_attention(q, k_rep, v_rep, qk, 1.0, causal),
        "the scores are divided by head_dim; divide them by sqrt(head_dim)":
            _softmax_attention(q, k_rep, v_rep, qk, 1 / D, causal),
        "wrong KV head order: k.repeat(1, G, 1, 1) gives query head h the KV head h % Hkv; "
        "Qwen (and repeat_kv) give it KV head h // G":
            _softmax_attention(q, k_tiled, v_tiled, qk, scale, causal),
        "masked scores were set to 0, not -inf: exp(0) = 1 still gives future tokens weight; "
        "use masked_fill(~mask, float('-inf'))":
            _softmax_attention(q, k_rep, v_rep, qk, scale, causal, masked_value=0.0),
        "the softmax runs over the queries (dim -2); it must run over the keys (dim -1)":
            torch.matmul(qk(q, k_rep).mul(scale).masked_fill(~causal, -math.inf)
                         .softmax(dim=-2).nan_to_num(), v_rep),
        f"the causal mask is aligned top-left (what tril() or is_causal=True give when "
        f"T < S): with {T} queries over {S} keys, query t is the token at position "
        f"S - T + t = {S - T} + t, so it sees keys 0 .. {S - T} + t; use "
        f"tril(diagonal=S - T)":
            _softmax_attention(q, k_rep, v_rep, qk, scale, top_left),
    }


def _gqa_trial(fn) -> str | None:
    # (B, H, Hkv, T, S, D): a prompt pass (T = S), then a chunk after 5 cached tokens (T < S)
    for case, (B, H, Hkv, T, S, D) in enumerate([(2, 6, 2, 7, 7, 8), (1, 8, 2, 3, 8, 16)]):
        q = _randn(B, H, T, D, seed=10 + case)
        k = _randn(B, Hkv, S, D, seed=20 + case)
        v = _randn(B, Hkv, S, D, seed=30 + case)
        expected = attend(q, k, v, backend="eager")
        actual = fn(q.clone(), k.clone(), v.clone())
        problem = compare(actual, expected, atol=1e-5, rtol=1e-4)
        if problem is None:
            continue
        where = "" if T == S else f" (with {T} new queries after {S - T} cached tokens)"
        mistake = first_match(actual, _gqa_mistakes(q, k, v), atol=1e-5)
        return (mistake or problem) + where
    return None


def check_gqa_attention(fn):
    """fn(q (B, H, T, D), k (B, Hkv, S, D), v (B, Hkv, S, D)) -> (B, H, T, D): causal GQA
    attention, the T queries being the last T of the S positions (T = S for a prompt)."""
    return grade(
        "gqa_attention", fn, _gqa_trial,
        hint="repeat k and v to H heads (repeat_kv), scores = q @ k^T / sqrt(D), mask the "
             "scores with causal_mask(T, S) (query t is position S - T + t), softmax over "
             "the keys, times v.",
        success="equals qwenlab.attention.attend for 6 heads on 2 KV heads (T = S = 7) and "
                "for 3 new queries after 5 cached tokens (8 heads on 2 KV heads).")


# --------------------------------------------------------------------------- KV cache bytes

def _kv_bytes_mistakes(cfg: QwenConfig, B: int, S: int, nbytes: int) -> dict[str, int]:
    L, H, Hkv, D = (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
                    cfg.head_dim)
    right = 2 * L * Hkv * D * S * B * nbytes
    return {
        "you used num_attention_heads (or hidden_size = heads x head_dim) where the cache "
        "holds num_key_value_heads: with GQA only the KV heads are stored":
            2 * L * H * D * S * B * nbytes,
        "the factor 2 is missing: the cache stores K *and* V": right // 2,
        "the factor 2 is missing (K and V), and you used num_attention_heads instead of "
        "num_key_value_heads": L * H * D * S * B * nbytes,
        "the number of layers is missing: every layer keeps its own K and V": right // L,
        "the batch size is missing: every sequence in the batch has its own cache":
            right // B,
        "bytes_per_element is missing: that counts elements, not bytes": right // nbytes,
        "head_dim is missing: each KV head stores a head_dim-long vector per token":
            right // D,
        "that is bits, not bytes (x 8)": right * 8,
    }


def _kv_bytes_trial(fn) -> str | None:
    # fp32 first, so "no factor 2" (/2) and "no bytes per element" (/4) give different numbers
    trials = [(QwenConfig.preset("qwen2.5-7b"), 3, 1000, 4),
              (QwenConfig.preset("qwen2.5-0.5b"), 2, 4096, 2),
              (QwenConfig.preset("qwen2.5-72b"), 1, 131072, 2)]
    for cfg, B, S, nbytes in trials:
        expected = kv_cache_bytes(cfg, B, S, {4: torch.float32, 2: torch.bfloat16}[nbytes])
        actual = fn(cfg, B, S, nbytes)
        if isinstance(actual, torch.Tensor) and actual.numel() == 1:
            actual = actual.item()
        if not isinstance(actual, numbers.Real):
            return f"fn should return a number of bytes (an int), got {type(actual).__name__}"
        if actual == expected:
            continue
        for diagnosis, wrong in _kv_bytes_mistakes(cfg, B, S, nbytes).items():
            if actual == wrong:
                return diagnosis
        name = f"{cfg.num_hidden_layers}-layer, {cfg.num_key_value_heads}-KV-head"
        return (f"for the {name} config, batch {B}, {S} tokens, {nbytes} bytes per element: "
                f"got {actual:,}, expected {expected:,} "
                "(2 x layers x kv_heads x head_dim x tokens x batch x bytes per element)")
    return None


def check_kv_cache_bytes(fn):
    """fn(config, batch_size, seq_len, bytes_per_element) -> int: bytes of K and V over all
    layers."""
    return grade(
        "kv_cache_bytes", fn, _kv_bytes_trial,
        hint="2 (K and V) x config.num_hidden_layers x config.num_key_value_heads x "
             "config.head_dim x seq_len x batch_size x bytes_per_element.",
        success="equals qwenlab.kv_cache_bytes for Qwen2.5-7B, 0.5B and 72B shapes in fp32 "
                "and bf16.")
