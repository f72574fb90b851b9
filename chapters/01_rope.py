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
# # 01 · RoPE: positions as rotations
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/qwenlab/qwenlab/blob/main/chapters/01_rope.ipynb)  
# *On `SCALE="gpu"` this chapter needs:* none: the CPU is enough.
#
# Attention compares a query with every key through a dot product $q \cdot k$. Nothing in that
# number says *where* the two tokens are: shuffle the keys and each one gets the same score as
# before. The original Transformer fixed this by adding a position vector to each token's
# embedding. Qwen2.5, like Llama and most models since, does something else: it **rotates**
# each query and key by an angle that grows with the token's position. This is *rotary position
# embedding*, RoPE (Su et al., *RoFormer*, 2021).
#
# In this chapter you will:
#
# 1. see why rotating by position-dependent angles makes $q \cdot k$ depend only on the
#    *offset* between two tokens, and derive the rotation speeds (`inv_freq`) from
#    `rope_theta`;
# 2. build RoPE in the notebook and prove it equals `qwenlab.rope` and transformers' Qwen2
#    rotary embedding **bit for bit**;
# 3. tell the two ways of pairing coordinates apart (rotate-half and interleaved) and see why
#    a checkpoint works with only one of them;
# 4. see what Qwen2.5's `rope_theta = 1e6` (instead of the original 1e4) does at long range;
# 5. write the pieces yourself, with a grader checking each one.
#
# ## Setup

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %% [markdown]
# RoPE is a few lines of float32 arithmetic, so this chapter is the same at either `SCALE`:
# everything runs on the CPU in seconds.

# %%
import math
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from transformers.models.qwen2 import modeling_qwen2

import qwenlab
import qwenlab.env
from qwenlab import QwenConfig, checks
from qwenlab import rope as qrope

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# ## 1 · The idea: a rotation per position
#
# Take a query and a key with just two coordinates. Turning a 2-vector by an angle
# $\varphi$ is a multiplication by the rotation matrix
#
# $$R(\varphi) = \begin{pmatrix}\cos\varphi & -\sin\varphi \\ \sin\varphi & \cos\varphi
# \end{pmatrix}.$$
#
# RoPE turns the query of the token at position $m$ by $m\theta$ and the key of the token at
# position $n$ by $n\theta$, for a fixed speed $\theta$ (radians per position). Rotations undo
# each other ($R(a)^\top = R(-a)$) and add up ($R(a)R(b) = R(a+b)$), so the score is
#
# $$\big(R(m\theta)\,q\big)^\top \big(R(n\theta)\,k\big) = q^\top R(m\theta)^\top R(n\theta)\,k
# = q^\top R\big((n-m)\,\theta\big)\,k .$$
#
# The absolute positions are gone: only the offset $n - m$ is left. A token three places back
# looks the same to a query at position 5 as at position 5,000. And since rotations keep
# lengths, RoPE changes no vector's norm, only the angles between them.
#
# Let's check it with numbers: the same offset at three places gives the same score.

# %%
def rotate2d(v, angle):
    """Turn the 2-vector v counter-clockwise by `angle` radians."""
    c, s = math.cos(angle), math.sin(angle)
    R = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    return R @ v


q2 = torch.tensor([1.0, 0.5], dtype=torch.float64)
k2 = torch.tensor([0.3, -0.8], dtype=torch.float64)
speed = 0.7  # theta: radians per position
for m, n in [(3, 1), (10, 8), (500, 498), (500, 497)]:
    score = rotate2d(q2, m * speed) @ rotate2d(k2, n * speed)
    print(f"query at {m:>3}, key at {n:>3} (offset {m - n}): score {score.item():+.4f}")

# %% [markdown]
# One pair with one speed has a flaw: after $2\pi/\theta$ positions (here about 9) the angle
# comes back around, and offsets 0 and 9 look almost alike. So RoPE splits a head's $d$
# coordinates into $d/2$ pairs and turns each pair at its own speed, like the hands of a clock:
# fast pairs resolve nearby positions, slow pairs tell far ones apart. The speeds fall
# geometrically, from 1 radian per position down to about $1/b$:
#
# $$\theta_i = b^{-2i/d}, \qquad i = 0, 1, \dots, d/2 - 1,$$
#
# where $b$ is the *base*, `rope_theta` in the config: 10,000 in the RoFormer paper, 1,000,000
# in Qwen2.5. The code calls the vector of $\theta_i$ `inv_freq`. Pair $i$ comes back around
# every $2\pi/\theta_i$ positions, its *wavelength*. The score becomes a sum over pairs, each
# seeing the offset through its own angle $(n-m)\,\theta_i$.
#
# For Qwen2.5-0.5B ($d = 64$, $b = 10^6$):

