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
# # 13 · Mixture of experts: routing, balancing, capacity
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/qwenlab/qwenlab/blob/main/chapters/13_moe_routing.ipynb)  
# *On `SCALE="gpu"` this chapter needs:* a T4 (16 GB).
#
# Qwen2.5 ships its open weights as dense models (0.5B to 72B), but serves its hosted tiers,
# Qwen2.5-Turbo and Qwen2.5-Plus, with **mixture-of-experts** (MoE) models, as Qwen1.5-MoE and
# Qwen2-57B-A14B did in the open before them. An MoE block replaces the one SwiGLU MLP of a
# decoder block with many smaller MLPs, the *experts*, and a *router* that sends each token to
# a few of them. The model then holds far more parameters than any one token uses.
#
# In this chapter you will:
#
# 1. compute, from the published configs, what MoE buys: **total vs active parameters**, and
#    FLOPs per token, which is what a cost/quality tier is made of;
# 2. build the **router** (softmax, then top-k, optionally renormalised), the **dispatch** of
#    tokens to experts by gather/scatter without a Python loop over tokens, and the
#    **shared expert** with its sigmoid gate, and prove the block equals `qwenlab.moe` and
#    transformers' `Qwen2MoeSparseMoeBlock`;
# 3. load a Qwen2-MoE checkpoint into `qwenlab` and get transformers' logits and loss;
# 4. build the **load-balancing loss** and the **router z-loss**, and see what **capacity**
#    does: tokens dropped when an expert is full;
# 5. pretrain a tiny MoE beside a dense model with the same active parameters, and watch the
#    experts' load with and without the balancing loss;
# 6. write top-k routing and the balancing loss yourself, with graders.
#
# ## Setup

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %% [markdown]
# Everything is seeded. On the CPU the chapter uses one thread: the tiny training runs are then
# reproducible to the bit, and do not wait on the other thread of a busy machine.

# %%
import random
import tempfile
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForCausalLM, Qwen2MoeConfig
from transformers.models.qwen2_moe import modeling_qwen2_moe

import qwenlab
import qwenlab.env
import qwenlab.hf
import qwenlab.moe as moe
from qwenlab import QwenConfig, QwenForCausalLM, checks
from qwenlab import data as qdata
from qwenlab import train as qtrain
from qwenlab.mlp import MLP
from qwenlab.tokenizer import load_course_tokenizer

SCALE = qwenlab.env.detect_scale()
DEVICE = "cuda" if SCALE == "gpu" else "cpu"
print(f"SCALE = {SCALE!r}")
torch.set_num_threads(1)
transformers.logging.set_verbosity_error()  # a standalone MoE block warns about its kernel
transformers.logging.disable_progress_bar()  # save_pretrained's progress bar


def same(a, b, atol=1e-5):
    """Max abs difference below atol (float32 math in another order differs by ~1e-7)."""
    return (a - b).abs().max().item() < atol


# %% [markdown]
# ## 1 · Why mixture of experts: total vs active parameters
#
# A forward pass multiplies every weight a token touches by one number and adds it: about
# **2 FLOPs per active parameter per token** (training: about 6, forward and backward),
# plus attention over the context, which we leave out here. A dense model's active parameters
# are all of them. An MoE block with $E$ experts, of which each token uses $k$, holds $E$
# experts' weights but spends compute on $k$:
#
# $$N_\text{total} = N_\text{rest} + L\,(E\,N_\text{expert} + N_\text{shared}), \qquad
#   N_\text{active} = N_\text{rest} + L\,(k\,N_\text{expert} + N_\text{shared}),$$
#
# with $N_\text{rest}$ the embeddings, attention, norms and LM head, and per layer a router of
# $E \times$ hidden weights and a shared expert (more on it in section 3). The next cell
# computes both counts for the two open Qwen MoE models and three dense Qwen2.5 models. Every
# number comes from the **config shapes** (layers, widths, experts, top-k, as in each model's
# published `config.json`, stored in `QwenConfig.moe_preset` and `QwenConfig.preset`), through
# `qwenlab.moe.parameter_counts`; only the names "A2.7B" and "A14B" are Qwen's own.

# %%
MODELS = {
    "Qwen1.5-MoE-A2.7B": QwenConfig.moe_preset("qwen1.5-moe-a2.7b"),
    "Qwen2-57B-A14B": QwenConfig.moe_preset("qwen2-57b-a14b"),
    "Qwen2.5-7B (dense)": QwenConfig.preset("qwen2.5-7b"),
    "Qwen2.5-14B (dense)": QwenConfig.preset("qwen2.5-14b"),
    "Qwen2.5-32B (dense)": QwenConfig.preset("qwen2.5-32b"),
}
COUNTS = {name: moe.parameter_counts(cfg) for name, cfg in MODELS.items()}
print(f"{'model':<20} {'experts':>10} {'total':>8} {'active':>8} {'GFLOPs/token':>13} "
      f"{'bf16 weights':>13}")
for name, cfg in MODELS.items():
    total, active = COUNTS[name]["total"], COUNTS[name]["active"]
    experts = f"{cfg.num_experts} (k={cfg.num_experts_per_tok})" if cfg.is_moe else "-"
    print(f"{name:<20} {experts:>10} {total / 1e9:>7.2f}B {active / 1e9:>7.2f}B "
          f"{2 * active / 1e9:>13.1f} {2 * total / 1e9:>10.0f} GB")

