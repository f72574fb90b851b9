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
# # 07 · The tokenizer: solutions
#
# The exercises of `chapters/07_tokenizer.ipynb`, solved, each followed by its grader. Try
# them yourself first.

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %%
from collections import Counter

import qwenlab
import qwenlab.env
from qwenlab import checks

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# **Exercise 1 · one BPE merge step.** `zip(w, w[1:])` lists the adjacent pairs of one word,
# so pairs never cross words, and overlapping ones each count. `min` with the key
# `(-count, pair)` takes the highest count and, among equal counts, the smallest pair. The
# merge walks left to right and skips *both* tokens of a match, so `[a, a, a]` becomes
# `[X, a]`.

# %%
def bpe_merge_step(words: list[list[int]], new_id: int):
    """-> (pair, merged_words): the most frequent pair inside words, merged into new_id."""
    counts = Counter()
    for w in words:
        counts.update(zip(w, w[1:]))
    pair = min(counts, key=lambda p: (-counts[p], p))
    merged = []
    for w in words:
        out, i = [], 0
        while i < len(w):
            if i + 1 < len(w) and (w[i], w[i + 1]) == pair:
                out.append(new_id)
                i += 2
            else:
                out.append(w[i])
                i += 1
        merged.append(out)
    return pair, merged


checks.check_bpe_merge_step(bpe_merge_step)

# %% [markdown]
# **Exercise 2 · the byte table.** Three printable ranges keep their characters; a counter
# gives the other 68 bytes the characters from `chr(256)` on, in byte order.

# %%
def my_bytes_to_unicode() -> dict[int, str]:
    """-> {byte: one printable character} for bytes 0..255."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)}
    table, moved = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + moved)
            moved += 1
    return table


checks.check_bytes_to_unicode(my_bytes_to_unicode)

# %% [markdown]
# **Exercise 3 · tokens per character.** Encode all texts in one call without added special
# tokens, and divide the totals (not the mean of per-text ratios, which would let a short text
# weigh as much as a long one).

# %%
def my_tokens_per_char(tok, texts: list[str]) -> float:
    """-> total tokens / total characters over texts, without added special tokens."""
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    return sum(len(x) for x in ids) / sum(len(t) for t in texts)


checks.check_tokens_per_char(my_tokens_per_char)
