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
# # 04 · Grouped-query attention and the KV cache
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/qwenlab/qwenlab/blob/main/chapters/04_gqa_kv_cache.ipynb)  
# *On `SCALE="gpu"` this chapter needs:* a T4 (16 GB) for the long-context timings.
#
# A model that writes text produces one token at a time, and each new token attends over
# every token before it. Two ideas make that affordable, and Qwen2.5 uses both:
#
# - the **KV cache** keeps the keys and values of past tokens, so each step computes them for
#   the new token only: a sequence costs $O(n)$ token-passes instead of $O(n^2)$;
# - **grouped-query attention (GQA)** lets several query heads share one key/value head, so
#   that cache is several times smaller. At long context the cache, not the weights, is what
#   fills a GPU.
#
# In this chapter you will:
#
# 1. compare multi-head (MHA), multi-query (MQA) and grouped-query attention (GQA);
# 2. build GQA twice, by copying K/V with `repeat_kv` and with a grouped matmul that copies
#    nothing, and prove both equal `qwenlab` and `transformers`;
# 3. derive the KV-cache formula, check it against the bytes of a real cache, and tabulate it
#    for all seven Qwen2.5 sizes at 4K, 32K and 128K tokens;
# 4. count and time generation with and without the cache ($O(n^2)$ vs $O(n)$);
# 5. answer "does it fit on my GPU?" with a calculator;
# 6. write `repeat_kv`, causal GQA attention and the cache formula yourself, with graders.
#
# ## Setup

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %%
import contextlib
import functools
import math
import time
from types import SimpleNamespace

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from transformers.models.qwen2 import modeling_qwen2

import qwenlab
import qwenlab.env
from qwenlab import KVCache, QwenConfig, QwenForCausalLM, checks
from qwenlab.attention import attend, causal_mask, repeat_kv
from qwenlab.config import PRESETS
from qwenlab.decode import decode_step, prefill
from qwenlab.kv_cache import as_dtype

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# ## 1. Three ways to share keys and values
#
# Attention with $H$ heads projects each token to $H$ queries. Multi-head attention also gives
# it $H$ keys and $H$ values, one per head. Grouped-query attention keeps the $H$ queries but
# projects only $H_{kv}$ keys and values, and lets each KV head serve a *group* of
# $G = H / H_{kv}$ consecutive query heads. Query head $h$ reads KV head $j(h) = \lfloor h / G
# \rfloor$:
#
# $$\text{out}_h = \operatorname{softmax}\!\left(\frac{Q_h K_{j(h)}^\top}{\sqrt{d}} + M\right)
# V_{j(h)}, \qquad j(h) = \left\lfloor \frac{h}{G} \right\rfloor ,$$
#
# where $d$ is the head dimension and $M$ the causal mask ($-\infty$ above the diagonal, so a
# token never sees the tokens after it). The two extremes have names:
#
# | variant | KV heads $H_{kv}$ | group size $G$ | used by |
# | --- | --- | --- | --- |
# | multi-head (MHA) | $H$ | 1 | GPT-2, Llama 1, Llama 2 7B/13B |
# | multi-query (MQA) | 1 | $H$ | PaLM, Falcon-7B |
# | grouped-query (GQA) | between | between | Llama 2 70B, Llama 3, every Qwen2.5 |
#
# Drawn for 8 query heads (each column is one query head, the row below names the KV head it
# reads):
#
# ```
# query heads   q0  q1  q2  q3  q4  q5  q6  q7
# MHA  (Hkv=8)  k0  k1  k2  k3  k4  k5  k6  k7     8 K and 8 V per token
# GQA  (Hkv=2)  k0  k0  k0  k0  k1  k1  k1  k1     2 K and 2 V per token
# MQA  (Hkv=1)  k0  k0  k0  k0  k0  k0  k0  k0     1 K and 1 V per token
# ```
#
# Only keys and values are kept in the cache, so the cache shrinks by $H_{kv}/H$. The queries
# are not cached: each is used once, by the token that made it. Here is what Qwen2.5 chose at
# each size:

# %%
print(f"{'model':<14}{'layers':>7}{'heads H':>9}{'KV heads':>10}{'group G':>9}{'head_dim':>10}")
for name in PRESETS:
    c = QwenConfig.preset(name)
    print(f"{name:<14}{c.num_hidden_layers:>7}{c.num_attention_heads:>9}"
          f"{c.num_key_value_heads:>10}{c.num_key_value_groups:>9}{c.head_dim:>10}")

