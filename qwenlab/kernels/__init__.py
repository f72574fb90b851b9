"""Attention kernels: FlashAttention in Triton (chapter 06), and its plain-torch reference.

- ``flash_attn(q, k, v, causal=True)``: the fused, differentiable kernel, native GQA;
- ``flash_attn_decode(q, k, v, key_mask)``: one new token against the KV cache, split-K;
- ``reference``: the same algorithm (online softmax over tiles) written in torch, to read;
- ``backend``: how the kernel joins ``qwenlab.attention`` as ``attn_backend="triton"``.

Importing this package does not import triton; the kernel functions load it on first use, so
``TRITON_INTERPRET=1`` (the CPU interpreter) can still be set after ``import qwenlab``.
"""

from __future__ import annotations

from . import backend, reference

_KERNEL_NAMES = ("flash_attn", "flash_attn_decode", "FlashAttention", "attention_forward",
                 "attention_backward")

__all__ = ["backend", "reference", *_KERNEL_NAMES]


def __getattr__(name: str):
    if name in _KERNEL_NAMES:  # imports triton: only now
        from . import flash_attention

        return getattr(flash_attention, name)
    raise AttributeError(f"module 'qwenlab.kernels' has no attribute {name!r}")
