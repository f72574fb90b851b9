"""Data quality: score, filter and deduplicate text before pretraining on it.

Qwen2.5 was pretrained on 18 trillion tokens, up from Qwen2's 7 trillion, and the report
credits the gain as much to *filtering* as to volume: Qwen2-Instruct models scored documents
for quality, over-represented domains (e-commerce, social media) were down-sampled and
under-represented ones (science, technology) up-sampled. Underneath sits deduplication, which
the first Qwen report describes: exact after normalisation, fuzzy with MinHash and LSH. The idea
behind it: a token of clean, varied text teaches a model more than a token of spam, so what a
corpus is worth is not its size |D| but its *effective* size

    D_eff = q(D) · |D|,    with q(D) in [0, 1] the corpus' quality multiplier.

This module holds the signals that estimate q, each small enough to read on its own:

- ``toy_quality_score``: the heuristic score of the course's Qwen2.5 study notes, rebuilt
  exactly, to show what a naive score gets wrong;
- Gopher/C4-style heuristic filters (length, mean word length, symbols, alphabetic words, stop
  words, boilerplate, duplicate lines, repeated n-grams) and ``heuristic_filter`` combining
  them, each returning the measured value and a pass/fail;
- exact deduplication by hashing normalised text (``exact_duplicates``);
- near-deduplication by MinHash + LSH, built from scratch (``minhash_signature``,
  ``lsh_candidates``, ``near_duplicates``), checked against brute-force ``jaccard``;
- a perplexity filter from a word bigram language model trained on clean text
  (``BigramLM``), the way CCNet scores web text with a KenLM model trained on Wikipedia;
- a quality classifier, logistic regression on hashed word n-grams, in torch
  (``train_quality_classifier``), the way GPT-3 and others keep "reference-like" pages;
- ``effective_tokens``: D_eff = Σ q_i · tokens_i over the documents of a corpus.

Everything is deterministic: hashes are fixed functions (never Python's ``hash``, which is
salted per process) and random parameters come from seeded generators.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = [
    "toy_quality_score", "toy_score_parts", "words", "content_lines",
    "FilterResult", "HeuristicReport", "doc_length_filter", "mean_word_length_filter",
    "symbol_ratio_filter", "alpha_words_filter", "stop_word_filter", "boilerplate_lines",
    "boilerplate_filter", "strip_boilerplate", "duplicate_lines_filter",
    "repeated_ngrams_filter", "heuristic_filter", "HEURISTICS", "gated_quality_score",
    "normalize", "exact_hash", "exact_duplicates",
    "shingles", "stable_hash", "MERSENNE_PRIME", "minhash_params", "minhash_signature",
    "minhash_signatures", "minhash_jaccard", "jaccard", "lsh_candidates",
    "lsh_probability", "near_duplicates",
    "lm_tokens", "BigramLM",
    "hashed_features", "QualityClassifier", "train_quality_classifier",
    "chunk_text", "precision_recall", "count_tokens", "effective_tokens", "load_labels",
]


# =========================================================================== the toy score

def words(text: str) -> list[str]:
    """The words of the toy score and the heuristics: ``text.split()``, i.e. maximal runs of
    non-whitespace characters, kept as written (case and punctuation attached: "Who's" and
    "there?" are two words; "The" and "the" are different words)."""
    return text.split()


def content_lines(text: str) -> list[str]:
    """The lines that count for duplicate-line measures: ``text.splitlines()``, each stripped
    of surrounding whitespace, blank lines dropped (a blank line separates paragraphs; it is
    not a duplicated line)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def toy_score_parts(text: str) -> dict[str, float]:
    """The three measurements behind ``toy_quality_score``, for a text of >= 20 characters
    with at least one word."""
    ws = words(text)
    lines = content_lines(text)
    return {
        "unique_word_ratio": len(set(ws)) / len(ws),
        "length_term": min(len(ws) / 500, 1.0),
        "duplicate_line_fraction": 1 - len(set(lines)) / len(lines),
    }


