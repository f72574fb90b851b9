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
# # 02 · RMSNorm, and why it runs in float32
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/qwenlab/qwenlab/blob/main/chapters/02_rmsnorm.ipynb)  
# *On `SCALE="gpu"` this chapter needs:* none: the CPU is enough.
#
# Every Qwen2.5 block normalises its input twice: once before attention, once before the MLP.
# The normalisation is **RMSNorm**, a simpler cousin of LayerNorm, and it hides one detail
# that matters a great deal in practice: even when the model runs in bfloat16, the statistic
# is computed in float32.
#
# In this chapter you will:
#
# 1. compare LayerNorm and RMSNorm, formula by formula, and see where Qwen2.5 puts its norms;
# 2. build RMSNorm and prove it equals `qwenlab.norm.RMSNorm` and transformers'
#    `Qwen2RMSNorm`, bit for bit, in float32 and in bfloat16;
# 3. break it on purpose: run it in bfloat16 and float16 without the float32 upcast, and
#    measure the damage against a float64 ground truth;
# 4. count what the norms cost, and time them;
# 5. write RMSNorm yourself, twice: the formula, then the dtype-safe recipe.
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

import qwenlab
import qwenlab.env
from qwenlab import QwenConfig, QwenForCausalLM, checks
from qwenlab.norm import RMSNorm

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# ## The idea: LayerNorm without the mean
#
# A token's hidden state is a vector $x \in \mathbb{R}^C$ ($C$ = `hidden_size`, 896 for
# Qwen2.5-0.5B). **LayerNorm** (Ba et al., 2016) centres it, scales it to unit variance, then
# applies a learned gain $g$ and bias $b$:
#
# $$\mathrm{LayerNorm}(x) = g \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + b, \qquad
# \mu = \frac{1}{C}\sum_i x_i, \quad \sigma^2 = \frac{1}{C}\sum_i (x_i - \mu)^2.$$
#
# **RMSNorm** (Zhang & Sennrich, 2019) keeps only the scaling. It divides by the root mean
# square and has a gain but no bias:
#
# $$\mathrm{RMSNorm}(x) = g \odot \frac{x}{\sqrt{\tfrac{1}{C}\sum_i x_i^2 + \epsilon}}.$$
#
# What it drops, and what that saves:
#
# | | LayerNorm | RMSNorm |
# | --- | --- | --- |
# | statistics per vector | mean and variance | mean of squares |
# | invariant to | scaling **and** shifting $x$ | scaling $x$ |
# | parameters | $2C$ (gain, bias) | $C$ (gain) |
# | elementwise work | subtract, square, scale, gain, bias | square, scale, gain |
#
# Zhang & Sennrich's argument: what makes LayerNorm help training is its invariance to the
# *scale* of its input, not the re-centring, so the mean can go. They report the same quality
# for 7–64% less running time in their (unfused) implementations. Nearly every recent LLM
# (Llama, Mistral, Qwen, Gemma, DeepSeek) made the same choice.
#
# Qwen2.5 uses $\epsilon = 10^{-6}$. It only matters for vectors whose RMS is near
# $\sqrt{\epsilon} = 10^{-3}$ or below; it keeps an all-zero vector from becoming $0/0$.
#
# ### What the two do to a vector
#
# RMSNorm puts every vector (before the gain) on the sphere of RMS 1, that is of Euclidean
# norm $\sqrt{C}$. LayerNorm also removes the component along $(1, 1, \dots, 1)$, so its
# outputs lie on a smaller sphere inside a hyperplane: one dimension fewer. In two dimensions
# the difference is stark. Each grey point below is a random 2-vector; RMSNorm maps it onto
# the circle of radius $\sqrt{2}$, LayerNorm onto one of just two points.

# %%
torch.manual_seed(0)
pts = torch.randn(200, 2) * torch.tensor([2.0, 0.7]) + torch.tensor([1.0, 0.5])   # (N, 2)
eps = 1e-12                                     # (tiny here, to show the ideal geometry)
rms_pts = pts * torch.rsqrt(pts.pow(2).mean(-1, keepdim=True) + eps)
ln_pts = F.layer_norm(pts, (2,), eps=eps)

