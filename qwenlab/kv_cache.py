"""The KV cache: keys and values of past tokens, kept so each new token costs one step.

Without a cache, generating token n re-runs attention over all n tokens: O(n^2) work for a
sequence. With it, step n computes q/k/v for the new token only, appends its k/v, and attends
over the stored ones: O(n). The price is memory, and for long contexts it is large:

    bytes = 2 (K and V) x layers x kv_heads x head_dim x tokens x batch x bytes per element

GQA is what keeps it affordable: the cache scales with kv_heads, not with query heads. For
Qwen2.5-72B (80 layers, 8 KV heads, head_dim 128) one 128K-token sequence in bf16 needs
40 GiB; with 64 KV heads (multi-head attention) it would need 320 GiB.

``KVCache`` preallocates room for ``max_len`` tokens, so appending is a copy into a slice and
never a reallocation; ``length`` says how many positions hold real data.
"""

from __future__ import annotations

import torch

from .config import QwenConfig

_DTYPE_NAMES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
                "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
                "bfloat16": torch.bfloat16, "fp8": torch.float8_e4m3fn, "int8": torch.int8}


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPE_NAMES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use a torch.dtype or one of "
                         f"{', '.join(_DTYPE_NAMES)}") from None


def kv_cache_bytes(config: QwenConfig, batch_size: int, seq_len: int,
                   dtype: torch.dtype | str = torch.bfloat16) -> int:
    """Exact bytes of K and V over all layers for ``batch_size`` sequences of ``seq_len`` tokens."""
    bytes_per_element = torch.empty((), dtype=as_dtype(dtype)).element_size()
    return (2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim
            * seq_len * batch_size * bytes_per_element)


class KVCache:
    """Per-layer K and V for ``batch_size`` sequences, with room for ``max_len`` tokens."""

    def __init__(self, config: QwenConfig, batch_size: int, max_len: int,
                 dtype: torch.dtype | str = torch.float32, device: torch.device | str = "cpu"):
        shape = (config.num_hidden_layers, batch_size, config.num_key_value_heads, max_len,
                 config.head_dim)  # (L, B, Hkv, max_len, D)
        self.keys = torch.zeros(shape, dtype=as_dtype(dtype), device=device)
        self.values = torch.zeros(shape, dtype=as_dtype(dtype), device=device)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, Hkv, T, D) after the cached tokens; return all of them (B, Hkv, len+T, D).

        ``length`` does not move here: every layer writes at the same positions, and the model
        calls ``advance`` once all layers have.
        """
        start, end = self.length, self.length + k.shape[2]
        if k.dtype != self.keys.dtype:
            raise TypeError(f"the cache holds {self.keys.dtype} but the model produced {k.dtype}; "
                            "create the KVCache with the model's dtype")
        if end > self.max_len:
            raise RuntimeError(f"KV cache is full: it holds {self.max_len} tokens and "
                               f"{end} were asked for; create it with a larger max_len")
        self.keys[layer_idx, :, :, start:end] = k
        self.values[layer_idx, :, :, start:end] = v
        return self.keys[layer_idx, :, :, :end], self.values[layer_idx, :, :, :end]

    def advance(self, num_tokens: int) -> None:
        self.length += num_tokens

    def __repr__(self) -> str:
        L, B, Hkv, _, D = self.keys.shape
        return (f"KVCache(layers={L}, batch={B}, kv_heads={Hkv}, head_dim={D}, "
                f"length={self.length}/{self.max_len}, dtype={self.keys.dtype}, "
                f"{self.nbytes / 2**20:.2f} MiB)")