def toy_quality_score(text: str) -> float:
    """The heuristic quality score q in [0, 1] of the course's Qwen2.5 study notes.

    - A text shorter than 20 characters, or with no words, scores 0.1.
    - Otherwise q = 0.4 · unique-word ratio + 0.3 · min(words / 500, 1)
      + 0.3 · (1 − duplicate-line fraction), clipped to [0, 1], where
      * words are ``words(text)`` = ``text.split()`` (case-sensitive, punctuation attached),
      * unique-word ratio = distinct words / words,
      * lines are ``content_lines(text)`` (stripped, blank lines dropped), and the
        duplicate-line fraction = 1 − distinct lines / lines, the share of lines that repeat
        an earlier one.

    Each term lies in [0, 1] and the weights sum to 1, so the sum is already in (0, 1]: the
    clip is kept from the notes as a guard and never changes a value. The chapter shows where
    this fails: the unique-word ratio falls with length (long good documents lose), a 30-word
    good paragraph loses most of the length term, and fluent nonsense or varied keyword spam
    score as high as real prose.
    """
    if len(text) < 20 or not words(text):
        return 0.1
    p = toy_score_parts(text)
    q = 0.4 * p["unique_word_ratio"] + 0.3 * p["length_term"] \
        + 0.3 * (1 - p["duplicate_line_fraction"])
    return min(max(q, 0.0), 1.0)


# =========================================================================== heuristic filters
# Thresholds follow Gopher (Rae et al. 2021, appendix A) and C4 (Raffel et al. 2020), which
# both tuned them on web text; the chapter shows how they treat drama, verse and docstrings.

@dataclass
class FilterResult:
    """One heuristic: its name, the measured value, whether the text passes, and the rule."""
    name: str
    value: float
    passed: bool
    rule: str

    def __str__(self) -> str:
        return f"{'pass' if self.passed else 'FAIL'} {self.name} = {self.value:.3f} ({self.rule})"


@dataclass
class HeuristicReport:
    """Every filter's result; the text passes when all of them pass."""
    results: list[FilterResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if not r.passed]

    def __str__(self) -> str:
        return "\n".join(str(r) for r in self.results)


def doc_length_filter(text: str, min_words: int = 50, max_words: int = 100_000) -> FilterResult:
    """Gopher: keep documents of 50 to 100,000 words (too short: no context to learn from;
    too long: usually concatenated dumps)."""
    n = len(words(text))
    return FilterResult("doc_length", float(n), min_words <= n <= max_words,
                        f"{min_words} <= words <= {max_words:,}")


def mean_word_length_filter(text: str, low: float = 3.0, high: float = 10.0) -> FilterResult:
    """Gopher: mean word length (characters per ``words(text)`` word) within [3, 10]; outside
    are tables of numbers, base64, URLs and similar non-prose."""
    ws = words(text)
    mean = sum(map(len, ws)) / len(ws) if ws else 0.0
    return FilterResult("mean_word_length", mean, low <= mean <= high,
                        f"{low:g} <= mean chars per word <= {high:g}")


def symbol_ratio_filter(text: str, max_ratio: float = 0.1) -> FilterResult:
    """Gopher: (number of "#" characters + number of ellipses "..." or "…") / words <= 0.1;
    hashtags and truncated snippets mark scraped lists and social-media dumps."""
    n = max(len(words(text)), 1)
    symbols = text.count("#") + text.count("...") + text.count("\u2026")
    return FilterResult("symbol_ratio", symbols / n, symbols / n <= max_ratio,
                        f"(# + ellipses) / words <= {max_ratio:g}")


def alpha_words_filter(text: str, min_fraction: float = 0.8) -> FilterResult:
    """Gopher: at least 80% of words contain an alphabetic character (drops symbol soup,
    number tables, markup)."""
    ws = words(text)
    frac = sum(any(c.isalpha() for c in w) for w in ws) / len(ws) if ws else 0.0
    return FilterResult("alpha_words", frac, frac >= min_fraction,
                        f"words with a letter >= {min_fraction:.0%}")


STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})


def stop_word_filter(text: str, min_count: int = 2) -> FilterResult:
    """Gopher: at least 2 of the English stop words {the, be, to, of, and, that, have, with}
    (counted with repeats, case-insensitive, punctuation stripped). Real English sentences
    need them; keyword lists and symbol soup do not have them."""
    count = sum(w.strip(".,;:!?\"'()[]*_").lower() in STOP_WORDS for w in words(text))
    return FilterResult("stop_words", float(count), count >= min_count,
                        f"stop words >= {min_count}")


