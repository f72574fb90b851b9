"""RMSNorm: scale each vector to unit root-mean-square, then by a learned per-channel gain.

    y = weight * x / sqrt(mean(x^2) + eps)

Compared with LayerNorm it drops the mean subtraction and the bias: one statistic instead of
two, and in practice no loss of quality. Qwen2.5 normalises before attention and before the MLP
("pre-norm") and once more before the LM head, with eps = 1e-6.

The mean of squares is computed in float32 even when the model runs in bf16 or fp16: squares
of activations in the hundreds overflow fp16 (300^2 > 65504), and a sum of many squares kept
in bf16 stops growing once the next square falls below its last digit (in bf16, 256 + 1 = 256).
The normalised vector is cast back to the model's dtype only after the division.
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_dtype = x.dtype
        x = x.to(torch.float32)
        variance = x.pow(2).mean(-1, keepdim=True)  # (..., 1)
        x = x * torch.rsqrt(variance + self.eps)
        return self.weight * x.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
