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
# # 06 · FlashAttention: attention that never writes the score matrix
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/qwenlab/qwenlab/blob/main/chapters/06_flash_attention.ipynb)  
# *On `SCALE="gpu"` this chapter needs:* an Ampere or newer GPU (A100, L4, H100) for bf16 and the benchmark.
#
# Attention computes $\operatorname{softmax}(QK^\top / \sqrt{d})\,V$. Written as three PyTorch
# operations it is correct, and on a GPU it is slow for a reason that has nothing to do with
# arithmetic: the $T \times T$ matrix of scores is written to the GPU's main memory and read
# back, several times, and moving those bytes takes longer than the multiplications.
# **FlashAttention** (Dao et al., 2022; FlashAttention-2, Dao 2023) computes the same numbers
# without ever storing that matrix: it streams over blocks of keys and keeps a few running
# statistics per query, the *online softmax*.
#
# `qwenlab` ships a FlashAttention kernel written in [Triton](https://triton-lang.org), a
# Python language for GPU kernels. It is the `"triton"` attention backend, and `"auto"` picks it
# on a CUDA GPU. It goes beyond Triton's own tutorial kernel in the ways a Qwen2.5 model needs:
# native grouped-query attention (K and V are never copied per query head), any sequence
# length, fp16/bf16/fp32, a backward pass, and a decode path for generation.
#
# In this chapter you will:
#
# 1. count the bytes and FLOPs of naive attention and place it on a GPU's roofline;
# 2. derive the online softmax and check it against `torch.softmax`;
# 3. build tiled attention in PyTorch and prove it equals `qwenlab` and `transformers`;
# 4. run the Triton kernel, in Triton's interpreter on a CPU or compiled on a GPU, and prove
#    its outputs and gradients equal eager attention, for GQA, for decoding and for a whole model;
# 5. read the GPU benchmark;
# 6. write the online-softmax update and one tile of causal attention yourself, with graders.
#
# ## Setup

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %% [markdown]
# Triton compiles kernels for GPUs. Without one it can still *run* them, one program after
# another, in its **interpreter**, on CPU tensors: slow (about $10^4\times$ slower than
# PyTorch), but every line executes as Python, so you can print inside a kernel and step
# through it. The interpreter is chosen by the environment variable `TRITON_INTERPRET=1`, which
# Triton reads when a kernel is defined, so we set it before anything imports Triton
# (`import qwenlab` does not).

# %%
import inspect
import json
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace

import torch

if not torch.cuda.is_available():  # no GPU: run the Triton kernels in the CPU interpreter
    os.environ["TRITON_INTERPRET"] = "1"

import ipywidgets as widgets
import matplotlib.pyplot as plt
from transformers.models.qwen2 import modeling_qwen2

import qwenlab
import qwenlab.env
from qwenlab import KVCache, QwenConfig, QwenForCausalLM, checks
from qwenlab.attention import eager_attention
from qwenlab.kernels import reference

SCALE = qwenlab.env.detect_scale()
device = "cuda" if torch.cuda.is_available() else "cpu"
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# ## 1. The memory problem
#
# Take one head of attention over $T$ tokens with head dimension $d$. Naive attention runs
# three kernels, and each one's output goes to the GPU's main memory (HBM) before the next one
# reads it:
#
# 1. $S = QK^\top$: $2T^2d$ FLOPs; writes the $T \times T$ matrix $S$;
# 2. $P = \operatorname{softmax}(S)$: reads $S$, writes $P$;
# 3. $O = PV$: $2T^2d$ FLOPs; reads $P$.
#
# In bf16 (2 bytes per number) that is at least four passes over $T^2$ numbers, $8T^2$ bytes,
# against $4T^2d$ FLOPs. Their ratio, the **arithmetic intensity**, is
#
# $$I_\text{naive} = \frac{4T^2 d}{8T^2} = \frac{d}{2}\ \text{FLOP/byte},$$
#
# 64 for Qwen2.5's $d = 128$, whatever the length. (Qwen's float32 softmax makes it worse:
# 4-byte probabilities.)
#
# A GPU does a fixed number of FLOPs per byte it can move. NVIDIA's H100 SXM datasheet gives
# 989 TFLOP/s of dense bf16 tensor-core math and 3.35 TB/s of HBM3 bandwidth: 295 FLOPs per
# byte. A kernel whose intensity is below that *ridge point* waits on memory; its best possible
# speed is intensity × bandwidth. This picture is the **roofline model** (Williams, Waterman
# and Patterson, 2009). Naive attention at 64 FLOP/byte can reach at most
# $64 \times 3.35 = 214$ TFLOP/s, 22% of the chip.
#
# FlashAttention fuses the three steps into one kernel. A program loads a block of
# $B_M$ queries once and streams K and V past it; $S$ and $P$ live only in registers and on-chip
# shared memory. HBM traffic is Q and O once, and K and V once per query block:
# $2(2Td + 2Td\,T/B_M)$ bytes, so $I \approx B_M$: 128 FLOP/byte with $B_M = 128$ even if every
# re-read of K and V came from HBM. In practice the programs working on the same head at the
# same time share those tiles through the 50 MB L2 cache, the re-reads mostly never reach HBM,
# and the kernel becomes compute-bound. The memory footprint changes too: $O(T)$ for the
# saved statistics instead of $O(T^2)$ for $P$.
#
# The numbers for one layer of Qwen2.5-7B (28 query heads, $d = 128$), one sequence, bf16:

# %%
PEAK_TFLOPS, HBM_TBPS = 989.0, 3.35      # H100 SXM: dense bf16 tensor cores, HBM3 (datasheet)
H7, D7 = 28, 128                          # Qwen2.5-7B: query heads, head_dim
print(f"ridge point: {PEAK_TFLOPS / HBM_TBPS:.0f} FLOP/byte")
print(f"{'T':>6} {'scores (GiB)':>13} {'FLOPs':>9} {'naive bytes':>12} "
      f"{'time at peak math':>18} {'time to move bytes':>19}")
for T in (1024, 4096, 16384, 32768):
    flops = 4 * H7 * T * T * D7                      # two matmuls of 2*T*T*d FLOPs per head
    naive_bytes = 8 * H7 * T * T                     # write S, read S, write P, read P (bf16)
    t_math = flops / (PEAK_TFLOPS * 1e12) * 1e3      # ms
    t_mem = naive_bytes / (HBM_TBPS * 1e12) * 1e3    # ms
    print(f"{T:>6} {2 * H7 * T * T / 2**30:>13.2f} {flops:>9.2e} {naive_bytes:>12.2e} "
          f"{t_math:>15.2f} ms {t_mem:>16.2f} ms")

# %% [markdown]
# At every length, moving the score matrices takes about 4.6× longer than the arithmetic
# ($8T^2$ bytes at 3.35 TB/s against $4T^2d$ FLOPs at 989 TFLOP/s), and at 32K tokens one
# layer's scores alone need 56 GiB, most of an 80 GB GPU. On the roofline:

# %%
intensity = torch.logspace(0, 4, 200)
attainable = torch.clamp(intensity * HBM_TBPS, max=PEAK_TFLOPS)
points = {"naive attention, d=128 (I = d/2)": 64,
          "FlashAttention, K/V re-read from HBM (I ≈ B_M)": 128,
          "FlashAttention, K/V re-reads hit L2 (T = 4096)": 2048}
fig, ax = plt.subplots(figsize=(8, 4))
ax.loglog(intensity, attainable, color="black", label="roofline: min(peak, I × bandwidth)")
for (label, i), color in zip(points.items(), ["tab:red", "tab:orange", "tab:green"], strict=True):
    ax.plot(i, min(PEAK_TFLOPS, i * HBM_TBPS), "o", color=color, markersize=9, label=label)
ax.axvline(PEAK_TFLOPS / HBM_TBPS, color="gray", linestyle=":", label="ridge point (295)")
ax.set_xlabel("arithmetic intensity (FLOP per byte of HBM traffic)")
ax.set_ylabel("attainable TFLOP/s")
ax.set_title("H100 SXM roofline (bf16): where attention lands")
ax.legend(fontsize=8, loc="lower right")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The online softmax
#
# The obstacle to fusing is the softmax: each probability divides by a sum over *all* keys,
# and, for numerical safety, every exponent first subtracts the maximum over all keys:
#
# $$p_j = \frac{e^{s_j - m}}{\ell}, \qquad m = \max_j s_j, \qquad \ell = \sum_j e^{s_j - m},
# \qquad o = \sum_j p_j v_j .$$
#
# Both $m$ and $\ell$ seem to need every score before the first output can be computed. They do
# not. Visit the keys in blocks and keep, after block $b$,
#
# $$m^{(b)} = \max\bigl(m^{(b-1)}, \max_{j \in b} s_j\bigr),\qquad
# \ell^{(b)} = \ell^{(b-1)}\, e^{m^{(b-1)} - m^{(b)}} + \sum_{j \in b} e^{s_j - m^{(b)}},$$
#
# $$a^{(b)} = a^{(b-1)}\, e^{m^{(b-1)} - m^{(b)}} + \sum_{j \in b} e^{s_j - m^{(b)}} v_j,$$
#
# starting from $m^{(0)} = -\infty$, $\ell^{(0)} = 0$, $a^{(0)} = 0$. By induction,
# $\ell^{(b)} = \sum_{j \text{ seen}} e^{s_j - m^{(b)}}$: when the maximum grows from $m$ to
# $m'$, every term summed so far was computed against the old maximum and is too large by
# exactly $e^{m' - m}$, so multiplying the old sum by $e^{m - m'}$ fixes all of them at once.
# The same holds for the accumulator $a$. After the last block, $o = a / \ell$, exactly, and
# $m + \log \ell$ is the logsumexp of the row, which the backward pass will need.
#
# One query row, 20 keys, blocks of 8:

# %%
torch.manual_seed(0)
scores = 3 * torch.randn(20)       # one query's scores against 20 keys
values = torch.randn(20, 4)        # the 20 keys' values, d = 4

m, l, acc = float("-inf"), 0.0, torch.zeros(4)
for start in range(0, 20, 8):
    s, v = scores[start:start + 8], values[start:start + 8]
    m_new = max(m, s.max().item())
    alpha = math.exp(m - m_new)                  # rescales everything summed under the old max
    p = torch.exp(s - m_new)                     # this block's unnormalised probabilities
    l = l * alpha + p.sum().item()
    acc = acc * alpha + p @ v
    m = m_new
    print(f"keys {start:>2}..{start + len(s) - 1:>2}: m = {m:.4f}  l = {l:.4f}")

print("acc / l == softmax(scores) @ values:",
      torch.allclose(acc / l, torch.softmax(scores, 0) @ values, atol=1e-6))
print("m + log(l) == logsumexp(scores):   ",
      abs(m + math.log(l) - torch.logsumexp(scores, 0).item()) < 1e-5)

# %% [markdown]
# The maximum rose in the second block, and $\ell$ was rescaled instead of recomputed. Nothing
# about the first block had to be kept but three numbers per row. The same update, applied to a
# block of query rows at once (m and l become vectors, acc a matrix), is
# `qwenlab.kernels.reference.online_softmax_update`; the first exercise asks you to write it.
#
# ## 3. Tiling
#
# FlashAttention tiles both sides: a program takes $B_M$ queries, loops over the keys and values
# in tiles of $B_N$, and folds each tile's scores into the running $(m, \ell, a)$ of its rows.
# With a causal mask, query $t$ sees keys $0..t$ (for a chunk of $T$ queries after a cached
# prefix of $S - T$ tokens, keys $0..S-T+t$), so
#
# - tiles entirely left of the diagonal need no mask;
# - tiles crossing the diagonal need the mask (masked scores are $-\infty$, weight 0);
# - tiles entirely right of it are never visited: half the work of causal attention disappears.
#
# Here is the whole loop for one head. `reference.attention_tile` folds one tile into the state:
# scores, mask, online update (the second exercise).

# %%
def tiled_attention(q, k, v, block_m=16, block_n=16):
    """Causal attention of one head: q (T, D), k and v (S, D) -> (T, D), one tile at a time."""
    T, D = q.shape
    S = k.shape[0]
    scale = D ** -0.5
    out = torch.empty(T, D)
    tiles = 0
    for t0 in range(0, T, block_m):
        qb = q[t0:t0 + block_m]                                        # (M, D)
        q_pos = torch.arange(t0, t0 + len(qb)) + (S - T)               # absolute positions
        m = torch.full((len(qb),), float("-inf"))
        l = torch.zeros(len(qb))
        acc = torch.zeros(len(qb), D)
        last_key = int(q_pos[-1])                           # the last key this block sees
        for s0 in range(0, last_key + 1, block_n):                     # later tiles: skipped
            k_pos = torch.arange(s0, min(s0 + block_n, S))
            m, l, acc = reference.attention_tile(qb, k[s0:s0 + block_n], v[s0:s0 + block_n],
                                                 m, l, acc, q_pos, k_pos, scale)
            tiles += 1
        out[t0:t0 + block_m] = acc / l[:, None]                        # normalise once, at the end
    return out, tiles


# %% [markdown]
# Check it on a small GQA layer (4 query heads sharing 2 KV heads, so head $h$ reads KV head
# $h // 2$), against three implementations: `qwenlab`'s eager attention, the library's batched
# `reference.tiled_attention`, and `transformers`' `eager_attention_forward`, which takes an
# additive mask and returns (B, T, H, D).

# %%
torch.manual_seed(0)
B, H, Hkv, T, D = 1, 4, 2, 50, 16
G = H // Hkv
q, k, v = torch.randn(B, H, T, D), torch.randn(B, Hkv, T, D), torch.randn(B, Hkv, T, D)