# Lines C4 drops (javascript / cookie / terms-of-use notices), documents it drops (lorem
# ipsum), and Project Gutenberg's licence and header lines.
BOILERPLATE_PATTERNS = (
    r"lorem ipsum", r"click here", r"javascript", r"cookie", r"terms of (use|service)",
    r"privacy policy", r"all rights reserved", r"subscribe to", r"sign up for",
    r"project gutenberg", r"gutenberg\.org", r"gutenberg-tm", r"\*\*\* ?(start|end) of",
    r"this e-?book is for the use of anyone", r"e-?text", r"full license",
)
_BOILERPLATE = re.compile("|".join(BOILERPLATE_PATTERNS), re.IGNORECASE)


def boilerplate_lines(text: str) -> list[str]:
    """The ``content_lines`` of ``text`` that match a boilerplate pattern
    (``BOILERPLATE_PATTERNS``: web notices as in C4, Project Gutenberg licence lines)."""
    return [line for line in content_lines(text) if _BOILERPLATE.search(line)]


def boilerplate_filter(text: str, max_fraction: float = 0.1) -> FilterResult:
    """Fraction of content lines that are boilerplate <= 0.1, and never "lorem ipsum" (C4
    drops any page containing it: placeholder text, never real content)."""
    lines = content_lines(text)
    frac = len(boilerplate_lines(text)) / len(lines) if lines else 0.0
    lorem = "lorem ipsum" in text.lower()
    return FilterResult("boilerplate", frac, frac <= max_fraction and not lorem,
                        f"boilerplate lines <= {max_fraction:.0%}, no lorem ipsum")


def strip_boilerplate(text: str) -> str:
    """C4's line-level cleaning: ``text`` without its boilerplate lines (other lines kept
    as they were)."""
    return "\n".join(line for line in text.splitlines()
                     if not (line.strip() and _BOILERPLATE.search(line)))


def duplicate_lines_filter(text: str, max_line_fraction: float = 0.3,
                           max_char_fraction: float = 0.2) -> FilterResult:
    """Gopher: among content lines, the share that repeat an earlier line <= 0.3, and the
    share of characters in such repeated lines <= 0.2. The value reported is the character
    share. Catches navigation menus, repeated headers and copy-paste padding."""
    lines = content_lines(text)
    seen: set[str] = set()
    dup_lines = dup_chars = 0
    for line in lines:
        if line in seen:
            dup_lines += 1
            dup_chars += len(line)
        seen.add(line)
    line_frac = dup_lines / len(lines) if lines else 0.0
    char_frac = dup_chars / max(sum(map(len, lines)), 1)
    return FilterResult("duplicate_lines", char_frac,
                        line_frac <= max_line_fraction and char_frac <= max_char_fraction,
                        f"repeated lines <= {max_line_fraction:.0%} and their chars "
                        f"<= {max_char_fraction:.0%}")


def repeated_ngrams_filter(text: str, n: int = 5, max_fraction: float = 0.15) -> FilterResult:
    """Gopher: the share of characters covered by word n-grams (n = 5, words lowercased) that
    occur more than once <= 0.15. Catches keyword spam and looping text even when every line
    differs."""
    ws = [w.lower() for w in words(text)]
    if len(ws) < n:
        return FilterResult(f"repeated_{n}grams", 0.0, True, f"chars in repeated {n}-grams "
                            f"<= {max_fraction:.0%}")
    grams = [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(ws)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i:i + n] = [True] * n
    frac = sum(len(w) for w, c in zip(ws, covered) if c) / max(sum(map(len, ws)), 1)
    return FilterResult(f"repeated_{n}grams", frac, frac <= max_fraction,
                        f"chars in repeated {n}-grams <= {max_fraction:.0%}")


HEURISTICS: tuple[Callable[[str], FilterResult], ...] = (
    doc_length_filter, mean_word_length_filter, symbol_ratio_filter, alpha_words_filter,
    stop_word_filter, boilerplate_filter, duplicate_lines_filter, repeated_ngrams_filter,
)


