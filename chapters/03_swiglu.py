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
# # 03 · SwiGLU: the gated MLP
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/qwenlab/qwenlab/blob/main/chapters/03_swiglu.ipynb)  
# *On `SCALE="gpu"` this chapter needs:* none: the CPU is enough.
#
# After attention has mixed information across positions, each Qwen2.5 block passes every
# token through an MLP on its own. It is not the two-layer ReLU/GELU network of the original
# Transformer but a **gated** one, SwiGLU, with three weight matrices. Most of a Qwen2.5
# model's parameters live here.
#
# In this chapter you will:
#
# 1. meet the GLU family and the SiLU activation, and see what the gate does;
# 2. build SwiGLU and prove it equals `qwenlab.mlp.MLP` and transformers' `Qwen2MLP`, bit for
#    bit;
# 3. work out why the intermediate sizes are what they are (4864 for hidden 896), and compare
#    all seven Qwen2.5 sizes with the parameter-matched width $8h/3$;
# 4. count every parameter of every Qwen2.5 size from its config, and measure the MLP's share;
# 5. implement SwiGLU and its size arithmetic yourself.
#
# ## Setup

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %%
import timeit

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import qwenlab
import qwenlab.env
from qwenlab import QwenConfig, QwenForCausalLM, checks
from qwenlab.config import PRESETS
from qwenlab.mlp import MLP

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# ## The idea: a gate on every hidden unit
#
# The original Transformer's feed-forward network maps a token vector $x \in \mathbb{R}^h$ up
# to a width of $4h$, applies a nonlinearity $\phi$ (ReLU, later GELU), and maps it back:
#
# $$\mathrm{FFN}(x) = W_\text{down}\, \phi(W_\text{up} x).$$
#
# A **gated linear unit** (GLU, Dauphin et al., 2017) computes two projections of $x$ and
# lets one of them, through a nonlinearity, scale the other elementwise:
#
# $$\mathrm{GLU}(x) = \sigma(W x) \odot V x.$$
#
# Shazeer (2020, "GLU Variants Improve Transformer") tried the family in T5's feed-forward
# layer, named by the function on the gate branch: GLU ($\sigma$), Bilinear (none), ReGLU
# (ReLU), GEGLU (GELU) and **SwiGLU** (Swish). GEGLU and SwiGLU reached the lowest
# pre-training perplexity, and the GLU variants did best on most fine-tuning tasks, at the
# same parameter count and compute as the classic layer. Shazeer offered no theory ("we
# attribute their success, as all else, to divine benevolence"); the result has held up, and
# Llama, Mistral, Qwen and most open models since use SwiGLU.
#
# Swish with $\beta = 1$ is **SiLU**, $\mathrm{silu}(z) = z\,\sigma(z)$. Qwen2.5's MLP, in
# transformers' names, with no biases:
#
# $$\mathrm{MLP}(x) = W_\text{down}\big(\mathrm{silu}(W_\text{gate}\, x) \odot
#   W_\text{up}\, x\big), \qquad W_\text{gate}, W_\text{up} \in \mathbb{R}^{i \times h},
#   \quad W_\text{down} \in \mathbb{R}^{h \times i},$$
#
# with $i$ = `intermediate_size`. `gate_proj` is $W$ (the branch that goes through SiLU),
# `up_proj` is $V$, `down_proj` brings the result back to width $h$.
#
# ### SiLU next to ReLU and GELU
#
# SiLU is smooth, close to ReLU for large $|z|$, and, unlike ReLU, slightly negative for
# negative inputs, with a minimum near $z = -1.28$:

# %%
z = torch.linspace(-5, 3, 801)
acts = {"ReLU": F.relu(z), "GELU": F.gelu(z), "SiLU = z·σ(z)": F.silu(z),
        "σ(z) (GLU's gate)": torch.sigmoid(z)}
z_fine = torch.linspace(-3, 0, 30001)
i_min = F.silu(z_fine).argmin()
print(f"SiLU's minimum: silu({z_fine[i_min].item():.2f}) = {F.silu(z_fine[i_min]).item():.3f}")
three = torch.tensor(3.0)
print(f"silu(3) = {F.silu(three).item():.3f}   silu(-3) = {F.silu(-three).item():.3f}")

fig, ax = plt.subplots(figsize=(6, 3.5))
for (name, y), ls in zip(acts.items(), ["-", "--", "-", ":"]):
    ax.plot(z, y, ls, lw=2 if name.startswith("SiLU") else 1.2, label=name)
