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
# # 00 · Welcome to qwenlab
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/qwenlab/qwenlab/blob/main/chapters/00_welcome.ipynb)  
# *On `SCALE="gpu"` this chapter needs:* any GPU, or none.
#
# In this course you rebuild **Qwen2.5**, a family of open large language models from 0.5B to
# 72B parameters, from its parts: rotary positions, RMSNorm, the SwiGLU MLP, grouped-query
# attention with a KV cache, the decoder, the tokenizer, and then the recipe that turns a
# random network into an assistant: data filtering, pretraining, supervised fine-tuning, a
# reward model, DPO and mixture-of-experts routing.
#
# Three promises hold in every chapter:
#
# - **Every part is proven equal to the reference.** Each piece you build is compared with
#   Hugging Face `transformers` (and TRL for the training losses) on the same inputs, and the
#   difference is printed.
# - **It runs offline on a laptop CPU.** The default models are tiny, so a chapter takes
#   about a minute on two cores; nothing is downloaded while it runs.
# - **It scales up on a GPU.** On a Colab GPU runtime the same notebooks run with
#   `SCALE = "gpu"`: bigger models, longer runs, and (where the hub is reachable) the real
#   Qwen2.5-0.5B-Instruct weights.
#
# What you build stays in the library `qwenlab`: each chapter builds its idea in the notebook
# first, then shows that your version equals the library's, and later chapters import it.
#
# ## The chapter map
#
# | # | chapter | builds |
# | --- | --- | --- |
# | 00 | welcome | tour, environment check, first generation |
# | 01 | rope | rotary position embeddings |
# | 02 | rmsnorm | RMSNorm and why it runs in fp32 |
# | 03 | swiglu | the gated MLP |
# | 04 | gqa_kv_cache | grouped-query attention, the KV cache and its memory math |
# | 05 | decoder | the full Qwen2.5 model, real weights and tokenizer |
# | 06 | flash_attention | the Triton attention kernel (CUDA-accelerated attention) |
# | 07 | tokenizer | byte-level BPE, the real Qwen2.5 vocabulary, ChatML |
# | 08 | data_quality | quality scoring, dedup, effective tokens |
# | 09 | pretraining | raw vs filtered data, a Chinchilla-style fit |
# | 10 | sft | supervised fine-tuning with assistant-only loss |
# | 11 | reward_model | Bradley–Terry reward model, best-of-n |
# | 12 | dpo | direct preference optimization, iterated |
# | 13 | moe_routing | mixture of experts: routing, balancing, capacity |
# | 14 | capstone | the whole recipe at toy scale, measured stage by stage |
#
# In this chapter you will:
#
# 1. set up: install qwenlab (on Colab) and check your environment;
# 2. build a tiny Qwen2.5-shaped model and generate your first tokens with it;
# 3. look at what it predicts, and at what serving a real model costs in memory.
#
# ## Setup
#
# Every chapter starts with the same cell. On your laptop it does nothing (`make lab` already
# installed qwenlab); on Colab it installs qwenlab from GitHub.

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %% [markdown]
# `SCALE` decides how big each chapter's models and runs are: `"cpu"` (the default, tiny
# models) or `"gpu"`. It is `"gpu"` by itself when PyTorch sees a CUDA GPU, so on Colab choose
# *Runtime → Change runtime type → GPU* before running the notebook. To force either, set the
# environment variable `QWENLAB_SCALE=cpu` or `QWENLAB_SCALE=gpu` before starting Jupyter.

# %%
import matplotlib.pyplot as plt
import torch

import qwenlab
import qwenlab.env
from qwenlab import QwenConfig, QwenForCausalLM

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# The environment check: the versions you run and the device you run on. If something breaks
# later, these lines are the first thing to paste into a bug report. (Your versions may differ
# from the ones printed below.)

# %%
# NBVAL_IGNORE_OUTPUT
qwenlab.env.print_environment()

# %% [markdown]
# ## A first generation
#
# `QwenConfig.tiny()` is the course's CPU model: the Qwen2.5 design (RoPE, RMSNorm, SwiGLU,
# grouped-query attention with 4 query heads sharing 2 key/value heads) at toy width, with a
# 4,096-token vocabulary. `QwenForCausalLM` builds it with random weights. We seed PyTorch
# first, so that you get the same random model as the one printed here.

# %%
torch.manual_seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"
cfg = QwenConfig.tiny()
model = QwenForCausalLM(cfg).to(device).eval()
print(f"{model.num_parameters():,} parameters")

# %% [markdown]
# Printing the model shows its parts, named as in `transformers`' `Qwen2ForCausalLM`
# (`q_proj`, `gate_proj`, `input_layernorm`, …), so you can read our code and the reference
# side by side. The attention line says which backend computes attention on this machine:
# `auto` picks PyTorch's fused `sdpa` here; chapter 06 adds a Triton kernel.

