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
# # 12 · DPO: direct preference optimisation, iterated
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/qwenlab/qwenlab/blob/main/chapters/12_dpo.ipynb)  
# *On `SCALE="gpu"` this chapter needs:* a T4 (16 GB).
#
# After SFT (chapter 10) a model answers in the right format, but it still prefers some wrong
# answers to right ones. Chapter 11 trained a reward model to tell them apart. **DPO** skips
# the reward model: it turns the RLHF objective, "maximise reward, stay close to the SFT
# model", into a classification loss on preference pairs that trains the policy directly.
# Qwen2 and Qwen2.5 use it in two stages: offline, on curated pairs, then online, on pairs
# sampled from the model itself and ranked by a reward model or a checker. That second stage
# is the "multi-stage" loop of the report, and the end of this chapter.
#
# In this chapter you will:
#
# 1. derive the DPO loss from the KL-regularised reward objective;
# 2. compute sequence log-probabilities (**summed** over the completion's tokens) and the loss,
#    prove they equal `qwenlab.dpo` and TRL's `DPOTrainer`;
# 3. see why the length-normalised variant (averaged log-probs) gives different results;
# 4. train the SFT model with DPO on near-miss pairs and measure task accuracy, per family;
# 5. see what $\beta$ does to the implicit-reward margins and to the drift from the reference;
# 6. iterate: sample the model's own answers, label them with the checkers (rejection
#    sampling), train again with an NLL term on the chosen answers, and measure once more;
# 7. write the sequence log-probs and the loss yourself, with graders.
#
# ## Setup

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %% [markdown]
# One thread on the CPU: each training step is then bit-for-bit reproducible (and a busy
# 2-core machine does not make two threads wait on each other).

# %%
import math
import random
import tempfile
import warnings

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import qwenlab
import qwenlab.env
from qwenlab import checks, dpo, recipe, tasks
from qwenlab.tokenizer import load_course_tokenizer

SCALE = qwenlab.env.detect_scale()
DEVICE = "cuda" if SCALE == "gpu" else "cpu"
print(f"SCALE = {SCALE!r}")
torch.set_num_threads(1)

# %% [markdown]
# The starting point is the **SFT model** of the course pipeline (`qwenlab.recipe`, chapter
# 14): pretrained with chapter 09's loop on filtered Shakespeare mixed with plain-text task
# demonstrations, fine-tuned on the eight checkable task families (chapter 10). The first call
# builds it (a few minutes, once) and caches it under `data/prepared/`; later calls load it.

# %%
# NBVAL_IGNORE_OUTPUT
sft_model = recipe.load_stage("sft", scale=SCALE).to(DEVICE)

# %% [markdown]
# The data: the tasks' training split, each example turned into one preference pair whose
# rejected answer is a **near miss** (chapter 11), and the held-out evaluation split, 25
# prompts per family that no stage ever trains on. The DPO settings are the recipe's, so the
# model trained below is the pipeline's `dpo` stage.

# %%
tok = load_course_tokenizer()
SETTINGS = recipe.STAGE_CONFIGS[SCALE]
SEED = 0
train_examples, eval_examples = tasks.splits(SETTINGS["data"]["n_train"],
                                             SETTINGS["data"]["n_eval"], seed=SEED)
pairs = tasks.preference_pairs(train_examples, SEED)
eval_pairs = tasks.preference_pairs(eval_examples, SEED + 1)
DPO_SETTINGS = SETTINGS["dpo"]
print(f"{len(pairs)} training pairs, {len(eval_examples)} held-out prompts "
      f"({len(eval_pairs)} held-out pairs)")
print("DPO settings:", DPO_SETTINGS)
for p in pairs[:4]:
    print(f"  {p['kind']:>13}: {p['prompt'][0]['content']!r:44} chosen "
          f"{p['chosen'][0]['content']!r:12} rejected {p['rejected'][0]['content']!r}")