ax.axhline(0, color="gray", lw=0.5)
ax.axvline(0, color="gray", lw=0.5)
ax.set_xlabel("z")
ax.set_ylim(-0.6, 3)
ax.legend()
ax.set_title("Activation functions")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### What the gate does
#
# One hidden unit of a classic MLP outputs $\phi(u)$, a function of one projection
# $u = w^\top x$. One unit of SwiGLU outputs $\mathrm{silu}(g)\cdot u$, a function of two,
# $g = w_\text{gate}^\top x$ and $u = w_\text{up}^\top x$. Where the gate is strongly negative
# the unit is off whatever $u$ says; where it is strongly positive, $\mathrm{silu}(g) \approx
# g$ and the unit outputs $g \cdot u$, a *product* of two linear functions of $x$: a
# second-order interaction that a single ReLU unit cannot express. The sign of the output
# follows $u$, so the unit can push either way, where a ReLU unit is never negative.

# %%
g, u = torch.meshgrid(torch.linspace(-4, 4, 161), torch.linspace(-4, 4, 161), indexing="xy")
fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
panels = [("classic unit: relu(u)", F.relu(u)), ("SwiGLU unit: silu(g) · u", F.silu(g) * u)]
for ax, (title, out) in zip(axes, panels):
    im = ax.imshow(out, origin="lower", extent=(-4, 4, -4, 4), cmap="RdBu_r", vmin=-12, vmax=12)
    ax.contour(g, u, out, levels=[-8, -4, -1, 1, 4, 8], colors="k", linewidths=0.5)
    ax.set_xlabel("gate  g = w_gate · x")
    ax.set_title(title)
axes[0].set_ylabel("up  u = w_up · x")
fig.colorbar(im, ax=axes, shrink=0.9, label="unit output")
plt.show()

# %% [markdown]
# ## Build it
#
# `F.linear(x, W)` computes $x W^\top$, exactly what `nn.Linear` does with its weight of shape
# (out, in). Shapes for a batch of tokens:

# %%
def swiglu(x, gate_w, up_w, down_w):
    gate = F.linear(x, gate_w)               # (B, T, i)
    up = F.linear(x, up_w)                   # (B, T, i)
    return F.linear(F.silu(gate) * up, down_w)   # (B, T, h)


class NotebookMLP(nn.Module):
    def __init__(self, hidden_size, intermediate_size):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x):
        return swiglu(x, self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight)


# %% [markdown]
# ## Prove it: equal to qwenlab and to transformers
#
# The course's tiny config has hidden 128 and intermediate 352. We build our module, the
# library's `MLP` and transformers' `Qwen2MLP` (which takes a `Qwen2Config`), give all three
# the same random weights through one state dict (the parameter names agree), and compare
# outputs with `torch.equal`, in float32 and in bfloat16.

# %%
from transformers.models.qwen2 import modeling_qwen2  # noqa: E402

cfg = QwenConfig.tiny()
h, i = cfg.hidden_size, cfg.intermediate_size
torch.manual_seed(0)
mine = NotebookMLP(h, i)
ours = MLP(h, i)
theirs = modeling_qwen2.Qwen2MLP(cfg.to_hf())
state = mine.state_dict()
print("parameters:", {name: tuple(t.shape) for name, t in state.items()})
ours.load_state_dict(state)
theirs.load_state_dict(state)

x = torch.randn(2, 5, h)                                   # (B, T, h)
for dtype in (torch.float32, torch.bfloat16):
    xd = x.to(dtype)
    with torch.no_grad():
        y = mine.to(dtype)(xd)
        print(f"{str(dtype):15} == qwenlab: {torch.equal(y, ours.to(dtype)(xd))}   "
              f"== transformers: {torch.equal(y, theirs.to(dtype)(xd))}   "
              f"shape {tuple(y.shape)}")

# %% [markdown]
# ## Sizes: where 4864 comes from
#
# A classic MLP of width $4h$ has two matrices of $4h \times h$: $8h^2$ weights. A SwiGLU MLP
# of width $i$ has three of $i \times h$: $3hi$. Equal parameter counts (and, since every
# weight is used once per token, equal compute) need
#
# $$3 h i = 8 h^2 \quad\Longrightarrow\quad i = \tfrac{8}{3} h \approx 2.67\,h.$$
#
# That is how Shazeer compared the variants fairly, and how Llama chose its sizes: $8h/3$
# rounded up to a multiple of 256, 11008 for hidden 4096. For Qwen2.5-0.5B the matched width
# would be $8 \cdot 896 / 3 \approx 2389$. Qwen2.5-0.5B uses **4864**. The table shows all
# seven sizes: `i/h` is the real ratio, `i/(8h/3)` how much wider than parameter-matched the
# MLP is, and `2^k | i` the largest power of two dividing $i$.