# %%
print(model)

# %% [markdown]
# A language model maps token ids to a score (a *logit*) for every possible next token.
# `qwenlab.generate` runs the prompt through the model once, then adds one token at a time.
# With `temperature=0.0` (the default) it takes the most likely token each step (*greedy*);
# with a temperature it samples, here from the smallest set of tokens holding 90% of the
# probability (`top_p=0.9`). A `seed` makes sampling repeatable.

# %%
prompt_ids = torch.tensor([[17, 404, 1024, 7, 2718]], device=device)  # (batch 1, 5 tokens)
P = prompt_ids.shape[1]

greedy = qwenlab.generate(model, prompt_ids, max_new_tokens=20)
sampled = qwenlab.generate(model, prompt_ids, max_new_tokens=20, temperature=0.8, top_p=0.9,
                           seed=0)
print("prompt: ", prompt_ids[0].tolist())
print("greedy: ", greedy[0, P:].tolist())
print("sampled:", sampled[0, P:].tolist())

# %% [markdown]
# These tokens are noise: the weights are random, so the model knows nothing about language.
# Greedy decoding gets stuck repeating a token or two, and sampling wanders almost uniformly over
# the vocabulary. Everything else is real, though: the same code, fed Qwen2.5's trained
# weights and tokenizer, writes text. Chapter 05 loads them.
#
# ## What does the model predict?
#
# The next-token distribution after the prompt: the softmax of the last position's logits.
# A trained model puts most of its probability on a few tokens; a random one spreads it
# almost evenly over all 4,096. The tallest bar is the token that greedy decoding picked first.

# %%
with torch.no_grad():
    logits = model(prompt_ids).logits[0, -1]      # (V,) scores for the token after the prompt
probs = logits.float().softmax(dim=-1)
top = probs.topk(20)
print(f"uniform: 1/{cfg.vocab_size} = {1 / cfg.vocab_size:.5f}")
print(f"most likely: token {top.indices[0].item()} with p = {top.values[0].item():.5f}")

fig, ax = plt.subplots(figsize=(8, 3))
ax.bar(range(20), top.values.cpu(), color="tab:blue")
ax.set_xticks(range(20), top.indices.cpu().tolist(), rotation=60)
ax.axhline(1 / cfg.vocab_size, color="gray", linestyle="--", label="uniform (1/4096)")
ax.set_xlabel("token id")
ax.set_ylabel("p(next token)")
ax.set_title("Top 20 next tokens of a random tiny Qwen")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What a real model costs: the KV cache
#
# While generating, a model keeps the keys and values of every past token (the *KV cache*), so
# each new token costs one step instead of a pass over the whole text. For long contexts this
# cache, not the weights, is what fills a GPU:
#
# $$\text{bytes} = 2\,(K, V) \times \text{layers} \times \text{kv heads} \times
# \text{head dim} \times \text{tokens} \times \text{batch} \times \text{bytes per element}$$
#
# For Qwen2.5-7B (28 layers, 4 KV heads of dimension 128) and one 32K-token conversation in
# bf16:

# %%
nbytes = qwenlab.kv_cache_bytes(QwenConfig.preset("qwen2.5-7b"), batch_size=1, seq_len=32768,
                                dtype=torch.bfloat16)
print(f"Qwen2.5-7B, 32,768 tokens, bf16: {nbytes / 2**30:.2f} GiB of keys and values")

# %% [markdown]
# Qwen2.5-7B has 28 query heads but only 4 key/value heads (grouped-query attention). With one
# key/value head per query head the cache would be 7× larger, 12.25 GiB. Chapter 04 builds
# the cache and measures this.
#
# ## How to use this course
#
# - **Run it.** `make lab` creates a virtual environment, installs everything and opens
#   JupyterLab on `chapters/`. Run a chapter top to bottom; each takes about a minute on a CPU.
#   On Colab, use the chapter's "Open in Colab" badge and pick a GPU runtime.
# - **Do the exercises.** From chapter 01 on, each chapter ends with exercises: a function
#   that raises `NotImplementedError` until you write it, followed by a check from
#   `qwenlab.checks`. The check says "not attempted yet" with a hint, tells you what is wrong
#   with a wrong answer, and prints a pass line for a right one.
# - **Compare with the solutions.** `solutions/NN_topic_solutions.ipynb` holds each chapter's
#   exercises, solved and checked. Try first; read them after.
# - **Read the library.** Every idea ends up in one small module of `qwenlab/` (`rope.py`,
#   `norm.py`, `attention.py`, …): short enough to read in one sitting.
#
# Next: chapter 01, rotary position embeddings, the way Qwen2.5 tells positions apart.
