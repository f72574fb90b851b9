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
# # 10 · Supervised fine-tuning: solutions
#
# The exercises of `chapters/10_sft.ipynb`, solved, each followed by its check.

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
# **Exercise 1: the assistant mask.** Walk through the ids; where the header
# `<|im_start|>assistant\n` starts, skip over it (it is the prompt's last part, never
# generated), then mark every token through the next `<|im_end|>`, which is trained so that
# the model learns to stop. The `\n` after it stays 0. Keep going: a multi-turn conversation
# has several replies.

# %%
def my_assistant_mask(input_ids, assistant_header, im_end_id):
    mask = [0] * len(input_ids)
    n = len(assistant_header)
    i = 0
    while i < len(input_ids):
        if input_ids[i:i + n] == assistant_header:
            j = i + n
            while j < len(input_ids):
                mask[j] = 1
                if input_ids[j] == im_end_id:
                    break
                j += 1
            i = j + 1
        else:
            i += 1
    return mask


checks.check_assistant_mask(my_assistant_mask)

# %% [markdown]
# **Exercise 2: the masked loss.** Position $t$ predicts token $t + 1$: compare
# `logits[:, :-1]` with `labels[:, 1:]`. `F.cross_entropy` with `ignore_index=-100` (its
# default) skips the masked targets and divides by the number of the others: one mean over
# all the batch's trained tokens, as transformers and TRL compute it.

# %%
def my_masked_loss(logits, labels):
    logits, targets = logits[:, :-1], labels[:, 1:]          # (B, T-1, V), (B, T-1)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


checks.check_masked_loss(my_masked_loss)