heads = [tiled_attention(q[0, h], k[0, h // G], v[0, h // G]) for h in range(H)]
ours = torch.stack([out for out, _ in heads])[None]                    # (1, H, T, D)
print(f"tiles visited per head: {heads[0][1]} of {math.ceil(T / 16) ** 2}")

expected = eager_attention(q, k, v, None, D ** -0.5)
library, _ = reference.tiled_attention(q, k, v, causal=True)
module = SimpleNamespace(num_key_value_groups=G, training=False)
additive = torch.zeros(T, T).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -torch.inf)
hf_out, _ = modeling_qwen2.eager_attention_forward(module, q, k, v, additive[None, None],
                                                   scaling=D ** -0.5)
for name, other in [("qwenlab eager", expected), ("qwenlab reference.tiled_attention", library),
                    ("transformers eager", hf_out.transpose(1, 2))]:
    print(f"tiled == {name:<34} max abs diff < 1e-6:",
          (ours - other).abs().max().item() < 1e-6)

# %% [markdown]
# 10 of 16 tiles: with 4 query blocks, block $i$ visits $i + 1$ key tiles, so causal attention
# costs $(n^2 + n)/2$ tiles out of $n^2$, approaching half for long sequences.
#
# ## 4. See it: the tiles a causal kernel computes
#
# Each square is one (query block, key block) tile of the score matrix. The kernel computes
# the green ones without a mask, the orange ones with it (they cross the diagonal or the end of
# the keys), and skips the grey ones. With $T < S$ (a chunk after a cached prefix) the diagonal
# shifts right: those queries see the whole prefix.

# %%
def tile_kinds(T, S, block_m, block_n):
    """(query blocks, key blocks) array: 2 = full tile, 1 = masked tile, 0 = skipped; the same
    split as the Triton kernel's two loops."""
    n_m, n_n = math.ceil(T / block_m), math.ceil(S / block_n)
    kinds = torch.zeros(n_m, n_n, dtype=torch.long)
    for i in range(n_m):
        first_row_sees = i * block_m + (S - T)                # last key of the block's first row
        last_row_sees = min(S - 1, (i + 1) * block_m - 1 + (S - T))
        for j in range(n_n):
            if (j + 1) * block_n - 1 <= first_row_sees and (j + 1) * block_n <= S:
                kinds[i, j] = 2
            elif j * block_n <= last_row_sees:
                kinds[i, j] = 1
    return kinds


def show_tiles(ax, T, S, block_m, block_n):
    kinds = tile_kinds(T, S, block_m, block_n)
    cmap = plt.matplotlib.colors.ListedColormap(["lightgray", "tab:orange", "tab:green"])
    ax.imshow(kinds, cmap=cmap, vmin=0, vmax=2)
    work = (kinds > 0).float().mean().item()
    ax.set_title(f"T={T}, S={S}, tiles {block_m}×{block_n}: {work:.0%} computed", fontsize=9)
    ax.set_xlabel("key block")
    ax.set_ylabel("query block")


fig, axes = plt.subplots(1, 2, figsize=(9, 4))
show_tiles(axes[0], 256, 256, 32, 32)
show_tiles(axes[1], 96, 256, 32, 32)
fig.tight_layout()
plt.show()

# %% [markdown]
# Try other lengths and tile sizes (live in Jupyter; the figure above is the static version).
# Bigger tiles mean fewer re-reads of K and V but a larger fraction of masked work along the
# diagonal.

# %%
# NBVAL_IGNORE_OUTPUT
def explore_tiles(T=256, prefix=0, block_m=32, block_n=32):
    fig, ax = plt.subplots(figsize=(4.5, 4))
    show_tiles(ax, T, T + prefix, block_m, block_n)
    plt.show()


_ = widgets.interact(explore_tiles,
                     T=widgets.IntSlider(value=256, min=16, max=512, step=16),
                     prefix=widgets.IntSlider(value=0, min=0, max=512, step=16),
                     block_m=widgets.Dropdown(options=[16, 32, 64, 128], value=32),
                     block_n=widgets.Dropdown(options=[16, 32, 64, 128], value=32))

# %% [markdown]
# ## 5. The Triton kernel
#
# ### A first kernel you can print from
#
# A Triton kernel is a Python function decorated with `@triton.jit` and launched over a *grid*
# of programs; each program works on blocks of numbers: `tl.arange(0, BLOCK)` is a vector of
# offsets, `tl.load(pointer + offsets, mask=...)` reads a block, `tl.store` writes one. Block
# sizes are compile-time constants (`tl.constexpr`) and must be powers of two; a mask covers
# the tail when the length is not a multiple.
#
# The kernel below is the online softmax of section 2 for one row, in base 2 as GPUs compute
# it ($e^x = 2^{x \log_2 e}$, and the hardware has a fast $2^x$). Integer scores make every
# number exact, so you can check the printed $m$ and $\ell$ by hand. In the interpreter,
# `print` inside a kernel prints (on a GPU, printing is switched off here: thousands of threads
# would each print).

# %%
import triton  # after TRITON_INTERPRET is set
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def streaming_logsumexp2(X, OUT, N, BLOCK: tl.constexpr, PRINT: tl.constexpr):
    m = float("-inf")
    l = 0.0
    for start in range(0, N, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(X + offs, mask=offs < N, other=float("-inf"))   # the tail reads -inf
        m_new = tl.maximum(m, tl.max(x, 0))
        l = l * tl.exp2(m - m_new) + tl.sum(tl.exp2(x - m_new), 0)
        m = m_new
        if PRINT:
            print("block at", start, ": m =", m, " l =", l)
    tl.store(OUT, m + tl.log2(l))


x = torch.tensor([1.0, 3.0, -1.0, 2.0, 0.0, 5.0, 4.0, 1.0, 2.0, 6.0], device=device)
out = torch.empty(1, device=device)
streaming_logsumexp2[(1,)](x, out, x.numel(), BLOCK=4, PRINT=INTERPRETED)
print(f"kernel: {out.item():.4f}   torch: {torch.log2(torch.exp2(x).sum()).item():.4f}")

# %% [markdown]
# ### The attention kernel
#
# `qwenlab/kernels/flash_attention.py` holds the real thing. Its forward kernel `_attn_fwd`
# runs one program per (block of `BLOCK_M` queries, batch × head). The program
#
# 1. finds its KV head, `h_kv = h // GROUP`: that one line is native GQA, K and V are read in
#    place and never repeated;
# 2. loads its query block once;
# 3. loops over key tiles in two ranges: first the tiles every row sees (no mask), then the
#    tiles that cross the diagonal or the end of the keys (masked); later tiles are skipped;
# 4. folds each tile in with the update below;
# 5. writes `acc / l` and the logsumexp `m + log2(l)`, one float per row, for the backward.
#
# The update is the online softmax, in base 2 (`qk_scale` includes $\log_2 e$):

# %%
from qwenlab.kernels import flash_attention as fa

print(inspect.getsource(fa._online_softmax_update.fn))

# %% [markdown]
# `_dot` is `tl.dot`, a matrix product on the tensor cores, with one detail for the
# interpreter: there, `tl.dot` on bf16 inputs gives wrong results in this Triton version, so
# the operands are cast to fp32 first (on a GPU they stay fp16/bf16; accumulation is fp32
# either way). `p.to(v.dtype)` rounds the probabilities to the input precision before the
# second product, as every FlashAttention does; that rounding is most of the difference from
# an fp32 reference.
#
# The backward pass never stored $P$, so it rebuilds each tile from the saved logsumexp,
# $P = 2^{s - \text{lse}}$, and applies the softmax gradient tile by tile:
#
# $$dV = P^\top dO,\quad dP = dO\,V^\top,\quad dS = P \odot (dP - \delta),\quad
# \delta_i = \textstyle\sum_d dO_{id}\, O_{id},\quad dQ = \text{scale}\cdot dS\,K,\quad
# dK = \text{scale}\cdot dS^\top Q .$$
#
# One kernel runs per key block and sums $dK$, $dV$ over every query head of its KV group (the
# backward of sharing), another per query block builds $dQ$; no two programs write the same
# memory, so no atomics are needed.
#
# ### It equals eager attention
#
# Outputs and all three gradients, against `qwenlab`'s eager attention in float32, on a
# causal GQA layer whose length (37) is not a multiple of the 16-wide tiles the interpreter
# uses:

# %%
def compare_with_eager(q, k, v, causal=True):
    """Max abs differences of the kernel's output and gradients from fp32 eager attention."""
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    out = fa.flash_attn(q, k, v, causal=causal)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    qf, kf, vf = (x.detach().float().requires_grad_() for x in (q, k, v))
    mask = None if causal else torch.ones(q.shape[2], k.shape[2], dtype=torch.bool,
                                          device=q.device)
    ref = eager_attention(qf, kf, vf, mask, q.shape[-1] ** -0.5)
    ref_grads = torch.autograd.grad(ref, (qf, kf, vf), dout.float())
    return {name: (a.float() - b).abs().max().item()
            for name, a, b in zip(("out", "dq", "dk", "dv"), (out, *grads), (ref, *ref_grads),
                                  strict=True)}


torch.manual_seed(0)
q, k, v = (torch.randn(1, 4, 37, 16, device=device), torch.randn(1, 2, 37, 16, device=device),
           torch.randn(1, 2, 37, 16, device=device))
for dtype, tol in [(torch.float32, 1e-5), (torch.bfloat16, 4e-2)]:
    diffs = compare_with_eager(q.to(dtype), k.to(dtype), v.to(dtype))
    print(f"{str(dtype):<15}", "  ".join(f"{n} < {tol:g}: {d < tol}" for n, d in diffs.items()))

# %% [markdown]
# float32 agrees to rounding. bf16 carries 8 significant bits (a relative step of
# $2^{-8} \approx 0.004$), so its outputs and gradients differ from the fp32 reference by up to
# about 0.01 on values of order 1. `tests/test_kernels.py` runs more cases: lengths 1, 17, 40,
# 64 and 100, non-causal attention, groups of 1, 2 and 7 query heads per KV head, fp16.
#
# ## 6. GQA without the repeat, and the decode path
#
# ### GQA
#
# Eager attention (and `transformers`) turn GQA back into multi-head attention by copying
# each KV head $G$ times (`repeat_kv`). The kernel reads KV head `h // GROUP` in place. Here is
# the extreme case, multi-query attention with 7 query heads on one KV head:

# %%
torch.manual_seed(1)
q7, k1, v1 = (torch.randn(2, 7, 29, 32, device=device), torch.randn(2, 1, 29, 32, device=device),
              torch.randn(2, 1, 29, 32, device=device))
out7 = fa.flash_attn(q7, k1, v1)
print("7 query heads on 1 KV head, == eager (repeats K/V):",
      (out7 - eager_attention(q7, k1, v1, None, 32 ** -0.5)).abs().max().item() < 1e-5)
print(f"K/V bytes the kernel reads: {k1.nbytes + v1.nbytes:,}; "
      f"eager's repeated copies: {7 * (k1.nbytes + v1.nbytes):,}")

# %% [markdown]
# ### Decoding: one token against the cache, split over the sequence
#
# When generating, each step has one new query per sequence. `qwenlab`'s decode step folds
# the $G$ query heads that share a KV head into a $(G, d)$ block, so attention is, per KV
# head, a $(G, d) \times (d, S)$ product: K and V are read once. With one query, a
# FlashAttention program per (sequence, head) would leave most of a GPU idle (Qwen2.5-7B has
# 4 KV heads; an H100 has 132 multiprocessors). So the decode kernel also splits the *keys*
# ("split-K", the idea of Flash-Decoding): each program handles one range of the cache and
# writes its partial output and logsumexp; a second kernel merges the splits with the same
# online-softmax rule, each split's logsumexp playing the part of a score.
#
# The cache is `qwenlab.KVCache`, preallocated for 64 tokens; `update` returns views of its
# first 45 positions, not contiguous in memory, which the kernel reads through their strides.
# Row 0 is left-padded by 6 tokens (`key_mask` False there).

# %%
torch.manual_seed(2)
cfg = QwenConfig.tiny()                                  # 4 query heads, 2 KV heads, d = 32
Bd, Hq, Hk, Dd = 2, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
cache = KVCache(cfg, batch_size=Bd, max_len=64, device=device)
k_all, v_all = cache.update(0, torch.randn(Bd, Hk, 45, Dd, device=device),
                            torch.randn(Bd, Hk, 45, Dd, device=device))   # (B, Hkv, 45, D) views
q_new = torch.randn(Bd, Hq, 1, Dd, device=device)                          # one token per row
key_mask = torch.ones(Bd, 1, 1, 45, dtype=torch.bool, device=device)
key_mask[0, ..., :6] = False

folded = q_new.view(Bd, Hk, Hq // Hk, Dd)                 # (B, Hkv, G, D): heads folded by group
out_decode = fa.flash_attn_decode(folded, k_all, v_all, key_mask, Dd ** -0.5, num_splits=3)
full = eager_attention(q_new, k_all, v_all, key_mask, Dd ** -0.5)       # (B, H, 1, D)
print("cache views contiguous:", k_all.is_contiguous())
print("split-K decode (3 splits) == full attention over the cache:",
      (out_decode.reshape(Bd, Hq, 1, Dd) - full).abs().max().item() < 1e-5)

# %% [markdown]
# ### The whole model
#
# `attn_backend="triton"` puts the kernel in every layer: `Attention.forward` calls the
# differentiable forward/backward, `qwenlab.generate` calls the decode kernel. Two 2-layer tiny
# models with the same weights, one on the kernel and one on eager attention, must agree in
# logits, in every parameter's gradient, and in greedily generated tokens; the eager one is
# also exported to `transformers` and compared. (We scale the random weights up, std 0.1, so
# that greedy decoding has clear winners instead of near-ties decided by rounding.)

# %%
torch.manual_seed(0)
model_t = QwenForCausalLM(QwenConfig.tiny(num_hidden_layers=2, attn_backend="triton"))
with torch.no_grad():
    for name, p in model_t.named_parameters():
        p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
model_e = QwenForCausalLM(QwenConfig.tiny(num_hidden_layers=2, attn_backend="eager"))
model_e.load_state_dict(model_t.state_dict())
model_t, model_e = model_t.to(device), model_e.to(device)
print(model_t.model.layers[0].self_attn.extra_repr())

ids = torch.randint(0, cfg.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
ids = ids.to(device)
out_t, out_e = model_t(ids, labels=ids), model_e(ids, labels=ids)
out_t.loss.backward()
out_e.loss.backward()
hf_logits = qwenlab.hf.to_transformers(model_e).to(device)(ids).logits
grad_diff = max((a.grad - b.grad).abs().max().item()
                for a, b in zip(model_t.parameters(), model_e.parameters(), strict=True))
print("logits, triton == eager:       ", (out_t.logits - out_e.logits).abs().max().item() < 1e-5)
print("logits, triton == transformers:", (out_t.logits - hf_logits).abs().max().item() < 1e-4)
print("all parameter gradients equal: ", grad_diff < 1e-5)
prompt = ids[:, :6]
tokens_t = qwenlab.generate(model_t.eval(), prompt, max_new_tokens=6)
tokens_e = qwenlab.generate(model_e.eval(), prompt, max_new_tokens=6)
print("greedy tokens equal:           ", torch.equal(tokens_t, tokens_e))

# %% [markdown]
# When the kernel cannot run (triton missing, a CPU without `TRITON_INTERPRET=1`, a GPU older
# than Ampere, an unsupported head_dim), `attn_backend="triton"` falls back to PyTorch's
# `sdpa` and warns once, saying why. A left-padded batch passes a padding mask, which the
# kernel does not implement; those calls go to `sdpa` silently. `"auto"` chooses Triton only
# on a CUDA GPU of compute capability 8.0 or newer:

# %%
print(QwenForCausalLM(QwenConfig.tiny(num_hidden_layers=1)).model.layers[0].self_attn.extra_repr())

# %% [markdown]
# ## 7. Measure it
#
# In the interpreter a kernel is slow by design; that is the price of printing from it. One
# forward pass of a (1, 4, 64, 32) attention:

# %%
# NBVAL_IGNORE_OUTPUT
qb, kb, vb = (torch.randn(1, 4, 64, 32, device=device), torch.randn(1, 2, 64, 32, device=device),
              torch.randn(1, 2, 64, 32, device=device))
for name, fn in [("triton kernel", lambda: fa.flash_attn(qb, kb, vb)),
                 ("eager", lambda: eager_attention(qb, kb, vb, None, 32 ** -0.5))]:
    fn()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"{name:<14} {(time.perf_counter() - start) * 1e3:9.2f} ms"
          + ("  (interpreted)" if INTERPRETED and name.startswith("triton") else ""))

# %% [markdown]
# Speed is a GPU question. `benchmarks/attention.py` times the kernel against PyTorch's
# `sdpa` (its FlashAttention backend) and eager attention in bf16: causal attention with
# $T$ from 512 to 16,384 tokens ($B \cdot T = 16384$ per step), head_dim 64 and 128, GQA 7:1
# and 8:1. It counts FLOPs as Triton's tutorial does, $4BHT^2d$ for a forward pass, halved for
# causal attention, ×2.5 for the backward, and writes JSON to `benchmarks/results/`. On a GPU
# this cell measures a few shapes live; on a CPU it shows the recorded runs:

# %%
results_dir = Path.cwd().parent / "benchmarks" / "results"
recorded = sorted(results_dir.glob("attention_*.json")) if results_dir.is_dir() else []
if device == "cuda":
    print("GPU present: see the live measurement in the next cell.")
elif not recorded:
    print("No GPU run has been recorded yet: benchmarks/results/ holds no attention_*.json. "
          "Run `python benchmarks/attention.py` on a CUDA GPU (compute capability 8.0+) to "
          "create one; nothing here is estimated or invented.")
for path in recorded:
    run = json.loads(path.read_text())
    print(f"{run['gpu']} (torch {run['torch']}, triton {run['triton']}), {run['dtype']}, "
          f"causal, TFLOP/s forward / backward:")
    print(f"{'shape':<19}{'T':>6}  {'triton':>13}  {'sdpa-flash':>13}  {'eager':>13}")
    rows = {}
    for r in run["training"]:
        cell = "skipped" if "skipped" in r else f"{r['fwd_tflops']:.0f} / {r['bwd_tflops']:.0f}"
        rows.setdefault((r["shape"], r["T"]), {})[r["provider"]] = cell
    for (shape, T_), cells in rows.items():
        print(f"{shape:<19}{T_:>6}  " + "  ".join(f"{cells.get(p, '-'):>13}"
                                                  for p in ("triton", "sdpa-flash", "eager")))

# %%
# NBVAL_IGNORE_OUTPUT
if device == "cuda" and torch.cuda.get_device_capability() >= (8, 0):
    from torch.nn.functional import scaled_dot_product_attention as sdpa
    from triton.testing import do_bench

    print(torch.cuda.get_device_name())
    for T_ in (1024, 4096):
        Bq = 16384 // T_
        qg = torch.randn(Bq, 28, T_, 128, device="cuda", dtype=torch.bfloat16)
        kg, vg = (torch.randn(Bq, 4, T_, 128, device="cuda", dtype=torch.bfloat16)
                  for _ in range(2))
        flops = 4 * Bq * 28 * T_ * T_ * 128 * 0.5
        ms_triton = do_bench(lambda: fa.flash_attn(qg, kg, vg))
        ms_sdpa = do_bench(lambda: sdpa(qg, kg, vg, is_causal=True, enable_gqa=True))
        print(f"T={T_:>5}: triton {flops / ms_triton * 1e-9:6.1f} TFLOP/s, "
              f"sdpa {flops / ms_sdpa * 1e-9:6.1f} TFLOP/s (forward, bf16, d=128, GQA 7:1)")
else:
    print("no CUDA GPU (compute capability 8.0+): nothing to time live")

# %% [markdown]
# ## 8. Exercises
#
# ### Exercise 1: the online-softmax update
#
# Write the update of section 2 for a block of $R$ query rows at once:
#
# - inputs: `m` (R,) and `l` (R,), the running max and sum; `acc` (R, D), the running
#   $\sum_j e^{s_j - m} v_j$; `scores` (R, N), this block's scores (masked ones are `-inf`);
#   `v` (N, D), its values;
# - output: the tuple `(m, l, acc)` after the block, `acc` still unnormalised.
#
# Use natural exponentials (`torch.exp`). The grader checks one step from a given state and
# three steps from the empty state $(-\infty, 0, 0)$.

# %%
def my_online_softmax_update(m, l, acc, scores, v):
    """(m (R,), l (R,), acc (R, D)) after folding in scores (R, N) and values v (N, D)."""
    raise NotImplementedError("m_new = max(m, rowmax(scores)); rescale l and acc; add the block")


# %%
checks.check_online_softmax_update(my_online_softmax_update)

# %% [markdown]
# ### Exercise 2: one tile of causal attention
#
# Write what `reference.attention_tile` does in section 3: given a query block `q` (M, D) at
# absolute positions `q_pos` (M,), a key/value tile `k`, `v` (N, D) at positions `k_pos` (N,),
# the running state `(m, l, acc)` and `scale`, compute the scaled scores, hide the keys a query
# must not see (a key is visible when `k_pos <= q_pos`), and fold the tile into the state.
# You may call `reference.online_softmax_update` (or your own from exercise 1).

# %%
def my_attention_tile(q, k, v, m, l, acc, q_pos, k_pos, scale):
    """(m, l, acc) after one causal tile: queries q (M, D) at q_pos, keys/values (N, D) at k_pos."""
    raise NotImplementedError("scores = (q @ k.T) * scale; -inf where k_pos > q_pos; update")


# %%
checks.check_attention_tile(my_attention_tile)

# %% [markdown]
# ## Review questions
#
# Pick an answer and press **Check** in JupyterLab or Colab; in the book, open **Answer**.

# %%
from qwenlab.quiz import Question, quiz  # noqa: E402

quiz([
    Question("Naive attention and FlashAttention do the same FLOPs. Why is FlashAttention "
             "several times faster on a GPU?",
             ["It uses lower precision for the scores",
              "It never moves the T x T scores through HBM, so it stops being memory-bound",
              "It skips the masked half of the scores in the causal case",
              "It uses a cheaper approximation of the softmax"],
             answer=1,
             why="Naive attention writes the T x T scores and probabilities to HBM and reads them "
                 "back: an intensity of about d/2 = 64 FLOP/byte for d = 128, far below an "
                 "H100's ridge point of ~295, so at most ~214 of 989 TFLOP/s. FlashAttention "
                 "keeps each tile on chip and moves only Q, K, V and O; it is exact."),
    Question("In the online softmax the running max grows from m_old to m_new. What must be "
             "multiplied by exp(m_old - m_new)?",
             ["Only the accumulator acc", "Only the running sum l",
              "Neither: the new block's scores are shifted instead",
              "Both acc and l"],
             answer=3,
             why="Both were summed as exp(s - m_old); against the new max each term is smaller "
                 "by exactly exp(m_old - m_new). Rescaling only acc leaves l overweighting the "
                 "earlier blocks, so acc / l comes out too small and rows no longer sum to one."),
    Question("What does the forward pass save for the backward pass?",
             ["The probability matrix P, to avoid recomputing it",
              "Only the output O",
              "Q, K, V, the output O and one logsumexp per query row",
              "The scores before the softmax, in bf16"],
             answer=2,
             why="Storing P would bring back the O(T^2) memory and traffic the forward avoided. "
                 "With the logsumexp each tile of probabilities is recomputed exactly as "
                 "exp(s - lse) when needed: one extra QK^T product, cheap compute traded for "
                 "expensive memory."),
    Question("How does the kernel serve grouped-query attention without repeating K and V?",
             ["The program for query head h reads KV head h // G, and each dK/dV program sums "
              "the gradients of its G query heads",
              "It repeats K and V once per launch in shared memory, not in HBM",
              "It averages the G query heads into one before attending",
              "It runs one launch per query head with the KV head copied in"],
             answer=0,
             why="Forward: pointers select KV head h // G, so the cache is read, never copied "
                 "(14,848 bytes against 103,936 for the 7:1 example). Backward: a shared K or V "
                 "gets the sum over its G query heads; every program owns its output block, so "
                 "no atomics are needed."),
    Question("Why does the decode kernel split the keys of one sequence across programs?",
             ["To fit the keys into shared memory",
              "To avoid the causal mask",
              "Because the softmax cannot be computed over more than one block",
              "Because one query token gives only batch x KV-heads programs (4 for Qwen2.5-7B "
              "at batch 1), too few to keep the memory system busy"],
             answer=3,
             why="Decoding is bound by reading the cache, and 4 programs against 132 "
                 "multiprocessors cannot saturate HBM. Each split returns its output and "
                 "logsumexp; a small kernel merges them exactly with the online-softmax rule."),
])