# %% [markdown]
# ## 1 · From the RLHF objective to the DPO loss
#
# RLHF asks for a policy $\pi$ that earns a high reward $r(x, y)$ on its answers $y$ to
# prompts $x$, without drifting far from a **reference** policy $\pi_\text{ref}$ (the SFT
# model), measured by the KL divergence and weighted by $\beta$:
#
# $$\max_\pi\; \mathbb{E}_{x,\; y \sim \pi(\cdot|x)}\big[r(x, y)\big]
#   - \beta\, \mathrm{KL}\big(\pi(\cdot|x)\,\|\,\pi_\text{ref}(\cdot|x)\big).$$
#
# For each $x$ this is maximised by a known distribution. Write the objective as
#
# $$-\beta\,\mathbb{E}_{y\sim\pi}\Big[\log
#   \frac{\pi(y|x)}{\pi_\text{ref}(y|x)\,e^{r(x,y)/\beta}}\Big]:$$
#
# it is minus $\beta$ times a KL divergence to $\pi_\text{ref}(y|x)\,e^{r(x,y)/\beta}$ (up to
# normalisation), so the optimum is
#
# $$\pi^*(y|x) = \frac{1}{Z(x)}\,\pi_\text{ref}(y|x)\,\exp\!\big(r(x, y)/\beta\big),
#   \qquad Z(x) = \sum_y \pi_\text{ref}(y|x)\,\exp\!\big(r(x, y)/\beta\big).$$
#
# $Z(x)$ sums over every possible answer: intractable. Now turn the equation around: solve it
# for the reward. Any reward is, through the policy that is optimal for it, an **implicit
# reward**
#
# $$r(x, y) = \beta \log \frac{\pi^*(y|x)}{\pi_\text{ref}(y|x)} + \beta \log Z(x).$$
#
# Preferences enter through the **Bradley–Terry** model of chapter 11: the probability that
# a person prefers $y_w$ (chosen) to $y_l$ (rejected) is
# $\sigma\big(r(x, y_w) - r(x, y_l)\big)$. Both answers share the prompt, so $\beta\log Z(x)$
# **cancels** in the difference, and the preference likelihood depends on the policy alone.
# Maximise it over a data set of pairs, with the policy $\pi_\theta$ in the place of $\pi^*$:
#
# $$\mathcal{L}_\text{DPO}(\theta) = -\,\mathbb{E}_{(x, y_w, y_l)}\Big[\log\sigma\Big(
#   \beta\Big[\log\frac{\pi_\theta(y_w|x)}{\pi_\text{ref}(y_w|x)}
#   - \log\frac{\pi_\theta(y_l|x)}{\pi_\text{ref}(y_l|x)}\Big]\Big)\Big].$$
#
# No reward model, no sampling during training: a logistic loss on pairs (Rafailov et al.,
# 2023). $\hat r_\theta(x, y) = \beta\log\frac{\pi_\theta(y|x)}{\pi_\text{ref}(y|x)}$ is the
# policy's implicit reward; TRL logs it as `rewards/chosen` and `rewards/rejected`, and
# their difference as `rewards/margins`. At the start $\pi_\theta = \pi_\text{ref}$, every
# log-ratio is 0, and the loss is $-\log\sigma(0) = \log 2 = 0.6931$.
#
# $\log\pi(y|x)$ is the log-probability of the **whole answer**: by the chain rule, the sum of
# the log-probabilities of its tokens, each given the prompt and the tokens before it. The
# answer here is the assistant's reply *and its* `<|im_end|>`: stopping is part of the answer
# (one near-miss kind is an answer that does not stop).
#
# ## 2 · Build it: sequence log-probs
#
# `dpo.tokenize_pair` renders a pair with the chat template: the prompt with the generation
# prompt `<|im_start|>assistant\n`, then each reply and `<|im_end|>`. The completion mask is 1
# on the reply's tokens and on `<|im_end|>`:

# %%
row = dpo.tokenize_pair(tok, pairs[0])
for side in ("chosen", "rejected"):
    ids, mask = row[f"{side}_ids"], row[f"{side}_mask"]
    start = mask.index(1)
    shown = [f"[{tok.decode([i])!r}]" if m else repr(tok.decode([i]))
             for i, m in zip(ids[start - 3:], mask[start - 3:])]
    print(f"{side:>8}: ... " + " ".join(shown) + f"   ({sum(mask)} completion tokens)")

# %% [markdown]
# (In brackets: the completion.) The logits at position $t$ predict token $t+1$, so the
# log-probability of the completion's token $t$ is read from the logits at $t - 1$: shift
# the logits left and the targets and mask right, as in the language-model loss.

# %%
def my_sequence_logprobs(model, input_ids, attention_mask, completion_mask, average=False):
    logits = model(input_ids, attention_mask=attention_mask).logits       # (B, T, V)
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)         # (B, T-1, V)
    per_token = log_probs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    mask = completion_mask[:, 1:].float()                                 # token t+1 counted?
    total = (per_token * mask).sum(-1)                                    # (B,)
    return total / mask.sum(-1) if average else total


rows = [dpo.tokenize_pair(tok, p) for p in pairs[:16]]
batch = {k: v.to(DEVICE) for k, v in dpo.collate_pairs(rows, tok.pad_token_id).items()}
with torch.no_grad():
    mine = my_sequence_logprobs(sft_model, **batch)
    lib = dpo.sequence_logprobs(sft_model, **batch)
print("batch:", tuple(batch["input_ids"].shape), "(16 chosen rows, then 16 rejected rows)")
print("equal to qwenlab.dpo.sequence_logprobs:", torch.allclose(mine, lib, atol=1e-4))
print("first pair: log pi(chosen) =", f"{lib[0].item():.3f},", "log pi(rejected) =",
      f"{lib[16].item():.3f}")

