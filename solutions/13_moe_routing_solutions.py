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
# # 13 · Mixture of experts: solutions
#
# The exercises of `chapters/13_moe_routing.ipynb`, solved, each followed by its check.

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
# **Exercise 1: top-k routing.** Softmax over all $E$ experts first, so each weight is the
# expert's probability among all of them; then `torch.topk` picks the $k$ largest and their
# indices. Only when `norm_topk_prob` is set are the $k$ weights divided by their sum. (Taking
# the top-k logits first and a softmax over those would always renormalise.)

# %%
def my_topk_routing(router_logits, top_k, norm_topk_prob):
    probs = F.softmax(router_logits, dim=-1, dtype=torch.float32)   # (N, E)
    weights, indices = torch.topk(probs, top_k, dim=-1)             # (N, k)
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, indices


checks.check_topk_routing(my_topk_routing)

# %% [markdown]
# **Exercise 2: the load-balancing loss.** `one_hot` of the chosen experts, summed over the
# $k$ choices, marks for every token the experts it uses; its mean over tokens is $f$ (which
# sums to $k$). $P$ is the mean of the full softmax probabilities. The factor $E$ makes the
# loss $k$ at perfect balance.

# %%
def my_balancing_loss(router_logits, top_k):
    N, E = router_logits.shape
    probs = F.softmax(router_logits, dim=-1)                        # (N, E)
    chosen = torch.topk(probs, top_k, dim=-1).indices               # (N, k)
    f = F.one_hot(chosen, E).sum(1).float().mean(0)                 # (E,)
    P = probs.mean(0)                                               # (E,)
    return E * (f * P).sum()


checks.check_load_balancing_loss(my_balancing_loss)