def heuristic_filter(text: str, filters: Sequence[Callable[[str], FilterResult]] = HEURISTICS
                     ) -> HeuristicReport:
    """Run every filter (default: all of ``HEURISTICS``, with their Gopher/C4 thresholds);
    ``.passed`` is True when all pass, ``.failed`` names those that did not."""
    return HeuristicReport([f(text) for f in filters])


def gated_quality_score(text: str) -> float:
    """The toy score, gated by the heuristics: ``toy_quality_score(text)`` when
    ``heuristic_filter(text).passed``, else 0.0. (Chapter 08's first fix of the toy score.)"""
    return toy_quality_score(text) if heuristic_filter(text).passed else 0.0


# =========================================================================== exact dedup

def normalize(text: str) -> str:
    """Text reduced to what dedup compares: Unicode NFKC, lowercase, every run of non-word
    characters (punctuation, whitespace) replaced by one space, stripped. Two copies that
    differ only in case, punctuation or line wrapping normalise to the same string."""
    return " ".join(re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower()))


def exact_hash(text: str, algorithm: str = "sha1") -> str:
    """Hex digest of ``normalize(text)`` (UTF-8) with ``algorithm`` ("sha1" or "md5")."""
    return hashlib.new(algorithm, normalize(text).encode("utf-8")).hexdigest()


