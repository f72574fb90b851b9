"""Graders for chapter 07 (tokenizer): one BPE merge step, the byte-to-unicode table, and
tokens per character.

Each grader runs the learner's function on fixed and seeded random inputs, compares it with the
reference (``qwenlab.tokenizer`` or the rule stated in the chapter) and, when it is wrong,
recognises the typical mistakes: a merge that lets overlapping pairs both merge ("aaa"), ties
broken another way than the stated one, pairs counted across word boundaries, bytes counted
instead of characters, special tokens counted as text.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from ..tokenizer import byte_table, bytes_to_unicode, tokens_per_char
from ._grading import CheckResult, grade

__all__ = ["check_bpe_merge_step", "check_bytes_to_unicode", "check_tokens_per_char"]


# ---------------------------------------------------------------- one BPE merge step

def _pair_counts(words, across_words=False, once_per_word=False) -> Counter:
    counts = Counter()
    if across_words:
        words = [[t for w in words for t in w]]
    for w in words:
        pairs = list(zip(w, w[1:]))
        counts.update(set(pairs) if once_per_word else pairs)
    return counts


def _most_frequent(counts: Counter, ties: str = "smallest"):
    if ties == "first seen":   # Counter keeps insertion order; max returns the first maximum
        return max(counts, key=counts.get)
    if ties == "largest":
        return max(counts, key=lambda p: (counts[p], p))
    return min(counts, key=lambda p: (-counts[p], p))


def _merge(word, pair, new_id, how: str = "left to right"):
    if how == "from the right":
        return _merge(word[::-1], pair[::-1], new_id)[::-1]
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(new_id)
            i += 1 if how == "overlapping" else 2
            if how == "first only":
                out += list(word[i:])
                break
        else:
            out.append(word[i])
            i += 1
    return out


def _merge_step(words, new_id, ties="smallest", across_words=False, once_per_word=False,
                how="left to right"):
    counts = _pair_counts(words, across_words, once_per_word)
    pair = _most_frequent(counts, ties)
    return pair, [_merge(list(w), pair, new_id, how) for w in words]


MERGE_STEP_MISTAKES = {
    "two overlapping pairs were both merged: in [a, a, a] only the first (a, a) merges, "
    "giving [X, a]; after a merge, skip both of its tokens (i += 2)": dict(how="overlapping"),
    "you merged from the right: [a, a, a] must become [X, a], scanning left to right":
        dict(how="from the right"),
    "you merged only the first occurrence in each word; merge every occurrence":
        dict(how="first only"),
    "ties were broken by first occurrence; the rule is: among equally frequent pairs take the "
    "smallest (compare the first ids, then the second ids), e.g. min(counts, key=lambda p: "
    "(-counts[p], p))": dict(ties="first seen"),
    "ties were broken by taking the largest pair; the rule is the smallest pair (compare the "
    "first ids, then the second ids)": dict(ties="largest"),
    "you counted pairs across word boundaries (the last token of one word with the first of "
    "the next); a merge never joins two words, so count pairs inside each word only":
        dict(across_words=True),
    "you counted each pair once per word; count every occurrence ([a, a, a] holds (a, a) "
    "twice)": dict(once_per_word=True),
}


def _merge_step_cases() -> list[tuple[str, list[list[int]]]]:
    rng = random.Random(7)
    cases = [
        ("overlapping pairs", [[1, 1, 1], [1, 1, 1, 1], [2, 3], [4, 1, 1, 1, 5]]),
        ("a tie", [[3, 4], [1, 2], [7, 8], [5, 6], [9]]),
        ("pairs at word boundaries", [[1, 2], [3, 1], [2, 4], [3, 1], [2, 5]]),
        ("repeated pairs in one word", [[1, 1, 1, 1], [2, 3], [2, 3]]),
    ]
    for i in range(4):
        words = [[rng.randint(0, 5) for _ in range(rng.randint(1, 7))] for _ in range(12)]
        cases.append((f"random words #{i + 1}", words))
    return cases


def _normalise_step(out):
    """(pair, words) as (tuple of ints, list of lists of ints), or None if it is not that."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        return None
    pair, words = out
    try:
        pair = tuple(int(t) for t in pair)
        words = [[int(t) for t in w] for w in words]
    except (TypeError, ValueError):
        return None
    return (pair, words) if len(pair) == 2 else None


