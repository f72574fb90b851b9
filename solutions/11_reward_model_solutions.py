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
# # 11 · The reward model: solutions
#
# The exercises of `chapters/11_reward_model.ipynb`, solved, each followed by its check.

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %%
import torch
import torch.nn.functional as F

import qwenlab
import qwenlab.env
from qwenlab import checks

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# **Exercise 1: the Bradley–Terry loss.** The negative log-likelihood of "chosen beats
# rejected", $-\log\sigma(r_c - r_r)$, averaged over the pairs. `F.logsigmoid` computes
# $\log\sigma(x) = -\mathrm{softplus}(-x)$ without forming $\sigma(x)$, so it stays exact
# (and finite) when $r_c - r_r$ is very negative, where `torch.log(torch.sigmoid(x))` gives
# $\log 0 = -\infty$. The mean, not the sum, keeps the loss's scale independent of the batch
# size.

# %%
def bradley_terry_loss(chosen_scores, rejected_scores):
    return -F.logsigmoid(chosen_scores - rejected_scores).mean()


checks.check_bradley_terry_loss(bradley_terry_loss)

# %% [markdown]
# **Exercise 2: the last real token.** Multiply each column index by the mask: padding columns
# become 0 and real ones keep their index, so the row's maximum is the index of its rightmost
# real token, whichever side the padding is on. (`mask.sum(-1) - 1` is the same only under
# right padding.)

# %%
def last_token_index(attention_mask):
    T = attention_mask.shape[1]
    positions = torch.arange(T, device=attention_mask.device)      # (T,)
    return (positions * attention_mask).argmax(dim=-1)             # (B,)


checks.check_last_token_index(last_token_index)
