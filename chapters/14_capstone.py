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
# # 14 · Capstone: the Qwen2.5 recipe end to end, with a number for what each stage buys
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/qwenlab/qwenlab/blob/main/chapters/14_capstone.ipynb)  
# *On `SCALE="gpu"` this chapter needs:* a T4 (16 GB).
#
# The Qwen2.5 report describes a recipe: filter a huge crawl down to the text worth
# learning from, pretrain on it, fine-tune on a million instruction examples, train a reward
# model, optimise preferences offline (DPO) and then online on the model's own samples. Each
# chapter of this course rebuilt one stage. This one runs them all, in order, on the course's
# data, with one command:
#
# ```bash
# python -m qwenlab.recipe            # or: make recipe
# ```
#
# and measures every stage the same way, so that each stage's contribution is a number and
# not a claim:
#
# | stage | chapter | what it reads | what it writes |
# | --- | --- | --- | --- |
# | filter | 08 | the crawl: Shakespeare + Markov nonsense + junk | the chunks worth keeping |
# | pretrain | 09 | the kept text | a base model |
# | sft | 10 | the base model, 2,000 task conversations | an instruction model |
# | reward | 11 | the SFT model, near-miss preference pairs | a reward model |
# | dpo | 12 | the SFT model, the same pairs | a preference-tuned model |
# | iterate | 12 | the DPO model, its own samples judged by the checkers | the final model |
#
# In this chapter you will:
#
# 1. run the recipe on the filtered crawl, and again on the raw crawl;
# 2. read the stage-by-stage table: held-out language-model loss, task accuracy (overall and
#    per task family), preference accuracy and wall time;
# 3. explain every number with the chapter that built the stage;
# 4. ask which differences are larger than the noise of a 200-example evaluation;
# 5. interrupt and corrupt a run, and watch it resume to the bit.
#
# ## Setup

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %% [markdown]
# Every stage is seeded and runs on one CPU thread, so a run computes the same bytes each
# time. The models are cached under `data/prepared/recipe/`: the chapters 10-12 trained the
# first stages of the filtered run already, if you ran them, and then this chapter only runs
# what is missing.

# %%
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import qwenlab
import qwenlab.data
import qwenlab.env
from qwenlab import checks, recipe, tasks

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")
settings = recipe.STAGE_CONFIGS[SCALE]
print("model:", qwenlab.QwenConfig.tiny(**settings["model"]).num_hidden_layers, "layers,",
      f"{qwenlab.QwenForCausalLM(qwenlab.QwenConfig.tiny(**settings['model'])).num_parameters():,}",
      "parameters")
for stage in ("pretrain", "sft", "reward", "dpo"):
    s = settings[stage]
    print(f"{stage:>8}: {s['max_steps']} steps x batch {s['batch_size']}, lr {s['lr']:g}")
print(f" iterate: {settings['iterate']['samples']} samples for each of "
      f"{settings['iterate']['prompts']} prompts, then DPO again")

# %% [markdown]
# ## 1 · Run it
#
# `Recipe(SCALE, "filtered").run()` runs every stage that is not complete and then evaluates
# every stage's model. The progress bars are the stages' own (chapters 09-12).

# %%
# NBVAL_IGNORE_OUTPUT
started = time.time()
runs = {"filtered": recipe.Recipe(SCALE, "filtered")}
results = {"filtered": runs["filtered"].run()}
print(f"filtered run: {time.time() - started:.0f} s")

# %% [markdown]
# The same pipeline on the **raw** crawl: the filter stage keeps every chunk, junk and
# nonsense included; everything after it is unchanged.

# %%
# NBVAL_IGNORE_OUTPUT
started = time.time()
runs["raw"] = recipe.Recipe(SCALE, "raw")
results["raw"] = runs["raw"].run()
print(f"raw run: {time.time() - started:.0f} s")

# %% [markdown]
# The optional third column: the same recipe with a mixture-of-experts model of the same
# *active* width (chapter 13: a shared expert plus the top-k routed experts, as wide together
# as the dense MLP). On the CPU it would double this chapter's time, so it runs with
# `SCALE="gpu"`; on a laptop, `python -m qwenlab.recipe --moe` runs it (a few minutes).

# %%
# NBVAL_IGNORE_OUTPUT
if SCALE == "gpu":
    runs["moe"] = recipe.Recipe(SCALE, "filtered", moe=True)
    results["moe"] = runs["moe"].run()
print("runs:", list(results))

# %% [markdown]
# ## 2 · The table
#
# One row per stage. *Held-out loss* is the next-token loss on two plays no stage trained on;
# *task accuracy* is greedy decoding on the 200 held-out task prompts (25 per family), judged
# by the checkers of `qwenlab.tasks`; *pair accuracy* is, for a language model, how often it
# gives the right reply a higher log-probability than a near miss, and for the reward model,
# how often it scores the right reply higher. The wall times (with their own cell, since they
# change from run to run) are for this machine.