# %%
print(f"{'preset':13} {'hidden':>6} {'inter':>6} {'i/h':>6} {'8h/3':>8} {'i/(8h/3)':>9} "
      f"{'2^k | i':>8}")
ratios = {}
for name in PRESETS:
    c = QwenConfig.preset(name)
    h, i = c.hidden_size, c.intermediate_size
    ratios[name] = i / h
    print(f"{name:13} {h:6} {i:6} {i / h:6.3f} {8 * h / 3:8.1f} {i / (8 * h / 3):9.2f} "
          f"{i & -i:8}")

# %% [markdown]
# Honest reading:
#
# - Only Qwen2.5-14B is close to parameter-matched ($2.70h$). Five sizes use about $5.3$–$5.8h$,
#   **twice** the matched width, and 72B sits in between at $3.6h$. Qwen2.5 spends more of its
#   parameters in the MLP than the classic recipe would; as far as we know, the technical
#   report does not explain the choice. (Llama 3 made a similar choice: $3.5h$ for its 8B model.)
# - Every width is a multiple of 128, most of 256 or more: matrix multiplications tile best
#   when dimensions divide the hardware's tile sizes, and the width must also split evenly
#   when a layer is sharded across GPUs (tensor parallelism).
# - 3B's 11008 is Llama-7B's number, though there it came with hidden 4096.

# %% [markdown]
# ## Counts: every parameter of every Qwen2.5 size
#
# A Qwen2.5 model's parameters, from its config ($V$ vocabulary rows, $L$ layers, hidden $h$,
# intermediate $i$, $n_{kv}$ key/value heads of dimension $d$):
#
# | part | parameters |
# | --- | --- |
# | token embedding | $V h$ |
# | LM head (untied sizes only) | $V h$ |
# | attention, per layer | q: $h^2 + h$; k, v: $h\, n_{kv} d + n_{kv} d$ each; o: $h^2$ |
# | MLP, per layer | $3 h i$ |
# | norms | $2h$ per layer, $h$ for the final norm |
#
# (q, k and v have biases, o has none; $n_{kv} d$ is the width of K and V, 128 for 0.5B.)
#
# First we check the formula against the real modules: the course's tiny model, counted by
# qwenlab and by transformers.

# %%
def param_counts(c):
    """Parameters of a Qwen2.5 model by part, from its config alone."""
    h, L, kv = c.hidden_size, c.num_hidden_layers, c.num_key_value_heads * c.head_dim
    return {
        "embedding": c.vocab_size * h,
        "lm_head": 0 if c.tie_word_embeddings else c.vocab_size * h,
        "attention": L * ((h * h + h) + 2 * (h * kv + kv) + h * h),
        "mlp": L * 3 * h * c.intermediate_size,
        "norms": L * 2 * h + h,
    }


tiny = QwenConfig.tiny()
torch.manual_seed(0)
hf_model = modeling_qwen2.Qwen2ForCausalLM(tiny.to_hf())
print(f"formula: {sum(param_counts(tiny).values()):,}   "
      f"qwenlab: {QwenForCausalLM(tiny).num_parameters():,}   "
      f"transformers: {hf_model.num_parameters():,}")

# %% [markdown]
# Now all seven sizes. "Non-embedding" leaves out the embedding and the untied LM head.

# %%
counts = {name: param_counts(QwenConfig.preset(name)) for name in PRESETS}
print(f"{'preset':13} {'total':>14} {'MLP':>14} {'MLP/total':>10} {'MLP/non-emb':>12}")
for name, parts in counts.items():
    total = sum(parts.values())
    non_emb = total - parts["embedding"] - parts["lm_head"]
    print(f"{name:13} {total:14,} {parts['mlp']:14,} {parts['mlp'] / total:10.1%} "
          f"{parts['mlp'] / non_emb:12.1%}")

# %% [markdown]
# The totals land on the names: 494M for "0.5B", 7.62B for "7B", 72.7B for "72B". Outside the
# embeddings, the MLP holds 77–88% of every model's weights. In the small models the
# vocabulary takes a big bite: Qwen2.5-0.5B's 151,936 × 896 embedding is 27.6% of it, which is
# why the small sizes tie the LM head to the embedding (an untied head would cost another
# 136M).

# %% [markdown]
# ## See it: where the parameters are

# %%
parts_order = [("embedding", "tab:gray"), ("lm_head", "silver"), ("attention", "tab:blue"),
               ("mlp", "tab:orange"), ("norms", "tab:green")]