# %% [markdown]
# The small models (0.5B to 3B) use only 2 KV heads, 7B uses 4, and from 14B up, 8. Qwen2.5-7B
# shares each KV head among 7 query heads, so its cache is 1/7 of what MHA would need.
#
# ## 2. Build it
#
# ### 2a. `repeat_kv`: copy each KV head to its query heads
#
# The simplest way to compute GQA is to turn it back into MHA: copy KV head $j$ to the $G$
# query heads $jG, \dots, jG + G - 1$, then run ordinary attention. `transformers` does exactly
# this in `repeat_kv`: add an axis after the head axis, `expand` it to $G$ (a view, no copy
# yet), then `reshape` to $H$ heads, which must copy because an expanded axis has no memory of
# its own. Shapes are written (B batch, H heads, T queries, S keys, D head_dim).

# %%
def my_repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, Hkv, S, D) -> (B, Hkv * n_rep, S, D): KV head j serves query heads j*n_rep..+n_rep-1."""
    B, Hkv, S, D = x.shape
    x = x[:, :, None, :, :].expand(B, Hkv, n_rep, S, D)  # (B, Hkv, n_rep, S, D), a view
    return x.reshape(B, Hkv * n_rep, S, D)               # (B, H, S, D), a copy


# %% [markdown]
# The order matters. Label each KV head with its own index and repeat it: the copies of one
# head must sit side by side, [0, 0, 0, 0, 1, 1, 1, 1], because query heads $0..3$ form group
# 0. Tiling with `x.repeat(1, G, 1, 1)` gives [0, 1, 0, 1, …] instead: a valid-looking tensor
# that pairs query heads with the wrong keys (a real checkpoint then produces nonsense).

# %%
labels = torch.arange(2.0).view(1, 2, 1, 1)              # (B=1, Hkv=2, S=1, D=1): head j holds j
print("my_repeat_kv:       ", my_repeat_kv(labels, 4).flatten().int().tolist())
print("x.repeat(1, 4, 1, 1):", labels.repeat(1, 4, 1, 1).flatten().int().tolist())

# %% [markdown]
# With the copy done, attention is the formula above, head by head in one batched matmul.
# The mask comes from `qwenlab.attention.causal_mask(T, S)`: True where query $t$ may look,
# i.e. at keys $0 .. S - T + t$ (for a prompt $T = S$, the lower triangle). Following Qwen, the
# softmax runs in float32.

# %%
def attention_repeat(q, k, v):
    """Causal GQA: q (B, H, T, D), k and v (B, Hkv, S, D) -> (B, H, T, D), by copying K/V."""
    H, Hkv, T, S, D = q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3]
    k, v = my_repeat_kv(k, H // Hkv), my_repeat_kv(v, H // Hkv)   # (B, H, S, D)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)               # (B, H, T, S)
    scores = scores.masked_fill(~causal_mask(T, S), float("-inf"))
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    return probs @ v                                              # (B, H, T, D)


# %% [markdown]
# ### 2b. The grouped matmul: no copy at all
#
# The $G$ query heads of a group all multiply the *same* $K_j$. So instead of copying $K_j$
# $G$ times, gather the group's queries: view q (B, H, T, D) as (B, Hkv, G, T, D) (heads
# $jG..jG+G-1$ are consecutive, so this is a free view), then stack the G heads' T queries as
# $G \cdot T$ rows of one matrix per KV head. One matmul per KV head,
# (G·T, D) @ (D, S), reads $K_j$ once.
#
# Why not keep the 5-D shape and let `torch.matmul` broadcast K over the G axis? It would work,
# but broadcasting batch dimensions makes `matmul` expand and reshape its inputs, which copies K
# again, the very copy we want to avoid. Folding G into the rows needs no broadcast.

# %%
def attention_grouped(q, k, v):
    """Causal GQA without repeating K/V: the G query heads of a group share one matmul."""
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    G = H // Hkv
    q = q.view(B, Hkv, G, T, D)                                   # heads grouped by KV head
    rows = q.reshape(B, Hkv, G * T, D)                            # a group's queries, stacked
    scores = rows @ k.transpose(-1, -2) / math.sqrt(D)            # (B, Hkv, G*T, S): K read once
    scores = scores.view(B, Hkv, G, T, S).masked_fill(~causal_mask(T, S), float("-inf"))
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    out = probs.view(B, Hkv, G * T, S) @ v                        # (B, Hkv, G*T, D): V read once
    return out.view(B, H, T, D)


# %% [markdown]
# ### 2c. Both equal each other, `qwenlab` and `transformers`
#
# Random inputs shaped like a small GQA layer: 8 query heads on 2 KV heads ($G = 4$). The two
# versions do the same arithmetic in different matmul shapes, so they agree to float32 rounding
# (about $10^{-7}$), not bit for bit.

# %%
torch.manual_seed(0)
B, H, Hkv, T, D = 2, 8, 2, 6, 16
q = torch.randn(B, H, T, D)
k = torch.randn(B, Hkv, T, D)
v = torch.randn(B, Hkv, T, D)

out_repeat = attention_repeat(q, k, v)
out_grouped = attention_grouped(q, k, v)
print("output shape:", tuple(out_grouped.shape))
print("repeat vs grouped, max abs diff < 1e-6:",
      (out_repeat - out_grouped).abs().max().item() < 1e-6)

# %% [markdown]
# Now the library and the reference. `qwenlab.attention.attend` is what `qwenlab`'s model calls,
# with two backends: `"eager"` (the explicit math, with `repeat_kv`) and `"sdpa"` (PyTorch's
# fused `scaled_dot_product_attention`, which supports GQA natively). `transformers`'
# `eager_attention_forward` takes the module for its `num_key_value_groups`, an *additive* mask
# (0 where allowed, a very negative number elsewhere), and returns (B, T, H, D), so we transpose
# it back.

# %%
ours = {"qwenlab eager": attend(q, k, v, backend="eager"),
        "qwenlab sdpa": attend(q, k, v, backend="sdpa")}
module = SimpleNamespace(num_key_value_groups=H // Hkv, training=False)
additive_mask = torch.zeros(T, T).masked_fill(~causal_mask(T, T), torch.finfo(q.dtype).min)
hf_out, _ = modeling_qwen2.eager_attention_forward(module, q, k, v, additive_mask[None, None],
                                                   scaling=D ** -0.5)
ours["transformers eager"] = hf_out.transpose(1, 2)               # (B, T, H, D) -> (B, H, T, D)
for name, out in ours.items():
    print(f"grouped vs {name:<19} max abs diff < 1e-6:",
          (out_grouped - out).abs().max().item() < 1e-6)
print("my_repeat_kv == transformers repeat_kv:",
      torch.equal(my_repeat_kv(k, 4), modeling_qwen2.repeat_kv(k, 4)))
print("my_repeat_kv == qwenlab repeat_kv:     ", torch.equal(my_repeat_kv(k, 4), repeat_kv(k, 4)))

# %% [markdown]
# ### 2d. What `repeat_kv` costs in memory
#
# `repeat_kv` returns a new tensor $G$ times the size of K; the grouped version only made views.
# `data_ptr()` (the address of a tensor's first element) tells a view from a copy: a view
# starts where its source starts.

# %%
k_rep = my_repeat_kv(k, 4)
print(f"K: {k.nbytes:,} bytes; repeat_kv(K, 4): {k_rep.nbytes:,} bytes, "
      f"a copy: {k_rep.data_ptr() != k.data_ptr()}")
print("grouped q.view(B, Hkv, G, T, D) is a view of q:",
      q.view(B, Hkv, 4, T, D).data_ptr() == q.data_ptr())

# %% [markdown]
# A few kilobytes here; at scale it is another matter. While decoding, attention reads the
# whole cache of a layer at every step. With `repeat_kv`, each layer first writes a $G$-times
# larger copy of its K and V, then reads that. For Qwen2.5-72B (64 query heads, 8 KV heads) at
# a 32K-token context in bf16:

# %%
c72 = QwenConfig.preset("qwen2.5-72b")
per_layer = qwenlab.kv_cache_bytes(c72, 1, 32768, torch.bfloat16) // c72.num_hidden_layers
copied = per_layer * c72.num_key_value_groups          # K and V repeated to 64 heads
print(f"one layer's cached K and V:        {per_layer / 2**20:,.0f} MiB")
print(f"the same after repeat_kv:          {copied / 2**20:,.0f} MiB")
print(f"copies written per generated token: {copied * c72.num_hidden_layers / 2**30:,.0f} GiB "
      f"({c72.num_hidden_layers} layers)")

# %% [markdown]
# The copy is freed after each layer, so it does not add to the resident memory, but writing
# 80 GiB per token would dominate the time of a step that should read only the 10 GiB cache.
# That is why fast decoders fold the group into rows, as `attention_grouped` does:
# `qwenlab.decode` views the new token's query heads as (B, Hkv, G, D), and PyTorch's `sdpa`
# accepts `enable_gqa=True`.
#
# A quick measurement at decode shape (one new token, 4,096 cached positions, 14 query heads
# on 2 KV heads, as in Qwen2.5-0.5B). We time on one CPU thread: these operations are too small
# to gain from splitting across threads, and on a busy machine (a shared laptop, a CI runner)
# threads that wait for each other can make a step many times slower, which would drown what we
# want to see.

# %%
@contextlib.contextmanager
def one_cpu_thread():
    """Run the block on one CPU thread, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# %%