# %%
def table(res):
    print(f"{'stage':<9} {'held-out loss':>13} {'task acc':>9} {'pair acc':>9}")
    for stage, row in res["stages"].items():
        if stage == "filter":
            print(f"{stage:<9} kept {row['kept']} of {row['chunks']} chunks "
                  f"({', '.join(f'{n} {s}' for s, n in row['kept_by_source'].items())})")
            continue
        loss = f"{row['heldout_loss']:.3f}" if "heldout_loss" in row else ""
        acc = f"{row['task_accuracy']['all']:.1%}" if "task_accuracy" in row else ""
        print(f"{stage:<9} {loss:>13} {acc:>9} {row['pair_accuracy']:>9.1%}")


for name in results:
    print(f"== {name}")
    table(results[name])
    print()

# %%
# NBVAL_IGNORE_OUTPUT
for name in results:
    walls = {s: r["wall_s"] for s, r in results[name]["stages"].items()}
    print(name, " ".join(f"{s} {w:.0f}s" for s, w in walls.items() if w is not None),
          f"(total {sum(w for w in walls.values() if w):.0f} s)")

# %% [markdown]
# The same numbers as a chart: task accuracy climbs stage by stage, while the held-out loss on
# Shakespeare says how much of its pretraining each stage kept.

# %%
policy = list(recipe.POLICY_STAGES)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
width = 0.8 / len(results)
for i, name in enumerate(results):
    acc = [results[name]["stages"][s]["task_accuracy"]["all"] * 100 for s in policy]
    loss = [results[name]["stages"][s]["heldout_loss"] for s in policy]
    ax1.bar([x + (i - (len(results) - 1) / 2) * width for x in range(len(policy))], acc, width,
            label=name)
    ax2.plot(policy, loss, marker="o", label=name)
ax1.set_xticks(range(len(policy)), policy)
ax1.set_ylabel("task accuracy (%)")
ax1.set_title("what each stage buys: held-out tasks")
ax1.legend()
ax2.set_ylabel("held-out LM loss (nats/token)")
ax2.set_title("what each stage costs: loss on unseen plays")
ax2.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3 · Per task family
#
# A single accuracy hides which abilities a stage bought. The DESIGN of our evaluation — and of
# any benchmark claim worth trusting — reports every task family separately.

# %%
families = list(tasks.TASKS)
grid = torch.tensor([[results["filtered"]["stages"][s]["task_accuracy"][f] * 100
                      for f in families] for s in policy])
fig, ax = plt.subplots(figsize=(8, 2.8))
im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
ax.set_xticks(range(len(families)), families)
ax.set_yticks(range(len(policy)), policy)
for i in range(len(policy)):
    for j in range(len(families)):
        ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center",
                color="white" if grid[i, j] < 60 else "black", fontsize=8)
fig.colorbar(im, label="accuracy (%)")
ax.set_title("task accuracy per family and stage (filtered run)")
plt.tight_layout()
plt.show()

# %%
print(f"{'family':<8}" + "".join(f"{s:>10}" for s in policy))
for f in families + ["all"]:
    print(f"{f:<8}" + "".join(f"{results['filtered']['stages'][s]['task_accuracy'][f]:>10.0%}"
                              for s in policy))

# %% [markdown]
# ## 4 · What each number means
#
# The greedy replies of every stage's model to the same held-out prompts, kept for the rest
# of the chapter, and two numbers that the accuracy alone does not show: how long the
# replies are, and how many are empty.

# %%
filtered = runs["filtered"]
tok = filtered.tokenizer()
_, eval_examples = filtered.task_splits()
replies, correct = {}, {}
for stage in policy:
    replies[stage] = tasks.respond(filtered.load(stage), tok, eval_examples)
    correct[stage] = [tasks.check(ex, r) for ex, r in zip(eval_examples, replies[stage])]
    lengths = [len(tok(r)["input_ids"]) for r in replies[stage]]
    print(f"{stage:>8}: accuracy {sum(correct[stage]) / len(correct[stage]):6.1%}, "
          f"mean reply {sum(lengths) / len(lengths):5.1f} tokens, "
          f"empty replies {sum(r.strip() == '' for r in replies[stage]) / len(lengths):6.1%}")

# %%
for i in (0, 1, 4, 5):
    ex = eval_examples[i]
    print(f"{ex.prompt!r} (answer {ex.answer!r})")
    for stage in policy:
        print(f"   {stage:>8}: {replies[stage][i][:40]!r}")