def exact_duplicates(texts: Sequence[str], algorithm: str = "sha1") -> list[list[int]]:
    """Groups of indices whose texts have the same ``exact_hash``, each sorted, groups in
    order of their first member; only groups of two or more. Keeping the first index of each
    group deduplicates the corpus."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(texts):
        groups[exact_hash(t, algorithm)].append(i)
    return [g for g in groups.values() if len(g) > 1]


# =========================================================================== MinHash + LSH
# Jaccard similarity of two documents A, B as sets of shingles: |A ∩ B| / |A ∪ B|. For a random
# hash function h, P[min h(A) = min h(B)] = J(A, B): the element of A ∪ B with the smallest
# hash is equally likely to be any of them, and the minima agree exactly when it lies in A ∩ B.
# k independent hash functions give k such coin flips: the signature. Its agreement rate
# estimates J with standard deviation sqrt(J (1 - J) / k).

MERSENNE_PRIME = (1 << 31) - 1   # p = 2^31 - 1: a·x + b < 2^62 fits in int64


def shingles(text: str, n: int = 3, unit: str = "word") -> set[str]:
    """The set of n-shingles of ``normalize(text)``: runs of ``n`` consecutive words joined by
    single spaces (unit="word"), or of ``n`` consecutive characters (unit="char"). A text
    shorter than n units gives one shingle, the whole normalised text (or none if empty)."""
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    norm = normalize(text)
    units: Sequence[str] = norm.split() if unit == "word" else norm
    joiner = " " if unit == "word" else ""
    if len(units) < n:
        return {joiner.join(units)} if units else set()
    return {joiner.join(units[i:i + n]) for i in range(len(units) - n + 1)}


def stable_hash(s: str) -> int:
    """A fixed 32-bit hash of a string: CRC-32 of its UTF-8 bytes (the same in every process,
    unlike Python's salted ``hash``)."""
    return zlib.crc32(s.encode("utf-8"))


def minhash_params(num_perm: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The k = ``num_perm`` hash functions h_i(x) = (a_i · x + b_i) mod p, p = 2^31 − 1:
    a (k,) in [1, p) and b (k,) in [0, p), int64, drawn from ``torch.Generator`` seeded with
    ``seed``."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(1, MERSENNE_PRIME, (num_perm,), generator=g, dtype=torch.int64)
    b = torch.randint(0, MERSENNE_PRIME, (num_perm,), generator=g, dtype=torch.int64)
    return a, b


def minhash_signature(shingle_set: Iterable[str], a: torch.Tensor, b: torch.Tensor
                      ) -> torch.Tensor:
    """signature[i] = min over shingles s of (a[i] · (stable_hash(s) mod p) + b[i]) mod p,
    an int64 tensor of shape (k,). An empty set gives p in every slot (matches nothing)."""
    x = torch.tensor([stable_hash(s) % MERSENNE_PRIME for s in shingle_set],
                     dtype=torch.int64)                                  # (S,)
    if x.numel() == 0:
        return torch.full_like(a, MERSENNE_PRIME)
    return ((a[:, None] * x[None, :] + b[:, None]) % MERSENNE_PRIME).amin(dim=1)  # (k,)


def minhash_signatures(texts: Sequence[str], num_perm: int = 128, n: int = 3,
                       unit: str = "word", seed: int = 0) -> torch.Tensor:
    """(N, num_perm) signatures of ``texts`` with ``shingles(text, n, unit)`` and
    ``minhash_params(num_perm, seed)``."""
    a, b = minhash_params(num_perm, seed)
    if not texts:
        return torch.empty(0, num_perm, dtype=torch.int64)
    return torch.stack([minhash_signature(shingles(t, n, unit), a, b) for t in texts])


def minhash_jaccard(sig_a: torch.Tensor, sig_b: torch.Tensor) -> float:
    """The MinHash estimate of the Jaccard similarity: the share of slots that agree."""
    return (sig_a == sig_b).double().mean().item()


def jaccard(a: set, b: set) -> float:
    """Brute-force Jaccard similarity |a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def lsh_probability(s: float, bands: int, rows: int) -> float:
    """P(two documents of Jaccard s share a bucket) = 1 − (1 − s^rows)^bands: an S-curve
    whose steepest point lies near (1 / bands)^(1 / rows)."""
    return 1 - (1 - s ** rows) ** bands


def lsh_candidates(signatures: torch.Tensor, bands: int, rows: int) -> set[tuple[int, int]]:
    """Locality-sensitive hashing: cut each (k,) signature into ``bands`` bands of ``rows``
    slots (bands · rows must equal k); two documents become a candidate pair (i < j) when all
    rows of at least one band agree. Cost: one dictionary pass per band instead of comparing
    all N² pairs."""
    n_docs, k = signatures.shape
    if bands * rows != k:
        raise ValueError(f"bands * rows = {bands} * {rows} = {bands * rows} must equal the "
                         f"signature length {k}")
    pairs: set[tuple[int, int]] = set()
    for band in signatures.view(n_docs, bands, rows).unbind(dim=1):     # (N, rows) each
        buckets: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, key in enumerate(map(tuple, band.tolist())):
            buckets[key].append(i)
        for members in buckets.values():
            pairs.update((members[x], members[y]) for x in range(len(members))
                         for y in range(x + 1, len(members)))
    return pairs


def near_duplicates(texts: Sequence[str], threshold: float = 0.2, num_perm: int = 128,
                    bands: int = 64, n: int = 3, unit: str = "word", seed: int = 0
                    ) -> list[tuple[int, int, float]]:
    """Pairs (i, j, estimated Jaccard) of near-duplicates, sorted: LSH candidates whose
    MinHash estimate is >= ``threshold``. The defaults (3-word shingles, 64 bands of 2 rows)
    suit the course's corpora, where a play in First Folio spelling and the same play in
    modern spelling share about 28% of their 3-word shingles and two different plays about 1%.
    """
    sigs = minhash_signatures(texts, num_perm, n, unit, seed)
    found = []
    for i, j in sorted(lsh_candidates(sigs, bands, num_perm // bands)):
        est = minhash_jaccard(sigs[i], sigs[j])
        if est >= threshold:
            found.append((i, j, est))
    return found


# =========================================================================== perplexity filter

def lm_tokens(text: str) -> list[str]:
    """The tokens of ``BigramLM``: lowercase words and single punctuation marks
    (``\\w+`` runs and each other non-space character)."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


class BigramLM:
    """A word bigram language model with Witten-Bell interpolation, trained on clean text.

        P(w | v) = λ_v · c(v, w) / c(v) + (1 − λ_v) · P_uni(w),   λ_v = c(v) / (c(v) + T(v)),

    where T(v) is the number of distinct words seen after v (a word followed by many
    different words leaves more mass for unseen ones) and P_uni is add-one smoothed over the
    vocabulary (words seen at least ``min_count`` times) plus <unk>. Each document starts
    with <s>. Perplexity = exp(mean negative log-probability per token): low for text that
    looks like the training text, high for nonsense, symbol soup, or another domain.
    """

    UNK, BOS = "<unk>", "<s>"

    def __init__(self, min_count: int = 2):
        self.min_count = min_count
        self.unigram: Counter = Counter()
        self.bigram: dict[str, Counter] = {}

    def fit(self, texts: Iterable[str]) -> BigramLM:
        docs = [lm_tokens(t) for t in texts]
        raw = Counter(w for d in docs for w in d)
        self.vocab = {w for w, c in raw.items() if c >= self.min_count}
        self.unigram = Counter()
        bigram: dict[str, Counter] = defaultdict(Counter)
        for d in docs:
            seq = [self.BOS] + [w if w in self.vocab else self.UNK for w in d]
            self.unigram.update(seq[1:])
            for v, w in zip(seq, seq[1:]):
                bigram[v][w] += 1
        self.bigram = dict(bigram)
        self.total = sum(self.unigram.values())
        self.vocab_size = len(self.vocab) + 1                         # + <unk>
        self._context = {v: (sum(c.values()), len(c)) for v, c in self.bigram.items()}
        return self

    def prob(self, prev: str, word: str) -> float:
        """P(word | prev) as above; words outside the vocabulary are <unk>."""
        prev = prev if prev in self.vocab or prev == self.BOS else self.UNK
        word = word if word in self.vocab else self.UNK
        p_uni = (self.unigram[word] + 1) / (self.total + self.vocab_size)
        if prev not in self._context:
            return p_uni
        count, types = self._context[prev]
        lam = count / (count + types)
        return lam * self.bigram[prev][word] / count + (1 - lam) * p_uni

    def perplexity(self, text: str) -> float:
        """exp of the mean of −log P(w_t | w_{t−1}) over the tokens of ``text`` (inf if none)."""
        toks = lm_tokens(text)
        if not toks:
            return math.inf
        seq = [self.BOS] + toks
        nll = -sum(math.log(self.prob(v, w)) for v, w in zip(seq, seq[1:]))
        return math.exp(nll / len(toks))


# =========================================================================== quality classifier

def hashed_features(texts: Sequence[str], dim: int = 4096, ngrams: tuple[int, ...] = (1, 2)
                    ) -> torch.Tensor:
    """(N, dim) float32 features: the word n-grams of ``normalize(text)`` (n in ``ngrams``)
    hashed into ``dim`` buckets with ``stable_hash`` (bucket = h mod dim, sign = +1 or −1 from
    bit 31 of h, so that collisions cancel on average), counts summed, each row scaled to unit
    L2 norm so that long and short texts are comparable."""
    idx: list[int] = []
    sign: list[float] = []
    for row, text in enumerate(texts):
        ws = normalize(text).split()
        for n in ngrams:
            for i in range(len(ws) - n + 1):
                h = stable_hash(" ".join(ws[i:i + n]))
                idx.append(row * dim + h % dim)             # flat index into (N, dim)
                sign.append(1.0 if h >> 31 else -1.0)
    x = torch.zeros(len(texts) * dim)
    x.index_add_(0, torch.tensor(idx, dtype=torch.int64), torch.tensor(sign))
    x = x.view(len(texts), dim)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


class QualityClassifier(torch.nn.Module):
    """Logistic regression on ``hashed_features``: P(good | text) = sigmoid(w · x + b)."""

    def __init__(self, dim: int = 4096, ngrams: tuple[int, ...] = (1, 2)):
        super().__init__()
        self.dim, self.ngrams = dim, ngrams
        self.linear = torch.nn.Linear(dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).squeeze(-1)                    # (N,) logits

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str]) -> torch.Tensor:
        """(N,) float32: P(good) for each text."""
        return torch.sigmoid(self(hashed_features(texts, self.dim, self.ngrams)))


