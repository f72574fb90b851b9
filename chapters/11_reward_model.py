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
# # 11 · The reward model: Bradley–Terry, the last token, best-of-n
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/qwenlab/qwenlab/blob/main/chapters/11_reward_model.ipynb)  
# *On `SCALE="gpu"` this chapter needs:* a T4 (16 GB).
#
# Qwen2.5's post-training does not stop at supervised fine-tuning (chapter 10). Its second half
# is reinforcement learning from preferences, in stages: a **reward model** that scores
# replies, preference optimisation (DPO, chapter 12), and rounds of fresh on-policy data judged
# by reward models and checkers. Everything in that half rests on one learned function,
# $r_\phi(x, y)$: how good is reply $y$ to prompt $x$?
#
# In this chapter you will:
#
# 1. derive the **Bradley–Terry** loss that turns "reply A is better than reply B" into a
#    training signal;
# 2. build a reward model from the SFT model of the course pipeline (its backbone, plus a
#    scalar head read at the **last real token**) and prove it equals `qwenlab.reward` and
#    transformers' `Qwen2ForSequenceClassification`;
# 3. train it on near-miss preference pairs and prove the loss equals TRL's `RewardTrainer`;
# 4. see what a wrong read-out index does under padding;
# 5. measure it: held-out pair accuracy per kind of mistake, the distribution of reward margins,
#    and **best-of-n** sampling, against an oracle that uses the task checkers;
# 6. write the loss and the read-out index yourself, with graders.
#
# ## Setup

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %%
import itertools
import math
import random
import tempfile
import time
import warnings

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import qwenlab
import qwenlab.env
from qwenlab import checks, recipe, reward, tasks
from qwenlab.tokenizer import load_course_tokenizer

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")
torch.set_num_threads(1)   # one thread: bit-for-bit repeatable training, and no waiting on
                           # the other thread of a busy laptop

# %% [markdown]
# The reward model starts from the **SFT model** of the course pipeline (`qwenlab.recipe`,
# chapter 14): the tiny Qwen pretrained with chapter 09's loop (on filtered plays mixed with
# plain-text task demonstrations) and fine-tuned on the checkable tasks as in chapter 10.
# `load_stage` builds it on first use (a few minutes on a CPU, once) and loads it from
# `data/prepared/` after that.

# %%
# NBVAL_IGNORE_OUTPUT
sft = recipe.load_stage("sft", scale=SCALE)
tok = load_course_tokenizer()
DEVICE = sft.device

# %%
settings = recipe.STAGE_CONFIGS[SCALE]
train_ex, eval_ex = tasks.splits(settings["data"]["n_train"], settings["data"]["n_eval"],
                                 seed=0)
print(f"SFT model: {sft.num_parameters():,} parameters, hidden {sft.config.hidden_size}, "
      f"{sft.config.num_hidden_layers} layers")
print(f"{len(train_ex)} training prompts, {len(eval_ex)} held-out prompts "
      f"({len(tasks.TASKS)} task families)")
greedy = tasks.evaluate(sft, tok, eval_ex, max_new_tokens=32)["all"]
print(f"SFT greedy accuracy on the held-out prompts: {greedy:.1%}")

# %% [markdown]
# ## 1 · The idea: preferences as a coin whose bias is a reward difference
#
# People (or programs) find it far easier to say which of two replies is better than to give
# either one a score. The **Bradley–Terry** model (1952) connects the two: give every reply a
# scalar reward $r(x, y)$, and say that $y_c$ ("chosen") beats $y_r$ ("rejected") with
# probability
#
# $$P(y_c \succ y_r \mid x) = \sigma\big(r(x, y_c) - r(x, y_r)\big)
#   = \frac{1}{1 + e^{-(r_c - r_r)}}.$$
#
# Equal rewards give a coin flip; a reward gap of 2 gives 88%; of 5, 99.3%. Fitting $r_\phi$ to
# a data set of preferences by maximum likelihood means minimising
#
# $$\mathcal{L}(\phi) = -\frac{1}{N}\sum_{i=1}^{N} \log \sigma\big(r_\phi(x_i, y_{c,i})
#   - r_\phi(x_i, y_{r,i})\big).$$
#
# Two consequences to keep in mind:
#
# - **Only differences are learned.** Adding a constant to every reward changes nothing, so a
#   reward's absolute value means nothing by itself (TRL's optional
#   `center_rewards_coefficient` adds $c \cdot \overline{(r_c + r_r)^2}$ to pin the mean
#   near 0).
# - **The gradient fades on pairs already ranked right.** With $\Delta = r_c - r_r$,
#   $\partial \mathcal{L}_i / \partial \Delta = -\sigma(-\Delta)$: a pair ranked wrong pulls
#   with nearly full force, one ranked right by a wide margin hardly at all.

