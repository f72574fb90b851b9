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
# # 08 · Data quality: solutions
#
# The exercises of `chapters/08_data_quality.ipynb`, solved, each followed by its check.

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %%
import torch

import qwenlab
import qwenlab.env
from qwenlab import checks
from qwenlab import quality as Q

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")
torch.set_num_threads(1)

# %% [markdown]
# **Exercise 1: the toy score.** The 0.1 floor first (short, or no words), then the three
# terms: distinct words over words (as written), the length term capped at 1, and one minus
# the share of repeated lines among the stripped, non-blank ones.

# %%
def toy_score_solution(text):
    words = text.split()
    if len(text) < 20 or not words:
        return 0.1
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    unique_ratio = len(set(words)) / len(words)
    length_term = min(len(words) / 500, 1.0)
    duplicate_lines = 1 - len(set(lines)) / len(lines)
    q = 0.4 * unique_ratio + 0.3 * length_term + 0.3 * (1 - duplicate_lines)
    return min(max(q, 0.0), 1.0)


checks.check_toy_quality_score(toy_score_solution)

# %% [markdown]
# **Exercise 2: the gated score.** Every heuristic filter must pass; a text that fails any of
# them is worth nothing.

# %%
def gated_score_solution(text):
    return Q.toy_quality_score(text) if Q.heuristic_filter(text).passed else 0.0


checks.check_gated_quality_score(gated_score_solution)

# %% [markdown]
# **Exercise 3: a MinHash signature.** Word shingles of the normalised text, one 32-bit hash
# per shingle, then for each of the k hash functions the minimum of $(a_i x + b_i) \bmod p$
# over the shingles: a (k, S) table, reduced over S.

# %%
def minhash_signature_solution(text, a, b, n):
    words = Q.normalize(text).split()
    shingle_set = {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}
    x = torch.tensor([Q.stable_hash(s) % Q.MERSENNE_PRIME for s in shingle_set])  # (S,)
    return ((a[:, None] * x[None, :] + b[:, None]) % Q.MERSENNE_PRIME).amin(dim=1)  # (k,)


checks.check_minhash_signature(minhash_signature_solution)
