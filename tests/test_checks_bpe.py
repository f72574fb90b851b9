"""Chapter 07's graders: they pass a right answer, name the typical wrong ones, and say
"not attempted" for the stub a learner starts from."""

from __future__ import annotations

from collections import Counter

import pytest

from qwenlab import checks
from qwenlab.tokenizer import bytes_to_unicode


def stub(*args):
    raise NotImplementedError("write this function")


# ---------------------------------------------------------------- one BPE merge step

def merge_step(words, new_id, ties="smallest", across=False, once=False, step=2, first=False):
    """A configurable merge step: the right one by default, each keyword one known mistake."""
    counts = Counter()
    for word in ([[t for w in words for t in w]] if across else words):
        pairs = list(zip(word, word[1:]))
        counts.update(set(pairs) if once else pairs)
    if ties == "first seen":
        pair = max(counts, key=counts.get)
    elif ties == "largest":
        pair = max(counts, key=lambda p: (counts[p], p))
    else:
        pair = min(counts, key=lambda p: (-counts[p], p))
    merged = []
    for w in words:
        out, i = [], 0
        while i < len(w):
            if i + 1 < len(w) and (w[i], w[i + 1]) == pair:
                out.append(new_id)
                i += step
                if first:
                    out += w[i:]
                    break
            else:
                out.append(w[i])
                i += 1
        merged.append(out)
    return pair, merged


def merge_from_the_right(words, new_id):
    pair, _ = merge_step(words, new_id)
    merged = []
    for w in words:
        out, i = [], len(w) - 1
        while i >= 0:
            if i >= 1 and (w[i - 1], w[i]) == pair:
                out.append(new_id)
                i -= 2
            else:
                out.append(w[i])
                i -= 1
        merged.append(out[::-1])
    return pair, merged


def merge_step_in_place(words, new_id):
    pair, merged = merge_step(words, new_id)
    words[:] = merged
    return pair, merged


def test_merge_step_grader_passes_a_right_answer(capsys):
    assert checks.check_bpe_merge_step(merge_step).passed
    assert "✓ bpe_merge_step" in capsys.readouterr().out


def test_merge_step_grader_accepts_tuples_for_words_and_a_list_for_the_pair():
    def as_tuples(words, new_id):
        pair, merged = merge_step(words, new_id)
        return list(pair), [tuple(w) for w in merged]

    assert checks.check_bpe_merge_step(as_tuples).passed


@pytest.mark.parametrize("wrong,named", [
    (lambda w, n: merge_step(w, n, step=1), "overlapping pairs were both merged"),
    (merge_from_the_right, "merged from the right"),
    (lambda w, n: merge_step(w, n, first=True), "only the first occurrence"),
    (lambda w, n: merge_step(w, n, ties="first seen"), "ties were broken by first occurrence"),
    (lambda w, n: merge_step(w, n, ties="largest"), "ties were broken by taking the largest"),
    (lambda w, n: merge_step(w, n, across=True), "across word boundaries"),
    (lambda w, n: merge_step(w, n, once=True), "once per word"),
    (merge_step_in_place, "changed the words"),
    (lambda w, n: merge_step(w, n)[1], "return a pair"),
])
def test_merge_step_grader_names_the_mistake(wrong, named):
    result = checks.check_bpe_merge_step(wrong)
    assert result.status == "fail" and named in result.message, result.message


def test_merge_step_grader_explains_an_unknown_wrong_pair():
    result = checks.check_bpe_merge_step(lambda w, n: ((0, 0), w))
    assert result.status == "fail" and "the most frequent is" in result.message


def test_merge_step_grader_says_not_attempted_for_the_stub(capsys):
    assert checks.check_bpe_merge_step(stub).status == "not attempted"
    assert "○ bpe_merge_step: not attempted yet. Hint:" in capsys.readouterr().out


# ---------------------------------------------------------------- bytes_to_unicode

def table_with(printable):
    table, moved = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b], moved = chr(256 + moved), moved + 1
    return table


ASCII = set(range(33, 127))


def test_bytes_to_unicode_grader_passes_the_library_and_transformers_table():
    from transformers.convert_slow_tokenizer import bytes_to_unicode as transformers_table

    assert checks.check_bytes_to_unicode(bytes_to_unicode).passed
    assert checks.check_bytes_to_unicode(transformers_table).passed


@pytest.mark.parametrize("wrong,named", [
    (lambda: {b: chr(b) for b in range(256)}, "every byte maps to chr(b)"),
    (lambda: {b: (v if ord(v) == b else chr(256 + b)) for b, v in bytes_to_unicode().items()},
     "chr(256 + b)"),
    (lambda: table_with(ASCII), "only ASCII"),
    (lambda: table_with(ASCII | set(range(161, 256))), "soft hyphen"),
    (lambda: {chr(b): v for b, v in bytes_to_unicode().items()}, "the keys must be"),
    (lambda: list(bytes_to_unicode().values()), "return a dict"),
    (lambda: {**bytes_to_unicode(), 0: "Ġ"}, "same character"),
])
def test_bytes_to_unicode_grader_names_the_mistake(wrong, named):
    result = checks.check_bytes_to_unicode(wrong)
    assert result.status == "fail" and named in result.message, result.message


def test_bytes_to_unicode_grader_says_not_attempted_for_the_stub():
    assert checks.check_bytes_to_unicode(stub).status == "not attempted"


# ---------------------------------------------------------------- tokens per character

def text_ids(tok, texts):
    return tok(texts, add_special_tokens=False)["input_ids"]


def tokens_per_char(tok, texts):
    return sum(len(ids) for ids in text_ids(tok, texts)) / sum(len(t) for t in texts)


def test_tokens_per_char_grader_passes_a_right_answer(capsys):
    assert checks.check_tokens_per_char(tokens_per_char).passed
    # one text at a time with encode() is the same count
    assert checks.check_tokens_per_char(
        lambda tok, texts: sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
        / sum(map(len, texts))).passed
    assert "✓ tokens_per_char" in capsys.readouterr().out


@pytest.mark.parametrize("wrong,named", [
    (lambda tok, texts: sum(map(len, text_ids(tok, texts)))
     / sum(len(t.encode()) for t in texts), "divided by bytes"),
    (lambda tok, texts: sum(len(ids) for ids in tok(texts)["input_ids"]) / sum(map(len, texts)),
     "special token"),
    (lambda tok, texts: sum(len(ids) for ids in tok(texts)["input_ids"])
     / sum(len(t.encode()) for t in texts), "bytes instead of characters, and the appended"),
    (lambda tok, texts: sum(len(i) / len(t) for i, t in zip(text_ids(tok, texts), texts))
     / len(texts), "averaged the per-text ratios"),
    (lambda tok, texts: 1 / tokens_per_char(tok, texts), "characters per token"),
    (lambda tok, texts: str(tokens_per_char(tok, texts)) + " tokens", "return a number"),
    (lambda tok, texts: tokens_per_char(tok, texts) * 1.1, "expected"),
])
def test_tokens_per_char_grader_names_the_mistake(wrong, named):
    result = checks.check_tokens_per_char(wrong)
    assert result.status == "fail" and named in result.message, result.message


def test_tokens_per_char_grader_says_not_attempted_for_the_stub():
    assert checks.check_tokens_per_char(stub).status == "not attempted"