# %% [markdown]
# Qwen2-57B-A14B costs about what a 14B dense model costs per token (28 GFLOPs), but its
# weights fill 115 GB, like a 57B dense model's. That is the trade: **compute per token
# follows the active parameters, memory follows the total**. A hosted service batches many
# users' tokens onto the same GPUs, so the memory is paid once and shared while the compute
# is paid per token; there MoE buys the quality of a larger model at the price of a smaller
# one. That is what a cost/quality tier is: Turbo and Plus sit at two points of it (their
# shapes are not published, so we cannot count theirs). The open dense models make the
# opposite trade, simpler to fine-tune, quantise and audit, and cheaper to hold in a small
# machine's memory.
#
# The same numbers as a picture:

# %%
fig, ax = plt.subplots(figsize=(8, 3.2))
names = list(COUNTS)
ax.barh(names, [COUNTS[n]["total"] / 1e9 for n in names], color="#c6dbef", label="total")
ax.barh(names, [COUNTS[n]["active"] / 1e9 for n in names], color="#2171b5",
        label="active per token")
ax.invert_yaxis()
ax.set_xlabel("parameters (billions)")
ax.legend(loc="lower right")
ax.set_title("Held in memory vs used per token")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2 · The router: softmax, then top-k
#
# The router is one linear map, hidden size $C$ to $E$ scores, followed by a softmax over all
# $E$ experts. Each token keeps the $k$ most probable experts and weighs their outputs by
# those probabilities:
#
# $$p = \operatorname{softmax}(x W_r^\top) \in \mathbb{R}^E, \qquad
#   \mathcal{T} = \operatorname{top-}k(p), \qquad
#   y = \sum_{e \in \mathcal{T}} w_e\, \mathrm{expert}_e(x), \quad
#   w_e = p_e \;\text{ or }\; \frac{p_e}{\sum_{j \in \mathcal{T}} p_j}.$$
#
# Qwen1.5-MoE and Qwen2-MoE keep $w_e = p_e$ (`norm_topk_prob=False`): the chosen weights sum
# to less than 1, so a token unsure of its experts gets a smaller routed update. Qwen3's MoE
# models renormalise (`norm_topk_prob=True`). Written out:

# %%
def my_route(router_logits, top_k, norm_topk_prob):
    probs = F.softmax(router_logits, dim=-1, dtype=torch.float32)   # (N, E), softmax first
    weights, indices = torch.topk(probs, top_k, dim=-1)             # (N, k)
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, indices


torch.manual_seed(0)
logits = torch.randn(3, 8)                                          # 3 tokens, 8 experts
for norm in (False, True):
    w, idx = my_route(logits, 2, norm)
    print(f"norm_topk_prob={norm!s:<5} experts {idx.tolist()}  weights "
          f"{[[round(v, 3) for v in row] for row in w.tolist()]}  sums "
          f"{[round(v, 3) for v in w.sum(-1).tolist()]}")

# %% [markdown]
# The same on a real router: transformers' `Qwen2MoeTopKRouter` and qwenlab's `Router`, given
# one weight matrix, return the same logits, weights and experts as `my_route`:

# %%
hf_cfg = Qwen2MoeConfig(hidden_size=32, num_experts=8, num_experts_per_tok=2,
                        moe_intermediate_size=16, shared_expert_intermediate_size=24,
                        norm_topk_prob=True)
torch.manual_seed(1)
hf_router = modeling_qwen2_moe.Qwen2MoeTopKRouter(hf_cfg)
torch.nn.init.normal_(hf_router.weight, std=0.3)
router = moe.Router(32, 8, top_k=2, norm_topk_prob=True)
router.load_state_dict(hf_router.state_dict())
x = torch.randn(50, 32)
with torch.no_grad():
    hf_logits, hf_w, hf_idx = hf_router(x)
    our_logits, our_w, our_idx = router(x)
mine_w, mine_idx = my_route(our_logits, 2, True)
print("logits equal:", torch.equal(our_logits, hf_logits))
print("experts equal (transformers, qwenlab, mine):",
      torch.equal(our_idx, hf_idx) and torch.equal(mine_idx, hf_idx))
print("weights equal:", torch.equal(our_w, hf_w) and torch.equal(mine_w, hf_w))

# %% [markdown]
# **Ties.** When two experts have exactly the same probability, which wins? This happens for
# real: a router initialised to zero (transformers creates it so before initialising) gives
# every expert the same score, and an "upcycled" MoE, whose experts start as copies of one
# dense MLP, may copy router rows too. `torch.topk` decides, and its rule is the kernel's, not
# "lowest index first". qwenlab calls it exactly as transformers does (on the float32
# probabilities), so the two always agree, ties included, and a token's choice never depends
# on the other tokens in the batch. For comparison, `moe.stable_topk` breaks ties by the
# lowest index on every device:

# %%
flat = torch.zeros(4, 8)                                            # 4 tokens, all experts tied
_, topk_idx = moe.route(flat, 2)
_, stable_idx = moe.stable_topk(F.softmax(flat, -1), 2)
hf_router.weight.data.zero_()
print("torch.topk picks      ", topk_idx[0].tolist(), "for every token:",
      bool((topk_idx == topk_idx[0]).all()))