rms_of_outputs = rms_pts.pow(2).mean(-1).sqrt()
print("RMS of the RMSNorm outputs: min", f"{rms_of_outputs.min().item():.4f},",
      "max", f"{rms_of_outputs.max().item():.4f}")
print("distinct LayerNorm outputs:", torch.unique(ln_pts.round(decimals=3), dim=0).tolist())

fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.scatter(pts[:, 0], pts[:, 1], s=8, color="lightgray", label="inputs")
ax.scatter(rms_pts[:, 0], rms_pts[:, 1], s=8, color="tab:blue", label="RMSNorm(x)")
ax.scatter(ln_pts[:, 0], ln_pts[:, 1], s=60, marker="x", color="tab:red", label="LayerNorm(x)")
ax.set_aspect("equal")
ax.set_xlim(-6, 6)
ax.set_ylim(-6, 6)
ax.legend(loc="upper left", fontsize=8)
ax.set_title("C = 2: where the norms send a vector")
fig.tight_layout()
plt.show()

# %% [markdown]
# With $C = 896$ LayerNorm's lost dimension is one of 896, which is why dropping the mean
# costs nothing in practice. The invariances in the table are easy to check numerically:
# scaling $x$ changes neither output, shifting it changes only RMSNorm's.

# %%
torch.manual_seed(0)
x = torch.randn(896)
rms = lambda v: v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6)  # noqa: E731
ln = lambda v: F.layer_norm(v, v.shape, eps=1e-6)                       # noqa: E731
print("RMSNorm(3x)    == RMSNorm(x):  ", torch.allclose(rms(3 * x), rms(x), atol=1e-6))
print("LayerNorm(3x)  == LayerNorm(x):", torch.allclose(ln(3 * x), ln(x), atol=1e-5))
print("RMSNorm(x+2)   == RMSNorm(x):  ", torch.allclose(rms(x + 2), rms(x), atol=1e-5))
print("LayerNorm(x+2) == LayerNorm(x):", torch.allclose(ln(x + 2), ln(x), atol=1e-5))

# %% [markdown]
# ### Where the norms sit: pre-norm
#
# The original Transformer normalised the *output* of each sub-layer ("post-norm"):
# $h \leftarrow \mathrm{Norm}(h + \mathrm{Attn}(h))$. Qwen2.5, like GPT-2 onwards, normalises
# the sub-layer's *input* ("pre-norm") and leaves the residual stream $h$ alone:
#
# $$h \leftarrow h + \mathrm{Attn}(\mathrm{RMSNorm}_1(h)), \qquad
#   h \leftarrow h + \mathrm{MLP}(\mathrm{RMSNorm}_2(h)),$$
#
# and one final RMSNorm before the LM head. The residual stream is then a plain sum of every
# sub-layer's output, so gradients reach the early layers undamped, which is what lets deep
# pre-norm stacks train without careful warm-up. The price: nothing bounds the size of $h$,
# and in trained models it grows large (hold on to that for the bfloat16 experiment).
#
# The course's tiny model has 4 blocks, so $2 \cdot 4 + 1 = 9$ norms, named as in
# transformers:

# %%
tiny = QwenForCausalLM(QwenConfig.tiny())
norm_names = [name for name, m in tiny.named_modules() if isinstance(m, RMSNorm)]
print(len(norm_names), "RMSNorm modules:")
for name in norm_names:
    print("  ", name)

# %% [markdown]
# ## Build it
#
# RMSNorm in float32 is three lines: the mean of squares over the last dimension (one number
# per token), its reciprocal square root, and the gain. `keepdim=True` keeps a trailing axis of
# size 1 so that the division broadcasts over the channels.

# %%
def rms_norm_fp32(x, weight, eps=1e-6):
    mean_square = x.pow(2).mean(-1, keepdim=True)        # (..., 1): one number per token
    return weight * (x * torch.rsqrt(mean_square + eps))  # (..., C)


torch.manual_seed(0)
x = torch.randn(2, 3, 8) * torch.tensor([0.01, 1.0, 50.0])[None, :, None]  # (B, T, C)
y = rms_norm_fp32(x, torch.ones(8))
print("RMS of each input token: ", [round(v, 4) for v in x.pow(2).mean(-1).sqrt()[0].tolist()])
print("RMS of each output token:", [round(v, 4) for v in y.pow(2).mean(-1).sqrt()[0].tolist()])

