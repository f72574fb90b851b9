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
# # 14 · Capstone: solutions
#
# The exercises of `chapters/14_capstone.ipynb`, solved, each followed by its check.

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %%
import math

import qwenlab
import qwenlab.env
from qwenlab import checks, recipe

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# **Exercise 1: what must run again?** A stage's output feeds the stages listed against it in
# `recipe.DEPENDS_ON`, and theirs feed others. `STAGES` is in dependency order (a stage comes
# after everything it reads), so one pass over it suffices: a stage is dirty when anything it
# reads is dirty. The reward model is read by no stage here (the checkers label the
# on-policy pairs), so changing it reruns nothing else, while a new SFT model invalidates the
# reward model, DPO and the iteration round.

# %%
def stages_to_rerun(changed):
    dirty = {changed}
    for stage in recipe.STAGES:
        if any(dep in dirty for dep in recipe.DEPENDS_ON[stage]):
            dirty.add(stage)
    return [s for s in recipe.STAGES if s in dirty]


checks.check_stages_to_rerun(stages_to_rerun)

# %%
for stage in recipe.STAGES:
    print(f"{stage:>8}: {stages_to_rerun(stage)}")

# %% [markdown]
# **Exercise 2: the noise of an accuracy.** Each prompt is a Bernoulli trial with success
# probability $p$, variance $p(1-p)$; the mean of $n$ independent ones has variance
# $p(1-p)/n$, and the standard error is its square root.

# %%
def accuracy_stderr(p, n):
    return math.sqrt(p * (1 - p) / n)


checks.check_accuracy_stderr(accuracy_stderr)

# %%
for p in (0.05, 0.2, 0.5):
    print(f"accuracy {p:.0%} on 200 prompts: ± {accuracy_stderr(p, 200):.1%} "
          f"(a gain needs about {2 * accuracy_stderr(p, 200):.1%} to clear 95 %)")