labels = [name.removeprefix("qwen2.5-") for name in PRESETS]
fig, ax = plt.subplots(figsize=(8, 3.8))
bottom = [0.0] * len(PRESETS)
for part, color in parts_order:
    shares = [counts[n][part] / sum(counts[n].values()) for n in PRESETS]
    ax.bar(labels, shares, bottom=bottom, color=color, label=part)
    bottom = [b + s for b, s in zip(bottom, shares)]
for k, n in enumerate(PRESETS):
    share = counts[n]["mlp"] / sum(counts[n].values())
    ax.text(k, 1.01, f"{share:.0%}", ha="center", fontsize=8, color="tab:orange")
ax.set_ylim(0, 1.08)
ax.set_ylabel("share of all parameters")
ax.set_xlabel("Qwen2.5 size (MLP share on top)")
ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
ax.set_title("Qwen2.5: parameters by part")
fig.tight_layout()
plt.show()

# %% [markdown]
# (The norms are there, a sliver too thin to see: 0.009% of 0.5B, as chapter 02 counted.)
#
# ## Measure it
#
# **Compute.** A matrix-vector product costs 2 FLOPs (a multiply and an add) per weight, so the
# MLP costs $6hi$ FLOPs per token per layer. At short context, where attention's score
# computation is small, the work per token is about 2 FLOPs per weight of every matrix it
# touches: all layers' projections plus the LM head (the embedding is a lookup, no FLOPs).
# The MLP's share of that:

# %%
print(f"{'preset':13} {'MLP GFLOP/token':>16} {'all GFLOP/token':>16} {'MLP share':>10}")
for name, parts in counts.items():
    matmul_weights = parts["attention"] + parts["mlp"] + parts["embedding"]  # head = V h
    print(f"{name:13} {2 * parts['mlp'] / 1e9:16.2f} {2 * matmul_weights / 1e9:16.2f} "
          f"{parts['mlp'] / matmul_weights:10.1%}")

# %% [markdown]
# (The LM head has $Vh$ weights whether or not it is tied, so the embedding's count stands in
# for it.) Generating one token with Qwen2.5-7B costs about 14 GFLOP, 11 of them in the MLPs.
#
# **Time.** At equal parameter count, is a SwiGLU MLP slower than a classic one? We time, on
# 64 tokens of Qwen2.5-0.5B's width: a classic GELU MLP of width $4h = 3584$, and a SwiGLU
# MLP of the matched width 2389 (same weights, same FLOPs). The numbers are this machine's;
# the cell is excluded from the output check.

# %%
# NBVAL_IGNORE_OUTPUT
torch.manual_seed(0)
h = 896
x = torch.randn(64, h)
classic = nn.Sequential(nn.Linear(h, 4 * h, bias=False), nn.GELU(),
                        nn.Linear(4 * h, h, bias=False))
gated = MLP(h, round(8 * h / 3))
for name, module in [("classic GELU, width 3584", classic), ("SwiGLU, width 2389", gated)]:
    n = sum(p.numel() for p in module.parameters())
    with torch.no_grad():
        seconds = min(timeit.repeat(lambda: module(x), number=5, repeat=3)) / 5
    print(f"{name:26} {n:>10,} parameters   {seconds * 1e3:6.2f} ms")

# %% [markdown]
# They come out close: the time goes into the matrix multiplications, which are the same size
# in total; SwiGLU adds one elementwise product, cheap next to them. The gate is close to
# free, which is why the parameter-matched comparison is a fair one.

# %% [markdown]
# ## Exercises
#
# Write each function without scrolling up, then run the check under it. Solutions:
# `solutions/03_swiglu_solutions.ipynb`.
#
# **Exercise 1: SwiGLU.** `x` has shape `(..., h)`; the weights are laid out as in `nn.Linear`:
# `gate_w` and `up_w` are `(i, h)`, `down_w` is `(h, i)`. Return
# $W_\text{down}(\mathrm{silu}(W_\text{gate} x) \odot W_\text{up} x)$, shape `(..., h)`.

# %%
def my_swiglu(x, gate_w, up_w, down_w):
    raise NotImplementedError("gate, up, silu on the gate, multiply, down")


checks.check_swiglu(my_swiglu)

# %% [markdown]
# **Exercise 2: parameters of one MLP.** Return the number of parameters of one Qwen2.5 MLP
# with the given hidden and intermediate sizes.

# %%
def my_mlp_params(hidden, intermediate):
    raise NotImplementedError("count the weights of gate_proj, up_proj and down_proj")


checks.check_mlp_params(my_mlp_params)