# %% [markdown]
# Tokens of RMS 0.77 and 61 come out with RMS 1 (times the gain, here 1). The one of RMS 0.01
# comes out at 0.995: its mean square, $10^{-4}$, is only 100 times eps, and eps takes its 1%.
# That is the whole idea.
#
# Now the detail. A real model runs in bfloat16, and Qwen's code (like Llama's) does not
# compute in the input's dtype. It upcasts to float32, normalises, casts back to the input's
# dtype, and only then multiplies by the weight:

# %%
def rms_norm(x, weight, eps=1e-6):
    """Qwen2.5's RMSNorm: float32 statistic, cast back, then the gain in the model's dtype."""
    input_dtype = x.dtype
    x32 = x.to(torch.float32)
    mean_square = x32.pow(2).mean(-1, keepdim=True)      # (..., 1), in float32
    normed = x32 * torch.rsqrt(mean_square + eps)         # (..., C), in float32
    return weight * normed.to(input_dtype)                # back to bf16, then the gain


# %% [markdown]
# ## Prove it: equal to qwenlab and to transformers
#
# We give the library's `RMSNorm` and transformers' `Qwen2RMSNorm` the same random gain (not
# the all-ones initial value, so that a bug in the gain cannot hide) and compare with
# `torch.equal`: every bit, not a tolerance. In bfloat16 the modules are cast with `.to()`, as
# a bf16 model would be, so the gain is bf16 too.

# %%
from transformers.models.qwen2 import modeling_qwen2  # noqa: E402

torch.manual_seed(0)
C = 64
x = torch.randn(2, 5, C) * 3                     # (B, T, C)
weight = 1 + 0.1 * torch.randn(C)

ours = RMSNorm(C, eps=1e-6)
theirs = modeling_qwen2.Qwen2RMSNorm(C, eps=1e-6)
with torch.no_grad():
    ours.weight.copy_(weight)
    theirs.weight.copy_(weight)

for dtype in (torch.float32, torch.bfloat16):
    xd = x.to(dtype)
    mine = rms_norm(xd, weight.to(dtype))
    print(f"{str(dtype):15}  == qwenlab: {torch.equal(mine, ours.to(dtype)(xd))}   "
          f"== transformers: {torch.equal(mine, theirs.to(dtype)(xd))}   "
          f"output dtype: {mine.dtype}")

# %% [markdown]
# In float32 the upcast does nothing, so `rms_norm_fp32` is the same function there:

# %%
same = torch.equal(rms_norm_fp32(x, weight), rms_norm(x, weight))
print("float32, rms_norm_fp32 == rms_norm:", same)

# %% [markdown]
# ## Why the float32 upcast matters
#
# Three floating-point formats, what `torch.finfo` says about them. `eps` here is the gap
# between 1 and the next representable number: the relative precision.

# %%
for dt in (torch.float32, torch.bfloat16, torch.float16):
    fi = torch.finfo(dt)
    print(f"{str(dt):15} {fi.bits} bits   largest {fi.max:9.3g}   precision (eps) {fi.eps:.3g}   "
          f"smallest normal {fi.tiny:.3g}")

# %% [markdown]
# bfloat16 keeps float32's 8 exponent bits (same range, up to $3.4 \times 10^{38}$) but only 8
# significant bits: about 2–3 decimal digits. float16 has 3 more significant bits but a range
# that ends at 65,504. Each format fails RMSNorm in its own way.
#
# ### float16: $x^2$ overflows
#
# Trained LLMs carry a few *massive activations*: single channels of the residual stream with
# values in the hundreds or thousands, in specific dimensions and tokens (Sun et al., 2024,
# "Massive Activations in Large Language Models"). Pre-norm lets them grow, since nothing
# normalises the residual stream itself. Put one value of 300 in a token vector: $300^2 =
# 90{,}000 > 65{,}504$.

# %%
def rms_norm_naive(x, weight, eps=1e-6):
    """The same formula, computed entirely in x's dtype: no upcast."""
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


torch.manual_seed(0)
x = torch.randn(896)
x[7] = 300.0                                    # one massive activation
w = torch.ones(896)
truth = rms_norm_fp32(x.double(), w.double())   # float64 ground truth

