"""Grouped-query attention (GQA) with pluggable backends.

Each of the H query heads attends over the keys and values of one of Hkv < H shared KV heads:
query head h reads KV head h // (H / Hkv). Qwen2.5-7B has 28 query heads and 4 KV heads, so its
KV cache is 1/7 the size that multi-head attention would need, with little loss of quality.

What Qwen2.5 chose: q/k/v projections carry a bias (o_proj does not), RoPE is applied to q and
k after projection, and scores are scaled by 1/sqrt(head_dim) with a float32 softmax.

How attention is computed is a separate choice from what it computes. ``attend`` dispatches on
a backend name:
- "eager": the explicit math (repeat K/V to H heads, QK^T, mask, softmax, times V), the version
  to read and to step through;
- "sdpa": ``torch.nn.functional.scaled_dot_product_attention``, which runs fused kernels
  (FlashAttention on CUDA) and handles GQA without copying K/V;
- "auto": the best registered backend for the tensor's device.
Faster kernels (the Triton one of chapter 06) join through ``register_backend``; a backend
also provides the single-token decode attention that generation uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ATTN_BACKENDS, QwenConfig
from .rope import apply_rope

# A backend is a pair of functions:
#   attend(q (B,H,T,D), k (B,Hkv,S,D), v (B,Hkv,S,D), mask, scale) -> (B,H,T,D)
#     mask None: plain causal attention (query t sees keys up to S - T + t); else a bool tensor
#     broadcastable to (B, H, T, S), True where a query may attend.
#   attend_decode(q (B,Hkv,G,D), k, v, key_mask, scale) -> (B,Hkv,G,D)
#     one new token per row, its H = Hkv * G query heads folded so that the G heads sharing a
#     KV head form one (G, D) block: K/V are read once, never repeated. Every cached key is
#     visible except where key_mask (B, 1, 1, S) is False (left padding).
AttendFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Backend:
    name: str
    attend: AttendFn
    attend_decode: AttendFn
    supports: Callable[[torch.device], bool] = lambda device: True


_BACKENDS: dict[str, Backend] = {}
_AUTO_ORDER: list[str] = []  # "auto" takes the first of these that supports the device


def register_backend(backend: Backend, auto_priority: int | None = None) -> None:
    """Make ``backend`` available as ``attn_backend=backend.name``; with a priority (0 = first
    choice), "auto" may choose it."""
    _BACKENDS[backend.name] = backend
    if backend.name not in ATTN_BACKENDS:
        ATTN_BACKENDS.append(backend.name)
    if auto_priority is not None:
        if backend.name in _AUTO_ORDER:
            _AUTO_ORDER.remove(backend.name)
        _AUTO_ORDER.insert(min(auto_priority, len(_AUTO_ORDER)), backend.name)


def resolve_backend(name: str, device: torch.device) -> str:
    """The backend that ``name`` means on ``device`` ("auto" becomes a concrete choice)."""
    if name == "auto":
        return next(n for n in _AUTO_ORDER if _BACKENDS[n].supports(device))
    if name not in _BACKENDS:
        available = ", ".join(sorted(_BACKENDS))
        raise ValueError(f"attention backend {name!r} is not available; "
                         f"available: {available}, or 'auto'")
    return name


def get_backend(name: str, device: torch.device) -> Backend:
    return _BACKENDS[resolve_backend(name, device)]


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, Hkv, S, D) -> (B, Hkv * n_rep, S, D): KV head j serves query heads j*n_rep..+n_rep-1."""
    if n_rep == 1:
        return x
    B, Hkv, S, D = x.shape
    return x[:, :, None].expand(B, Hkv, n_rep, S, D).reshape(B, Hkv * n_rep, S, D)