# %% [markdown]
# The library computes the same numbers more cheaply: it runs the LM head only at the
# completion's positions (`dpo.completion_logprobs`), about one token in six of this batch;
# the prompts and the padding need no logits.
#
# ## 3 · Build it: the loss

# %%
def my_dpo_loss(pol_chosen, pol_rejected, ref_chosen, ref_rejected, beta):
    chosen_logratio = pol_chosen - ref_chosen                  # log pi/pi_ref of y_w, (B,)
    rejected_logratio = pol_rejected - ref_rejected            # log pi/pi_ref of y_l, (B,)
    loss = -F.logsigmoid(beta * (chosen_logratio - rejected_logratio)).mean()
    return loss, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


g = torch.Generator().manual_seed(0)
pc, pr, rc, rr = (-20 * torch.rand(8, generator=g) for _ in range(4))
ours, lib = my_dpo_loss(pc, pr, rc, rr, 0.1), dpo.dpo_loss(pc, pr, rc, rr, 0.1)
print("equal to qwenlab.dpo.dpo_loss:", all(torch.allclose(a, b) for a, b in zip(ours, lib)))
print(f"policy = reference: loss {dpo.dpo_loss(pc, pr, pc, pr, 0.1)[0].item():.4f}, "
      f"log 2 = {math.log(2):.4f}")

# %% [markdown]
# `F.logsigmoid` rather than `torch.log(torch.sigmoid(...))`: for a large negative argument
# the sigmoid underflows to 0 and its log is $-\infty$; `logsigmoid` stays finite.
#
# ## 4 · Prove it: the loss equals TRL's `DPOTrainer`
#
# TRL 1.x has no standalone DPO loss function. So build a `DPOTrainer` on eight pairs, with
# transformers copies of two models (a policy and an explicit reference: here the SFT model
# and a slightly perturbed copy of it as the policy, so the loss is not just log 2), collate
# a batch with the trainer's own collator, and call `trainer.compute_loss` on it. Then
# compute qwenlab's loss on the same batch.

# %%
from datasets import Dataset  # noqa: E402
from trl import DPOConfig as TRLDPOConfig  # noqa: E402
from trl import DPOTrainer  # noqa: E402

torch.manual_seed(0)
parity_ref = dpo.frozen_copy(sft_model).cpu()
parity_pol = dpo.frozen_copy(sft_model).cpu()
with torch.no_grad():
    for p in parity_pol.parameters():
        p.add_(0.02 * torch.randn_like(p))
few = pairs[:8]
with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
    warnings.simplefilter("ignore")
    args = TRLDPOConfig(output_dir=out, beta=0.1, loss_type=["sigmoid"], bf16=False,
                        activation_checkpointing=False, use_cpu=True, report_to=[],
                        per_device_train_batch_size=8, max_length=None)
    trainer = DPOTrainer(qwenlab.hf.to_transformers(parity_pol),
                         ref_model=qwenlab.hf.to_transformers(parity_ref), args=args,
                         train_dataset=Dataset.from_list(
                             [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in few]),
                         processing_class=tok)
    processed = [trainer.train_dataset[i] for i in range(len(few))]
    trl_batch = trainer.data_collator(processed)
    trainer.model.train()
    trl_loss = trainer.compute_loss(trainer.model, trl_batch).item()
    trl_margin = trainer._metrics["train"]["rewards/margins"][-1]

with torch.no_grad():
    pol = dpo.sequence_logprobs(parity_pol, **trl_batch).chunk(2)
    ref = dpo.sequence_logprobs(parity_ref, **trl_batch).chunk(2)
loss, chosen_r, rejected_r = dpo.dpo_loss(pol[0], pol[1], ref[0], ref[1], beta=0.1)
print(f"qwenlab {loss.item():.6f}, TRL {trl_loss:.6f}; |diff| < 1e-5:",
      abs(loss.item() - trl_loss) < 1e-5)
print("reward margins equal:", abs((chosen_r - rejected_r).mean().item() - trl_margin) < 1e-5)

# %% [markdown]
# One difference in the *data*, not the loss: TRL's completion is everything after the
# generation prompt, so it also contains the `\n` that the chat template writes after
# `<|im_end|>`, a token generation never produces (it stops at `<|im_end|>`). qwenlab ends
# the completion at `<|im_end|>`, as chapter 10's SFT mask does:

# %%
newline = tok.encode("\n")
same = all(p["prompt_ids"] + p["chosen_ids"] == dpo.tokenize_pair(tok, q)["chosen_ids"] + newline
           for p, q in zip(processed, few))