# %%
delta = torch.linspace(-6, 6, 241)
fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
ax[0].plot(delta, torch.sigmoid(delta), label=r"$P(y_c \succ y_r) = \sigma(\Delta)$")
ax[0].axhline(0.5, color="grey", lw=0.5)
ax[0].axvline(0, color="grey", lw=0.5)
ax[0].set(xlabel=r"reward margin $\Delta = r_c - r_r$", ylabel="probability",
          title="Bradley–Terry")
ax[0].legend()
ax[1].plot(delta, -F.logsigmoid(delta), label=r"loss $-\log\sigma(\Delta)$")
ax[1].plot(delta, torch.sigmoid(-delta), label=r"|gradient| $\sigma(-\Delta)$")
ax[1].set(xlabel=r"$\Delta$", title="loss and gradient of one pair")
ax[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2 · The data: near misses
#
# Our preference pairs come from the checkable tasks (`qwenlab.tasks`): the chosen reply is the
# right answer, the rejected one a **near miss** of one of four kinds, each a mistake a small
# model really makes: a number or letter one step off, two items swapped, the right value in
# the wrong form, and the right answer that does not stop.

# %%
pairs = tasks.preference_pairs(train_ex, seed=0)
eval_pairs = tasks.preference_pairs(eval_ex, seed=1)
for p in eval_pairs[:8]:
    print(f"{p['kind']:>13} | {p['prompt'][0]['content'][:42]:<42} | "
          f"{p['chosen'][0]['content']!r:>28} > {p['rejected'][0]['content']!r}")

# %% [markdown]
# Each side is the whole conversation through the chat template, exactly as TRL's
# `RewardTrainer` tokenizes it: `prompt + chosen` and `prompt + rejected`
# (`reward.tokenize_pair`). The sequence ends with `<|im_end|>` and the `"\n"` after it, and
# the reward is read at that last token, whose hidden state has attended to everything before.

# %%
chosen_ids, rejected_ids = reward.tokenize_pair(tok, eval_pairs[0])
print(repr(tok.decode(chosen_ids)))
print(f"{len(chosen_ids)} tokens; the last three: {tok.convert_ids_to_tokens(chosen_ids[-3:])}")

# %% [markdown]
# ## 3 · Build it: a backbone and a scalar head
#
# A reward model is the language model with its LM head (hidden → 4,096 logits) replaced by a
# **score head** (hidden → 1 number), read at one position per sequence. transformers calls
# this `Qwen2ForSequenceClassification` with `num_labels=1`: the backbone is `model`, the
# head `score`, a bias-free `nn.Linear`.
#
# Batches of sequences of different lengths are padded, and the position to read depends on
# the side:
#
# ```
# right padding   [ t t t t <pad> <pad> ]   last real token: column 3
# left padding    [ <pad> <pad> t t t t ]   last real token: column 5 = T - 1
# ```
#
# The index that is right under both is the position of the **rightmost 1** of the attention
# mask. (transformers finds it from `pad_token_id` instead: the rightmost token that is not
# the pad id; the same thing unless a reply contains the pad token as text.)

# %%
def my_last_token_index(attention_mask):
    """(B, T) mask of 1s and 0s -> (B,) column of each row's last real token."""
    T = attention_mask.shape[1]
    return (torch.arange(T, device=attention_mask.device) * attention_mask).argmax(dim=-1)


class MyRewardModel(nn.Module):
    def __init__(self, backbone, score):
        super().__init__()
        self.model, self.score = backbone, score             # QwenModel, nn.Linear(C, 1)

    def forward(self, input_ids, attention_mask):
        h, _ = self.model(input_ids, attention_mask)                  # (B, T, C)
        last = my_last_token_index(attention_mask)                    # (B,)
        h_last = h[torch.arange(len(h), device=h.device), last]       # (B, C)
        return self.score(h_last).squeeze(-1)                         # (B,)


print(my_last_token_index(torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]])))

