"""Rotary position embeddings (RoPE), in the rotate-half layout that Qwen2.5 checkpoints use.

RoPE encodes position m by rotating each pair of query/key coordinates by the angle
m * inv_freq[i], with inv_freq[i] = theta^(-2i/d). A dot product of a rotated query (position m)
with a rotated key (position n) then depends only on m - n: attention sees relative positions
without any position vectors added to the embeddings.

What Qwen2.5 chose:
- theta = 1e6. The slowest pair turns by 1e6^(-(d-2)/d) radians per token, so it needs
  hundreds of thousands of tokens to come around: positions stay distinct over long contexts.
- "rotate half": coordinate i is paired with coordinate i + d/2 (not with i + 1, the
  "interleaved" layout of the RoFormer paper). Both are valid RoPEs, but a checkpoint was
  trained with one of them; the other scrambles its attention.

cos/sin are computed once per position in float32 and cached; ``position_ids`` pick rows,
which is how a cached decode step at position 57 gets the angle of position 57.
"""

from __future__ import annotations

import torch
from torch import nn


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """inv_freq[i] = theta^(-2i/d), i = 0..d/2-1: one rotation speed per coordinate pair."""
    # Same expression, evaluated in the same order, as transformers, so the angles agree to the bit.
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim: a 90-degree turn of each pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries (B, H, T, D) and keys (B, Hkv, T, D) by the angles in cos/sin (B, T, D)."""
    cos = cos.unsqueeze(1).to(q.dtype)  # (B, 1, T, D): the same angle for every head
    sin = sin.unsqueeze(1).to(q.dtype)
    q_rot = q * cos + rotate_half(q) * sin
    k_rot = k * cos + rotate_half(k) * sin
    return q_rot, k_rot


class RotaryEmbedding(nn.Module):
    """Holds float32 cos/sin tables for positions 0..n-1 and grows them on demand."""

    def __init__(self, head_dim: int, theta: float, initial_positions: int = 2048):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self.register_buffer("inv_freq", rope_inv_freq(head_dim, theta), persistent=False)
        self._build(initial_positions)

    def _build(self, num_positions: int) -> None:
        t = torch.arange(num_positions, device=self.inv_freq.device, dtype=torch.float)
        freqs = t[:, None] * self.inv_freq[None, :]  # (P, D/2): angle of pair i at position p
        emb = torch.cat((freqs, freqs), dim=-1)      # (P, D): rotate-half layout repeats them
        self.register_buffer("cos_cached", emb.cos(), persistent=False)
        self.register_buffer("sin_cached", emb.sin(), persistent=False)

    def reset(self, device: torch.device | str = "cpu") -> None:
        """Recompute the tables on ``device``, e.g. for a module created on the meta device."""
        self.inv_freq = rope_inv_freq(self.head_dim, self.theta).to(device)
        self._build(self.cos_cached.shape[0])

    def forward(self, position_ids: torch.Tensor, num_positions: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (B, T, D) for ``position_ids`` (B, T), all below ``num_positions``.

        The model passes ``num_positions`` (it knows the cache length); without it the table
        is sized from the largest position asked for.
        """
        if num_positions is None:
            num_positions = int(position_ids.max()) + 1
        if num_positions > self.cos_cached.shape[0]:
            self._build(max(num_positions, 2 * self.cos_cached.shape[0]))
        return self.cos_cached[position_ids], self.sin_cached[position_ids]

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, theta={self.theta:g}"