print("TRL's tokens = qwenlab's + one trailing '\\n', for every pair:", same)

# %% [markdown]
# ## 5 · Summed or averaged? The length bias
#
# Summing makes $\log\pi(y|x)$ scale with the answer's length: every token adds a negative
# term. Some DPO variants average instead (the "length-normalised" log-prob; SimPO, TRL's
# `sigmoid_norm`), arguing that summed rewards favour long answers. The two are different
# objectives, and the near misses show it. Here is the SFT model's own preference on the
# held-out prompts, each with a near miss of every kind: how often it gives the right answer
# the higher log-prob, by the sum and by the mean.

# %%
rng = random.Random(SEED)
all_kinds = [tasks.pair_record(ex, ex.answer, tasks.near_miss(ex, kind, rng), kind)
             for ex in eval_examples for kind in tasks.NEAR_MISS_KINDS]
summed_c, summed_r = dpo.pair_logprobs(sft_model, tok, all_kinds)
mean_c, mean_r = dpo.pair_logprobs(sft_model, tok, all_kinds, average=True)
lengths = [(sum(r["chosen_mask"]), sum(r["rejected_mask"]))
           for r in (dpo.tokenize_pair(tok, p) for p in all_kinds)]
print(f"{'kind':>13} {'tokens (chosen/rejected)':>25} {'prefers chosen: sum':>20} {'mean':>5}"
      f" {'gap: sum':>9} {'mean':>6}")
for kind in tasks.NEAR_MISS_KINDS:
    idx = [i for i, p in enumerate(all_kinds) if p["kind"] == kind]
    lc = sum(lengths[i][0] for i in idx) / len(idx)
    lr = sum(lengths[i][1] for i in idx) / len(idx)
    by_sum = sum(summed_c[i] > summed_r[i] for i in idx).item() / len(idx)
    by_mean = sum(mean_c[i] > mean_r[i] for i in idx).item() / len(idx)
    gap_sum = sum(summed_c[i] - summed_r[i] for i in idx).item() / len(idx)
    gap_mean = sum(mean_c[i] - mean_r[i] for i in idx).item() / len(idx)
    print(f"{kind:>13} {lc:>12.1f} / {lr:<10.1f} {by_sum:>20.0%} {by_mean:>5.0%}"
          f" {gap_sum:>9.2f} {gap_mean:>6.2f}")

# %% [markdown]
# (Gap: the mean of log-prob(chosen) minus log-prob(rejected), in nats.) The `wrong_type` and
# `missing_stop` near misses are longer than the right answer, the latter about twice as
# long. Here the two criteria *rank* the pairs alike, but the sizes differ: averaging divides
# each answer's log-prob by its own length, so every gap shrinks, by about the answers'
# length: little for a letter (2 tokens), twentyfold for JSON (22 tokens). A model that put a
# little less weight on `<|im_end|>` after the answer would see the repeated half, easy to
# predict once the first half is there, raise the rejected answer's per-token mean above the
# right one's: the mean can hide exactly the mistake a `missing_stop` pair is about.
#
# In the loss the consequences go further. Averaging divides each log-ratio by the answer's
# length, so the same $\beta$ is a much weaker pull on long answers (JSON, 22 tokens) than on
# short ones (a letter, 2 tokens), and $Z(x)$ no longer cancels exactly, so the loss is no
# longer the RLHF objective's. Summing is what the derivation gives; `DPOConfig` has
# `length_normalized=True` for the variant, and everything below uses the sum.
#
# ## 6 · Train: DPO on the near-miss pairs
#
# `dpo.train` freezes the reference (eval mode, no gradients) and computes its log-probs of
# every pair once: it never changes, so each step costs one forward and backward of the
# policy. The policy starts as a copy of the SFT model.

# %%
sft_replies = tasks.respond(sft_model, tok, eval_examples, max_new_tokens=32)  # greedy
sft_accuracy = tasks.accuracy(eval_examples, sft_replies)   # = tasks.evaluate(sft_model, ...)
print(f"SFT model: task accuracy {sft_accuracy['all']:.1%}")
sft_c, sft_r = dpo.pair_logprobs(sft_model, tok, eval_pairs)
print(f"SFT model: prefers the chosen answer (summed log-prob) on "
      f"{(sft_c > sft_r).float().mean().item():.1%} of the held-out pairs")

# %%
# NBVAL_IGNORE_OUTPUT
policy = dpo.frozen_copy(sft_model)          # a copy, then unfrozen: the policy trains
policy.requires_grad_(True)
reference = dpo.frozen_copy(sft_model)
cfg = dpo.DPOConfig(seed=SEED, **DPO_SETTINGS)
history = dpo.train(policy, reference, tok, pairs, cfg, desc="DPO")

