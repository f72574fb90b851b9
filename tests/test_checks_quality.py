"""Chapter 08's graders: they pass a right answer, name the typical wrong ones, and say
"not attempted" for the stub a learner starts from."""

from __future__ import annotations

import pytest
import torch

from qwenlab import checks
from qwenlab.quality import (
    MERSENNE_PRIME,
    content_lines,
    gated_quality_score,
    heuristic_filter,
    minhash_signature,
    normalize,
    shingles,
    stable_hash,
    toy_quality_score,
)


def stub(*args):
    raise NotImplementedError("write this function")


# ---------------------------------------------------------------- toy score

def toy(text, short_rule=True, chars=False, cap=True, dup_direct=False, blank=False,
        lower=False):
    ws = text.split()
    if not ws or (short_rule and len(text) < 20):
        return 0.1
    if lower:
        ws = [w.lower() for w in ws]
    lines = text.splitlines() if blank else content_lines(text)
    length = (len(text) if chars else len(ws)) / 500
    dup = 1 - len(set(lines)) / len(lines)
    q = 0.4 * len(set(ws)) / len(ws) + 0.3 * (min(length, 1) if cap else length) \
        + 0.3 * (dup if dup_direct else 1 - dup)
    return min(max(q, 0.0), 1.0)


def test_toy_score_grader_passes_the_library_and_a_rewrite(capsys):
    assert checks.check_toy_quality_score(toy_quality_score).passed
    assert checks.check_toy_quality_score(toy).passed
    assert "✓ toy_quality_score" in capsys.readouterr().out


@pytest.mark.parametrize("wrong,named", [
    (lambda t: toy(t, short_rule=False), "0.1 rule is missing"),
    (lambda t: toy(t, chars=True), "counts characters"),
    (lambda t: toy(t, cap=False), "not capped"),
    (lambda t: toy(t, dup_direct=True), "used as it is"),
    (lambda t: toy(t, blank=True), "blank lines were counted"),
    (lambda t: toy(t, lower=True), "lowercased"),
    (lambda t: 0.5, "expected"),
])
def test_toy_score_grader_names_the_mistake(wrong, named):
    result = checks.check_toy_quality_score(wrong)
    assert result.status == "fail" and named in result.message


def test_toy_score_grader_says_not_attempted_for_the_stub(capsys):
    assert checks.check_toy_quality_score(stub).status == "not attempted"
    assert "○ toy_quality_score: not attempted yet. Hint:" in capsys.readouterr().out


# ---------------------------------------------------------------- gated score (the fix)

def test_gated_score_grader_passes_the_library_and_a_rewrite():
    assert checks.check_gated_quality_score(gated_quality_score).passed
    assert checks.check_gated_quality_score(
        lambda t: 0.0 if heuristic_filter(t).failed else toy_quality_score(t)).passed


@pytest.mark.parametrize("wrong,named", [
    (lambda t: 0.0 if heuristic_filter(t).passed else toy_quality_score(t), "inverted"),
    (toy_quality_score, "no gate"),
    (lambda t: toy_quality_score(t) if any(r.passed for r in heuristic_filter(t).results)
     else 0.0, "*any* filter"),
    (lambda t: 1.0 if heuristic_filter(t).passed else 0.0, "gets 1.0"),
    (lambda t: toy_quality_score(t) if heuristic_filter(t).passed else 0.1, "gets 0.1"),
])
def test_gated_score_grader_names_the_mistake(wrong, named):
    result = checks.check_gated_quality_score(wrong)
    assert result.status == "fail" and named in result.message


def test_gated_score_grader_says_not_attempted_for_the_stub():
    assert checks.check_gated_quality_score(stub).status == "not attempted"


# ---------------------------------------------------------------- MinHash signature

def signature(text, a, b, n, *, unit="word", reduce="min", mod=True,
              same_hash=False, raw_split=False):
    if raw_split:
        ws = text.split()
        sh = {" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1)}
    else:
        sh = shingles(text, n, unit)
    p = MERSENNE_PRIME
    x = torch.tensor([stable_hash(s) % p for s in sh])
    if same_hash:
        a, b = a[:1].expand_as(a), b[:1].expand_as(b)
    h = a[:, None] * x[None, :] + b[:, None]                 # (k, S)
    h = h % p if mod else h
    return h.amin(dim=1) if reduce == "min" else h.amax(dim=1)


def test_minhash_grader_passes_the_library_and_a_loop():
    assert checks.check_minhash_signature(
        lambda text, a, b, n: minhash_signature(shingles(text, n), a, b)).passed

    def loop(text, a, b, n):   # the definition, one slot and one shingle at a time
        ws = normalize(text).split()
        xs = [stable_hash(" ".join(ws[i:i + n])) % MERSENNE_PRIME for i in range(len(ws) - n + 1)]
        return torch.tensor([min((ai * x + bi) % MERSENNE_PRIME for x in xs)
                             for ai, bi in zip(a.tolist(), b.tolist())])

    assert checks.check_minhash_signature(loop).passed


@pytest.mark.parametrize("wrong,named", [
    (lambda t, a, b, n: signature(t, a, b, n, same_hash=True), "one hash function"),
    (lambda t, a, b, n: signature(t, a, b, n, reduce="max"), "max instead of the min"),
    (lambda t, a, b, n: signature(t, a, b, n, unit="char"), "shingled characters"),
    (lambda t, a, b, n: signature(t, a, b, n, raw_split=True), "not normalised"),
    (lambda t, a, b, n: signature(t, a, b, n, mod=False), "mod p is missing"),
    (lambda t, a, b, n: signature(t, a, b, n).tolist(), "torch.Tensor"),
])
def test_minhash_grader_names_the_mistake(wrong, named):
    result = checks.check_minhash_signature(wrong)
    assert result.status == "fail" and named in result.message


def test_minhash_grader_says_not_attempted_for_the_stub():
    assert checks.check_minhash_signature(stub).status == "not attempted"
