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
# # 12 · DPO: solutions
#
# The exercises of `chapters/12_dpo.ipynb`, solved and checked.

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %%
import torch
import torch.nn.functional as F

import qwenlab.env
from qwenlab import checks

SCALE = qwenlab.env.detect_scale()

# %% [markdown]
# **Exercise 1: sequence log-probs.** The completion's tokens of row `b` are
# `t = P, ..., P + C - 1`; token `t` is predicted by the logits at `t - 1`. Shift once
# (logits `[:, :-1]` against ids `[:, 1:]`), build the mask on the shifted positions, and sum.

# %%
def my_completion_logprobs(logits, input_ids, prompt_lengths, completion_lengths):
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)          # (B, T-1, V)
    per_token = log_probs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)   # (B, T-1): token t+1
    T = input_ids.shape[1]
    token = torch.arange(1, T)[None]                                       # (1, T-1)
    start = torch.as_tensor(prompt_lengths)[:, None]                       # (B, 1)
    stop = start + torch.as_tensor(completion_lengths)[:, None]            # (B, 1)
    mask = (token >= start) & (token < stop)                               # (B, T-1)
    return (per_token * mask).sum(-1)


checks.check_sequence_logprobs(my_completion_logprobs)

# %% [markdown]
# **Exercise 2: the DPO loss.**

# %%
def my_dpo_loss_exercise(pol_chosen, pol_rejected, ref_chosen, ref_rejected, beta):
    chosen_logratio = pol_chosen - ref_chosen
    rejected_logratio = pol_rejected - ref_rejected
    loss = -F.logsigmoid(beta * (chosen_logratio - rejected_logratio)).mean()
    return loss, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


checks.check_dpo_loss(my_dpo_loss_exercise)
