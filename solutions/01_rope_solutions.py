# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · RoPE: solutions
#
# The exercises of `chapters/01_rope.ipynb`, solved, each followed by its grader. Try them
# yourself first.

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %%
import torch

import qwenlab
import qwenlab.env
from qwenlab import checks

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# **Exercise 1 · `inv_freq`.** `torch.arange(0, d, 2)` gives $2i$ directly; dividing by $d$
# gives the exponent $2i/d$. Written as `1 / theta ** x`, the same expression as
# transformers, the result matches it to the bit.

# %%
def inv_freq_exercise(head_dim, theta):
    """head_dim (even int), theta (float) -> (head_dim // 2,) float32: theta^(-2i / head_dim)."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim  # 2i/d, i = 0..d/2-1
    return 1.0 / theta ** exponent


checks.check_inv_freq(inv_freq_exercise)

# %% [markdown]
# **Exercise 2 · `rotate_half`.** Pair $i$ is $(x_1[i], x_2[i])$; a +90° turn maps $(a, b)$ to
# $(-b, a)$.

# %%
def rotate_half_exercise(x):
    """x (..., d) -> (..., d): (x1, x2) -> (-x2, x1) on the two halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


checks.check_rotate_half(rotate_half_exercise)

# %% [markdown]
# **Exercise 3 · the cos/sin tables.** Index by `position_ids`, never by `arange(T)`: a decode
# step's positions do not start at 0. `cat((freqs, freqs))` gives coordinates $i$ and
# $i + d/2$ the same angle (the interleaved layout would use `repeat_interleave(2)`).

# %%
def rope_cos_sin_exercise(position_ids, inv_freq):
    """position_ids (B, T) int64, inv_freq (d/2,) -> cos, sin: (B, T, d) float32 each."""
    freqs = position_ids[..., None].float() * inv_freq  # (B, T, d/2): angle of pair i
    emb = torch.cat((freqs, freqs), dim=-1)             # (B, T, d): rotate-half layout
    return emb.cos(), emb.sin()


checks.check_rope_cos_sin(rope_cos_sin_exercise)

# %% [markdown]
# **Exercise 4 · `apply_rope`.** One table serves every head, so add a heads dimension of size
# 1 and let broadcasting do the rest; the same code then serves 4 query heads and 2 key heads.

# %%
def apply_rope_exercise(q, k, cos, sin):
    """q (B, H, T, d), k (B, Hkv, T, d), cos/sin (B, T, d) -> q_rot, k_rot of q's and k's shapes."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, d): the same angles for each head
    q_rot = q * cos + rotate_half_exercise(q) * sin
    k_rot = k * cos + rotate_half_exercise(k) * sin
    return q_rot, k_rot


checks.check_apply_rope(apply_rope_exercise)