def train_quality_classifier(texts: Sequence[str], labels: Sequence[int], dim: int = 4096,
                             steps: int = 200, lr: float = 0.1, weight_decay: float = 1e-4,
                             seed: int = 0) -> QualityClassifier:
    """Fit ``QualityClassifier`` on ``texts`` with ``labels`` (1 = good, 0 = bad): full-batch
    Adam on the binary cross-entropy, classes weighted equally (each class's loss averaged on
    its own), L2 ``weight_decay``. Deterministic given ``seed``."""
    torch.manual_seed(seed)
    model = QualityClassifier(dim)
    x = hashed_features(texts, dim)
    y = torch.tensor(labels, dtype=torch.float32)
    pos = y.sum().clamp_min(1)
    weights = torch.where(y > 0, 0.5 / pos, 0.5 / (len(y) - pos).clamp_min(1))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y,
                                                                    weight=weights,
                                                                    reduction="sum")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


# =========================================================================== measuring

def chunk_text(text: str, max_words: int = 200) -> list[str]:
    """Cut ``text`` into chunks at line boundaries: lines are added to a chunk until it holds
    at least ``max_words`` words (a single longer line makes its own chunk). Line structure is
    kept, so line-based signals still see the document's lines; a last chunk shorter than
    ``max_words / 2`` words is merged into the one before."""
    chunks, current, count = [], [], 0
    for line in text.splitlines():
        current.append(line)
        count += len(line.split())
        if count >= max_words:
            chunks.append("\n".join(current))
            current, count = [], 0
    if current and "\n".join(current).strip():
        if chunks and count < max_words / 2:
            chunks[-1] += "\n" + "\n".join(current)
        else:
            chunks.append("\n".join(current))
    return chunks


