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
# # 09 · Pretraining: solutions
#
# The exercises of `chapters/09_pretraining.ipynb`, solved, each followed by its check.

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
from qwenlab import checks

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# **Exercise 1: the schedule.** Three cases. During the warmup the rate rises linearly and
# reaches `lr` at step `warmup - 1` (using `step + 1`, so the first step is not taken at 0).
# After it, `progress` runs from 0 at step `warmup` to 1 at step `max_steps`, and the half
# cosine $(1 + \cos \pi p)/2$ goes from 1 to 0, scaled to span `lr` down to `min_lr`. From
# `max_steps` on the rate stays at `min_lr` (a cosine continued past $p = 1$ would climb again).

# %%
def my_cosine_lr(step, max_steps, warmup, lr, min_lr):
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= max_steps:
        return min_lr
    progress = (step - warmup) / (max_steps - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


checks.check_cosine_lr(my_cosine_lr)

# %% [markdown]
# **Exercise 2: clipping by the global norm.** The global norm is the norm of all gradients
# concatenated, $\sqrt{\sum_i \lVert g_i \rVert^2}$; one factor, never above 1, scales every
# tensor, so the update keeps its direction.

# %%
def my_clip_grad_norm(grads, max_norm):
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))           # global L2 norm
    factor = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    return [g * factor for g in grads]


checks.check_clip_grad_norm(my_clip_grad_norm)

# %% [markdown]
# In a training loop the same thing is done in place on the parameters' `.grad` tensors,
# after `loss.backward()` and before `optimizer.step()`; that is
# `torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)`, which `qwenlab.train` uses.