# %% [markdown]
# Read with the chapters that built each stage:
#
# - **filter** (chapter 08). The classifier and the heuristic rules keep nearly all the plays
#   and drop nearly all the Markov nonsense and junk. The raw run keeps every chunk.
# - **pretrain** (chapter 09). The held-out loss says how well a base model predicts plays it
#   never saw; the filtered and the raw model trained for the same number of steps, and the
#   raw one spent part of them on junk (the comparison is printed below). Downstream, on the
#   tasks, the two runs stay within the noise of each other: the tasks are learned in SFT,
#   not from the plays. Task accuracy of a base model is
#   zero: a base model answers neither in the chat format nor stops with `<|im_end|>`, and the
#   task demonstrations in its pretraining mix are plain text without either.
# - **sft** (chapter 10). The jump from zero is the format: every reply now has the shape of
#   an answer and stops. The content comes family by family: answers that can be read off the
#   prompt or guessed from a few values (count, convert) go first, the algorithmic families
#   (reverse, sort, next) stay near zero at this budget. The held-out loss rises: fine-tuning
#   a tiny model on a narrow task set moves it away from Shakespeare.
# - **reward** (chapter 11). Well above chance, far from perfect: it ranks mistakes of form
#   (a quoted number, a reply that runs on) almost perfectly and mistakes of content (off by
#   one, two items swapped) little better than a coin.
# - **dpo** (chapter 12). Pure DPO on the near-miss pairs, with summed log-probs, collapses:
#   most greedy replies are empty. Two of the four near-miss kinds are longer than the right
#   answer, so the pairs reward shortness, and the empty reply appears in no pair, so nothing
#   holds its probability down. The pair accuracy stays high (the model still prefers each
#   chosen reply to its rejected one) while the reply it actually gives is neither. This is
#   the failure that length-normalised variants and an NLL term on the chosen replies exist
#   to prevent.
# - **iterate** (chapter 12). Rejection sampling finds few correct samples, so most chosen
#   replies are the reference answers; DPO with an NLL term on them recovers much of what SFT
#   had, without passing it. The report's gains from online RL need a policy whose own samples
#   are right often enough to learn from: at this scale they are not.

# %%
pre = {name: results[name]["stages"]["pretrain"]["heldout_loss"] for name in ("filtered", "raw")}
print(f"held-out loss after pretraining: filtered {pre['filtered']:.3f}, raw {pre['raw']:.3f} "
      f"({pre['raw'] - pre['filtered']:+.3f} nats/token for the raw crawl)")
for stage in ("sft", "iterate"):
    acc = {n: results[n]["stages"][stage]["task_accuracy"]["all"] for n in ("filtered", "raw")}
    print(f"task accuracy after {stage}: filtered {acc['filtered']:.1%}, raw {acc['raw']:.1%}")

# %% [markdown]
# ## 5 · Which differences are real?
#
# 200 evaluation prompts are few. If a model answers each correctly with probability $p$,
# the measured accuracy on $n$ prompts has standard error $\sqrt{p(1-p)/n}$: about 3 points at
# $p = 0.5$, $n = 200$. A stage's gain that is not well above that (twice, for 95 %
# confidence) could be the luck of the draw. Two models answering the *same* prompts can be
# compared more sharply, prompt by prompt: what matters is how many prompts one gets right and
# the other wrong (McNemar's test counts exactly these).

# %%
def stderr(p, n):
    return math.sqrt(p * (1 - p) / n)


for before, after in zip(policy, policy[1:]):
    a, b = correct[before], correct[after]
    gained = sum(not x and y for x, y in zip(a, b))
    lost = sum(x and not y for x, y in zip(a, b))
    pa, pb = sum(a) / len(a), sum(b) / len(b)
    print(f"{before:>8} -> {after:<8} {pa:6.1%} -> {pb:6.1%} (± {stderr(pb, len(b)):.1%}); "
          f"prompts gained {gained:3d}, lost {lost:3d}")

# %% [markdown]
# ## 6 · Interrupt it, corrupt it
#
# Each stage ends by writing its model (safetensors, with the SHA-256 of its tensors) and then
# a `stage.json` with its measurements, the settings it ran with and the digests of the inputs
# it read. A stage counts as complete only when all of these agree with the present. So a run
# that is killed restarts at the first incomplete stage (pretraining even mid-stage, from its
# own checkpoints), and a stage whose settings or input changed runs again, together with
# everything downstream of it:

# %%
print({stage: runs["filtered"].is_complete(stage) for stage in recipe.STAGES})
print("DEPENDS_ON:", recipe.DEPENDS_ON)
for stage in ("sft", "reward"):
    print(f"if {stage} changes, rerun: {recipe.stages_to_rerun(stage)}")

# %% [markdown]
# Now damage a copy of the filtered run: flip one byte of the filter stage's output. The run
# notices (the digest no longer matches), reruns that stage alone, and gets the same bytes
# back, so nothing downstream has to run again.