def precision_recall(flagged: Sequence[bool], is_bad: Sequence[bool]) -> tuple[float, float]:
    """A filter's precision and recall at *finding bad documents*: precision = share of the
    flagged documents that are bad, recall = share of the bad documents that are flagged
    (precision is 1.0 when nothing is flagged)."""
    tp = sum(f and b for f, b in zip(flagged, is_bad, strict=True))
    n_flagged, n_bad = sum(map(bool, flagged)), sum(map(bool, is_bad))
    return (tp / n_flagged if n_flagged else 1.0), (tp / n_bad if n_bad else 1.0)


def count_tokens(text: str, tokenizer=None) -> int:
    """Tokens in ``text``: ``len(text.split())`` (words) when ``tokenizer`` is None, else the
    length of ``tokenizer.encode(text)`` (a transformers tokenizer, without special tokens,
    or a ``tokenizers.Tokenizer``, whose encodings have ``.ids``)."""
    if tokenizer is None:
        return len(text.split())
    try:
        ids = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:
        ids = tokenizer.encode(text)
    return len(ids.ids) if hasattr(ids, "ids") else len(ids)


def effective_tokens(texts: Sequence[str], scores: Sequence[float], tokenizer=None) -> float:
    """D_eff = Σ_i q_i · tokens_i, with q_i in [0, 1] the quality score of document i (one
    score per document, applied to all its tokens) and tokens_i = ``count_tokens(texts[i],
    tokenizer)``. Divided by the raw count |D| = Σ_i tokens_i it gives the corpus' quality
    multiplier q(D) = D_eff / |D|, the token-weighted mean score. A document that a filter
    drops has q_i = 0, so filtering lowers |D| without lowering D_eff much when it drops
    mostly what scored low anyway."""
    if len(texts) != len(scores):
        raise ValueError(f"{len(texts)} texts but {len(scores)} scores: give one per document")
    total = 0.0
    for text, q in zip(texts, scores):
        q = float(q)
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quality scores must lie in [0, 1], got {q}")
        total += q * count_tokens(text, tokenizer)
    return total


LABELS_FILE = "quality_labels.jsonl"


def _fetch_labels_on_colab(path: Path) -> bool:
    """On Colab qwenlab is pip-installed without the repository's data/ folder: fetch the
    committed fixture from the repository once. Never attempted elsewhere (offline by default)."""
    from .course import BRANCH, REPO
    from .env import in_colab

    if not in_colab():
        return False
    import urllib.request

    url = f"https://raw.githubusercontent.com/{REPO}/{BRANCH}/data/{LABELS_FILE}"
    path.parent.mkdir(parents=True, exist_ok=True)
    urllib.request.urlretrieve(url, path)
    return True


def load_labels(path: str | Path | None = None) -> list[dict]:
    """The course's small labelled fixture, ``data/quality_labels.jsonl``: hand-written good
    and bad samples, each ``{"id", "label": "good" | "bad", "kind", "fails", "text"}``, where
    ``fails`` lists the heuristic filters the sample is meant to fail (none for good text)."""
    from .data import data_dir

    path = Path(path) if path is not None else data_dir() / LABELS_FILE
    if not path.is_file():
        _fetch_labels_on_colab(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: it is committed in the qwenlab repository "
                                f"under data/{LABELS_FILE}; copy it there or pass its path")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]