x16, w16 = x.half(), w.half()
print("300^2 in float16:        ", (x16[7] ** 2).item())
naive16 = rms_norm_naive(x16, w16)
qwen16 = rms_norm(x16, w16)
print("naive float16 output:    ", naive16[:4].tolist(), "... all zero:",
      bool((naive16 == 0).all()))
print("                          (-0.0 is zero with a sign: x * 0 for negative x)")
print("Qwen recipe, float16:    ", [round(v, 4) for v in qwen16[:4].tolist()])
print("float64 ground truth:    ", [round(v, 4) for v in truth[:4].tolist()])
worst = (qwen16.double() - truth).abs().max() / truth.abs().max()
print("Qwen recipe, largest error relative to the largest output:", f"{worst.item():.1e}")

# %% [markdown]
# One square overflows to `inf`, the mean is `inf`, `rsqrt(inf) = 0`, and **the whole token
# vector comes out zero**: the token is silently erased before attention reads it. With the
# upcast the same float16 input gives the right answer to float16's precision.
#
# ### bfloat16: the sum stops growing
#
# bfloat16 cannot overflow here, but with 8 significant bits, adding a small number to a large
# one can do nothing at all:

# %%
big = torch.tensor(256.0, dtype=torch.bfloat16)
print("256 + 1 in bfloat16 =", (big + 1).item())
print("256 + 2 in bfloat16 =", (big + 2).item())

# %% [markdown]
# The mean of squares is a sum of $C$ terms. A kernel that keeps its running sum in bfloat16
# adds each $x_i^2$ to an accumulator that soon is hundreds of times larger, and from then on
# most additions round away. `mean_square_running` below adds one channel at a time in a chosen
# accumulator dtype, as such a kernel would. We compare it with float64 on token vectors of
# Qwen2.5's hidden sizes.

# %%
def mean_square_running(x, acc_dtype):
    """Mean of x**2 over the last dim, summed one channel at a time in acc_dtype."""
    acc = torch.zeros(x.shape[:-1], dtype=acc_dtype)
    for j in range(x.shape[-1]):
        acc = acc + x[..., j].to(acc_dtype) ** 2
    return acc / x.shape[-1]


def rel_error(a, b):
    return ((a.double() - b) / b).abs().mean().item()


torch.manual_seed(0)
hidden_sizes = sorted({QwenConfig.preset(p).hidden_size for p in qwenlab.config.PRESETS})
acc_errors = {"bf16": [], "fp32": [], "torch": []}
print("hidden   bf16 running sum   fp32 running sum   torch bf16 .mean()")
for C in hidden_sizes:
    x = torch.randn(16, C).bfloat16()                   # 16 tokens of unit-scale activations
    truth = x.double().pow(2).mean(-1)
    errs = (rel_error(mean_square_running(x, torch.bfloat16), truth),
            rel_error(mean_square_running(x, torch.float32), truth),
            rel_error(x.pow(2).mean(-1), truth))
    for key, e in zip(acc_errors, errs):
        acc_errors[key].append(e)
    print(f"{C:6}   {errs[0]:16.1%}   {errs[1]:16.1e}   {errs[2]:18.1e}")

# %% [markdown]
# With a bfloat16 accumulator the mean of squares is underestimated by a sixth for Qwen2.5-0.5B's
# 896 channels and by over two thirds for 72B's 8,192, so every output would be too large by
# $1/\sqrt{\text{that fraction}}$: up to about 1.9× for 8,192 channels. A float32 accumulator is
# accurate to a few parts per million.
#
# The last column is honest about PyTorch: its reduction kernels already accumulate bfloat16
# in float32 internally (on CPU and CUDA), so `x.pow(2).mean()` on a bf16 tensor only pays for
# rounding each square and the result to bfloat16, about $10^{-3}$. The explicit upcast turns
# that implementation detail into a guarantee: every kernel that reimplements the norm (fused
# Triton kernels, inference engines, your own) must accumulate in float32, and the recipe
# fixes exactly which roundings happen, which is what makes qwenlab and transformers agree bit
# for bit.
#
# ### The whole norm, across activation scales
#
# Now the complete RMSNorm, naive versus Qwen's recipe, in both 16-bit formats, on token
# vectors (hidden 896) whose scale runs from $10^{-3}$ to $10^{3}$. The error is the relative
# error of each output vector against float64, averaged over 32 tokens.