# %%
cfg = QwenConfig.preset("qwen2.5-0.5b")
d, theta = cfg.head_dim, cfg.rope_theta
print(f"head_dim d = {d}, rope_theta b = {theta:g}, so {d // 2} pairs")

i = torch.arange(d // 2)               # pair index 0..31
inv_freq = 1.0 / theta ** (2 * i / d)  # (d/2,) float32: theta_i, radians per position
for j in [0, 1, 2, d // 4, d // 2 - 1]:
    wavelength = 2 * math.pi / inv_freq[j].item()
    print(f"pair {j:>2}: theta_i = {inv_freq[j].item():.3e} rad/position, "
          f"wavelength {wavelength:,.1f} positions")

# %% [markdown]
# Pair 0 turns a full radian per token and comes around every 6.3 tokens; pair 31 turns
# $10^{6 \cdot (-62/64)} \approx 1.5 \times 10^{-6}$ radians per token and needs four million
# tokens for one turn.
#
# ## 2 · Build it
#
# Three steps turn a batch of queries and keys into rotated ones:
#
# 1. `inv_freq`, the $d/2$ speeds (done above);
# 2. the angle of every pair at every position, $m\,\theta_i$, and its cos and sin;
# 3. the rotation itself, pair by pair.
#
# Which coordinates form a pair? Qwen (and transformers, for every Llama-style model) pairs
# coordinate $i$ with coordinate $i + d/2$: the first half of the head holds the first
# coordinate of every pair, the second half the second one. Pair $i$ turns as
#
# $$\begin{pmatrix} x'_i \\ x'_{i+d/2}\end{pmatrix} =
# \begin{pmatrix}\cos m\theta_i & -\sin m\theta_i \\ \sin m\theta_i & \cos m\theta_i\end{pmatrix}
# \begin{pmatrix} x_i \\ x_{i+d/2}\end{pmatrix}.$$
#
# Positions come as `position_ids` of shape (B, T), not as `0..T-1`: when a model generates
# with a KV cache, the one new token of a decode step sits at position 57 (or 1,000), and it
# must get that position's angle. Angles are computed in float32, as transformers does, for a
# reason the review questions come back to.

# %%
def rope_angles(position_ids, inv_freq):
    """angles[b, t, i] = position_ids[b, t] * inv_freq[i]: (B, T) -> (B, T, d/2), float32."""
    return position_ids[..., None].float() * inv_freq


def rope_rotate(x, cos, sin):
    """Turn each pair (x[..., i], x[..., i + d/2]) of x (B, H, T, d) by its angle.

    cos, sin: (B, T, d/2), one angle per pair and position, the same for every head."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]            # pair i = (x1[..., i], x2[..., i])
    cos, sin = cos[:, None], sin[:, None]             # (B, 1, T, d/2): broadcast over heads
    return torch.cat((x1 * cos - x2 * sin,            # first coordinates of the turned pairs
                      x1 * sin + x2 * cos), dim=-1)   # second coordinates


# %% [markdown]
# Now the shapes of Qwen2.5-0.5B's attention: 14 query heads and 2 key/value heads
# (grouped-query attention, chapter 04), head_dim 64. Two sequences of 6 tokens: the first at
# positions 0..5, the second further along a long text, at positions 1000..1005. Every head
# gets the same angles, so the query and key tensors use one table.

# %%
torch.manual_seed(0)
B, T = 2, 6
position_ids = torch.stack((torch.arange(T), torch.arange(1000, 1000 + T)))  # (B, T)
q = torch.randn(B, cfg.num_attention_heads, T, d)   # (B, H, T, d)
k = torch.randn(B, cfg.num_key_value_heads, T, d)   # (B, Hkv, T, d)

angles = rope_angles(position_ids, inv_freq)        # (B, T, d/2)
cos, sin = angles.cos(), angles.sin()
q_rot, k_rot = rope_rotate(q, cos, sin), rope_rotate(k, cos, sin)
print("q", tuple(q.shape), "->", tuple(q_rot.shape), "  k", tuple(k.shape), "->",
      tuple(k_rot.shape))
print("lengths unchanged:", torch.allclose(q_rot.norm(dim=-1), q.norm(dim=-1)))
print("position 0 is not rotated:", torch.equal(q_rot[0, :, 0], q[0, :, 0]))

# %% [markdown]
# ## 3 · Prove it: the library and transformers
#
# `qwenlab.rope` writes the same rotation in another form, the one transformers uses. It
# stores cos and sin for all $d$ coordinates, each angle twice (for coordinate $i$ and
# coordinate $i + d/2$), and turns every pair at once with one helper:
#
# $$x' = x \odot \cos + \operatorname{rotate\_half}(x) \odot \sin, \qquad
# \operatorname{rotate\_half}(x_1, x_2) = (-x_2,\ x_1),$$
#
# where $x_1, x_2$ are the two halves of the last dimension. `rotate_half` is a 90° turn of
# every pair; on the vector $0, 1, \dots, 7$:

# %%
print(qrope.rotate_half(torch.arange(8.0)).tolist())

# %% [markdown]
# The first half of $x'$ is $x_1 \cos + (-x_2)\sin$ and the second $x_2\cos + x_1\sin$:
# the rotation above, term by term. In floating point, $a + (-b)$ is exactly $a - b$ and
# addition is commutative, so the two forms should agree not just closely but in every bit.
# `torch.equal` checks exactly that:

# %%
rope_lib = qrope.RotaryEmbedding(d, theta)   # float32 cos/sin tables, grown on demand
cos_lib, sin_lib = rope_lib(position_ids, num_positions=int(position_ids.max()) + 1)  # (B, T, d)
q_lib, k_lib = qrope.apply_rope(q, k, cos_lib, sin_lib)

print("inv_freq     :", torch.equal(inv_freq, qrope.rope_inv_freq(d, theta)))
print("cos, sin     :", torch.equal(cos_lib, torch.cat((cos, cos), dim=-1)),
      torch.equal(sin_lib, torch.cat((sin, sin), dim=-1)))
print("rotated q, k :", torch.equal(q_rot, q_lib), torch.equal(k_rot, k_lib))

# %% [markdown]
# And the reference: transformers' `Qwen2RotaryEmbedding`, built from the same config, and its
# `apply_rotary_pos_emb`. Its forward takes a tensor only to learn the dtype and device, plus
# the `position_ids`.

# %%
rope_hf = modeling_qwen2.Qwen2RotaryEmbedding(cfg.to_hf())
cos_hf, sin_hf = rope_hf(q, position_ids)                      # (B, T, d) each
q_hf, k_hf = modeling_qwen2.apply_rotary_pos_emb(q, k, cos_hf, sin_hf)

print("inv_freq     :", torch.equal(inv_freq, rope_hf.inv_freq))
print("cos, sin     :", torch.equal(cos_lib, cos_hf), torch.equal(sin_lib, sin_hf))
print("rotated q, k :", torch.equal(q_rot, q_hf), torch.equal(k_rot, k_hf))

# %% [markdown]
# All equal to the bit: the same float32 products `position * inv_freq`, the same cos and sin,
# the same multiply-adds. That matters beyond tidiness: a trained checkpoint learned its
# weights under exactly these angles.
#
# ## 4 · Only the offset matters
#
# Now the claim of section 1 with all 32 pairs. One query and one key, the query always three
# positions after the key, at four places in a long text. To see the identity itself, not
# float32 rounding, this helper computes in float64 (it also takes the pairing layout, used in
# section 5):

# %%
def rope_at(x, m, layout="half"):
    """x (d,) float64 turned as the token at position m.

    layout "half": pairs (i, i + d/2), as Qwen; "interleaved": pairs (2i, 2i + 1)."""
    angle = m * inv_freq.double()                     # (d/2,)
    c, s = angle.cos(), angle.sin()
    a, b = (x[: d // 2], x[d // 2:]) if layout == "half" else (x[0::2], x[1::2])
    a2, b2 = a * c - b * s, a * s + b * c
    if layout == "half":
        return torch.cat((a2, b2))
    return torch.stack((a2, b2), dim=-1).flatten()   # back to x0, x1, x2, ... order


torch.manual_seed(1)
q1, k1 = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
print(f"unrotated q . k = {(q1 @ k1).item():+.4f}")
for m, n in [(5, 2), (105, 102), (10_005, 10_002), (30_005, 30_002)]:
    print(f"query at {m:>6}, key at {n:>6}: score {(rope_at(q1, m) @ rope_at(k1, n)).item():+.4f}")

# %% [markdown]
# Four places, one score. Move the key instead and the score changes with the offset; at
# offset 0 it is the plain dot product again, since both vectors are turned by the same angles:

# %%
for offset in [0, 1, 2, 3, 10, 100, 1000]:
    score = rope_at(q1, 2000) @ rope_at(k1, 2000 - offset)
    print(f"offset {offset:>4}: score {score.item():+.4f}")

# %% [markdown]
# In a real model the angles are float32, and `position * inv_freq` carries a relative
# rounding error of about $6\times10^{-8}$: about $2\times10^{-3}$ radians at position 30,000.
# The scores then agree to about three decimals, not to the bit:

# %%
rope32 = qrope.RotaryEmbedding(d, theta, initial_positions=32_768)


def score32(m, n):
    cq, sq = rope32(torch.tensor([[m]]), m + 1)
    ck, sk = rope32(torch.tensor([[n]]), n + 1)
    qr, _ = qrope.apply_rope(q1.float().view(1, 1, 1, d), q1.float().view(1, 1, 1, d), cq, sq)
    _, kr = qrope.apply_rope(k1.float().view(1, 1, 1, d), k1.float().view(1, 1, 1, d), ck, sk)
    return (qr * kr).sum().item()


drift = abs(score32(30_005, 30_002) - score32(5, 2))
print(f"float32, offset 3 at position 5 vs 30,005: agree to 1e-2: {drift < 1e-2}, "
      f"to 1e-5: {drift < 1e-5}")

# %% [markdown]
# ## 5 · Pairing: rotate-half vs interleaved
#
# The RoFormer paper pairs *neighbouring* coordinates: $(x_0, x_1), (x_2, x_3), \dots$, pair
# $i$ being $(x_{2i}, x_{2i+1})$. Meta's original Llama code does the same, viewing each
# neighbouring pair as one complex number. transformers, and every Qwen checkpoint, pair
# $x_i$ with $x_{i+d/2}$ instead ("rotate-half"). Both are RoPE: same speeds, same
# rotations, only the choice of which two coordinates turn together differs. Both therefore
# depend only on the offset:

# %%
for m, n in [(5, 2), (10_005, 10_002)]:
    print(f"interleaved, query at {m:>6}, key at {n:>6}: score "
          f"{(rope_at(q1, m, 'interleaved') @ rope_at(k1, n, 'interleaved')).item():+.4f}")

# %% [markdown]
# But they are different functions. For the same $q$ and $k$ they give different scores at
# every offset except 0 (where the two rotations cancel):

# %%
print("offset   rotate-half   interleaved")
for offset in [0, 1, 2, 4, 16, 64, 256]:
    half = rope_at(q1, offset) @ rope_at(k1, 0)
    inter = rope_at(q1, offset, "interleaved") @ rope_at(k1, 0, "interleaved")
    print(f"{offset:>6}   {half.item():>+11.3f}   {inter.item():>+11.3f}")

# %% [markdown]
# Why a checkpoint cares: training shapes the rows of `q_proj` and `k_proj` so that the
# coordinates that turn together carry what should be compared at an offset. Here is a
# hand-made head that does what trained heads often do: look a fixed number of tokens back
# (three). Its keys hold the same content $k$ at every position; its query is $k$ turned back
# by three positions *in the rotate-half layout*, so the rotations line up exactly at offset 3.
# The query sits at position 15 and attends over keys 0..15. With the pairing it was "trained"
# for, attention peaks three tokens back, on key 12; apply interleaved RoPE to the very same
# vectors and it looks somewhere else.

# %%
torch.manual_seed(2)
k_content = 3 * torch.randn(d, dtype=torch.float64)  # large norm: a sharp head
q_head = rope_at(k_content, -3)             # "trained" for rotate-half: look 3 tokens back
m_q = 15
print("attention of the query at 15 on keys 8..15")
for layout in ["half", "interleaved"]:
    keys = torch.stack([rope_at(k_content, n, layout) for n in range(m_q + 1)])  # (16, d)
    probs = (keys @ rope_at(q_head, m_q, layout) / math.sqrt(d)).softmax(dim=-1)
    print(f"{layout:>11}: " + " ".join(f"{p:.2f}" for p in probs[8:].tolist())
          + f"   peak at key {probs.argmax().item()}")

# %% [markdown]
# The two layouts are a permutation apart. Reorder the coordinates as
# $(x_0, x_2, x_4, \dots, x_1, x_3, \dots)$ and interleaved pair $(2i, 2i+1)$ becomes
# rotate-half pair $(i, i+d/2)$: interleaved RoPE of $x$ equals rotate-half RoPE of the
# permuted $x$, permuted. That is how a checkpoint trained with one layout is converted to
# the other: permute the rows of `q_proj` and `k_proj` (and, in Qwen, their biases) once.
# transformers' Llama conversion script does exactly this to Meta's weights.

# %%
perm = torch.cat((torch.arange(0, d, 2), torch.arange(1, d, 2)))  # evens first, then odds
print("interleaved(x)[perm] == rotate_half_rope(x[perm]):",
      torch.equal(rope_at(q1, 7, "interleaved")[perm], rope_at(q1[perm], 7, "half")))

# %% [markdown]
# ## 6 · See it
#
# **The speeds.** Left: $\theta_i$ per pair, on a log scale, for $d = 128$ (Qwen2.5-1.5B and
# larger) at both bases: a straight line, since the speeds fall geometrically, and a steeper
# one for $b = 10^6$. Right: the wavelengths $2\pi/\theta_i$ in tokens against Qwen2.5's
# 32,768-token context (dashed). Pairs above the line never complete a turn inside the context.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for base, color in [(1e4, "tab:orange"), (1e6, "tab:blue")]:
    speeds = qrope.rope_inv_freq(128, base).double()
    axes[0].plot(speeds, ".-", color=color, label=f"theta = {base:.0e}")
    axes[1].plot(2 * math.pi / speeds, ".-", color=color, label=f"theta = {base:.0e}")
axes[0].set(yscale="log", xlabel="pair index i", ylabel="theta_i (rad / position)",
            title="inv_freq, head_dim 128")
axes[1].axhline(32_768, color="gray", linestyle="--", label="32K context")
axes[1].set(yscale="log", xlabel="pair index i", ylabel="wavelength (positions)",
            title="positions per full turn")
for ax in axes:
    ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# **One pair turning.** Four of Qwen2.5-0.5B's 32 pairs (head_dim 64, $b = 10^6$), each set to
# $(1, 0)$ and rotated as the token at positions 0..40 (dark to light). Pair 0 goes round more
# than six times and its positions land all over the circle; pair 8 covers about 72°, which
# tells all 41 positions apart, by small angles. The higher pairs are slower still: from pair
# 16 on, 40 tokens turn them by less than 0.05 radians.

# %%
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2), layout="constrained")
positions = torch.arange(41, dtype=torch.float64)
for ax, pair in zip(axes, [0, 2, 4, 8], strict=True):
    angle = positions * inv_freq[pair].double()
    ax.plot(torch.cos(torch.linspace(0, 2 * math.pi, 200)),
            torch.sin(torch.linspace(0, 2 * math.pi, 200)), color="lightgray")
    ax.scatter(angle.cos(), angle.sin(), c=positions, cmap="viridis", s=18)
    ax.set(title=f"pair {pair}: {inv_freq[pair].item():.3f} rad/pos", aspect="equal",
           xlim=(-1.2, 1.2), ylim=(-1.2, 1.2), xticks=[], yticks=[])
plt.show()

# %% [markdown]
# Try it yourself: pick a position, a pair and a base; the arrow is the pair at that position,
# the dots are the positions before it.

# %%
# NBVAL_IGNORE_OUTPUT
def show_pair(position=10, pair=0, base=1e6, head_dim=64):
    speed = qrope.rope_inv_freq(head_dim, base)[pair].double().item()
    trail = torch.arange(position + 1, dtype=torch.float64) * speed
    fig, ax = plt.subplots(figsize=(4, 4))
    circle = torch.linspace(0, 2 * math.pi, 200)
    ax.plot(circle.cos(), circle.sin(), color="lightgray")
    ax.scatter(trail.cos(), trail.sin(), c=range(position + 1), cmap="viridis", s=10)
    ax.annotate("", xy=(math.cos(position * speed), math.sin(position * speed)), xytext=(0, 0),
                arrowprops=dict(arrowstyle="->", color="tab:red", lw=2))
    ax.set(aspect="equal", xlim=(-1.2, 1.2), ylim=(-1.2, 1.2), xticks=[], yticks=[],
           title=f"angle {position * speed % (2 * math.pi):.2f} rad, "
                 f"wavelength {2 * math.pi / speed:,.0f} positions")
    plt.show()


pair_widget = widgets.interact(
    show_pair, position=widgets.IntSlider(10, 0, 2000), pair=widgets.IntSlider(0, 0, 31),
    base=widgets.Dropdown(options=[1e4, 1e6]), head_dim=widgets.fixed(64))

# %% [markdown]
# **What the base does at long range.** Take a query and a key that are both all ones
# ($d = 128$). Each pair $(1, 1)$ contributes $2\cos\big((n-m)\,\theta_i\big)$, so the score
# divided by $d$ is the mean of $\cos\big((n-m)\,\theta_i\big)$ over the pairs: 1 at offset 0,
# and lower as more pairs turn away. The RoFormer paper calls this RoPE's long-term decay:
# identical content scores less the further apart it is.

# %%
distances = torch.logspace(0, math.log10(32_768), 2000, dtype=torch.float64).round().unique()
fig, ax = plt.subplots(figsize=(8, 3.5))
for base, color in [(1e4, "tab:orange"), (1e6, "tab:blue")]:
    speeds = qrope.rope_inv_freq(128, base).double()
    mean_cos = (distances[:, None] * speeds).cos().mean(dim=-1)   # all-ones score / d
    ax.plot(distances, mean_cos, color=color, lw=1, label=f"theta = {base:.0e}")
    for far in [1000, 32_768]:
        print(f"theta {base:.0e}: score/d at distance {far:>6,}: "
              f"{(torch.tensor(float(far)) * speeds).cos().mean().item():+.3f}")
ax.axhline(0, color="gray", lw=0.5)
ax.set(xscale="log", xlabel="distance n - m (tokens)", ylabel="score / d",
       title="all-ones query and key, head_dim 128")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# With $b = 10^4$ the score has fallen to about 0.16 by 1,000 tokens, and beyond a few
# thousand it wobbles around zero by up to ±0.2: most pairs have wrapped around many times, so
# to them far positions look like noise. With $b = 10^6$ it decays slowly and is still
# about 0.24 at 32K: 24 of the 64 pairs turn by less than one full circle over the whole
# context, so distant tokens stay distinguishable and the score
# does not bury them. This is one reason Qwen2 and Qwen2.5 raised the base to $10^6$ for
# their 32K-128K contexts.
#
# ## 7 · Measure it
#
# **How many positions can each pair tell apart?** A pair's angle repeats after its
# wavelength, so it can tell apart at most that many positions before they alias. For both
# head sizes of Qwen2.5 and both bases: the shortest and longest wavelength, and how many pairs
# wrap around within a 4K and a 32K context.

# %%
print("head_dim   theta   shortest      longest   pairs wrapping within 4K / 32K")
for head_dim in [64, 128]:
    for base in [1e4, 1e6]:
        wavelengths = 2 * math.pi / qrope.rope_inv_freq(head_dim, base).double()
        print(f"{head_dim:>8}   {base:.0e}   {wavelengths[0].item():>8.2f}   "
              f"{wavelengths[-1].item():>10,.0f}   "
              f"{(wavelengths <= 4096).sum().item():>2} / {(wavelengths <= 32_768).sum().item():>2}"
              f"  of {head_dim // 2}")

# %% [markdown]
# The fastest pair is the same for every base (6.28 positions: $\theta_0 = b^0 = 1$); the base
# sets the slow end. At $b = 10^4$, 60 of 128-dim's 64 pairs wrap within 32K; at $b = 10^6$,
# 40 do, and the slowest pair turns by only 0.04 radians over the whole 32K context.
#
# **Cache or compute?** `qwenlab.rope.RotaryEmbedding` keeps float32 cos/sin tables and looks
# rows up by `position_ids`; transformers recomputes them from `position_ids` in every forward.
# Either way it happens once per forward and all layers share the result. The tables cost:

# %%
table_bytes = 2 * 32_768 * 128 * 4   # cos and sin, 32K positions, head_dim 128, float32
print(f"cos/sin tables for 32,768 positions at head_dim 128: {table_bytes / 2**20:.0f} MiB")

# %% [markdown]
# and the time, for a 4,096-token prefill and a one-token decode step (your numbers will
# differ):

# %%
# NBVAL_IGNORE_OUTPUT
rope_time = qrope.RotaryEmbedding(128, 1e6, initial_positions=32_768)
inv128 = qrope.rope_inv_freq(128, 1e6)


def on_the_fly(position_ids):
    freqs = rope_angles(position_ids, inv128)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


for label, pos in [("prefill 4096", torch.arange(4096)[None]),
                   ("decode 1", torch.tensor([[4096]]))]:
    for name, fn in [("cached", lambda p: rope_time(p, 32_768)), ("on the fly", on_the_fly)]:
        fn(pos)  # warm up
        start = time.perf_counter()
        for _ in range(20):
            fn(pos)
        print(f"{label:>12}, {name:>10}: {(time.perf_counter() - start) / 20 * 1e3:.3f} ms")

# %% [markdown]
# Both are a small fraction of a millisecond next to the attention they feed. The cache saves
# the `cos`/`sin` evaluations of a long prefill; at decode it hardly matters.
#
# ## 8 · Exercises
#
# Four pieces of the library, written by you. Each cell after an exercise runs a grader from
# `qwenlab.checks`: it tests your function on random inputs against `qwenlab.rope` and, if
# something is off, says what. Until you write a function it says "not attempted yet" with a
# hint. Solutions: `solutions/01_rope_solutions.ipynb`.
#
# **Exercise 1 · `inv_freq`.** Return the $d/2$ speeds $\theta_i = b^{-2i/d}$ as a float32
# tensor of shape `(head_dim // 2,)`.

# %%
def inv_freq_exercise(head_dim, theta):
    """head_dim (even int), theta (float) -> (head_dim // 2,) float32: theta^(-2i / head_dim)."""
    raise NotImplementedError("compute theta^(-2i/d) for i = 0 .. d/2 - 1")


checks.check_inv_freq(inv_freq_exercise)

# %% [markdown]
# **Exercise 2 · `rotate_half`.** Split the last dimension into halves $x_1, x_2$ and return
# $(-x_2, x_1)$: a +90° turn of every pair $(x_i, x_{i+d/2})$. Don't change `x` in place.

# %%
def rotate_half_exercise(x):
    """x (..., d) -> (..., d): (x1, x2) -> (-x2, x1) on the two halves of the last dim."""
    raise NotImplementedError("swap the halves and negate the new first half")


checks.check_rotate_half(rotate_half_exercise)

# %% [markdown]
# **Exercise 3 · the cos/sin tables.** Given `position_ids` (B, T) (int64, not necessarily
# starting at 0) and `inv_freq` (d/2,), return `(cos, sin)`, each (B, T, d) float32, in the
# rotate-half layout the library uses: coordinates $i$ and $i + d/2$ both get pair $i$'s angle.

# %%
def rope_cos_sin_exercise(position_ids, inv_freq):
    """position_ids (B, T) int64, inv_freq (d/2,) -> cos, sin: (B, T, d) float32 each."""
    raise NotImplementedError("angles = positions x inv_freq, then repeat them for both halves")


checks.check_rope_cos_sin(rope_cos_sin_exercise)

# %% [markdown]
# **Exercise 4 · `apply_rope`.** Rotate queries `q` (B, H, T, d) and keys `k` (B, Hkv, T, d)
# (fewer key heads: grouped-query attention) with tables `cos`, `sin` (B, T, d) from exercise
# 3. Return `(q_rot, k_rot)`. Use the formula of section 3 (you may call
# `qrope.rotate_half`, or your own).

# %%
def apply_rope_exercise(q, k, cos, sin):
    """q (B, H, T, d), k (B, Hkv, T, d), cos/sin (B, T, d) -> q_rot, k_rot of q's and k's shapes."""
    raise NotImplementedError("x * cos + rotate_half(x) * sin, for q and for k")


checks.check_apply_rope(apply_rope_exercise)

# %% [markdown]
# ## 9 · Review questions
#
# Five questions on what this chapter showed. In JupyterLab or Colab, pick an answer and press
# **Check**; in the book, open **Answer** under each question.

# %%
from qwenlab.quiz import Question, quiz  # noqa: E402

quiz([
    Question("Qwen2.5 rotates the queries and the keys. Why not the values too?",
             ["Rotating the values would change their lengths and destabilise training",
              "Position must enter the scores q · k; a rotated value would carry its absolute "
              "position into the output",
              "The values have fewer heads than the queries (GQA), so the cos/sin tables "
              "would not fit them",
              "They are rotated too, inside o_proj, once the heads are concatenated again"],
             answer=1,
             why="Turning q by mθ and k by nθ leaves the score q · R((n − m)θ) k, a function "
                 "of the offset only. Values are what the scores mix, and RoPE is after a "
                 "relative signal, not an absolute one. Lengths are not the reason (rotations "
                 "keep them), nor the head count (k has as few heads as v and is rotated)."),
    Question("You load a Qwen2.5 checkpoint into code that applies interleaved RoPE, pairing "
             "(2i, 2i + 1). It runs without an error. What happens?",
             ["Nothing: both pairings make every score depend only on the offset, so they "
              "give the same scores",
              "Only the slow pairs turn differently, so short prompts work and long ones "
              "slowly degrade",
              "Heads attend to the wrong tokens; permuting the rows of q_proj and k_proj "
              "(and their biases) fixes it",
              "The model is broken for good: only training it again with interleaved RoPE "
              "can fix it"],
             answer=2,
             why="Both layouts are RoPE and depend only on the offset, but they turn different "
                 "coordinates together, so for the same q and k they agree only at offset 0. "
                 "The checkpoint was trained with pairs (i, i + d/2): section 5's look-3-back "
                 "head peaked at key 12 with them and at key 14 interleaved. The layouts are a "
                 "permutation apart: move coordinate i to 2i and i + d/2 to 2i + 1 in each "
                 "head's rows of q_proj and k_proj, and every score comes back."),
    Question("During generation with a KV cache, the new token sits at position 57. How are "
             "its query and the 57 cached keys rotated?",
             ["The query by 57·θ_i; each cached key keeps the rotation of its own position",
              "The query by 0·θ_i, as it is the only token fed in; each cached key keeps its "
              "own",
              "The query by 57·θ_i, and every cached key is rotated again by 57·θ_i to stay "
              "consistent",
              "Neither: RoPE is applied once, to the prompt, during the prefill"],
             answer=0,
             why="The new token's position_ids is [[57]], not [[0]] (exercise 3's decode "
                 "rows). The score of query 57 with key n depends on 57 − n only, so a key "
                 "rotated once, at position n, when it was written never needs touching "
                 "again: that is why a cache can store rotated keys."),
    Question("Qwen2.5 uses rope_theta = 1e6 where RoFormer used 1e4. At head_dim 128, what "
             "changes?",
             ["Every pair turns 100 times slower, pair 0 included, so neighbours get harder "
              "to tell apart",
              "The number of pairs grows from 64 to 128, so each head resolves positions "
              "more finely",
              "Nothing at long range: the base only changes the angles of the first few "
              "positions",
              "Pair 0 is unchanged; the slow pairs get much slower, so fewer of them wrap "
              "within 32K"],
             answer=3,
             why="θ_i = b^(−2i/d), so θ_0 = 1 for every base (wavelength 6.28 tokens): "
                 "neighbours are resolved as finely as before. The base sets the slow end: the "
                 "longest wavelength grows from 54,410 to 5,063,256 positions, 40 instead of "
                 "60 of the 64 pairs wrap within 32K, and the all-ones score at 32K is 0.242 "
                 "of d instead of 0.056, which suits a 32K-128K context."),
    Question("The angles m·θ_i are computed in float32 even when the model runs in bf16. "
             "Why?",
             ["PyTorch has no cos and sin kernels for bf16 tensors, on CPU or on GPU",
              "Only to match transformers bit for bit; bf16 angles would work as well",
              "bf16 has 8 significant bits: 1,001 × θ_0 rounds to 1,000, a whole radian off",
              "float32 cos/sin tables take less memory than bf16 ones at long context"],
             answer=2,
             why="Between 512 and 1024, bf16 can only represent multiples of 4, so far "
                 "positions collapse onto each other. float32 keeps 24 bits: an error of about "
                 "2e-3 rad at position 30,000 (section 4). So transformers and qwenlab.rope "
                 "compute the angles and their cos/sin in float32 and cast only the finished "
                 "tables to the activations' dtype."),
])