# %% [markdown]
# The reference came out untouched. On held-out pairs, the policy's implicit rewards (and
# how often they rank the chosen answer first) compare with the SFT model's own preference
# above:

# %%
print("reference frozen:", not any(p.requires_grad for p in reference.parameters()),
      "| equal to the SFT model:", all(torch.equal(a, b) for a, b in
                                       zip(reference.state_dict().values(),
                                           sft_model.state_dict().values())))
print(f"training loss: first step {history.loss[0]:.4f}, mean of the last 10 "
      f"{sum(history.loss[-10:]) / 10:.4f}")
held = dpo.implicit_reward_stats(policy, reference, tok, eval_pairs, cfg.beta)
print(f"held-out pairs: chosen reward {held['chosen']:+.3f}, rejected {held['rejected']:+.3f}, "
      f"margin {held['margin']:.3f}, implicit-reward accuracy {held['accuracy']:.1%}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(history.step, history.loss)
axes[0].axhline(math.log(2), color="gray", ls=":", label="log 2")
axes[0].set(xlabel="step", ylabel="DPO loss", title="loss per batch")
axes[0].legend()
axes[1].plot(history.step, history.chosen_reward, label="chosen")
axes[1].plot(history.step, history.rejected_reward, label="rejected")
axes[1].plot(history.step, history.margin, label="margin")
axes[1].axhline(0, color="gray", lw=0.5)
axes[1].set(xlabel="step", ylabel=r"$\beta \log \pi/\pi_{ref}$", title="implicit rewards")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Watch the chosen reward: it falls too. The margin grows because the **rejected** answers
# lose more probability than the chosen ones, and on the held-out pairs both implicit
# rewards end up negative. DPO only asks that chosen rise *relative to* rejected. That is a
# known weakness, and it matters for the next measurement: greedy decoding picks the single
# most likely answer, and pushing near misses down does not by itself push the right answer
# up. The probability both sides lose goes to replies that no pair mentions.
#
# ## 7 · Measure: task accuracy, per family

# %%
dpo_replies = tasks.respond(policy, tok, eval_examples, max_new_tokens=32)
dpo_accuracy = tasks.accuracy(eval_examples, dpo_replies)
print(f"{'family':>8} {'SFT':>6} {'DPO':>6}")
for task in [*tasks.TASKS, "all"]:
    print(f"{task:>8} {sft_accuracy[task]:>6.0%} {dpo_accuracy[task]:>6.0%}")
for name, replies in (("SFT", sft_replies), ("DPO", dpo_replies)):
    print(f"{name} model: {sum(r == '' for r in replies)} of {len(replies)} greedy replies are "
          f"empty (<|im_end|> at once)")

# %% [markdown]
# With 25 prompts per family, one prompt is 4 points, and a difference of one or two prompts
# is noise (the overall figure, on 200 prompts, has a standard error of about 3 points). The
# collapse here is no noise: after DPO the model mostly answers with nothing at all. Every
# near miss is a reply that says something wrong, and the empty reply is in no pair, so no
# pair holds it down; it is where the probability went. Preferences between two answers say
# nothing about the answers outside the pairs.
#
# ## 8 · See it: what $\beta$ does
#
# $\beta$ is the strength of the KL leash. A small $\beta$ makes the implicit reward
# $\beta\log\frac{\pi}{\pi_\text{ref}}$ small for a given change of the policy, so the
# sigmoid stays unsaturated and the loss keeps pushing: the policy moves far. A large $\beta$
# saturates the sigmoid after a small move. A short run per $\beta$ from the SFT model (one
# pass over the first 320 pairs, 16 per step), with the
# KL to the reference measured on answers the policy samples
# ($\sum_t \mathrm{KL}\big(\pi(\cdot|x, y_{<t})\,\|\,\pi_\text{ref}(\cdot|x, y_{<t})\big)$
# per prompt, `dpo.kl_to_reference`):

# %%
# NBVAL_IGNORE_OUTPUT
BETAS = [0.03, 0.1, 0.5]
SWEEP_STEPS = 60 if SCALE == "gpu" else 20
sweep = {}
for beta in BETAS:
    run_policy = dpo.frozen_copy(sft_model)
    run_policy.requires_grad_(True)
    run_cfg = dpo.DPOConfig(**{**DPO_SETTINGS, "beta": beta, "max_steps": SWEEP_STEPS,
                               "batch_size": 16, "warmup_steps": 2,
                               "eval_every": SWEEP_STEPS, "kl_prompts": 32}, seed=SEED)
    sweep[beta] = dpo.train(run_policy, reference, tok, pairs[:16 * SWEEP_STEPS], run_cfg,
                            desc=f"beta={beta}")

# %%
for beta, h in sweep.items():
    print(f"beta {beta:>4}: final margin {h.margin[-1]:6.3f} ({h.margin[-1] / beta:6.2f} nats "
          f"of log-ratio), KL to the reference {h.kl[-1]:.3f} nats per answer")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for beta, h in sweep.items():
    axes[0].plot(h.step, [m / beta for m in h.margin], label=f"β = {beta}")
axes[0].set(xlabel="step", ylabel="margin / β (nats)", title="log-ratio margin of the batch")
axes[0].legend()
axes[1].plot(BETAS, [sweep[b].kl[-1] for b in BETAS], "o-")
axes[1].set(xscale="log", xlabel="β", ylabel="KL(π‖π_ref) per answer (nats)",
            title=f"drift after {SWEEP_STEPS} steps")
plt.tight_layout()
plt.show()

# %% [markdown]
# The smaller $\beta$, the larger the log-ratio margin the policy builds in the same number of
# steps: with a large $\beta$ the sigmoid saturates early and the pull stops. The KL on the
# policy's own samples (32 prompts, one sample each) does not separate the three runs here:
# at this learning rate every run has moved far from the reference within 20 steps, and the
# KL measures all of the drift, not only the part the pairs ask for. The limit
# $\beta\to\infty$ keeps the policy at the reference; $\beta\to 0$ forgets the leash, and
# the policy can drive the rejected answers' probability towards zero at any cost to
# everything else.
#
# ## 9 · Iterate: rejection sampling, on-policy pairs, a second round
#
# The near misses were written by a program, not by the model. The pairs that teach a model
# most are about the mistakes *it* makes. So, as in the Qwen2 report's online stage (and
# Llama 2/3's rejection sampling): for a sample of training prompts, draw $n$ answers from the
# DPO model at temperature 1, judge them with the **checkers**, and pair a correct answer
# (chosen) with a wrong one (rejected). When none of the $n$ is correct, the reference
# answer is chosen; when all are correct, there is nothing to prefer and the prompt is
# skipped. The settings are the recipe's `iterate` stage.

# %%
IT = SETTINGS["iterate"]
prompts = random.Random(SEED + 7).sample(train_examples, min(IT["prompts"], len(train_examples)))
judged = dpo.sample_and_judge(policy, tok, prompts, n=IT["samples"],
                              temperature=IT["temperature"], seed=SEED)
n_right = [sum(s > 0 for s in scores) for _, scores in judged]
n_samples = len(prompts) * IT["samples"]
print(f"{len(prompts)} prompts x {IT['samples']} samples: {sum(n_right) / n_samples:.1%}"
      f" of the samples are correct; at least one correct for {sum(k > 0 for k in n_right)}"
      f" prompts, all correct for {sum(k == IT['samples'] for k in n_right)}")
replies, scores = judged[0]
print(f"e.g. {prompts[0].prompt!r} (answer {prompts[0].answer!r}):",
      ", ".join(f"{r!r} {'✓' if s else '✗'}" for r, s in zip(replies, scores)))

# %% [markdown]
# `dpo.label_pairs` turns the judged samples into pairs (`dpo.on_policy_pairs` samples,
# judges and labels in one call, as the recipe does; same seed, same pairs). The second round
# trains with the DPO model as its reference: the leash now holds the policy near where
# round 1 left it.

# %%
onpolicy = dpo.label_pairs(prompts, judged)
from_samples = sum(0 < k < IT["samples"] for k in n_right)
print(f"{len(onpolicy)} on-policy pairs: {from_samples} with a sampled correct answer as "
      f"chosen, {len(onpolicy) - from_samples} with the reference answer")

# %% [markdown]
# Almost no sample is right, so all but a pair or so have the *reference* answer as chosen:
# an answer the policy itself gives little probability. Pure DPO on such pairs is satisfied
# once the chosen reply beats the rejected one by a wide margin, however unlikely both still
# are: the sigmoid saturates and the pull stops (section 6 saw the chosen reward fall even
# while the margin grew). So the recipe's second round adds an NLL term on the chosen
# replies, as Llama 3 does:
#
# $$\mathcal{L} = \mathcal{L}_\text{DPO} + w\cdot\Big(-\frac{1}{N}\sum_{t}
#   \log\pi_\theta(y_{w,t}\,|\,x, y_{w,<t})\Big),$$
#
# the mean NLL over the $N$ tokens of the batch's chosen replies, weighted by
# $w$ = `sft_weight` (TRL: `loss_type=["sigmoid", "sft"]`). The settings and seeds are the
# recipe's `iterate` stage, so `round2` is that stage's model:

# %%
# NBVAL_IGNORE_OUTPUT
round2 = dpo.frozen_copy(policy)
round2.requires_grad_(True)
round1_reference = dpo.frozen_copy(policy)
round2_cfg = dpo.DPOConfig(**{**DPO_SETTINGS, "sft_weight": IT["sft_weight"]}, seed=SEED + 1)
history2 = dpo.train(round2, round1_reference, tok, onpolicy, round2_cfg, desc="DPO round 2")

# %%
round2_replies = tasks.respond(round2, tok, eval_examples, max_new_tokens=32)
round2_accuracy = tasks.accuracy(eval_examples, round2_replies)
stages = {"SFT": sft_accuracy, "DPO": dpo_accuracy, "DPO round 2": round2_accuracy}
print(f"{'family':>8} " + " ".join(f"{s:>12}" for s in stages))
for task in [*tasks.TASKS, "all"]:
    print(f"{task:>8} " + " ".join(f"{acc[task]:>12.0%}" for acc in stages.values()))
print(f"round 2: {sum(r == '' for r in round2_replies)} of {len(round2_replies)} greedy replies "
      "are empty")

# %% [markdown]
# The empty replies are gone, and most of the accuracy DPO lost comes back,
# though not all of it. How much did the NLL term do? The same round without it (seconds of
# training: the same pairs, settings, seed and reference, `sft_weight` 0):

# %%
# NBVAL_IGNORE_OUTPUT
pure_dpo = dpo.frozen_copy(policy)
pure_dpo.requires_grad_(True)
pure_history = dpo.train(pure_dpo, round1_reference, tok, onpolicy,
                         dpo.DPOConfig(**DPO_SETTINGS, seed=SEED + 1), desc="pure DPO round 2")

# %%
pure_accuracy = tasks.evaluate(pure_dpo, tok, eval_examples, max_new_tokens=32)
for name, h, acc in (("with the NLL term", history2, round2_accuracy),
                     ("pure DPO", pure_history, pure_accuracy)):
    print(f"round 2, {name:>17}: chosen reward {sum(h.chosen_reward[-10:]) / 10:+.3f}, "
          f"rejected {sum(h.rejected_reward[-10:]) / 10:+.3f}, margin "
          f"{sum(h.margin[-10:]) / 10:.3f} (means of the last 10 steps); "
          f"task accuracy {acc['all']:.1%}")

# %% [markdown]
# Both runs build about the same margin, but without the NLL term the right answers do not
# become the model's greedy replies, and accuracy barely moves off zero. The NLL term does
# not saturate: it keeps raising the chosen reply's probability in absolute terms, which is
# what greedy decoding needs. That is why the recipe's `iterate` stage sets `sft_weight`.
# The per-family picture, stage by stage:

# %%
fig, ax = plt.subplots(figsize=(10, 3.2))
families = [*tasks.TASKS, "all"]
width = 0.27
for k, (name, acc) in enumerate(stages.items()):
    ax.bar([i + (k - 1) * width for i in range(len(families))], [acc[t] for t in families],
           width, label=name)
ax.set_xticks(range(len(families)), families)
ax.set(ylabel="task accuracy (checkers)", ylim=(0, 1), title="held-out accuracy by stage")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 10 · What this shows
#
# - **DPO is a classification loss on pairs**, equal to TRL's `DPOTrainer` on the same batch;
#   its sequence log-probs are sums over the completion, `<|im_end|>` included.
# - **It learns what the pairs say**: the implicit-reward margin grows from 0 on every kind
#   of pair, and faster the smaller $\beta$. Task accuracy, the measure that counts, need
#   not follow, and here it collapsed: near misses written by a program are not the mistakes
#   this model makes, DPO lowered the chosen answers' probability too, and the mass went to
#   a reply no pair mentions (the empty one). A tiny model that does not know the answer
#   cannot be taught it by preferences alone: DPO reweights what the model can already
#   produce.
# - **On-policy pairs aim at the model's own mistakes**, labelled for free by the checkers:
#   that is why Qwen2.5 iterates with rejection sampling, and why verifiable tasks (maths,
#   code, formats) carry so much of its post-training. When most chosen answers are the
#   reference answer rather than a sample, an NLL term on them is what turns the preference
#   into accuracy; pure DPO on the same pairs left the model near zero. At this scale the
#   judge of progress has to be the held-out accuracy per family, stage by stage, not the
#   training loss.
#
# ## 11 · Exercises
#
# Write each function without scrolling up; then run the check under it. A check prints `○`
# for a stub that still raises `NotImplementedError`, `✗` with a diagnosis for a wrong answer
# and `✓` for a right one. Solutions: `solutions/12_dpo_solutions.ipynb`.
#
# **Exercise 1: sequence log-probs.** `logits` (B, T, V) are a model's output on `input_ids`
# (B, T). Row `b` holds `prompt_lengths[b]` prompt tokens, then `completion_lengths[b]`
# completion tokens (the reply and its `<|im_end|>`), then padding. Return a (B,) tensor: for
# each row, the **sum** of the log-probabilities of its completion tokens.

# %%
def my_completion_logprobs(logits, input_ids, prompt_lengths, completion_lengths):
    raise NotImplementedError("log_softmax, shift by one, sum over the completion's tokens")


checks.check_sequence_logprobs(my_completion_logprobs)

# %% [markdown]
# **Exercise 2: the DPO loss.** From the (B,) sequence log-probs of the policy and the
# reference, return `(loss, chosen_rewards, rejected_rewards)`: the batch mean of
#
# $$-\log\sigma\big(\beta[(\log\pi_w - \log\pi^\text{ref}_w)
#   - (\log\pi_l - \log\pi^\text{ref}_l)]\big)$$
#
# and the detached implicit rewards $\beta(\log\pi - \log\pi_\text{ref})$ of each side.

# %%
def my_dpo_loss_exercise(pol_chosen, pol_rejected, ref_chosen, ref_rejected, beta):
    raise NotImplementedError("-logsigmoid(beta * (chosen log-ratio - rejected log-ratio))")


checks.check_dpo_loss(my_dpo_loss_exercise)

# %% [markdown]
# ## 12 · Review questions
#
# In JupyterLab or Colab, pick an answer and press **Check**; in the book, open **Answer**
# under each question.

# %%
from qwenlab.quiz import Question, quiz  # noqa: E402

quiz([
    Question("In the derivation, why does DPO need no reward model and no partition function "
             "Z(x)?",
             ["Z(x) is 1 for a language model",
              "The reward is written through the policy's log-ratio, beta·log(π/π_ref) + "
              "beta·log Z(x), and Bradley–Terry only uses the difference of two rewards for "
              "the same prompt, so beta·log Z(x) cancels",
              "DPO trains the reward model and the policy in one network",
              "The reference model computes Z(x) once before training"],
             answer=1,
             why="Both answers of a pair share the prompt x, so any term that depends on x "
                 "alone drops out of r(x, y_w) - r(x, y_l). What is left is a difference of "
                 "log-ratios, which the policy and the frozen reference compute."),
    Question("A DPO implementation averages the completion's token log-probs instead of "
             "summing them. What changes?",
             ["Nothing: the mean is the sum divided by a constant",
              "Only the speed",
              "It is another objective: each pair's log-ratio is divided by its length, so the "
              "same beta pulls weakly on long answers and strongly on short ones, Z(x) no "
              "longer cancels exactly, and a repeated answer (no stop) can look better per "
              "token than the right one",
              "The loss is no longer log 2 at the start"],
             answer=2,
             why="The length differs between the two answers of a pair and between pairs, so "
                 "it is not a constant. Section 5 showed the log-prob gaps of the long near "
                 "misses shrinking by an order of magnitude under the mean. At the start both "
                 "variants give log 2, because every log-ratio is 0."),
    Question("The policy equals the reference. What is the DPO loss, for any pairs and beta?",
             ["0", "log 2 ≈ 0.693", "beta", "It depends on the lengths of the answers"],
             answer=1,
             why="Every log-ratio log(π/π_ref) is 0, so the argument of the sigmoid is 0, "
                 "σ(0) = 1/2, and -log(1/2) = log 2. A DPO run whose first loss is not 0.6931 "
                 "has a reference that is not the policy's starting point."),
    Question("During training the margin grows, but the chosen answers' implicit reward goes "
             "negative. What does that mean?",
             ["A bug: the chosen reward must rise",
              "The policy lowered the probability of the chosen answers too, only less than "
              "that of the rejected ones; DPO constrains the difference, not each side",
              "beta is too large",
              "The reference model was trained by mistake"],
             answer=1,
             why="The loss depends only on (chosen log-ratio - rejected log-ratio). Lowering "
                 "both, the rejected more, decreases it. That is why recipes such as "
                 "Llama 3's add an NLL term on the chosen answers (DPOConfig.sft_weight, "
                 "TRL's loss_type ['sigmoid', 'sft']), as this chapter's second round does."),
    Question("What does the on-policy round add that the near-miss pairs do not have?",
             ["More pairs",
              "Pairs about the mistakes the current model actually makes, labelled by the "
              "checkers (rejection sampling), with the round-1 model as the new reference",
              "A reward model in the loop during training",
              "Longer answers"],
             answer=1,
             why="Off-policy pairs teach preferences between answers the model may never "
                 "produce. Sampling from the model and judging the samples puts the training "
                 "signal where the model's probability mass is. With a checker the labels are "
                 "exact; with a reward model (chapter 11) they are only as good as the reward "
                 "model."),
])

# %% [markdown]
# Next: chapter 13 replaces the MLP of each block with a mixture of experts, and measures what
# routing, balancing and capacity cost.