def check_bpe_merge_step(fn: Callable) -> CheckResult:
    """``fn(words, new_id)`` -> ``(pair, merged_words)``: count the adjacent pairs inside each
    word, take the most frequent (ties: the smallest pair), replace it left to right by
    ``new_id``."""

    def trial(fn):
        for label, words in _merge_step_cases():
            new_id = 99
            before = [list(w) for w in words]
            out = fn(words, new_id)
            if words != before:
                return "your function changed the words it was given; build new lists"
            got = _normalise_step(out)
            if got is None:
                return ("return a pair (pair, merged_words): pair a tuple of two ids, "
                        "merged_words a list of lists of ids")
            expected = _merge_step(words, new_id)
            expected = (tuple(expected[0]), expected[1])
            if got == expected:
                continue
            for diagnosis, how in MERGE_STEP_MISTAKES.items():
                wrong = _merge_step(words, new_id, **how)
                if got == (tuple(wrong[0]), wrong[1]):
                    return f"{diagnosis} (case: {label})"
            if got[0] != expected[0]:
                counts = _pair_counts(words)
                return (f"on {label} {words} you chose the pair {got[0]}, seen "
                        f"{counts.get(got[0], 0)} times inside words; the most frequent is "
                        f"{expected[0]}, seen {counts[expected[0]]} times")
            return (f"the pair {got[0]} is right, but the merged words differ on {label}: "
                    f"got {got[1]}, expected {expected[1]}")
        return None

    return grade("bpe_merge_step", fn, trial,
                 hint="count zip(w, w[1:]) over each word, take min(counts, key=lambda p: "
                      "(-counts[p], p)), then rebuild each word left to right, writing new_id "
                      "and skipping two tokens wherever the pair starts",
                 success="the most frequent pair (ties: smallest) counted inside words, merged "
                         "left to right without overlaps, on 8 cases")


# ---------------------------------------------------------------- bytes -> printable characters

def check_bytes_to_unicode(fn: Callable) -> CheckResult:
    """``fn()`` -> {byte: character} for all 256 bytes, GPT-2's (and Qwen2.5's) table."""

    def trial(fn):
        table = fn()
        if not isinstance(table, dict):
            return f"return a dict {{byte: character}}, got {type(table).__name__}"
        expected = bytes_to_unicode()
        if sorted(table) != list(range(256)):
            return (f"the keys must be the 256 bytes 0..255 (as ints); got {len(table)} keys"
                    + ("" if all(isinstance(k, int) for k in table) else ", not all ints"))
        if not all(isinstance(v, str) and len(v) == 1 for v in table.values()):
            return "each byte must map to a single character (a str of length 1)"
        if table == expected:
            return None
        ascii_only = set(range(33, 127))
        latin1_all = ascii_only | set(range(161, 256))
        mistakes = {
            "every byte maps to chr(b): bytes 0-32, 127-160 and 173 are control characters, "
            "whitespace or invisible, so a vocabulary written with them cannot be read or "
            "split safely; move those 68 bytes to chr(256), chr(257), ...":
                {b: chr(b) for b in range(256)},
            "the moved bytes went to chr(256 + b); the n-th unprintable byte (n = 0, 1, 2, "
            "...) goes to chr(256 + n), so a space (the 33rd) is chr(288) = 'Ġ'":
                {b: (v if ord(v) == b else chr(256 + b)) for b, v in expected.items()},
            "only ASCII ! to ~ kept its own character; Latin-1's printable ¡ to ¬ and ® to ÿ "
            "keep theirs too": byte_table(ascii_only),
            "byte 173 (0xAD, the soft hyphen) kept its character, but it is invisible: it is "
            "one of the moved bytes (the printable ranges are ! to ~, ¡ to ¬, ® to ÿ)":
                byte_table(latin1_all),
        }
        for diagnosis, wrong in mistakes.items():
            if table == wrong:
                return diagnosis
        if len(set(table.values())) < 256:
            return "two bytes map to the same character, so the mapping cannot be reversed"
        wrong_bytes = [b for b in range(256) if table[b] != expected[b]]
        b = wrong_bytes[0]
        return (f"{len(wrong_bytes)} bytes map to the wrong character, e.g. byte {b} -> "
                f"{table[b]!r} (U+{ord(table[b]):04X}), expected {expected[b]!r} "
                f"(U+{ord(expected[b]):04X})")

    return grade("bytes_to_unicode", fn, trial,
                 hint="keep chr(b) for the printable bytes ! to ~, ¡ to ¬ and ® to ÿ; give the "
                      "others, in increasing order, chr(256), chr(257), ...",
                 success="all 256 bytes map to GPT-2's printable characters (space -> 'Ġ', "
                         "newline -> 'Ċ')")