# NBVAL_IGNORE_OUTPUT
torch.manual_seed(0)
q1 = torch.randn(1, 14, 1, 64)
k1, v1 = torch.randn(1, 2, 4096, 64), torch.randn(1, 2, 4096, 64)
with one_cpu_thread():
    for fn in (attention_repeat, attention_grouped):
        fn(q1, k1, v1)  # warm-up: first touches of fresh memory are slow
        start = time.perf_counter()
        for _ in range(50):
            fn(q1, k1, v1)
        print(f"{fn.__name__:<18} {(time.perf_counter() - start) / 50 * 1e3:.3f} ms per call")

# %% [markdown]
# ## 3. The KV cache and its memory
#
# When token $t$ is generated, its query needs the keys and values of tokens $0..t$. Those of
# tokens $0..t-1$ are the same as at the previous step, because with a causal mask no token's
# hidden state depends on later tokens. So keep them: after the prompt has gone through the
# model once (*prefill*), each step computes q, k, v for the new token only, appends its k and
# v to the cache and attends over all of it (*decode*).
#
# Every layer keeps a K and a V of shape (batch, kv_heads, tokens, head_dim), so
#
# $$\text{bytes} = 2\,(K, V) \times \text{layers} \times \text{kv heads} \times \text{head dim}
# \times \text{tokens} \times \text{batch} \times \text{bytes per element}.$$
#
# It depends on the number of KV heads, not of query heads: GQA cuts it by $H_{kv}/H$ against
# MHA. The worked example: a model with 32 query heads of dimension 128 and 32 layers (the
# shape of Llama 2 7B), one 32K-token sequence in bf16, with 32 (MHA), 8, 4 and 1 (MQA) KV heads:

# %%
for kv_heads in (32, 8, 4, 1):
    cfg32 = QwenConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=kv_heads,
                       num_hidden_layers=32)
    nbytes = qwenlab.kv_cache_bytes(cfg32, batch_size=1, seq_len=32768, dtype=torch.bfloat16)
    print(f"{kv_heads:>2} KV heads: {nbytes / 2**30:5.2f} GiB = {kv_heads}/32 of MHA")

# %% [markdown]
# Going from 32 to 8 KV heads cuts the cache to 1/4 (16 GiB → 4 GiB), to 4 KV heads to 1/8
# (2 GiB). The same memory then holds 4× or 8× more tokens, or more sequences at once.
#
# ### The measured bytes of a real cache equal the formula
#
# `qwenlab.KVCache` preallocates K and V for `max_len` tokens, shape
# (layers, batch, kv_heads, max_len, head_dim), and writes each forward pass's k and v into the
# next free positions. We run a real prompt through the tiny model (4 layers, 4 query heads on
# 2 KV heads of dimension 32), in float32 and in bf16, and compare `cache.nbytes`, the bytes its
# tensors really occupy, with the formula.

# %%
torch.manual_seed(0)
cfg = QwenConfig.tiny()
model = QwenForCausalLM(cfg).eval()
prompt = torch.randint(0, cfg.vocab_size, (2, 64))               # (batch 2, 64 tokens)
for dtype in (torch.float32, torch.bfloat16):
    m = QwenForCausalLM(cfg).to(dtype).eval()
    cache = KVCache(cfg, batch_size=2, max_len=64, dtype=dtype)
    with torch.no_grad():
        m(prompt, cache=cache)
    formula = qwenlab.kv_cache_bytes(cfg, batch_size=2, seq_len=64, dtype=dtype)
    print(f"{str(dtype):<15} K shape {tuple(cache.keys.shape)}, {cache.length} tokens cached: "
          f"{cache.nbytes:,} bytes measured, {formula:,} by the formula, "
          f"equal: {cache.nbytes == formula}")

# %% [markdown]
# $2 \times 4 \times 2 \times 32 \times 64 \times 2 \times 4 = 262{,}144$ bytes in float32, half
# that in bf16. Because the cache is preallocated, its bytes are those of `max_len` tokens from
# the start: serving systems size it for the longest context they accept, which is why the
# formula at the *maximum* context is the one that decides whether a model can be served.
#
# ### Decoding from the cache gives the same logits as a full forward pass
#
# A cache is only useful if it changes nothing. Feed 8 prompt tokens, then 12 more one at a
# time through `model(token, cache=cache)`, and compare each step's logits with a single
# forward pass over all 20 tokens. Then the same with `qwenlab.decode`'s `prefill` and
# `decode_step`, the fast path that `qwenlab.generate` uses, which folds query heads by KV
# group like `attention_grouped`. Float32 reorders a few sums, so we allow $10^{-4}$.

# %%
torch.manual_seed(0)
ids = torch.randint(0, cfg.vocab_size, (2, 20))
with torch.no_grad():
    full = model(ids).logits                                      # (2, 20, V) in one pass
    cache = KVCache(cfg, batch_size=2, max_len=20)
    steps = [model(ids[:, :8], cache=cache).logits]              # prefill: 8 tokens
    steps += [model(ids[:, t:t + 1], cache=cache).logits for t in range(8, 20)]  # 1 at a time
    cached = torch.cat(steps, dim=1)
    state = prefill(model, ids[:, :8], None, max_len=20)
    fast = [state.logits]
    for t in range(8, 19):
        decode_step(model, state, ids[:, t], ids[:, :t + 1])
        fast.append(state.logits)
    fast = torch.stack(fast, dim=1)                               # logits for positions 7..18
