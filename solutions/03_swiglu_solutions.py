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
# # 03 · SwiGLU: solutions
#
# The exercises of `chapters/03_swiglu.ipynb`, solved, each followed by its check.

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %%
import torch.nn.functional as F

import qwenlab
import qwenlab.env
from qwenlab import checks

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# **Exercise 1: SwiGLU.** SiLU on the gate branch only, an elementwise product with the up
# branch, then the down projection. `F.linear(x, W)` is `x @ W.T`, as in `nn.Linear`.

# %%
def my_swiglu(x, gate_w, up_w, down_w):
    gate = F.linear(x, gate_w)                   # (..., i)
    up = F.linear(x, up_w)                       # (..., i)
    return F.linear(F.silu(gate) * up, down_w)   # (..., h)


checks.check_swiglu(my_swiglu)

# %% [markdown]
# **Exercise 2: parameters of one MLP.** Three bias-free matrices of `hidden × intermediate`.

# %%
def my_mlp_params(hidden, intermediate):
    return 3 * hidden * intermediate


checks.check_mlp_params(my_mlp_params)

# %% [markdown]
# **Exercise 3: the parameter-matched width.** The classic MLP has
# $2 \cdot (r h) \cdot h$ weights, SwiGLU $3 h i$; equal counts give $i = 2 r h / 3$.

# %%
def my_matched_intermediate_size(hidden, ratio):
    return 2 * ratio * hidden / 3


checks.check_matched_intermediate_size(my_matched_intermediate_size)