# %%
torch.manual_seed(0)
scales = [10.0 ** (k / 2) for k in range(-6, 7)]          # 1e-3 ... 1e3
base = torch.randn(32, 896)
gain = 1 + 0.1 * torch.randn(896)
recipes = {"bf16, naive": (torch.bfloat16, rms_norm_naive),
           "bf16, Qwen": (torch.bfloat16, rms_norm),
           "fp16, naive": (torch.float16, rms_norm_naive),
           "fp16, Qwen": (torch.float16, rms_norm)}
sweep = {name: [] for name in recipes}
for s in scales:
    for name, (dt, fn) in recipes.items():
        x, g = (base * s).to(dt), gain.to(dt)
        truth = rms_norm_fp32(x.double(), g.double())          # exact, from the same inputs
        err = (fn(x, g).double() - truth).norm(dim=-1) / truth.norm(dim=-1)
        sweep[name].append(err.mean().item())

print("scale    " + "".join(f"{name:>14}" for name in recipes))
for i, s in enumerate(scales):
    print(f"{s:7.0e}  " + "".join(f"{sweep[name][i]:14.1e}" for name in recipes))

# %% [markdown]
# ## See it
#
# Left: the sweep above. Right: the accumulator experiment.

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
styles = {"bf16, naive": ("tab:orange", "--"), "bf16, Qwen": ("tab:orange", "-"),
          "fp16, naive": ("tab:purple", "--"), "fp16, Qwen": ("tab:purple", "-")}
for name, errs in sweep.items():
    color, ls = styles[name]
    ax1.loglog(scales, errs, ls, color=color, marker="o", ms=3, label=name)
ax1.axvline(256 / 4.5, color="gray", lw=0.8, ls=":")
ax1.text(256 / 4.5 * 0.9, 1e-1, "fp16: x² > 65504 ", fontsize=8, color="gray", ha="right")
ax1.set_xlabel("activation scale (std of x)")
ax1.set_ylabel("relative error vs float64")
ax1.set_title("RMSNorm(x), hidden 896")
ax1.legend(fontsize=8)

ax2.plot(hidden_sizes, acc_errors["bf16"], "o-", color="tab:red", label="bf16 running sum")
ax2.plot(hidden_sizes, acc_errors["torch"], "o-", color="tab:green", label="torch bf16 .mean()")
ax2.plot(hidden_sizes, acc_errors["fp32"], "o-", color="tab:blue", label="fp32 running sum")
ax2.set_yscale("log")
ax2.set_xlabel("hidden size (Qwen2.5 0.5B ... 72B)")
ax2.set_ylabel("relative error of mean(x²)")
ax2.set_title("Accumulating the mean of squares")
ax2.legend(fontsize=8, loc="center right")
fig.tight_layout()
plt.show()

# %% [markdown]
# Reading the left panel:
#
# - **float16, naive** (dashed purple) fails at both ends. Above a scale of about 60 the
#   largest of the 28,672 Gaussian values passes 256 and its square overflows: error 100%, the
#   all-zero output. Below about $3 \times 10^{-3}$ the squares fall under float16's smallest
#   normal number ($6 \times 10^{-5}$) and lose their digits: the error grows up to tenfold.
# - **float16, Qwen** (solid purple) stays at $3 \times 10^{-4}$ at every scale: float16's own
#   rounding of the output, 8 times finer than bfloat16's since it has 3 more bits.
# - **bfloat16**: both lines are flat, because bfloat16 has float32's range. Qwen's recipe sits
#   at $2.3 \times 10^{-3}$, the unavoidable rounding of the output to 8 significant bits; the
#   naive one is 10–40% worse (the extra roundings of $x^2$, of the mean and of rsqrt), not
#   more, because PyTorch's `.mean()` accumulates in float32 for it.
#
# Why does Qwen, a bfloat16 model, keep the upcast when its naive bf16 error is small? The
# right panel: the naive formula is only as good as the reduction kernel under it, and a
# model's outputs must not depend on that.

# %% [markdown]
# ## Measure it
#
# **Parameters.** RMSNorm has $C$ parameters, LayerNorm $2C$. Qwen2.5-0.5B has 24 blocks, so
# $2 \cdot 24 + 1 = 49$ norms:

# %%
cfg = QwenConfig.preset("qwen2.5-0.5b")
n_norms = 2 * cfg.num_hidden_layers + 1
print(f"norms: {n_norms}, RMSNorm parameters: {n_norms * cfg.hidden_size:,}, "
      f"LayerNorm would have: {2 * n_norms * cfg.hidden_size:,}")
total = 494_032_768              # all of Qwen2.5-0.5B's parameters (chapter 03 derives it)
print(f"share of all {total:,} parameters: {n_norms * cfg.hidden_size / total:.4%}")

# %% [markdown]
# A rounding error of a model. The parameter saving is not why RMSNorm won; the work is.
#
# **Time.** A norm does a handful of arithmetic operations per element it reads, so it is
# limited by memory traffic, not arithmetic. What decides its speed is how many times the
# tensor travels through memory: one fused kernel reads it once or twice; our `rms_norm`, in
# eager PyTorch, launches separate kernels for `pow`, `mean`, `rsqrt`, the multiply and the
# gain (and the casts, in bfloat16), each a full pass. We time, on 2,048 tokens of Qwen2.5-0.5B's width in float32:
# PyTorch's fused `F.layer_norm`, its `F.rms_norm` and our eager `rms_norm`. The numbers are
# this machine's and change from run to run; the cell is excluded from the output check.

# %%
# NBVAL_IGNORE_OUTPUT
torch.manual_seed(0)
x = torch.randn(2048, 896)
w, b = torch.ones(896), torch.zeros(896)
candidates = {
    "F.layer_norm (fused kernel)": lambda: F.layer_norm(x, (896,), w, b, 1e-6),
    "F.rms_norm": lambda: F.rms_norm(x, (896,), w, 1e-6),
    "rms_norm (eager, this notebook)": lambda: rms_norm(x, w),
}
for name, fn in candidates.items():
    seconds = min(timeit.repeat(fn, number=20, repeat=5)) / 20
    print(f"{name:32} {seconds * 1e3:6.3f} ms")

# %% [markdown]
# On the 2-core CPU this chapter was written on, the fused LayerNorm kernel beat both RMSNorms,
# despite doing more arithmetic: fusion, not the formula, decides the speed of a memory-bound
# operation. RMSNorm's saving (one statistic instead of two, no bias, no subtraction) shows
# when both are fused, which is why production stacks ship fused RMSNorm kernels (and why
# chapter 06 writes a Triton kernel for attention, the operation where fusion matters most).
# `F.rms_norm` computes exactly what Qwen's recipe computes in float32:

# %%
torch.manual_seed(0)
x, w = torch.randn(4, 896), 1 + 0.1 * torch.randn(896)
print("F.rms_norm == rms_norm (float32):",
      torch.equal(F.rms_norm(x, (896,), w, 1e-6), rms_norm(x, w)))

# %% [markdown]
# ## Exercises
#
# Write each function without scrolling up; then run the check under it. A check prints
# `○` for a stub that still raises `NotImplementedError`, `✗` with a diagnosis for a wrong
# answer and `✓` for a right one. Solutions: `solutions/02_rmsnorm_solutions.ipynb`.
#
# **Exercise 1: RMSNorm.** `x` is a float32 tensor of shape `(..., C)`, `weight` has shape
# `(C,)`. Return `weight * x / sqrt(mean(x^2) + eps)`, the mean taken over the last dimension
# of each token vector. The check uses a near-zero vector too, where eps decides the answer.

# %%
def my_rms_norm(x, weight, eps):
    raise NotImplementedError("normalise each token vector by its root mean square")


checks.check_rms_norm(my_rms_norm)

# %% [markdown]
# **Exercise 2: the dtype-safe recipe.** The same function, but given a bfloat16 (or float16)
# `x` and `weight` it must return, bit for bit, what Qwen's `RMSNorm` returns: the statistic
# and the scaling in float32, the result cast back to `x`'s dtype, then the gain applied in
# that dtype. The output's dtype is the input's.

# %%
def my_rms_norm_bf16(x, weight, eps):
    raise NotImplementedError("upcast to float32, normalise, cast back, then multiply by weight")


checks.check_rms_norm_bf16(my_rms_norm_bf16)

# %% [markdown]
# ## Review questions
#
# Five questions on what this chapter showed. In JupyterLab or Colab, pick an answer and press
# **Check**; in the book, open **Answer** under each question.