print("transformers picks    ", hf_router(torch.randn(4, 32))[2][0].tolist())
print("lowest index would be ", stable_idx[0].tolist())

# %% [markdown]
# ## 3 · Experts, dispatch and the shared expert
#
# Each expert is a SwiGLU MLP (chapter 03), narrower than a dense model's: each of
# Qwen1.5-MoE's 60 experts is 1408 wide, a quarter of its shared expert's 5632. The naive way to run them loops
# over tokens, and for each token over its $k$ experts: $N \cdot k$ tiny matrix products,
# hopeless for thousands of tokens. **Dispatch** regroups the work so that each expert runs
# once, on all its tokens:
#
# 1. flatten the $(N, k)$ choices into $N k$ *slots*, slot $s$ belonging to token $s // k$;
# 2. sort the slots by expert (a stable `argsort`), count slots per expert (`bincount`);
# 3. **gather** the tokens in that order (`index_select`): each expert's rows are contiguous;
# 4. run each expert on its slice (a loop over the $E$ experts, not over tokens);
# 5. weight the rows and **scatter** them back onto their tokens (`index_add_`, which sums the
#    $k$ contributions of a token).
#
# On 5 tokens and 4 experts, step by step:

# %%
indices = torch.tensor([[2, 0], [1, 2], [0, 2], [2, 3], [0, 1]])    # (N=5, k=2) choices
slot_expert = indices.reshape(-1)                                  # (10,)
order = torch.argsort(slot_expert, stable=True)                    # slots grouped by expert
print("slot's expert:      ", slot_expert.tolist())
print("slots, by expert:   ", order.tolist())
print("their tokens:       ", (order // 2).tolist())
print("slots per expert:   ", torch.bincount(slot_expert, minlength=4).tolist())

# %% [markdown]
# The whole dispatch, as a function:

# %%
def my_dispatch(x, indices, weights, experts):
    N, k = indices.shape
    slot_expert = indices.reshape(-1)                               # (N*k,)
    order = torch.argsort(slot_expert, stable=True)
    token = order // k                                              # token of each sorted slot
    counts = torch.bincount(slot_expert, minlength=len(experts)).tolist()
    x_sorted = x.index_select(0, token)                             # gather (N*k, C)
    outputs, start = [], 0
    for expert, n in zip(experts, counts):                          # loop over experts only
        if n:
            outputs.append(expert(x_sorted[start:start + n]))
        start += n
    y = torch.cat(outputs) * weights.reshape(-1)[order, None]       # weighted rows (N*k, C)
    return torch.zeros_like(x).index_add_(0, token, y)             # scatter, summing the k


def naive_dispatch(x, indices, weights, experts):
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):                                     # the loop we avoid
        for j in range(indices.shape[1]):
            out[n] += weights[n, j] * experts[indices[n, j]](x[n])
    return out


torch.manual_seed(2)
experts = [MLP(32, 16) for _ in range(8)]
x = torch.randn(200, 32)
weights, indices = moe.route(torch.randn(200, 8), 2)
with torch.no_grad():
    fast = my_dispatch(x, indices, weights, experts)
    print("my_dispatch == naive loop:", same(fast, naive_dispatch(x, indices, weights, experts)))
    print("my_dispatch == qwenlab.moe.dispatch:",
          same(fast, moe.dispatch(x, indices, weights, experts)))

# %% [markdown]
# **The shared expert.** Qwen2-MoE adds one more SwiGLU MLP that *every* token passes
# through, scaled per token by a sigmoid gate, $\sigma(x \cdot w_g)$ with $w_g \in
# \mathbb{R}^C$:
#
# $$\mathrm{MoE}(x) = \sum_{e \in \mathcal{T}(x)} w_e\, \mathrm{expert}_e(x)
#   + \sigma(x \cdot w_g)\; \mathrm{shared}(x).$$
#
# What every token needs (common syntax, frequent words) can live in the shared expert, and
# the routed experts are free to specialise. In Qwen1.5-MoE-A2.7B it is as wide as four
# routed experts (5632 = 4 × 1408). The whole block, from its parts, on a transformers
# `Qwen2MoeSparseMoeBlock`'s weights:

# %%
def my_moe_block(x, block):
    """x (B, T, C) -> (B, T, C) with the weights of a qwenlab SparseMoeBlock."""
    B, T, C = x.shape
    x = x.reshape(B * T, C)
    weights, indices = my_route(x @ block.gate.weight.T, block.top_k,
                                block.gate.norm_topk_prob)
    routed = my_dispatch(x, indices, weights, block.experts)
    shared = torch.sigmoid(block.shared_expert_gate(x)) * block.shared_expert(x)
    return (routed + shared).reshape(B, T, C)


def paired_blocks(norm_topk_prob, seed=0):
    """A transformers Qwen2MoeSparseMoeBlock and a qwenlab SparseMoeBlock, same weights."""
    cfg = Qwen2MoeConfig(hidden_size=32, num_experts=8, num_experts_per_tok=2,
                         moe_intermediate_size=16, shared_expert_intermediate_size=24,
                         norm_topk_prob=norm_topk_prob)
    torch.manual_seed(seed)
    reference = modeling_qwen2_moe.Qwen2MoeSparseMoeBlock(cfg)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    ours_cfg = QwenConfig.from_hf(cfg)
    block = moe.SparseMoeBlock(ours_cfg)
    prefix = "model.layers.0.mlp."   # transformers fuses its experts; unfuse them by name
    state = qwenlab.hf.unfuse_experts({prefix + k: v for k, v in reference.state_dict().items()},
                                      ours_cfg)
    block.load_state_dict({k.removeprefix(prefix): v for k, v in state.items()})
    return reference, block


x = torch.randn(2, 17, 32, generator=torch.Generator().manual_seed(3))
for norm in (False, True):
    reference, block = paired_blocks(norm)
    with torch.no_grad():
        expected = reference(x)
        print(f"norm_topk_prob={norm!s:<5}  mine == transformers: "
              f"{same(my_moe_block(x, block), expected)}   qwenlab == transformers: "
              f"{same(block(x), expected)}")

# %% [markdown]
# ## 4 · A whole MoE model, and a Qwen2-MoE checkpoint
#
# `QwenConfig` carries transformers' Qwen2-MoE names: `num_experts` (0 means dense),
# `num_experts_per_tok`, `moe_intermediate_size`, `shared_expert_intermediate_size`,
# `norm_topk_prob`, and `decoder_sparse_step` / `mlp_only_layers` to choose which blocks are
# sparse. `QwenConfig.tiny_moe()` is the course's CPU MoE: `tiny()` with 8 experts of width 88,
# top-2, and a shared expert of width 176, so a token's active MLP weights equal those of
# `tiny()`'s 352-wide MLP.

# %%
for name, cfg in (("tiny()", QwenConfig.tiny()), ("tiny_moe()", QwenConfig.tiny_moe())):
    c = moe.parameter_counts(cfg)
    print(f"{name:<11} total {c['total']:>9,}  active {c['active']:>9,}")

# %% [markdown]
# A random transformers `Qwen2MoeForCausalLM`, saved with `save_pretrained` (which writes one
# tensor per expert, `mlp.experts.{i}.gate_proj.weight`, while transformers keeps them fused
# in memory as `mlp.experts.gate_up_proj`; `qwenlab.hf.load_pretrained` reads both), loads
# into qwenlab with the same logits, router logits and loss. With `output_router_logits=True`
# both add `router_aux_loss_coef` × the balancing loss of section 5 to the cross-entropy.

# %%
torch.manual_seed(4)
hf_model = AutoModelForCausalLM.from_config(
    Qwen2MoeConfig(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, num_experts=8,
                   num_experts_per_tok=2, moe_intermediate_size=32,
                   shared_expert_intermediate_size=48, router_aux_loss_coef=0.01),
    attn_implementation="eager").eval()
with torch.no_grad():                # random weights everywhere, not only where init puts them
    for p in hf_model.parameters():
        p.add_(0.05 * torch.randn_like(p))
with tempfile.TemporaryDirectory() as folder:
    hf_model.save_pretrained(folder)
    ours = qwenlab.hf.load_pretrained(folder)
ids = torch.randint(0, 320, (2, 24), generator=torch.Generator().manual_seed(5))
with torch.no_grad():
    expected = hf_model(ids, labels=ids, output_router_logits=True)
    actual = ours(ids, labels=ids, output_router_logits=True)
print("logits equal (1e-4):", same(actual.logits, expected.logits, 1e-4))
print("router logits equal:", all(same(a, e) for a, e in
                                  zip(actual.router_logits, expected.router_logits)))
print(f"aux loss {actual.aux_loss.item():.4f} (transformers {expected.aux_loss.item():.4f}); "
      f"loss {actual.loss.item():.4f} (transformers {expected.loss.item():.4f})")

# %% [markdown]
# ## 5 · Balancing the experts
#
# Left alone, a router tends to collapse: the experts it picks early get the gradient, get
# better, and get picked more, while the others starve. Switch Transformer's **load-balancing
# loss** pushes back. For $N$ tokens and $E$ experts:
#
# $$f_e = \frac{1}{N} \sum_{n} \mathbb{1}[e \in \mathcal{T}(x_n)], \qquad
#   P_e = \frac{1}{N} \sum_n p_e(x_n), \qquad
#   \mathcal{L}_\text{bal} = E \sum_{e=1}^{E} f_e\, P_e .$$
#
# $f_e$ is the fraction of tokens routed to $e$ (counting all $k$ choices, so $\sum_e f_e =
# k$) and $P_e$ the mean router probability of $e$. $f$ has no gradient (it counts), so the
# loss lowers the probability of the experts that are *used* most. At perfect balance,
# $f_e = k/E$ and $P_e = 1/E$, and the loss is $k$; the factor $E$ keeps that value
# independent of the number of experts. Written out, on router logits of shape $(N, E)$:

# %%
def my_load_balancing_loss(router_logits, top_k):
    N, E = router_logits.shape
    probs = F.softmax(router_logits, dim=-1)                        # (N, E)
    chosen = torch.topk(probs, top_k, dim=-1).indices               # (N, k)
    f = F.one_hot(chosen, E).sum(1).float().mean(0)                 # (E,) sums to k
    P = probs.mean(0)                                               # (E,) sums to 1
    return E * (f * P).sum()


torch.manual_seed(6)
lg = torch.randn(256, 8)
reference_loss = modeling_qwen2_moe.load_balancing_loss_func((lg,), 8, 2)
print("mine == transformers' load_balancing_loss_func:",
      same(my_load_balancing_loss(lg, 2), reference_loss, 1e-6),
      "  qwenlab:", same(moe.load_balancing_loss(lg, 8, 2), reference_loss, 1e-6))
balanced = torch.zeros(256, 8)
skewed = lg + torch.tensor([3.0, 2.0, 0, 0, 0, 0, 0, 0])           # experts 0 and 1 favoured
for name, logits_ in (("random router", lg), ("all experts tied", balanced),
                      ("experts 0, 1 favoured", skewed)):
    print(f"{name:<22} loss {my_load_balancing_loss(logits_, 2).item():.3f}  (k = 2 is the "
          f"minimum)")

# %% [markdown]
# **A detail of the reference.** Given the router logits of several layers, transformers
# concatenates their rows and computes one loss, as if expert $e$ of layer 1 and expert $e$ of
# layer 2 were the same expert. Two layers that overload *different* experts then look
# balanced together. `moe.load_balancing_loss(..., per_layer=True)` averages each layer's own
# loss instead; qwenlab's model uses the pooled form, so its loss equals transformers'.

# %%
layer_a = torch.tensor([[4.0, 4, 0, 0]]).repeat(16, 1)              # every token: experts 0, 1
layer_b = torch.tensor([[0.0, 0, 4, 4]]).repeat(16, 1)              # every token: experts 2, 3
print(f"pooled over layers: {moe.load_balancing_loss((layer_a, layer_b), 4, 2).item():.3f}   "
      f"per layer: {moe.load_balancing_loss((layer_a, layer_b), 4, 2, per_layer=True).item():.3f}")

# %% [markdown]
# **The router z-loss** (ST-MoE) keeps the router's logits small, since large logits make the
# softmax saturate, and in low precision overflow:
# $\mathcal{L}_z = \frac{1}{N}\sum_n \big(\log \sum_e e^{\ell_{n,e}}\big)^2$. qwenlab adds
# `router_z_loss_coef` × $\mathcal{L}_z$ to the loss when that coefficient is set (0 by
# default; Qwen2-MoE does not use it).

# %%
z = torch.logsumexp(lg, dim=-1).pow(2).mean()
print(f"z-loss {z.item():.4f}, qwenlab {moe.router_z_loss(lg).item():.4f}; "
      f"logits x 10: {moe.router_z_loss(10 * lg).item():.2f}")

# %% [markdown]
# ## 6 · Capacity: when an expert is full
#
# On a GPU cluster the experts of a layer live on different devices, and each receives a
# buffer of fixed size. With capacity factor $c$, an expert takes at most
#
# $$\text{capacity} = \left\lceil c \cdot \frac{N k}{E} \right\rceil$$
#
# token slots per batch ($c = 1$: exactly an even share). Slots beyond it are **dropped**: the
# token skips that expert and keeps only its other choices, the shared expert and the residual
# connection. qwenlab gives priority as GShard does: every token's first choice before anyone's
# second, then token order. Capacity is off by default (`moe_capacity_factor=None`), which is
# what transformers' Qwen2-MoE does; here expert 0 is everyone's favourite and holds 2 slots:

# %%
indices = torch.tensor([[1, 0], [0, 1], [0, 2], [0, 1]])            # (4 tokens, k=2)
kept = moe.capacity_mask(indices, num_experts=3, capacity=2)
for n in range(4):
    print(f"token {n}: experts {indices[n].tolist()}  kept {kept[n].tolist()}")

# %% [markdown]
# Token 3 loses both of its experts: expert 0 was filled by the first choices of tokens 1 and
# 2, and expert 1 by token 0's first choice and token 1's second. How much is dropped depends
# on how uneven the routing is. Below, the share of dropped slots against $c$, for a random
# router and for one that favours two experts (the `skewed` logits of section 5):

# %%
def dropped_share(logits, factor, top_k=2):
    _, idx = moe.route(logits, top_k)
    capacity = moe.expert_capacity(logits.shape[0], logits.shape[1], top_k, factor)
    return 1 - moe.capacity_mask(idx, logits.shape[1], capacity).float().mean().item()


FACTORS = [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0]
for name, logits_ in (("random router", lg), ("experts 0, 1 favoured", skewed)):
    print(f"{name:<22}", "  ".join(f"c={c:g}: {dropped_share(logits_, c):5.1%}"
                                   for c in FACTORS[:6]))
fig, ax = plt.subplots(figsize=(6, 3))
for name, logits_ in (("random router", lg), ("experts 0, 1 favoured", skewed)):
    ax.plot(FACTORS, [dropped_share(logits_, c) for c in FACTORS], "o-", label=name)
ax.set_xlabel("capacity factor c")
ax.set_ylabel("share of slots dropped")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Try it: how far must the capacity factor rise before nothing is dropped, as the router
# grows more skewed? (The slider's output is not stored; the plot above is its static form.)

# %%
# NBVAL_IGNORE_OUTPUT
@widgets.interact(factor=widgets.FloatSlider(value=1.0, min=0.25, max=4.0, step=0.25),
                  skew=widgets.FloatSlider(value=2.0, min=0.0, max=5.0, step=0.5))
def show_drops(factor, skew):
    logits_ = lg + torch.tensor([skew, skew / 2, 0, 0, 0, 0, 0, 0])
    _, idx = moe.route(logits_, 2)
    load = moe.expert_load(idx, 8)
    capacity_share = moe.expert_capacity(256, 8, 2, factor) / (256 * 2)
    plt.figure(figsize=(6, 2.5))
    plt.bar(range(8), load.tolist())
    plt.axhline(capacity_share, color="red", label=f"capacity (c = {factor:g})")
    plt.title(f"dropped: {dropped_share(logits_, factor):.1%} of slots")
    plt.xlabel("expert")
    plt.ylabel("share of slots")
    plt.legend()
    plt.show()


# %% [markdown]
# ## 7 · A tiny MoE experiment
#
# Now pretraining, as in chapter 09, on Shakespeare with the course tokenizer: three models
# of the same shape (hidden 64, 2 layers on the CPU) and the same **active** parameters:
#
# - **dense**: a SwiGLU MLP of width 176 in each block;
# - **MoE**: 8 experts of width 44, top-2, and a shared expert of width 88 (88 + 2 × 44 = 176
#   active), with the balancing loss at `router_aux_loss_coef = 0.01`;
# - **MoE, no balancing**: the same with the coefficient 0.
#
# A forward hook on each router records, at every training step, the share of slots each
# expert received.

# %%
plays = qdata.load_corpus("plays")
tokenizer = load_course_tokenizer()
order = random.Random(0).sample(range(len(plays)), len(plays))
if SCALE == "gpu":
    TRAIN_PLAYS, STEPS, BATCH, SEQ, HIDDEN, LAYERS = 16, 1000, 16, 128, 128, 4
else:
    TRAIN_PLAYS, STEPS, BATCH, SEQ, HIDDEN, LAYERS = 6, 160, 8, 64, 64, 2
train_stream = qtrain.tokenize_texts([plays[i]["text"] for i in order[1:1 + TRAIN_PLAYS]],
                                     tokenizer)
eval_stream = qtrain.tokenize_texts([plays[order[0]]["text"]], tokenizer)
print(f"train: {len(train_stream):,} tokens from {TRAIN_PLAYS} plays; held-out: "
      f"{len(eval_stream):,} tokens from {plays[order[0]]['id']}")

SHAPE = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4,
             num_key_value_heads=2)