print("model(..., cache) vs full forward, max abs diff < 1e-4:",
      (cached - full).abs().max().item() < 1e-4)
print("decode_step       vs full forward, max abs diff < 1e-4:",
      (fast - full[:, 7:19]).abs().max().item() < 1e-4)

# %% [markdown]
# ### Seven Qwen2.5 sizes at 4K, 32K and 128K tokens
#
# `qwenlab.kv_cache_bytes(config, batch, tokens, dtype)` is the formula, and
# `QwenConfig.preset` gives each size's real shape. For the MHA comparison we keep everything
# and set `num_key_value_heads` to the number of query heads. One sequence, bf16, GiB:

# %%
CONTEXTS = (4096, 32768, 131072)


def kv_gib(config, tokens, batch=1, dtype=torch.bfloat16):
    return qwenlab.kv_cache_bytes(config, batch, tokens, dtype) / 2**30


print(f"{'model':<14}{'GQA 4K':>8}{'GQA 32K':>9}{'GQA 128K':>10}{'MHA 128K':>10}{'MHA/GQA':>9}")
gqa, mha = {}, {}
for name in PRESETS:
    c = QwenConfig.preset(name)
    c_mha = c.replace(num_key_value_heads=c.num_attention_heads)
    gqa[name] = [kv_gib(c, n) for n in CONTEXTS]
    mha[name] = [kv_gib(c_mha, n) for n in CONTEXTS]
    g4, g32, g128 = gqa[name]
    print(f"{name:<14}{g4:>8.2f}{g32:>9.2f}{g128:>10.2f}{mha[name][2]:>10.1f}"
          f"{mha[name][2] / g128:>8.0f}×")

# %% [markdown]
# At 128K tokens the 72B model's cache is 40 GiB with GQA; with MHA it would be 320 GiB, four
# 80 GiB GPUs for one conversation's keys and values. The plot shows the same table on a log
# scale: solid lines GQA, dashed lines the MHA cache those models would need.

# %%
sizes = [name.removeprefix("qwen2.5-") for name in PRESETS]
fig, ax = plt.subplots(figsize=(8, 4))
for i, tokens in enumerate(CONTEXTS):
    color = ("tab:green", "tab:blue", "tab:red")[i]
    ax.plot(sizes, [gqa[n][i] for n in PRESETS], "o-", color=color, label=f"GQA, {tokens // 1024}K")
    ax.plot(sizes, [mha[n][i] for n in PRESETS], "x--", color=color, alpha=0.6,
            label=f"MHA, {tokens // 1024}K")