# ---------------------------------------------------------------- tokens per character

TOKENS_PER_CHAR_TEXTS = [
    "To be, or not to be, that is the question.",
    "Qwen2.5 counts 151,643 regular tokens; a byte-level BPE never needs <unk>.",
    "Größe, café, naïve: one character, two bytes.",
    "通义千问 — 世界 🙂",
    "def area(r):\n    return 3.14159 * r ** 2\n",
]


def _grader_tokenizer():
    """A small byte-level BPE (the course recipe, 300 tokens, trained on the texts above) that
    appends <|endoftext|> to every encoding, as many pretraining tokenizers do."""
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    from ..data import train_course_tokenizer
    from ..tokenizer import ENDOFTEXT

    backend = train_course_tokenizer(TOKENS_PER_CHAR_TEXTS * 3, vocab_size=300)
    eos = backend.token_to_id(ENDOFTEXT)
    backend.post_processor = TemplateProcessing(single=f"$A {ENDOFTEXT}",
                                                special_tokens=[(ENDOFTEXT, eos)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=ENDOFTEXT)


def check_tokens_per_char(fn: Callable) -> CheckResult:
    """``fn(tok, texts)`` -> total tokens (no added special tokens) / total characters."""

    def trial(fn):
        tok = _grader_tokenizer()
        for texts in (TOKENS_PER_CHAR_TEXTS, TOKENS_PER_CHAR_TEXTS[2:4]):
            out = fn(tok, list(texts))
            try:
                value = float(out)
            except (TypeError, ValueError):
                return f"return a number (a float), got {type(out).__name__}"
            expected = tokens_per_char(tok, texts)
            if abs(value - expected) <= 1e-9 * expected:
                continue
            plain = [len(ids) for ids in tok(list(texts), add_special_tokens=False)["input_ids"]]
            with_special = [n + 1 for n in plain]
            chars = [len(t) for t in texts]
            nbytes = [len(t.encode("utf-8")) for t in texts]
            mistakes = {
                "you divided by bytes (len(text.encode())), not characters (len(text)): "
                "'é' is 2 bytes and '🙂' 4, but each is one character":
                    sum(plain) / sum(nbytes),
                "you counted the special token the tokenizer appends (<|endoftext|>); encode "
                "with add_special_tokens=False to count the text's own tokens":
                    sum(with_special) / sum(chars),
                "you counted bytes instead of characters, and the appended special token too":
                    sum(with_special) / sum(nbytes),
                "you averaged the per-text ratios; divide the total tokens by the total "
                "characters, so that long texts weigh more":
                    sum(n / c for n, c in zip(plain, chars, strict=True)) / len(texts),
                "this is characters per token; the question asks tokens per character "
                "(tokens / characters)": sum(chars) / sum(plain),
            }
            for diagnosis, wrong in mistakes.items():
                if abs(value - wrong) <= 1e-9 * abs(wrong):
                    return diagnosis
            return f"got {value:.6f} tokens per character, expected {expected:.6f}"
        return None

    return grade("tokens_per_char", fn, trial,
                 hint="sum the lengths of tok(texts, add_special_tokens=False)['input_ids'] and "
                      "divide by the sum of len(text)",
                 success="total tokens / total characters, without added special tokens, on "
                         "English, accents, Chinese, emoji and code")