# %% [markdown]
# `reward.RewardModel.from_causal_lm` does the same with the library: it copies the SFT
# model's backbone (the SFT model itself stays as it is) and adds a new head, drawn from a
# seeded generator. Our notebook model, built on the same modules, gives the same rewards, and
# so does transformers' `Qwen2ForSequenceClassification` holding the same weights, on a
# right-padded batch of held-out pairs.

# %%
rm = reward.RewardModel.from_causal_lm(sft, seed=0)
mine = MyRewardModel(rm.model, rm.score)

rows = [ids for p in eval_pairs[:8] for ids in reward.tokenize_pair(tok, p)]
ids, mask = reward.pad_rows(rows, tok.pad_token_id, "right")
hf_rm = reward.to_transformers(rm, pad_token_id=tok.pad_token_id)
with torch.no_grad():
    r_lib = rm(ids, mask)
    r_mine = mine(ids, mask)
    r_hf = hf_rm(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
print(f"batch {tuple(ids.shape)}, {int((mask == 0).sum())} pad tokens")
print("notebook == qwenlab.reward:", torch.equal(r_mine, r_lib))
print("max abs diff to transformers < 1e-6:", (r_lib - r_hf).abs().max().item() < 1e-6)

# %% [markdown]
# ## 4 · The loss, and training
#
# The loss in one line. `F.logsigmoid` computes $\log\sigma(x)$ as $-\mathrm{softplus}(-x)$,
# which stays exact where `torch.log(torch.sigmoid(x))` would round $\sigma(x)$ to 0 and return
# $-\infty$ (the exercise's grader checks this).

# %%
def my_bradley_terry_loss(chosen_scores, rejected_scores):
    return -F.logsigmoid(chosen_scores - rejected_scores).mean()


c, r = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 3.0])
print(f"loss {my_bradley_terry_loss(c, r):.4f}; equal to the library: "
      f"{torch.equal(my_bradley_terry_loss(c, r), reward.bradley_terry_loss(c, r))}")
print(f"equal rewards give log 2 = {math.log(2):.4f}: "
      f"{my_bradley_terry_loss(torch.zeros(4), torch.zeros(4)):.4f}")

# %% [markdown]
# Training is the loop of chapters 09 and 10 with this loss: each step takes $B$ pairs, puts
# the $B$ chosen and then the $B$ rejected sequences into one right-padded $(2B, T)$ batch
# (TRL's layout), splits the $2B$ rewards in half and applies the loss. AdamW, warmup and
# cosine decay, gradient clipping; pairs of similar length are batched together to waste
# less compute on padding. The settings are the recipe's reward stage at this `SCALE`, so the
# model trained here *is* the course pipeline's reward model (chapter 14).

# %%
cfg = reward.RewardConfig(seed=0, **settings["reward"])
print(f"{cfg.max_steps} steps of {cfg.batch_size} pairs, lr {cfg.lr:g} -> {cfg.min_lr:g}, "
      f"{len(pairs)} training pairs, {len(eval_pairs)} held-out pairs")
print(f"held-out pair accuracy before training: {reward.pair_accuracy(rm, tok, eval_pairs):.1%}")

# %%
# NBVAL_IGNORE_OUTPUT
started = time.time()
history = reward.train(rm, tok, pairs, cfg, eval_pairs=eval_pairs)
print(f"trained in {time.time() - started:.0f} s")

# %%
print(f"loss (mean of the last 20 steps): {sum(history.loss[-20:]) / 20:.4f}")
for step, acc in zip(history.eval_step, history.eval_accuracy):
    print(f"step {step:>4}: held-out pair accuracy {acc:.1%}")

# %%
def smooth(xs, k=10):
    return [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1])
            for i in range(len(xs))]


fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
ax[0].plot(history.step, history.loss, alpha=0.3, label="batch")
ax[0].plot(history.step, smooth(history.loss), label="10-step mean")
ax[0].axhline(math.log(2), color="grey", ls="--", lw=0.8, label="log 2 (coin flip)")
ax[0].set(xlabel="step", ylabel="Bradley–Terry loss", title="training loss")
ax[0].legend()
ax[1].plot(history.step, smooth(history.accuracy), label="training batches (10-step mean)")
ax[1].plot(history.eval_step, history.eval_accuracy, "o-", label="held-out pairs")
ax[1].set(xlabel="step", ylabel="pair accuracy", ylim=(0.4, 1.02), title="pair accuracy")
ax[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5 · Prove it: the same loss as TRL's `RewardTrainer`
#
# TRL has no standalone loss function, so we build its trainer around the transformers copy of
# our trained model, let it tokenize and collate a few pairs its own way, and call its
# `compute_loss` on that batch. The same token ids through `qwenlab` must give the same loss.
# (The trainer's construction prints dataset-processing bars; that cell's output is not
# compared.)

# %%
# NBVAL_IGNORE_OUTPUT
from datasets import Dataset  # noqa: E402
from trl import RewardConfig as TRLRewardConfig  # noqa: E402
from trl import RewardTrainer  # noqa: E402

hf_rm = reward.to_transformers(rm, pad_token_id=tok.pad_token_id)
with tempfile.TemporaryDirectory() as out_dir, warnings.catch_warnings():
    warnings.simplefilter("ignore")
    trl_args = TRLRewardConfig(output_dir=out_dir, bf16=False, use_cpu=True, report_to=[],
                               activation_checkpointing=False, gradient_checkpointing=False,
                               per_device_train_batch_size=16)
    trainer = RewardTrainer(model=hf_rm, args=trl_args, processing_class=tok,
                            train_dataset=Dataset.from_list(eval_pairs[:16]))

# %%
processed = [trainer.train_dataset[i] for i in range(16)]
trl_batch = trainer.data_collator([{"chosen_ids": row["chosen_ids"],
                                    "rejected_ids": row["rejected_ids"]} for row in processed])
our_batch = reward.collate_pairs(*zip(*[reward.tokenize_pair(tok, p) for p in eval_pairs[:16]]),
                                 pad_token_id=tok.pad_token_id)
print("same token ids and mask as TRL's collator:",
      torch.equal(trl_batch["input_ids"], our_batch["input_ids"])
      and torch.equal(trl_batch["attention_mask"], our_batch["attention_mask"]))
with torch.no_grad():
    trl_loss = trainer.compute_loss(trainer.model, dict(trl_batch))
    r_c, r_r = rm(our_batch["input_ids"], our_batch["attention_mask"]).chunk(2)
    our_loss = reward.bradley_terry_loss(r_c, r_r)
print(f"TRL loss {trl_loss.item():.4f}, qwenlab loss {our_loss.item():.4f}; "
      f"|difference| < 1e-5: {abs(trl_loss.item() - our_loss.item()) < 1e-5}")

# %% [markdown]
# ## 6 · See it: what the wrong read-out index does
#
# Padding bugs in reward models are silent: the code runs, the rewards are numbers, only they
# are read at the wrong token. Two classic ones, measured on the trained model:
#
# - reading column $-1$ (`h[:, -1]`) of a **right-padded** batch: for every sequence shorter
#   than the longest, that is a pad token's hidden state;
# - `mask.sum(-1) - 1`, right for right padding, applied to a **left-padded** batch (the
#   padding side of generation, chapter 05): it points into the padding or the prompt.

# %%
def rewards_read_at(model, ids, mask, index):
    with torch.no_grad():
        h, _ = model.model(ids, mask)                                   # (B, T, C)
        return model.score(h[torch.arange(len(h)), index]).squeeze(-1)  # (B,)


def accuracy_with(padding_side, index_fn):
    tokenized = [reward.tokenize_pair(tok, p) for p in eval_pairs]
    ids, mask = reward.pad_rows([c for c, _ in tokenized] + [r for _, r in tokenized],
                                tok.pad_token_id, padding_side)
    r = rewards_read_at(rm, ids, mask, index_fn(mask))
    r_c, r_r = r.chunk(2)
    return (r_c > r_r).float().mean().item(), r


acc_right, r_right = accuracy_with("right", reward.last_token_index)
acc_left, r_left = accuracy_with("left", reward.last_token_index)
acc_col, _ = accuracy_with("right", lambda m: torch.full((len(m),), m.shape[1] - 1))
acc_sum, _ = accuracy_with("left", lambda m: m.sum(-1) - 1)
print(f"last real token, right padding: {acc_right:.1%}")
print(f"last real token, left padding:  {acc_left:.1%}  "
      f"(same rewards, max abs diff < 1e-5: {(r_right - r_left).abs().max().item() < 1e-5})")
print(f"column -1, right padding:       {acc_col:.1%}")
print(f"mask.sum(-1) - 1, left padding: {acc_sum:.1%}")

# %% [markdown]
# Reading the wrong token costs accuracy without raising any error. Worse, in training the
# model could *learn* to put its judgement wherever the bug reads, so the bug would be
# invisible in the training metrics and surface only when someone scores with the right index
# (or with another padding side). Test the read-out under both paddings, as
# `tests/test_reward.py` does.
#
# ## 7 · Measure it: which mistakes does it see?
#
# The held-out pairs above give each prompt one kind of near miss, so each family meets each
# kind on only six or seven of its prompts. To see kinds and families apart on more pairs, we
# score every held-out prompt against all four near misses: 800 pairs.
# (A one-item answer, such as a sum, cannot have two items swapped; there `near_miss` gives
# an off-by-one instead.)

# %%
rng = random.Random(1)
all_pairs = [tasks.pair_record(ex, ex.answer, tasks.near_miss(ex, kind, rng), kind)
             for ex in eval_ex for kind in tasks.NEAR_MISS_KINDS]
r_c, r_r = reward.pair_scores(rm, tok, all_pairs)
margin = r_c - r_r
kinds = {k: [i for i, p in enumerate(all_pairs) if p["kind"] == k]
         for k in tasks.NEAR_MISS_KINDS}
print(f"pair accuracy over all {len(all_pairs)} pairs: {(margin > 0).float().mean().item():.1%}")
print(f"{'kind':>13} {'pairs':>6} {'accuracy':>9} {'mean margin':>12}")
for k, idx in kinds.items():
    print(f"{k:>13} {len(idx):>6} {(margin[idx] > 0).float().mean().item():>9.1%} "
          f"{margin[idx].mean().item():>12.2f}")

# %% [markdown]
# The same accuracies by task family and kind, and the distribution of the margins
# $r_c - r_r$ (right of 0: ranked correctly):

# %%
grid = torch.tensor([[(margin[[i for i, p in enumerate(all_pairs)
                               if p["task"] == t and p["kind"] == k]] > 0).float().mean().item()
                      for k in tasks.NEAR_MISS_KINDS] for t in tasks.TASKS])
fig, ax = plt.subplots(figsize=(6.5, 4.8))
im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1)
ax.set_xticks(range(len(tasks.NEAR_MISS_KINDS)), tasks.NEAR_MISS_KINDS, rotation=30,
              ha="right")