# %%
from qwenlab.quiz import Question, quiz  # noqa: E402

quiz([
    Question("What does LayerNorm compute that RMSNorm leaves out, and why is leaving it out "
             "acceptable?",
             ["The division by the root mean square; the next linear layer can rescale instead",
              "The mean subtraction and the bias; scale invariance, which it keeps, is what "
              "helps",
              "The learned gain; the next layer's weights can absorb any per-channel scale",
              "The eps; a mean of squares is never exactly zero in a trained model"],
             answer=1,
             why="Both divide by a root mean square and multiply by a learned gain; RMSNorm "
                 "uses the mean of x² instead of the variance and has no bias (C parameters, "
                 "not 2C). Zhang & Sennrich found the scale invariance, not the re-centring, "
                 "is what helps: RMSNorm(3x) = RMSNorm(x), RMSNorm(x + 2) ≠ RMSNorm(x). A "
                 "following linear layer can learn any offset (Qwen's q/k/v even have biases)."),
    Question("How many RMSNorm layers does Qwen2.5-0.5B (24 blocks, hidden 896) have?",
             ["24: one per block",
              "48: two per block",
              "50: two per block, plus one after the embedding and one before the LM head",
              "49: two per block, plus the final norm before the LM head"],
             answer=3,
             why="Pre-norm puts input_layernorm before attention and post_attention_layernorm "
                 "before the MLP in each of the 24 blocks, and model.norm before the LM head: "
                 "2 · 24 + 1 = 49 norms, 49 × 896 = 43,904 parameters (LayerNorm would have "
                 "87,808), 0.0089% of the model."),
    Question("You run a model in float16 and one token's outputs are all zero after the first "
             "norm; in bfloat16 the same model is fine. What happened?",
             ["A value above 256 squared to inf (max 65,504), so rsqrt(inf) = 0 zeroed the "
              "vector",
              "Its squares underflowed below float16's smallest normal number and were "
              "flushed to 0",
              "eps = 1e-6 is too large for float16 and swamped the token's mean of squares",
              "float16 rounded every output below its precision (about 0.001) down to zero"],
             answer=0,
             why="One inf square makes the mean inf, and rsqrt(inf) = 0 multiplies the whole "
                 "vector by 0: in the chapter one value of 300 (300² = 90,000) erased an "
                 "896-channel token. bfloat16 has float32's exponent range (up to 3.4e38), so "
                 "x² stays finite there. The fix in either format: compute the statistic in "
                 "float32, as Qwen's RMSNorm does (largest error 1.1e-4 on the same input)."),
    Question("bfloat16 cannot overflow here. What does the float32 upcast buy a bfloat16 "
             "model?",
             ["Nothing measurable: it is there only for float16, which can overflow",
              "Speed: float32 arithmetic runs faster than bf16 on most CPUs and GPUs",
              "A precise statistic: a running sum of squares kept in bf16 stops growing",
              "Range for the gain, whose trained values can exceed bf16's maximum"],
             answer=2,
             why="With 8 significant bits, 256 + 1 = 256 in bf16: a running bf16 sum "
                 "underestimates mean(x²) by 16.9% at 896 channels and 71.4% at 8,192, "
                 "making every output too large. PyTorch's .mean() already accumulates in "
                 "float32 internally, but the upcast makes that a guarantee for every kernel "
                 "and fixes which roundings happen, so qwenlab and transformers agree bit for "
                 "bit."),
    Question("What does RMSNorm return for an all-zero vector (say, a padding position), "
             "with eps = 1e-6 and without eps?",
             ["With eps: the gain vector; without: zeros, since the numerator is zero",
              "With eps: zeros; without: NaN in every channel, which spreads to other tokens",
              "Zeros in both cases, since zero times anything is zero",
              "With eps: every channel 1/√eps = 1000; without: inf in every channel"],
             answer=1,
             why="With eps: 0 / √(0 + 1e-6) = 0, a zero vector. Without: 0 · rsqrt(0) = "
                 "0 · inf = NaN in every channel, and attention mixes the NaN into other "
                 "tokens. Keeping an all-zero vector from becoming 0/0 is what eps is for."),
])

# %% [markdown]
# Next: chapter 03, the SwiGLU MLP that each block's second norm feeds.
