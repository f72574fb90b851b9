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
# # 06 · FlashAttention: solutions
#
# The exercises of `chapters/06_flash_attention.ipynb`, solved and checked. Try them first.

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
# ## Exercise 1: the online-softmax update
#
# The new maximum is the larger of the old one and this block's; everything summed so far was
# computed against the old maximum, so `l` and `acc` are both multiplied by
# $e^{m_\text{old} - m_\text{new}}$ before the block's terms are added. From the empty state,
# $m = -\infty$ gives $e^{-\infty} = 0$: the zeros in `l` and `acc` stay zero, no special case.
# `acc` stays unnormalised; the division by `l` happens once, after the last block.

# %%
def my_online_softmax_update(m, l, acc, scores, v):
    """(m (R,), l (R,), acc (R, D)) after folding in scores (R, N) and values v (N, D)."""
    m_new = torch.maximum(m, scores.amax(dim=-1))        # (R,) the running max never shrinks
    alpha = torch.exp(m - m_new)                         # (R,) rescales the old sums
    p = torch.exp(scores - m_new[:, None])               # (R, N) this block's weights
    l_new = l * alpha + p.sum(dim=-1)
    acc_new = acc * alpha[:, None] + p @ v               # (R, D)
    return m_new, l_new, acc_new


# %%
checks.check_online_softmax_update(my_online_softmax_update)

# %% [markdown]
# ## Exercise 2: one tile of causal attention
#
# Scale the scores by `scale` (already $1/\sqrt{d}$: multiply), set the scores of keys after a
# query's position to $-\infty$ (a query sees its own key: `k_pos <= q_pos` stays), and fold
# the tile into the state. A masked score of 0 would not hide its key: it would still get
# weight $e^{0 - m}$.

# %%
def my_attention_tile(q, k, v, m, l, acc, q_pos, k_pos, scale):
    """(m, l, acc) after one causal tile: queries q (M, D) at q_pos, keys/values (N, D) at k_pos."""
    scores = (q @ k.T) * scale                                    # (M, N)
    visible = k_pos[None, :] <= q_pos[:, None]                    # (M, N) causal
    scores = scores.masked_fill(~visible, float("-inf"))
    return my_online_softmax_update(m, l, acc, scores, v)


# %%
checks.check_attention_tile(my_attention_tile)
