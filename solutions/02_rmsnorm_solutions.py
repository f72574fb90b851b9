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
# # 02 · RMSNorm: solutions
#
# The exercises of `chapters/02_rmsnorm.ipynb`, solved, each followed by its check.

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
# **Exercise 1: RMSNorm.** The mean of squares over the last dimension, kept as a trailing axis
# of size 1 so it broadcasts; eps inside the square root.

# %%
def my_rms_norm(x, weight, eps):
    mean_square = x.pow(2).mean(-1, keepdim=True)         # (..., 1)
    return weight * (x * torch.rsqrt(mean_square + eps))   # (..., C)


checks.check_rms_norm(my_rms_norm)

# %% [markdown]
# **Exercise 2: the dtype-safe recipe.** Remember the input's dtype, compute in float32, cast
# the normalised vector back, and only then apply the gain, in the input's dtype.

# %%
def my_rms_norm_bf16(x, weight, eps):
    input_dtype = x.dtype
    x32 = x.to(torch.float32)
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)  # float32
    return weight * normed.to(input_dtype)


checks.check_rms_norm_bf16(my_rms_norm_bf16)

# %% [markdown]
# The second function is also a right answer to the first exercise (in float32 the casts do
# nothing), and it is exactly `qwenlab.norm.RMSNorm.forward`.

# %%
checks.check_rms_norm(my_rms_norm_bf16)