ax.set_yticks(range(len(tasks.TASKS)), tasks.TASKS)
for (i, j), v in zip(itertools.product(range(len(tasks.TASKS)),
                                       range(len(tasks.NEAR_MISS_KINDS))), grid.flatten()):
    ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=9)
ax.set_title("held-out pair accuracy by task and near miss")
fig.colorbar(im, ax=ax)
plt.tight_layout()
plt.show()

# %%
fig, ax = plt.subplots(figsize=(8, 3.6))
bins = torch.linspace(margin.min().item(), margin.max().item(), 41).tolist()
for k, idx in kinds.items():
    ax.hist(margin[idx].tolist(), bins=bins, alpha=0.6, label=k)
ax.axvline(0, color="black", lw=1)
ax.set(xlabel=r"reward margin $r_c - r_r$ (right of 0: ranked correctly)",
       ylabel="held-out pairs", title="reward margins by kind of near miss")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The kinds separate. A mistake of *form* (words around the answer, an answer that runs on) is
# visible in the text itself, without solving the task, and the model ranks it right every
# time, by wide margins. A mistake of *content* (an off-by-one sum, two letters swapped) can
# only be seen by doing the task, which this tiny model cannot do, so those pairs sit near
# chance with margins around 0. The exceptions prove the rule: content mistakes that leave a
# trace in the form are caught (a converted length ends in 000 and 17001 does not; a name
# where the age belongs). This is why Qwen2.5 scores maths and code with **checkers** (answer
# matching, unit tests) where it can, and with learned reward models where no program can
# judge.
#
# ## 8 · Best-of-n: spend samples, keep the best
#
# The simplest use of a reward model needs no further training: sample $n$ replies from the
# policy (here the SFT model, temperature 1), score each, keep the highest. Its cost is $n$
# generations per prompt; its gain depends on how often a correct reply is among the $n$ and on
# whether the reward model can pick it out. The **oracle** line lets the task checker pick
# (it is right whenever any of the $n$ samples is right: pass@$n$), the ceiling of any
# selector. We sample 8 replies per held-out prompt once and take the first $n$ for each $n$.

