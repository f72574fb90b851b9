"""SwiGLU: the gated feed-forward network of every Qwen2.5 block.

    MLP(x) = down_proj( silu(gate_proj(x)) * up_proj(x) )

The gate decides, per hidden unit, how much of the "up" signal passes. Three matrices instead of
two, so at equal parameter count the intermediate size is about 2/3 of a classic 4x GELU MLP:
Qwen2.5-0.5B uses 4864 for hidden 896 (5.4x), since a classic MLP's 2 * 4 * 896^2 parameters
are matched by 3 * 896 * 2389, and Qwen widened it further. No biases.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