# %%
scratch = Path(tempfile.mkdtemp())
shutil.copytree(runs["filtered"].run_dir, scratch, dirs_exist_ok=True)
copy = recipe.Recipe(SCALE, "filtered", run_dir=scratch, progress=False)
kept = copy.stage_dir("filter") / "kept.jsonl"
data = bytearray(kept.read_bytes())
data[len(data) // 2] ^= 0x01
kept.write_bytes(bytes(data))
print("after the flip:", {s: copy.is_complete(s) for s in recipe.STAGES})
ran = []
for stage in recipe.STAGES:
    original = getattr(copy, f"stage_{stage}")
    setattr(copy, f"stage_{stage}", lambda o=original, s=stage: (ran.append(s), o())[1])
copy.run(measure=False)
print("stages that ran again:", ran)
print("same output as before:",
      copy.record("filter")["output"] == runs["filtered"].record("filter")["output"])
print("all complete:", all(copy.is_complete(s) for s in recipe.STAGES))
shutil.rmtree(scratch)

# %% [markdown]
# ## 7 · Bigger: the GPU run
#
# `SCALE="gpu"` runs a 6-layer, hidden-256 model, ten times the steps and ten times the task
# data. A run made on a GPU is committed under `data/recipe_runs/`; where one exists it is shown
# here, with the GPU it ran on.

# %%
gpu_runs = sorted((Path(qwenlab.data.data_dir()) / "recipe_runs").glob("*.json"))
for path in gpu_runs:
    res = json.loads(path.read_text())
    env = res["environment"]
    print(f"== {path.name}: {res['scale']} scale, {res['data']} data"
          f"{', MoE' if res['moe'] else ''}; {env.get('device', '')}")
    table(res)
    print()
if not gpu_runs:
    print("no committed GPU run")

# %% [markdown]
# ## Exercises
#
# **Exercise 1: what must run again?** Given the stage whose output changed, return the stages
# that must rerun: itself and every stage that reads it, directly or through another stage
# (`recipe.DEPENDS_ON` says what reads what), in pipeline order.

# %%
def stages_to_rerun(changed):
    raise NotImplementedError("walk recipe.STAGES, growing the set of dirty stages")


checks.check_stages_to_rerun(stages_to_rerun)

# %% [markdown]
# **Exercise 2: the noise of an accuracy.** The standard error of an accuracy `p` measured on
# `n` independent prompts.

# %%
def accuracy_stderr(p, n):
    raise NotImplementedError("each prompt is a coin that comes up 'correct' with probability p")


checks.check_accuracy_stderr(accuracy_stderr)

# %% [markdown]
# ## Review

# %%
from qwenlab.quiz import Question, quiz  # noqa: E402

quiz([
    Question("The SFT stage is where task accuracy jumps from zero. Why does the pretrained "
             "model score nothing, even on tasks it could half-solve?",
             ["Its vocabulary has no digits",
              "It never learned the chat format: it does not answer after "
              "<|im_start|>assistant and never emits <|im_end|>, so a checker that wants "
              "exactly the answer rejects every reply",
              "Pretraining erased the tasks",
              "Greedy decoding cannot produce numbers"],
             answer=1,
             why="A base model continues text. The checkers demand the answer and a stop; SFT "
                 "(chapter 10) trains exactly those tokens, <|im_end|> included."),
    Question("The held-out loss on Shakespeare rises after SFT. What does that measure?",
             ["A bug in the loss",
              "How much of its pretraining distribution the model gave up to specialise: "
              "fine-tuning a tiny model on a narrow task set moves it away from plays",
              "That the SFT data was filtered badly",
              "Overfitting to the held-out plays"],
             answer=1,
             why="The same weights serve both. Real recipes mix some pretraining data into "
                 "SFT, and keep a KL leash in RL (DPO's beta), to limit this drift."),
    Question("Why is a resumed run bit-identical to an uninterrupted one?",
             ["Because the checkpoints are saved in float64",
              "Every stage starts from a fixed seed and saved inputs and runs on one thread, "
              "and pretraining's checkpoints hold the optimizer and the batch sampler's "
              "random state, so the same computation happens in the same order",
              "Because PyTorch is deterministic by default on every device",
              "Because the stages are cached in memory"],
             answer=1,
             why="Determinism is designed, not given: the order of floating-point sums "
                 "depends on the thread count, and the random streams must be restored."),
    Question("Stage B's accuracy is 2 points above stage A's on 200 prompts. What should you "
             "report?",
             ["A 2-point gain",
              "That the gain is within the noise (the standard error is about 2-3 points), "
              "unless a paired comparison of the same prompts shows many more prompts gained "
              "than lost",
              "That B is worse",
              "Nothing: accuracy cannot be compared across stages"],
             answer=1,
             why="sqrt(p(1-p)/n) at n = 200 is 2-3.5 points. Paired counts (prompts gained "
                 "vs lost) are the sharper test for two models on the same prompts."),
])