def causal_mask(T: int, S: int, device: torch.device | None = None) -> torch.Tensor:
    """(T, S) bool, True on and below the diagonal that ends at the last key: query t is the
    token at position S - T + t, so it may see keys 0..S - T + t."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


def eager_attention(q, k, v, mask, scale):
    H, T, S = q.shape[1], q.shape[2], k.shape[2]
    k = repeat_kv(k, H // k.shape[1])                  # (B, H, S, D)
    v = repeat_kv(v, H // v.shape[1])
    scores = torch.matmul(q, k.transpose(2, 3)) * scale  # (B, H, T, S)
    if mask is None:
        mask = causal_mask(T, S, q.device)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(probs, v)                      # (B, H, T, D)


def eager_attention_decode(q, k, v, key_mask, scale):
    scores = torch.matmul(q, k.transpose(2, 3)) * scale  # (B, Hkv, G, S)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(probs, v)                        # (B, Hkv, G, D)


# torch < 2.5 has no enable_gqa: there K/V are repeated first, as in eager.
_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


def sdpa_attention(q, k, v, mask, scale):
    T, S = q.shape[2], k.shape[2]
    gqa = {}
    if q.shape[1] != k.shape[1]:
        if _SDPA_HAS_GQA:
            gqa = {"enable_gqa": True}
        else:
            k, v = repeat_kv(k, q.shape[1] // k.shape[1]), repeat_kv(v, q.shape[1] // v.shape[1])
    if mask is None and T == S:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, **gqa)
    if mask is None and T > 1:  # a chunk after cached tokens: is_causal would align top-left
        mask = causal_mask(T, S, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, **gqa)


def sdpa_attention_decode(q, k, v, key_mask, scale):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=scale)


register_backend(Backend("eager", eager_attention, eager_attention_decode), auto_priority=1)
register_backend(Backend("sdpa", sdpa_attention, sdpa_attention_decode), auto_priority=0)

# The Triton FlashAttention kernel of chapter 06 (qwenlab/kernels). First choice of "auto" on
# CUDA GPUs of compute capability >= 8.0; triton itself is imported only when it first runs, so
# TRITON_INTERPRET=1 (its CPU interpreter) can be set after `import qwenlab`. Where the kernel
# cannot run, it falls back to sdpa with a one-time warning saying why.
from .kernels import backend as _triton  # noqa: E402  (no triton import here)

register_backend(Backend("triton", _triton.attend, _triton.attend_decode, _triton.supports),
                 auto_priority=0)


def attend(q, k, v, mask=None, *, scale: float | None = None, backend: str = "auto"):
    """Attention of q (B, H, T, D) over k, v (B, Hkv, S, D) with the chosen backend."""
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"{q.shape[1]} query heads cannot share {k.shape[1]} KV heads evenly")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return get_backend(backend, q.device).attend(q, k, v, mask, scale)


class Attention(nn.Module):
    def __init__(self, config: QwenConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim ** -0.5
        self.backend = config.attn_backend
        hidden, D = config.hidden_size, self.head_dim
        self.q_proj = nn.Linear(hidden, self.num_heads * D, bias=True)
        self.k_proj = nn.Linear(hidden, self.num_key_value_heads * D, bias=True)
        self.v_proj = nn.Linear(hidden, self.num_key_value_heads * D, bias=True)
        self.o_proj = nn.Linear(self.num_heads * D, hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None = None, cache=None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        q, k = apply_rope(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, Hkv, past + T, D)
        out = attend(q, k, v, mask, scale=self.scaling, backend=self.backend)  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(B, T, -1)                         # (B, T, H*D)
        return self.o_proj(out)

    def extra_repr(self) -> str:
        where = "cuda" if self.q_proj.weight.is_cuda else "cpu"
        chosen = resolve_backend(self.backend, self.q_proj.weight.device)
        shown = f"auto -> {chosen} on {where}" if self.backend == "auto" else self.backend
        return (f"heads={self.num_heads}, kv_heads={self.num_key_value_heads}, "
                f"head_dim={self.head_dim}, attn_backend={shown}")