CONFIGS = {
    "dense": QwenConfig.tiny(intermediate_size=int(2.75 * HIDDEN), **SHAPE),
    "MoE": QwenConfig.tiny_moe(moe_intermediate_size=int(0.6875 * HIDDEN),
                               shared_expert_intermediate_size=int(1.375 * HIDDEN), **SHAPE),
}
CONFIGS["MoE, no balancing"] = CONFIGS["MoE"].replace(router_aux_loss_coef=0.0)
TRAIN = qtrain.TrainConfig(max_steps=STEPS, batch_size=BATCH, seq_len=SEQ, lr=5e-3,
                           min_lr=5e-4, warmup_steps=10, eval_every=STEPS // 4, eval_batches=8)
for name, cfg in CONFIGS.items():
    c = moe.parameter_counts(cfg)
    print(f"{name:<18} total {c['total']:>8,}  active {c['active']:>8,}")

# %% [markdown]
# The three runs (one thread; about 10–15 seconds each on the CPU; timings vary, so this
# cell's output is not checked; the next cell prints the results):

# %%
# NBVAL_IGNORE_OUTPUT
def train_and_record(cfg, seed=0):
    torch.manual_seed(seed)
    model = QwenForCausalLM(cfg).to(DEVICE)
    loads = []

    def record(router, inputs, outputs):                            # outputs: logits, w, idx
        if router.training:
            loads.append(moe.expert_load(outputs[2], cfg.num_experts).cpu())

    for layer in model.model.layers:
        if layer.is_moe:
            layer.mlp.gate.register_forward_hook(record)
    start = time.perf_counter()
    history = qtrain.train(model, train_stream, TRAIN, eval_stream=eval_stream, progress=False)
    seconds = time.perf_counter() - start
    loads = torch.stack(loads).view(STEPS, -1, cfg.num_experts) if loads else None
    return history, loads, seconds, model


RUNS = {name: train_and_record(cfg) for name, cfg in CONFIGS.items()}
for name, (_, _, seconds, _) in RUNS.items():
    print(f"{name:<18} {seconds:5.1f} s")

# %% [markdown]
# **Loss against compute.** Training compute is about $6 \, N_\text{active} \, D$ FLOPs for $D$
# tokens (section 1's 2 FLOPs per active parameter, times 3 for the backward pass). The
# models have nearly the same $N_\text{active}$ (the MoE adds its routers and shared-expert
# gates, 1,152 weights per layer), so the x-axis is the same for all three, and the curves
# compare what a FLOP buys. The curves are the held-out `.loss` that `qwenlab.train` records,
# which for the balanced MoE includes 0.01 × its balancing loss (about 0.02), as transformers'
# `.loss` does; the printed numbers are the pure cross-entropy of the final models on 32
# held-out batches.

# %%
def heldout_cross_entropy(model, batches=32):
    model.eval()
    with torch.no_grad():
        losses = [model(ids.to(DEVICE), labels=ids.to(DEVICE), return_logits=False,
                        output_router_logits=False).loss.item()
                  for ids in qtrain.sequential_batches(eval_stream, BATCH, SEQ, batches)]
    return sum(losses) / len(losses)


fig, ax = plt.subplots(figsize=(6.5, 3.5))
for name, (history, _, _, model) in RUNS.items():
    n_active = moe.parameter_counts(CONFIGS[name])["active"]
    flops = [6 * n_active * t for t in history.eval_tokens]
    ax.plot(flops, history.eval_loss, "o-", label=name)
    print(f"{name:<18} held-out cross-entropy after {history.eval_tokens[-1]:,} tokens: "
          f"{heldout_cross_entropy(model):.3f}")
ax.set_xlabel("training compute (FLOPs, 6 N_active D)")
ax.set_ylabel("held-out loss")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Expert load over training.** Each heatmap row is an expert, each column a training step;
# the colour is the share of the step's slots the expert received (1/8 = 0.125 is even).
# Below them, the imbalance of each layer: the busiest expert's share divided by the even
# share (1 = perfect, 4 = the busiest expert got half of all slots).

# %%
fig, axes = plt.subplots(2, 2, figsize=(10, 5.5), sharex=True)
last = LAYERS - 1
for col, name in enumerate(("MoE", "MoE, no balancing")):
    loads = RUNS[name][1]                                           # (steps, layers, E)
    image = axes[0, col].imshow(loads[:, last].T, aspect="auto", cmap="viridis",
                                vmin=0, vmax=0.5, interpolation="nearest")
    axes[0, col].set_title(f"{name}: layer {last}")
    axes[0, col].set_ylabel("expert")
    imbalance = loads.amax(-1) * loads.shape[-1]                    # (steps, layers)
    for layer in range(LAYERS):
        axes[1, col].plot(imbalance[:, layer], label=f"layer {layer}")
    axes[1, col].set_ylim(1, 4.5)
    axes[1, col].set_xlabel("training step")
    axes[1, col].set_ylabel("max load / even load")
    axes[1, col].legend()
fig.colorbar(image, ax=axes[0, :], label="share of slots")
plt.show()

for name in ("MoE", "MoE, no balancing"):
    loads = RUNS[name][1]
    imbalance = (loads[-20:].mean(0).amax(-1) * loads.shape[-1]).tolist()
    print(f"{name:<18} imbalance over the last 20 steps, by layer: "
          + ", ".join(f"{v:.2f}" for v in imbalance))

# %% [markdown]
# What the run shows, and what it does not:
#
# - **Collapse comes fast.** Both MoE runs start almost even (the busiest expert gets about
#   1.3× its share), and within ten steps both layers send nearly every token to the same two
#   experts (4 = two experts with half the slots each): the router learns before the experts
#   have differentiated, and the favourites win the gradient.
# - **The balancing loss undoes it.** With it (coefficient 0.01) both layers come back to about
#   2 within a hundred steps, and the heatmap's slots spread over six or seven experts.
#   Without it, layer 1 stays collapsed on two experts to the end; layer 0 partly recovers on
#   its own.
# - **Balance is not perfect.** The loss is pooled over layers (section 5), and 0.01 is a
#   gentle weight; Switch Transformer chose it so that balancing would not cost language-model
#   loss, and Qwen2-MoE uses 0.001.
# - **Loss per FLOP.** Both MoE runs end ahead of the dense model at equal compute (held-out
#   cross-entropy 6.12 and 6.11 against 6.26): the MoE holds 1.3× the dense model's parameters for the same active
#   ones. The collapsed run is *not* worse here: two experts of width 44 plus the shared
#   expert are simply a dense MLP of width 176 with a gate, and 160 steps are too few for the
#   six idle experts to be missed. What collapse costs shows at scale: experts that hold
#   parameters but learn nothing, and devices that sit idle while one holds all the tokens.
#   Compute is not wall-clock time either: section 8 measures what routing costs.
#
# ## 8 · Measure it: what routing costs on a CPU
#
# The MoE block does the same arithmetic per token as a dense SwiGLU of the same active
# width, but adds the router, a sort, a gather, a scatter, and smaller matrix products. The
# next cell times the forward pass of both on 2,048 tokens of hidden size 256 (a dense width
# of 688 against 8 experts of 172, top-2, plus a shared expert of 344). `benchmarks/moe.py`
# runs the same comparison with more repeats, forward and backward, and against transformers'
# block.

# %%
bench_cfg = QwenConfig.tiny(hidden_size=256, num_attention_heads=8, num_experts=8,
                            num_experts_per_tok=2, moe_intermediate_size=172,
                            shared_expert_intermediate_size=344)
torch.manual_seed(7)
bench_moe, bench_dense = moe.SparseMoeBlock(bench_cfg), MLP(256, 688)
torch.nn.init.normal_(bench_moe.gate.weight, std=0.02)
bench_x = torch.randn(2048, 256)
print(f"dense weights {sum(p.numel() for p in bench_dense.parameters()):,}; MoE block "
      f"{sum(p.numel() for p in bench_moe.parameters()):,}")

# %%
# NBVAL_IGNORE_OUTPUT
def median_seconds(fns, repeats=15):
    """Median seconds per call of each fn, timed in alternation after a warm-up."""
    times = {name: [] for name in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: sorted(ts)[repeats // 2] for name, ts in times.items()}


t = median_seconds({"dense": lambda: bench_dense(bench_x), "moe": lambda: bench_moe(bench_x)})
t_dense, t_moe = t["dense"], t["moe"]
print(f"dense SwiGLU: {2048 / t_dense:9,.0f} tokens/s")
print(f"MoE block:    {2048 / t_moe:9,.0f} tokens/s")
print(f"MoE / dense tokens/s: {t_dense / t_moe:.2f}")

# %% [markdown]
# On this 2-core CPU the MoE block reaches about two thirds of the dense MLP's tokens per
# second (0.66 in `benchmarks/moe.py`, which also finds it 1.05–1.17× as fast as transformers'
# block). The overhead is real but bounded, and it is why the MoE trade works at scale: the
# block holds 2.5× the weights here (8× in Qwen1.5-MoE: 60 experts and the shared one, against
# 4 experts and the shared one active) for a constant factor in speed.
#
# ## 9 · Exercises
#
# Write each function without scrolling up; then run the check under it. A check prints `○`
# for a stub that still raises `NotImplementedError`, `✗` with a diagnosis for a wrong answer
# and `✓` for a right one. Solutions: `solutions/13_moe_routing_solutions.ipynb`.
#
# **Exercise 1: top-k routing.** Given router logits `(N, E)`, return `(weights, indices)`,
# both `(N, top_k)`: the `top_k` most probable experts of each token and their softmax
# probabilities (softmax over all `E`), divided by their sum when `norm_topk_prob` is true.

# %%
def my_topk_routing(router_logits, top_k, norm_topk_prob):
    raise NotImplementedError("softmax over all experts, top-k, then renormalise if asked")


checks.check_topk_routing(my_topk_routing)

# %% [markdown]
# **Exercise 2: the load-balancing loss.** Given router logits `(N, E)` and `top_k`, return
# $E \sum_e f_e P_e$ as a scalar tensor: $f_e$ the fraction of tokens whose top-k includes
# expert $e$, $P_e$ the mean softmax probability of $e$.

# %%
def my_balancing_loss(router_logits, top_k):
    raise NotImplementedError("E * sum over experts of (fraction routed) * (mean probability)")


checks.check_load_balancing_loss(my_balancing_loss)

# %% [markdown]
# ## 10 · Review questions
#
# In JupyterLab or Colab, pick an answer and press **Check**; in the book, open **Answer**
# under each question.

# %%
from qwenlab.quiz import Question, quiz  # noqa: E402

quiz([
    Question("Qwen2-57B-A14B holds 57.4B parameters and uses 14.2B per token. Compared with "
             "a dense 14B model, what does serving it cost?",
             ["About the same memory, four times the compute",
              "About the same compute per token, about four times the memory for weights",
              "Four times the compute and four times the memory",
              "Less of both, since most experts are idle"],
             answer=1,
             why="FLOPs per token follow the active parameters (≈ 2 × 14.2B = 28 GFLOPs), so "
                 "the compute matches a 14B dense model; every expert must still be in memory "
                 "(115 GB in bf16). A hosted tier batches many users onto the same GPUs, "
                 "which spreads the memory and keeps the per-token price low."),
    Question("A router computes softmax over all E logits, keeps the top k probabilities, "
             "and does not renormalise (Qwen2-MoE). A learner instead takes the top k logits "
             "and applies softmax to those k. What changes?",
             ["Nothing: both give the same weights",
              "The chosen experts change",
              "The weights of each token now sum to 1: that is the renormalised "
              "(norm_topk_prob=True) router, not Qwen2-MoE's",
              "The weights no longer depend on the logits"],
             answer=2,
             why="softmax over the k chosen logits equals the chosen probabilities divided by "
                 "their sum. The experts are the same (softmax is monotone), but the weights "
                 "are renormalised, so a token unsure of its experts no longer gets a smaller "
                 "routed update."),
    Question("At perfect balance, what is the value of transformers' load-balancing loss "
             "E · Σ f_e P_e for top-k routing?",
             ["0", "1", "k", "E"],
             answer=2,
             why="f_e = k/E (each token counts in k experts) and P_e = 1/E, so the sum is "
                 "E · E · (k/E)(1/E) = k. The factor E keeps this value the same for any number "
                 "of experts, so one coefficient suits models with 8 experts or 64."),
    Question("What happens to a token whose chosen experts are all full under a capacity "
             "factor?",
             ["It is removed from the batch and the loss",
              "It waits for the next batch",
              "Its routed update is zero: it keeps the shared expert and the residual "
              "connection",
              "It is sent to the least loaded expert instead"],
             answer=2,
             why="A dropped slot contributes nothing, so the token's hidden state passes on "
                 "through the residual connection (plus, in Qwen2-MoE, the shared expert). "
                 "Switch and GShard drop this way; choosing a capacity factor trades dropped "
                 "tokens against buffer size."),
    Question("Why does the dispatch sort the (token, choice) slots by expert instead of "
             "looping over tokens?",
             ["Sorting makes the routing deterministic",
              "Each expert then runs once on one contiguous block of rows: E matrix "
              "products instead of N·k tiny ones",
              "It reduces the number of FLOPs per token",
              "transformers requires the tokens in sorted order"],
             answer=1,
             why="The arithmetic is the same; the number of calls is not. After the gather "
                 "(index_select) each expert's tokens are contiguous, so a loop over the E "
                 "experts does all the work, and one index_add_ scatters the weighted results "
                 "back. A loop over tokens would launch N·k small matmuls."),
])

# %% [markdown]
# Next: chapter 14, the capstone, runs the whole recipe at toy scale, stage by stage.
