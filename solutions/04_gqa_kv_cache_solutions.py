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
# # 04 · Grouped-query attention and the KV cache: solutions
#
# The exercises of `chapters/04_gqa_kv_cache.ipynb`, solved, each followed by its grader.
# Try them yourself first.

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %%
import math

import torch

import qwenlab
import qwenlab.env
from qwenlab import QwenConfig, checks

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# ## Exercise 1: `repeat_kv` by indexing
#
# Query head $h$ reads KV head $\lfloor h / n_{rep} \rfloor$. `torch.arange(H) // n_rep` is that
# index for every query head, [0, 0, 1, 1, …] for `n_rep = 2`, and indexing dimension 1 with it
# copies the heads in that order. (`x.repeat_interleave(n_rep, dim=1)` does the same in one
# call.)

# %%
def exercise_repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    index = torch.arange(x.shape[1] * n_rep, device=x.device) // n_rep  # KV head of each q head
    return x[:, index]                                                  # (B, Hkv * n_rep, S, D)


# %%
checks.check_repeat_kv(exercise_repeat_kv)

# %% [markdown]
# ## Exercise 2: causal GQA attention, also after a cache
#
# The grouped form of the chapter: the G query heads of a KV group become G·T rows of one
# matmul, so K and V are never copied. Query $t$ is the token at position $S - T + t$, so it
# may see keys $0 .. S - T + t$: the lower triangle shifted right by $S - T$,
# `tril(diagonal=S - T)`. With $T = S$ that is the ordinary causal triangle.

# %%
def exercise_gqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    G = H // Hkv
    rows = q.reshape(B, Hkv, G * T, D)                                   # a group's queries
    scores = (rows @ k.transpose(-1, -2) / math.sqrt(D)).view(B, Hkv, G, T, S)
    allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    return (probs.view(B, Hkv, G * T, S) @ v).view(B, H, T, D)


# %%
checks.check_gqa_attention(exercise_gqa_attention)

# %% [markdown]
# ## Exercise 3: the KV-cache formula
#
# Every layer stores a K and a V of shape (batch, kv_heads, tokens, head_dim): only the KV
# heads, not the query heads.

# %%
def exercise_kv_cache_bytes(config: QwenConfig, batch_size: int, seq_len: int,
                            bytes_per_element: int) -> int:
    return (2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim
            * seq_len * batch_size * bytes_per_element)


# %%
checks.check_kv_cache_bytes(exercise_kv_cache_bytes)
