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
# # 05 · The decoder — solutions
#
# The exercises of `chapters/05_decoder.ipynb`, solved and checked. Try them there first.

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %%
import torch

import qwenlab.env
from qwenlab import QwenConfig, checks

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# **Exercise 1 — the block.** Pre-norm: each sub-layer reads a normalised copy of the stream,
# and its output is added to the raw stream. Attention first, then the MLP, each with its own
# norm.

# %%
def decoder_block_forward(block, h, cos, sin):
    h = h + block.self_attn(block.input_layernorm(h), cos, sin)    # (B, T, C)
    return h + block.mlp(block.post_attention_layernorm(h))       # (B, T, C)


checks.check_decoder_block(decoder_block_forward)

# %% [markdown]
# **Exercise 2 — the parameter count.** The embedding once (twice when the head is untied),
# then per layer: q with its bias, k and v with theirs (sized by the KV heads), o without a
# bias, three MLP matrices and two norm gains; and the final norm.

# %%
def count_parameters(config: QwenConfig) -> int:
    V, h = config.vocab_size, config.hidden_size
    i, L = config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * config.head_dim
    embeddings = V * h * (1 if config.tie_word_embeddings else 2)
    attention = (h * h + h) + 2 * (h * kv + kv) + h * h
    per_layer = attention + 3 * h * i + 2 * h
    return embeddings + L * per_layer + h


checks.check_param_count(count_parameters)

# %% [markdown]
# **Exercise 3 — what sampling draws from.** Temperature first; then sort, and keep every token
# whose more likely tokens hold less than `top_p` (so the token that crosses `top_p` stays);
# then renormalise.

# %%
def sampling_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    probs = torch.softmax(logits / temperature, dim=-1)            # (V,)
    sorted_probs, order = probs.sort(descending=True)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs           # mass of more likely tokens
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order[mass_before < top_p]] = True
    probs = probs * keep
    return probs / probs.sum()


checks.check_sampling_probs(sampling_probs)
