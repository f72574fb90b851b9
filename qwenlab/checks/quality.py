"""Graders for the exercises of chapter 08: data quality.

- ``check_toy_quality_score(fn)``: fn(text) -> float, the study notes' toy score
  (``qwenlab.quality.toy_quality_score``).
- ``check_gated_quality_score(fn)``: fn(text) -> float, the first fix: the toy score for a
  text that passes every heuristic filter, 0.0 otherwise
  (``qwenlab.quality.gated_quality_score``).
- ``check_minhash_signature(fn)``: fn(text, a, b, n) -> (k,) int64, the MinHash signature of
  the text's word n-shingles (``qwenlab.quality.minhash_signature``).

Each trial runs the learner's function on fixed texts, compares it with the library, and when
it is wrong, recomputes the typical wrong answers to name the mistake.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..quality import (
    MERSENNE_PRIME,
    content_lines,
    heuristic_filter,
    minhash_params,
    minhash_signature,
    shingles,
    stable_hash,
    toy_quality_score,
)
from ._grading import CheckResult, compare, first_match, grade

__all__ = ["check_toy_quality_score", "check_gated_quality_score", "check_minhash_signature"]

_PROSE = ("The river keeps no record of the rain that fell upon the hills a week ago. It "
          "only carries down into the plain whatever it was given, mud or snow. ")


def _toy_texts() -> list[str]:
    """Texts that tell the typical mistakes apart: short ones (the 0.1 rule), a blank one,
    repeated and blank lines, mixed case, and one longer than 500 words (the cap)."""
    return [
        "Too short.",                                           # < 20 characters: 0.1
        " " * 30,                                               # no words: 0.1
        "Short but fine.\n",                                    # 16 characters: 0.1
        _PROSE,
        "Buy now!\nBuy now!\n\n\nBuy now!\nThe best price in town, The best price in town",
        "The cat and the Cat.\n\nThe dog and THE dog.\n\n\nThe end.",
        (_PROSE + "\n\n") * 3 + "And that is all.",
        " ".join(f"w{i % 400}" for i in range(1000)),            # 1,000 words: cap at 1
        "one two three four five six seven eight nine ten\n" * 2,
    ]


def _toy_variant(text: str, *, short_rule=True, length_chars=False, dup_direct=False,
                 blank_lines=False, lowercase=False, no_cap=False, weights=(0.4, 0.3, 0.3)
                 ) -> float:
    """The toy score with one typical mistake switched on."""
    ws = text.split()
    if not ws:
        return 0.1
    if short_rule and len(text) < 20:
        return 0.1
    if lowercase:
        ws = [w.lower() for w in ws]
    lines = text.splitlines() if blank_lines else content_lines(text)
    unique = len(set(ws)) / len(ws)
    length = (len(text) if length_chars else len(ws)) / 500
    length = length if no_cap else min(length, 1.0)
    dup = 1 - len(set(lines)) / len(lines)
    q = weights[0] * unique + weights[1] * length + weights[2] * (dup if dup_direct else 1 - dup)
    return min(max(q, 0.0), 1.0)


def _scores(fn: Callable, texts: list[str]) -> torch.Tensor:
    return torch.tensor([float(fn(t)) for t in texts], dtype=torch.float64)


def _diagnose(out: torch.Tensor, expected: torch.Tensor, mistakes: dict, texts: list[str]
              ) -> str | None:
    """The named mistake ``out`` reproduces, else the first text scored wrong, else None."""
    problem = first_match(out, mistakes, atol=1e-9)
    if problem:
        return problem
    bad = (out - expected).abs() > 1e-9
    if bad.any():
        i = int(bad.nonzero()[0])
        return (f"for the text {texts[i][:40]!r}... you return {out[i].item():.4f}, "
                f"expected {expected[i].item():.4f}")
    return None


def check_toy_quality_score(fn: Callable) -> CheckResult:
    """``fn(text)`` -> the toy quality score in [0, 1]."""

    def trial(fn):
        texts = _toy_texts()
        out = _scores(fn, texts)
        expected = _scores(toy_quality_score, texts)
        v = _toy_variant
        mistakes = {
            "the 0.1 rule is missing for texts under 20 characters: 'Short but fine.' must "
            "score 0.1 before any formula is applied":
                _scores(lambda t: v(t, short_rule=False), texts),
            "the length term counts characters; it counts words: min(len(text.split()) / 500, 1)":
                _scores(lambda t: v(t, length_chars=True), texts),
            "the length term is not capped at 1: use min(words / 500, 1), so a 1,000-word text "
            "gets 0.3 for length, not 0.6":
                _scores(lambda t: v(t, no_cap=True), texts),
            "the duplicate-line fraction is used as it is; the score rewards *unique* lines: "
            "0.3 * (1 - duplicate-line fraction)":
                _scores(lambda t: v(t, dup_direct=True), texts),
            "blank lines were counted as lines (and as duplicates of each other); strip each "
            "line and drop the blank ones before counting":
                _scores(lambda t: v(t, blank_lines=True), texts),
            "the words were lowercased; the toy score compares words as written ('The' and "
            "'the' are two distinct words)":
                _scores(lambda t: v(t, lowercase=True), texts),
            "the weights are mixed up: 0.4 for the unique-word ratio, 0.3 for length, 0.3 for "
            "unique lines":
                _scores(lambda t: v(t, weights=(0.3, 0.4, 0.3)), texts),
        }
        return _diagnose(out, expected, mistakes, texts)

    return grade("toy_quality_score", fn, trial,
                 hint="0.1 for len(text) < 20 or no words; else 0.4 * distinct/words + "
                      "0.3 * min(words / 500, 1) + 0.3 * (1 - duplicate-line fraction), lines "
                      "stripped and blank ones dropped",
                 success="the toy score on 9 texts: the 0.1 cases, the cap at 500 words, "
                         "blank and repeated lines")


def _gated_texts() -> list[str]:
    """Good prose that passes every filter, and texts that fail exactly one or several."""
    good = ("Honey bees tell each other where to find food with a dance. A forager that has "
            "found a rich patch of flowers returns to the hive and walks a figure of eight on "
            "the comb. The straight run in the middle points in the direction of the food, "
            "measured from the direction of the sun, and its length says how far away the "
            "food is. Other workers follow the dancer and then fly out to search the area.")
    return [
        good,
        good + "\nKarl von Frisch decoded the dance in the 1940s and won a Nobel Prize for it.",
        "Lorem ipsum dolor sit amet. " + good,                  # fails: boilerplate only
        " ".join(["cheap watches buy now best price"] * 20),     # fails several
        "The end of the story, and that was all.",              # fails: too short
        "\n".join(["Welcome to the page of the day and all that."] * 8),
        "\n".join(["# # # # # # lorem ipsum"] * 3),                  # fails every filter
    ]


def check_gated_quality_score(fn: Callable) -> CheckResult:
    """``fn(text)`` -> toy score if every heuristic filter passes, else 0.0."""

    def trial(fn):
        texts = _gated_texts()
        out = _scores(fn, texts)
        toy = _scores(toy_quality_score, texts)
        passed = torch.tensor([heuristic_filter(t).passed for t in texts])
        any_passed = torch.tensor([any(r.passed for r in heuristic_filter(t).results)
                                   for t in texts])
        expected = torch.where(passed, toy, 0.0)
        mistakes = {
            "the gate is inverted: texts that pass the filters must keep their toy score, and "
            "those that fail get 0.0": torch.where(passed, 0.0, toy),
            "no gate: this is the plain toy score; return 0.0 when heuristic_filter(text) "
            "does not pass": toy,
            "the gate lets a text through when *any* filter passes; it must pass all of them "
            "(heuristic_filter(text).passed)": torch.where(any_passed, toy, 0.0),
            "a text that passes gets 1.0; it should keep its toy score": torch.where(passed, 1.0,
                                                                                  0.0),
            "a text that fails gets 0.1 (the toy score's floor); a filtered-out text is worth "
            "nothing: 0.0": torch.where(passed, toy, 0.1),
        }
        return _diagnose(out, expected, mistakes, texts)

    return grade("gated_quality_score", fn, trial,
                 hint="toy_quality_score(text) if heuristic_filter(text).passed else 0.0",
                 success="the toy score for texts passing every filter, 0.0 for the others "
                         f"({len(_gated_texts())} texts)")


def _signature_variants(text: str, a: torch.Tensor, b: torch.Tensor, n: int
                        ) -> dict[str, torch.Tensor]:
    p = MERSENNE_PRIME
    word_sh = shingles(text, n, "word")
    x = torch.tensor([stable_hash(s) % p for s in word_sh], dtype=torch.int64)
    k = a.shape[0]
    same = "you used one hash function for every slot: all k entries are equal, so the " \
           "signature holds one coin flip, not k. Slot i needs its own a[i], b[i]"
    return {
        same: torch.full((k,), int(((a[0] * x + b[0]) % p).min())),
        same + " (here: the plain hash of each shingle, repeated)":
            torch.full((k,), int(x.min())),
        "you took the max instead of the min: both work as estimators in theory, but MinHash "
        "(and the library's signatures you compare with) keep the minimum":
            ((a[:, None] * x[None, :] + b[:, None]) % p).amax(dim=1),
        "you shingled characters; the exercise asks for word shingles: runs of n words of "
        "normalize(text).split(), joined by single spaces":
            minhash_signature(shingles(text, n, "char"), a, b),
        "the shingles were not normalised: take the words of normalize(text) (lowercase, "
        "punctuation removed), not text.split()":
            minhash_signature({" ".join(text.split()[i:i + n])
                               for i in range(len(text.split()) - n + 1)}, a, b),
        "the mod p is missing after a * x + b: h_i(x) = (a[i] * x + b[i]) % p":
            (a[:, None] * x[None, :] + b[:, None]).amin(dim=1),
    }


_SIG_TEXTS = [
    "Where have you been all evening? The soup went cold an hour ago, and the lamps are lit.",
    "To make a simple loaf, mix flour with salt and yeast; add warm water, knead it for ten "
    "minutes, LET IT RISE, shape it and bake it.",
]


def check_minhash_signature(fn: Callable) -> CheckResult:
    """``fn(text, a, b, n)`` -> (k,) int64 MinHash signature of the word n-shingles."""

    def trial(fn):
        for seed, (text, n, k) in enumerate([(_SIG_TEXTS[0], 3, 16), (_SIG_TEXTS[1], 2, 32)]):
            a, b = minhash_params(k, seed=seed)
            out = fn(text, a.clone(), b.clone(), n)
            expected = minhash_signature(shingles(text, n, "word"), a, b)
            if isinstance(out, list):
                return "return a torch.Tensor of int64, e.g. torch.tensor(values)"
            problem = first_match(out, _signature_variants(text, a, b, n))
            problem = problem or compare(out, expected, "signature", atol=0, rtol=0)
            if problem:
                return problem + f" (text {seed + 1}, n = {n}, k = {k})"
        return None

    return grade("minhash_signature", fn, trial,
                 hint="shingles = set of ' '.join(words[i:i + n]) over words = "
                      "normalize(text).split(); x = stable_hash(s) % p for each; then "
                      "signature[i] = min over x of (a[i] * x + b[i]) % p",
                 success=f"word-shingle MinHash signatures (p = 2^31 - 1, {16} and {32} hash "
                         "functions) equal the library's")

