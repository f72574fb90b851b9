"""The chapter 11 graders pass right answers, name typical mistakes, and spot untouched stubs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwenlab import checks, reward


def stub(*args):
    raise NotImplementedError("write this function")


# --------------------------------------------------------------------------- Bradley-Terry

@pytest.mark.parametrize("right", [
    reward.bradley_terry_loss,
    lambda c, r: F.softplus(r - c).mean(),                 # -log σ(x) = softplus(-x)
    # the stable softplus by hand: log(1 + e^x) = log1p(e^-|x|) + max(x, 0), x = r_r - r_c
    lambda c, r: (torch.log1p(torch.exp(-(r - c).abs())) + (r - c).clamp(min=0)).mean(),
])
def test_bradley_terry_grader_passes_right_answers(right):
    assert checks.check_bradley_terry_loss(right).passed


@pytest.mark.parametrize("wrong,says", [
    (lambda c, r: -F.logsigmoid(r - c).mean(), "the preference is reversed"),
    (lambda c, r: F.softplus(c - r).mean(), "the preference is reversed"),
    (lambda c, r: F.logsigmoid(c - r).mean(), "the sign is missing"),
    (lambda c, r: -F.logsigmoid(c - r).sum(), "you summed over the pairs"),
    (lambda c, r: -F.logsigmoid(c - r), "one loss per pair"),
    (lambda c, r: -torch.sigmoid(c - r).mean(), "the log is missing"),
    (lambda c, r: -F.logsigmoid((c - r).mean()), "averaged the differences"),
    (lambda c, r: -torch.log(torch.sigmoid(c - r)).mean(), "underflows"),
])
def test_bradley_terry_grader_names_the_mistake(wrong, says):
    result = checks.check_bradley_terry_loss(wrong)
    assert not result.passed
    assert says in result.message


def test_bradley_terry_grader_reports_a_stub_as_not_attempted():
    assert checks.check_bradley_terry_loss(stub).status == "not attempted"


def test_bradley_terry_grader_reports_a_crash_without_raising():
    result = checks.check_bradley_terry_loss(lambda c, r: c @ torch.ones(3))
    assert result.status == "fail" and "raised" in result.message


# --------------------------------------------------------------------------- last token

@pytest.mark.parametrize("right", [
    reward.last_token_index,
    lambda m: m.shape[1] - 1 - m.flip(-1).argmax(-1),
    lambda m: torch.tensor([max(i for i, v in enumerate(row) if v) for row in m.tolist()]),
])
def test_last_token_index_grader_passes_right_answers(right):
    assert checks.check_last_token_index(right).passed


@pytest.mark.parametrize("wrong,says", [
    (lambda m: m.sum(-1) - 1, "right for right padding only"),
    (lambda m: m.sum(-1), "off by one: mask.sum(-1) is the number of real tokens"),
    (lambda m: torch.full((m.shape[0],), m.shape[1] - 1), "always return the last column"),
    (lambda m: m.argmax(-1), "the first real token"),
    (lambda m: reward.last_token_index(m) + 1, "one column past the last real token"),
    (lambda m: reward.last_token_index(m).float(), "must be integers"),
])
def test_last_token_index_grader_names_the_mistake(wrong, says):
    result = checks.check_last_token_index(wrong)
    assert not result.passed
    assert says in result.message


def test_last_token_index_grader_reports_a_stub_as_not_attempted():
    assert checks.check_last_token_index(stub).status == "not attempted"