ax.axhline(80, color="gray", linestyle=":", label="one 80 GiB GPU")
ax.set_yscale("log")
ax.set_xlabel("Qwen2.5 model size")
ax.set_ylabel("KV cache, GiB (bf16, batch 1)")
ax.set_title("KV cache of one sequence: GQA (as shipped) vs MHA")
ax.legend(ncol=2, fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The MHA/GQA column is the group size $G$ of each model. And the cache does not follow the
# parameter count, but layers × KV heads × head_dim: 14B has twice the parameters of 7B but
# 3.4× its cache (48 layers × 8 KV heads against 28 × 4), while 72B has 2.2× the parameters of
# 32B and only 1.25× its cache (80 layers against 64, both with 8 KV heads).
#
# ## 4. What the cache buys: $O(n)$ instead of $O(n^2)$
#
# Without a cache, every step runs the whole sequence through the model again. With a prompt
# of $P$ tokens and $n$ new tokens, the model processes
#
# $$\underbrace{P + (P+1) + \dots + (P+n-1)}_{\text{no cache}} = nP + \frac{n(n-1)}{2}
# \qquad\text{vs}\qquad \underbrace{P + (n - 1)}_{\text{cache}}$$
#
# token positions (the last token is never fed back). Here is a greedy generation loop that
# counts them: with a cache it feeds only the newest token; without, the whole sequence.

# %%
def generate_counting(model, prompt, n_new, use_cache):
    """Greedy generation that also returns how many token positions the model processed."""
    ids, processed = prompt, 0
    cache = KVCache(model.config, prompt.shape[0], prompt.shape[1] + n_new) if use_cache else None
    feed = prompt
    with torch.no_grad():
        for _ in range(n_new):
            logits = model(feed, cache=cache).logits[:, -1]       # (B, V) for the last position
            processed += feed.shape[1]
            next_id = logits.argmax(dim=-1, keepdim=True)         # (B, 1)
            ids = torch.cat([ids, next_id], dim=1)
            feed = next_id if use_cache else ids                  # the cache remembers the rest
    return ids, processed


# %% [markdown]
# Both ways must produce the same tokens, and the same as `qwenlab.generate`:

# %%
torch.manual_seed(0)
prompt = torch.randint(0, cfg.vocab_size, (1, 16))
ids_cache, counted_with = generate_counting(model, prompt, 32, use_cache=True)
ids_full, counted_without = generate_counting(model, prompt, 32, use_cache=False)
print("same tokens with and without cache:", torch.equal(ids_cache, ids_full))
print("same tokens as qwenlab.generate:   ",
      torch.equal(ids_cache, qwenlab.generate(model, prompt, 32, use_cache=True)),
      torch.equal(ids_full, qwenlab.generate(model, prompt, 32, use_cache=False)))

# %% [markdown]
# The counts are exact integers, the same on every machine: the checkable form of
# "$O(n^2)$ vs $O(n)$". Doubling $n$ roughly quadruples the work without a cache and doubles
# it with one.

# %%
N_NEW = (32, 64, 128, 192, 256)
P = prompt.shape[1]
print(f"{'new tokens':>10}{'no cache':>10}{'cache':>8}{'ratio':>8}")
work = {}
for n in N_NEW:
    without = n * P + n * (n - 1) // 2
    with_cache = P + n - 1
    work[n] = (without, with_cache)
    print(f"{n:>10}{without:>10,}{with_cache:>8,}{without / with_cache:>7.1f}×")
print("generate_counting counted the same for n = 32:", (counted_without, counted_with) == work[32])

# %% [markdown]
# And the time it takes. We time `qwenlab.generate` on the tiny model for each $n$, taking
# the best of two runs on one CPU thread (timings on a shared machine jitter; the minimum is the
# most repeatable). Your numbers will differ from the ones stored here.

# %%
# NBVAL_IGNORE_OUTPUT
if SCALE == "gpu":
    N_NEW = (64, 128, 256, 512, 768)
device = "cuda" if torch.cuda.is_available() else "cpu"
model_t, prompt_t = model.to(device), prompt.to(device)


def time_generate(n, use_cache):
    start = time.perf_counter()
    qwenlab.generate(model_t, prompt_t, n, use_cache=use_cache)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


seconds = {True: [math.inf] * len(N_NEW), False: [math.inf] * len(N_NEW)}
with one_cpu_thread():
    qwenlab.generate(model_t, prompt_t, 8, use_cache=False)  # warm-up
    for _ in range(2):  # two rounds; a burst of load on a shared machine spoils one at most
        for i, n in enumerate(N_NEW):
            for use_cache in (True, False):
                seconds[use_cache][i] = min(seconds[use_cache][i], time_generate(n, use_cache))
for n, t_cache, t_full in zip(N_NEW, seconds[True], seconds[False], strict=True):
    print(f"{n:>4} new tokens: cache {t_cache:.3f} s, no cache {t_full:.3f} s "
          f"({t_full / t_cache:.1f}× slower)")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.plot(N_NEW, seconds[False], "o-", color="tab:red", label="no cache")
ax1.plot(N_NEW, seconds[True], "o-", color="tab:green", label="KV cache")
ax1.set_xlabel("new tokens n")
ax1.set_ylabel("seconds")
ax1.set_title("qwenlab.generate, tiny model")
ax1.legend()
ns = sorted(work)
ax2.plot(ns, [work[n][0] for n in ns], "o-", color="tab:red", label="no cache: nP + n(n-1)/2")
ax2.plot(ns, [work[n][1] for n in ns], "o-", color="tab:green", label="KV cache: P + n - 1")
ax2.set_xlabel("new tokens n")
ax2.set_ylabel("token positions processed")
ax2.set_title(f"work, prompt of P = {P} tokens")
ax2.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The right panel is exact; the left one is measured and follows it. With the cache the time
# grows linearly (each step costs about the same, plus attention over a cache that grows by
# one); without it the curve bends upward, quadratically. On a tiny model each step is
# dominated by fixed Python overhead, so the gap is smaller than the work ratio; on a real
# model, where each position is expensive, the time ratio approaches the work ratio.
#
# ## 5. Will it fit? A KV-cache calculator
#
# Serving a model needs its weights *and* the cache in GPU memory: weights = parameters ×
# bytes per element, cache from the formula. The parameter count comes from the model itself,
# built on PyTorch's `meta` device, which records shapes without allocating memory, so even
# the 72B model "builds" in a blink. We treat a card's memory as 16, 24 or 80 GiB and ignore
# activations, the CUDA context and fragmentation, so "tight" (under 10% to spare) usually
# means "no".

# %%
GPUS_GIB = (16, 24, 80)


@functools.cache
def parameter_count(preset: str) -> int:
    with torch.device("meta"):
        return QwenForCausalLM(QwenConfig.preset(preset)).num_parameters()


def memory_report(preset: str, context: int, batch: int = 1, dtype: str = "bf16") -> dict:
    """GiB of weights and KV cache for serving ``batch`` sequences of ``context`` tokens."""
    bytes_per_element = torch.empty((), dtype=as_dtype(dtype)).element_size()
    weights = parameter_count(preset) * bytes_per_element / 2**30
    kv = qwenlab.kv_cache_bytes(QwenConfig.preset(preset), batch, context, dtype) / 2**30
    fits = {}
    for gib in GPUS_GIB:
        spare = gib - weights - kv
        fits[gib] = "fits" if spare >= 0.1 * gib else "tight" if spare >= 0 else "no"
    return dict(parameters=parameter_count(preset), weights_gib=weights, kv_gib=kv,
                total_gib=weights + kv, fits=fits)


def print_report(preset, context, batch=1, dtype="bf16"):
    r = memory_report(preset, context, batch, dtype)
    print(f"{preset}, {context:,} tokens x batch {batch}, {dtype}")
    print(f"  weights:  {r['parameters'] / 1e9:.2f}B parameters = {r['weights_gib']:.2f} GiB")
    print(f"  KV cache: {r['kv_gib']:.2f} GiB")
    print(f"  total:    {r['total_gib']:.2f} GiB   "
          + ", ".join(f"{gib} GiB GPU: {verdict}" for gib, verdict in r["fits"].items()))


print_report("qwen2.5-7b", 32768, batch=1, dtype="bf16")

# %% [markdown]
# Qwen2.5-7B's weights alone take 14.19 GiB in bf16; with the 1.75 GiB cache of one 32K
# conversation, a 16 GiB card has 0.06 GiB left, less than the activations and the CUDA context
# need: "tight" here means "no" in practice. Change the inputs below (in JupyterLab or Colab;
# the book shows a static version after it). Try 72B at 128K, or the 7B with batch 16.

# %%
# NBVAL_IGNORE_OUTPUT
widgets.interact(
    print_report,
    preset=widgets.Dropdown(options=PRESETS, value="qwen2.5-7b", description="model"),
    context=widgets.Dropdown(options=[4096, 8192, 32768, 65536, 131072], value=32768,
                             description="context"),
    batch=widgets.IntSlider(value=1, min=1, max=64, description="batch"),
    dtype=widgets.Dropdown(options=["bf16", "fp16", "fp32", "fp8"], value="bf16",
                           description="dtype"))

# %% [markdown]
# The static picture: Qwen2.5-7B in bf16, weights plus cache against context length, for
# batches of 1, 4 and 16 sequences. The flat part on the left is the weights; each line bends
# up where the cache takes over.

# %%
contexts = [2**i for i in range(10, 18)]                          # 1K .. 128K
fig, ax = plt.subplots(figsize=(8, 4))
for batch in (1, 4, 16):
    totals = [memory_report("qwen2.5-7b", n, batch)["total_gib"] for n in contexts]
    ax.plot(contexts, totals, "o-", label=f"batch {batch}")
for gib in GPUS_GIB:
    ax.axhline(gib, color="gray", linestyle=":")
    ax.text(contexts[0], gib + 1.5, f"{gib} GiB GPU", color="gray", fontsize=8)
ax.set_xscale("log", base=2)
ax.set_ylim(0, None)
ax.set_xticks(contexts, [f"{n // 1024}K" for n in contexts])
ax.set_xlabel("context (tokens)")
ax.set_ylabel("weights + KV cache, GiB")
ax.set_title("Qwen2.5-7B in bf16: what fits where")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Exercises
#
# Each exercise is a function to fill in, followed by a check from `qwenlab.checks`. Until
# you write it, the check says "not attempted yet" with a hint; a wrong answer gets a
# diagnosis; a right one a ✓. Solutions: `solutions/04_gqa_kv_cache_solutions.ipynb`.
#
# ### Exercise 1: `repeat_kv` by indexing
#
# Write `repeat_kv` without `expand`: build the index of the KV head that each of the
# $H = H_{kv} \cdot$ `n_rep` query heads reads, and select those heads. Input x
# (B, Hkv, S, D), output (B, Hkv·n_rep, S, D).

# %%
def exercise_repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    raise NotImplementedError("return x with each KV head copied n_rep times, in order")


# %%
checks.check_repeat_kv(exercise_repeat_kv)

# %% [markdown]
# ### Exercise 2: causal GQA attention, also after a cache
#
# Write causal grouped-query attention: q (B, H, T, D), k and v (B, Hkv, S, D) →
# (B, H, T, D). The T queries are the *last* T of the S positions: $T = S$ for a prompt, and
# $T < S$ when the first $S - T$ positions come from a cache. Query $t$ is then the token at
# position $S - T + t$, and may see keys $0 .. S - T + t$. Build it from matmuls and a softmax
# (either way of section 2); for the mask, `torch.ones(T, S, dtype=torch.bool).tril(diagonal=...)`:
# which diagonal?

# %%
def exercise_gqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError("return causal grouped-query attention, shape (B, H, T, D)")


# %%
checks.check_gqa_attention(exercise_gqa_attention)

# %% [markdown]
# ### Exercise 3: the KV-cache formula
#
# Return the bytes of K and V over all layers for `batch_size` sequences of `seq_len` tokens,
# from a `QwenConfig` (`num_hidden_layers`, `num_key_value_heads`, `head_dim`, …) and the bytes
# per element (2 for bf16). Return an int.

# %%
def exercise_kv_cache_bytes(config: QwenConfig, batch_size: int, seq_len: int,
                            bytes_per_element: int) -> int:
    raise NotImplementedError("return the bytes of the KV cache")


# %%
checks.check_kv_cache_bytes(exercise_kv_cache_bytes)

# %% [markdown]
# ## Review questions
#
# Five questions on what this chapter showed. In JupyterLab or Colab, pick an answer and press
# **Check**; in the book, open **Answer** under each question.

# %%
from qwenlab.quiz import Question, quiz  # noqa: E402

quiz([
    Question("Qwen2.5-72B has 64 query heads but 8 KV heads (80 layers, head_dim 128). What "
             "does that buy at a 128K-token context in bf16?",
             ["8× fewer weights and FLOPs in the query projection",
              "A KV cache of 20 GiB instead of 160 GiB",
              "8× fewer attention scores per generated token",
              "A KV cache of 40 GiB instead of 320 GiB"],
             answer=3,
             why="The cache holds K and V per KV head: 2 × 80 layers × 8 × 128 × 131,072 "
                 "tokens × 2 bytes = 40 GiB, and 320 GiB with 64 KV heads (MHA). Forget the "
                 "2 for K and V and you get half. GQA shrinks the cache by H_kv/H, which buys "
                 "longer contexts, bigger batches and less memory traffic per decoded token; "
                 "the query projection and the number of scores stay the same."),
    Question("Why is the cache made of keys and values, and not queries?",
             ["Queries have H heads and K, V only H_kv each, so queries are too large to keep",
              "A query is used once, by its own token; keys and values are read by every "
              "later token",
              "Past queries change as new tokens arrive, so a cached query would soon be stale",
              "Queries are cached too, folded into the attention scores that are stored"],
             answer=1,
             why="Under the causal mask no token's hidden state depends on later tokens, so a "
                 "past token's k and v are the same at every step: computing them once is "
                 "exact, not an approximation (the cached logits matched a full forward pass "
                 "to 1e-4). Past queries would not change either; they are never needed again."),
    Question("x.repeat(1, G, 1, 1) turns K of shape (B, H_kv, S, D) into the shape that the "
             "H query heads need. What goes wrong?",
             ["Nothing: every query head still gets a copy of some KV head, all of them used",
              "It uses G times more memory than repeat_kv, which returns views",
              "It repeats along the batch dimension instead of the heads dimension",
              "Heads come out as [0, 1, 0, 1, …], but query head h must read KV head ⌊h/G⌋"],
             answer=3,
             why="For 2 KV heads and G = 4 the chapter printed [0, 1, 0, 1, 0, 1, 0, 1] for "
                 "repeat and [0, 0, 0, 0, 1, 1, 1, 1] for repeat_kv, which copies exactly as "
                 "much. The shapes match, so nothing fails; with trained weights the heads "
                 "attend with keys they were not trained with. repeat_interleave(G, dim=1), or "
                 "expand then reshape, gives the right order."),
    Question("Why does a fast decoder fold the G query heads of a group into rows instead of "
             "calling repeat_kv?",
             ["At every step repeat_kv writes a G-times larger copy of each layer's K and V",
              "repeat_kv's copies stay in memory, so the KV cache itself grows G-fold",
              "repeat_kv's output differs slightly from the grouped matmul's, in float32",
              "Folding the heads lets attention skip the causal mask while decoding"],
             answer=0,
             why="For Qwen2.5-72B at 32K tokens one layer's cached K and V take 128 MiB, and "
                 "1,024 MiB after repeat_kv: 80 GiB written per generated token over 80 "
                 "layers, to read a 10 GiB cache. The copy is freed after each layer, so the "
                 "memory does not grow; the time does. Viewing q as (B, H_kv, G·T, D) reads K "
                 "and V once with no copy, as sdpa(enable_gqa=True) and qwenlab.decode do."),
    Question("Generating n tokens after a P-token prompt: how many token positions does the "
             "model process without a cache, and with one?",
             ["n·P without, P + n with",
              "nP + n(n − 1)/2 without, P + n − 1 with",
              "(P + n)² without, P + n with",
              "nP + n(n − 1)/2 without, n with (the prompt is free)"],
             answer=1,
             why="Without a cache step k runs all P + k tokens again: P + (P + 1) + … + "
                 "(P + n − 1), quadratic in n (36,736 for P = 16, n = 256). With one, the "
                 "prompt goes through once and each new token once, the last never fed back: "
                 "271. The price is memory, 2 × layers × KV heads × head_dim × tokens × batch "
                 "× bytes: Qwen2.5-7B at 128K in bf16 needs 7 GiB of cache per sequence beside "
                 "14 GiB of weights."),
])