# %% [markdown]
# **Exercise 3: the parameter-matched width.** A classic two-matrix MLP of width
# `ratio * hidden` (ratio 4 in the original Transformer) is replaced by SwiGLU. Return the
# intermediate size $i$ at which the SwiGLU MLP has the same number of parameters (a float, or
# rounded to an integer).

# %%
def my_matched_intermediate_size(hidden, ratio):
    raise NotImplementedError("set the two parameter counts equal and solve for i")


checks.check_matched_intermediate_size(my_matched_intermediate_size)

# %% [markdown]
# ## Review questions
#
# Five questions on what this chapter showed. In JupyterLab or Colab, pick an answer and press
# **Check**; in the book, open **Answer** under each question.

# %%
from qwenlab.quiz import Question, quiz  # noqa: E402

quiz([
    Question("Which is Qwen2.5's MLP, in transformers' module names?",
             ["down_proj(silu(up_proj(x)) ⊙ gate_proj(x))",
              "down_proj(silu(gate_proj(x) ⊙ up_proj(x)))",
              "down_proj(silu(gate_proj(x)) ⊙ up_proj(x))",
              "down_proj(silu(gate_proj(x)) + up_proj(x))"],
             answer=2,
             why="SiLU acts on the gate branch only; up_proj enters linearly, the two are "
                 "multiplied elementwise, and down_proj brings the width from i back to h. "
                 "None of the three has a bias."),
    Question("You implement SwiGLU with SiLU on the up branch instead of the gate. Trained "
             "from scratch, is your model worse? Loaded with Qwen2.5's weights, is it wrong?",
             ["Worse from scratch, and wrong with Qwen2.5's weights",
              "As good from scratch, but wrong with Qwen2.5's weights",
              "As good in both cases, since the elementwise product is symmetric",
              "Worse from scratch, but right with Qwen2.5's weights"],
             answer=1,
             why="silu(V x) ⊙ W x is SwiGLU with the names of the two matrices exchanged, and "
                 "training learns whatever the names hold. A checkpoint fixes what each name "
                 "holds: SiLU would now act on the matrix trained to enter linearly, and the "
                 "outputs are garbage. The product is symmetric; silu of one factor is not."),
    Question("A parameter-matched SwiGLU MLP for hidden 896 would be about 2389 wide, yet "
             "Qwen2.5-0.5B uses 4864. How do the two fit together?",
             ["8h/3 is the width that matches a classic 4h MLP's weights: for fair "
              "comparisons, not a rule",
              "4864 counts gate_proj and up_proj together: each is 2432 wide, close to 2389",
              "8h/3 matches a classic MLP of width 2h; matching one of width 4h gives 4864",
              "The matched width ignores the three biases; counting them gives 4864"],
             answer=0,
             why="A classic 4h MLP has 2 · 4h · h = 8h² weights and SwiGLU 3hi, so equal "
                 "counts give i = 8h/3 ≈ 2389 for h = 896. Qwen2.5-0.5B spends more of its "
                 "parameters in the MLP: 5.43h, 2.04× the matched width. Only 14B (2.70h) is "
                 "close to matched. (The MLP has no biases to add to either count.)"),
    Question("Which part holds the most parameters of Qwen2.5-0.5B, and which of "
             "Qwen2.5-72B?",
             ["0.5B: the embedding; 72B: the MLPs",
              "0.5B: attention; 72B: the MLPs",
              "0.5B: the MLPs; 72B: attention, over its 80 layers",
              "The MLPs in both, by a wide margin"],
             answer=3,
             why="The MLPs hold 63.5% of 0.5B and 80.0% of 72B. In 0.5B the embedding comes "
                 "next with 27.6%: the vocabulary (151,936 rows) is as large for a small model "
                 "as for a big one, while the layers shrink with the hidden size. That is also "
                 "why the small sizes tie the LM head to the embedding."),
    Question("How many FLOPs does one Qwen2.5-0.5B MLP layer (h = 896, i = 4864) cost per "
             "token?",
             ["About 13.1 MFLOP: 3hi, one per weight",
              "About 8.7 MFLOP: 2hi",
              "About 26.1 MFLOP: 6hi",
              "About 17.4 MFLOP: 4hi, two matrices at 2 FLOPs per weight"],
             answer=2,
             why="2 FLOPs (a multiply and an add) per weight, and three 896 × 4864 matrices: "
                 "2 × 3 × 896 × 4864 ≈ 26.1 MFLOP. Over 24 layers, 0.63 GFLOP per token, "
                 "63.5% of the model's 0.99."),
])

# %% [markdown]
# Next: chapter 04, grouped-query attention and the KV cache.