# %%
N_MAX = 8
candidates = reward.sample_candidates(sft, tok, eval_ex, N_MAX, temperature=1.0, seed=0,
                                      max_new_tokens=32)
scores = reward.score_candidates(rm, tok, eval_ex, candidates)            # (prompts, 8)
correct = torch.tensor([[tasks.check(ex, y) for y in ys]
                        for ex, ys in zip(eval_ex, candidates)], dtype=torch.float)

NS = [1, 2, 4, 8]
rows_idx = torch.arange(len(eval_ex))
best_of = {n: correct[rows_idx, scores[:, :n].argmax(-1)].mean().item() for n in NS}
oracle = {n: correct[:, :n].max(-1).values.mean().item() for n in NS}
mean_sample = correct.mean().item()
print(f"greedy: {greedy:.1%}; a single sample at temperature 1: {mean_sample:.1%} on average")
print(f"{'n':>2} {'best-of-n (reward model)':>25} {'oracle (checker)':>17}")
for n in NS:
    print(f"{n:>2} {best_of[n]:>25.1%} {oracle[n]:>17.1%}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.plot(NS, [best_of[n] for n in NS], "o-", label="best-of-n, reward model picks")
ax.plot(NS, [oracle[n] for n in NS], "s--", label="oracle: checker picks (pass@n)")
ax.axhline(greedy, color="grey", ls=":", label="greedy")
ax.axhline(mean_sample, color="grey", ls="-.", lw=0.8, label="random pick")
ax.set_xscale("log", base=2)
ax.set_xticks(NS, [str(n) for n in NS])
ax.set(xlabel="samples per prompt n", ylabel="task accuracy (held-out prompts)",
       title="best-of-n with the reward model")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Read the gap between the two lines. The oracle rises with $n$: correct replies *are* among
# the samples more and more often. The reward model turns next to none of that into accuracy:
# its picks stay around the random pick, below greedy decoding, for every $n$. It learned to
# judge form from near misses, while the SFT model's own samples are mostly well-formed and
# wrong in content (a wrong sum, wrong letters), which it cannot judge. Two things would
# close the gap, and the rest of post-training does both: training the reward model on the
# **policy's own samples** judged by the checkers (on-policy pairs, chapter 12's rejection
# sampling), and using the checker itself as the reward wherever a task has one.
#
# How good can the selection be at best? For each $n$, two numbers bound it: a random pick
# scores the mean-sample accuracy (printed above the table), a perfect judge scores pass@$n$
# (the oracle column).

# %%
for n in NS[1:]:
    gain, room = best_of[n] - best_of[1], oracle[n] - best_of[1]
    print(f"n = {n}: best-of-n gains {gain:+.1%} over one sample; a perfect judge would gain "
          f"{room:+.1%}")

# %% [markdown]
# ## 9 · Exercises
#
# ### Exercise 1: the Bradley–Terry loss
#
# Write `bradley_terry_loss(chosen_scores, rejected_scores)`: two `(B,)` tensors of rewards in,
# the mean over the pairs of $-\log\sigma(r_c - r_r)$ out, a scalar. It must stay finite when
# the rewards are hundreds apart.

# %%
def bradley_terry_loss(chosen_scores, rejected_scores):
    raise NotImplementedError("return the mean over pairs of -log sigmoid(r_c - r_r)")


checks.check_bradley_terry_loss(bradley_terry_loss)

# %% [markdown]
# ### Exercise 2: the last real token
#
# Write `last_token_index(attention_mask)`: a `(B, T)` mask of 1s (tokens) and 0s (padding),
# padded on either side, in; the `(B,)` integer column of each row's last real token out.

# %%
def last_token_index(attention_mask):
    raise NotImplementedError("return the column of the rightmost 1 of each row")


checks.check_last_token_index(last_token_index)

# %% [markdown]
# ## 10 · Review questions
#
# In JupyterLab or Colab, pick an answer and press **Check**; in the book, open **Answer**
# under each question.

# %%
from qwenlab.quiz import Question, quiz  # noqa: E402

quiz([
    Question("A reward model gives reply A the reward 3.0 and reply B the reward 1.0. Under "
             "Bradley–Terry, what is the probability that A is preferred?",
             ["0.75, since 3 / (3 + 1)", "σ(2) ≈ 0.88", "σ(3) ≈ 0.95", "It cannot be said "
              "without knowing the rewards' scale"],
             answer=1,
             why="P(A ≻ B) = σ(r_A − r_B) = 1 / (1 + e^(−2)) ≈ 0.881. Only the difference "
                 "matters: adding 100 to both rewards gives the same probability, which is "
                 "also why a reward's absolute value means nothing on its own."),
    Question("Why is the reward read at the last real token and not at the first, or at the "
             "mean over tokens?",
             ["The first token's hidden state is always zero",
              "In a causal decoder only the last token's hidden state has attended to the whole "
              "prompt and reply",
              "The last token always is <|im_end|>, which the model was trained to score",
              "Averaging would be slower"],
             answer=1,
             why="Attention is causal: position t sees positions ≤ t. The last real token is "
                 "the one position whose state depends on every token of the conversation. "
                 "(With TRL's tokenization it is the \"\\n\" after <|im_end|>.)"),
    Question("A batch is right-padded and the code reads the reward at h[:, -1]. What happens?",
             ["An index error", "Nothing: pad tokens copy the last real token's state",
              "Every sequence shorter than the longest is scored at a pad token: wrong "
              "rewards, and no error",
              "Only the longest sequence is scored wrongly"],
             answer=2,
             why="Column −1 is a pad position for all but the longest rows. The code runs and "
                 "returns numbers; in section 6 the held-out accuracy dropped when reading "
                 "there. The rightmost 1 of the attention mask is right under both padding "
                 "sides."),
    Question("The reward model ranks 'wrong form' near misses almost perfectly and off-by-one "
             "answers near chance. What does that predict for best-of-n on the SFT model?",
             ["Best-of-n reaches the oracle's accuracy",
              "It helps where the policy's mistakes are of form and little where they are of "
              "content, so it stays well below the oracle",
              "It makes accuracy worse for every n",
              "Nothing: pair accuracy and best-of-n are unrelated"],
             answer=1,
             why="Best-of-n can only pick what the reward model can tell apart. The SFT model's "
                 "samples are mostly wrong in content, where the reward model is near chance, "
                 "so the checker (oracle) gains much more from the same samples. Hence "
                 "checkers where a program can judge, and on-policy pairs for the rest."),
    Question("Which loss does TRL's RewardTrainer minimise on a batch of B pairs (without "
             "margins or centering)?",
             ["mean over pairs of −log σ(r_c − r_r)", "sum over pairs of −log σ(r_c − r_r)",
              "mean over pairs of max(0, 1 − (r_c − r_r))", "mean of (r_c − r_r − 1)²"],
             answer=0,
             why="-nn.functional.logsigmoid(rewards_chosen - rewards_rejected).mean(), on a "
                 "batch whose first B rows are the chosen sequences and last B the rejected "
                 "ones. Section 5 showed qwenlab's loss equals it on the same batch."),
])

# %% [markdown]
# Next: chapter 12 skips the separate reward model altogether. DPO turns the same preference
# pairs into a loss on the policy itself, with the SFT model as a reference, and then iterates
# on the policy's own samples.
