"""The chapter 13 graders pass right answers, name typical mistakes, and spot untouched stubs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwenlab import checks


def stub(*args):
    raise NotImplementedError("write this function")


def topk_routing(logits, k, norm, softmax_after=False, renorm=None, use_logits=False):
    """A right router, with switches that reproduce the typical mistakes."""
    renorm = norm if renorm is None else renorm
    if softmax_after:
        top, idx = torch.topk(logits, k, dim=-1)
        return F.softmax(top, dim=-1), idx
    probs = logits if use_logits else F.softmax(logits, dim=-1)
    weights, idx = torch.topk(probs, k, dim=-1)
    if renorm:
        weights = weights / weights.sum(-1, keepdim=True)
    return weights, idx


def balancing_loss(logits, k, counts=False, no_e=False, top1=False, p_from_weights=False):
    """A right load-balancing loss, with switches for the typical mistakes."""
    N, E = logits.shape
    probs = F.softmax(logits, dim=-1)
    weights, idx = torch.topk(probs, k, dim=-1)
    if top1:
        idx = idx[:, :1]
    routed = F.one_hot(idx, E).sum(1).float()
    f = routed.sum(0) if counts else routed.mean(0)
    if p_from_weights:
        P = (F.one_hot(idx, E).float() * weights[..., None]).sum(1).mean(0)
    else:
        P = probs.mean(0)
    return (f * P).sum() * (1 if no_e else E)


# --------------------------------------------------------------------------- top-k routing

def test_topk_routing_grader_passes_a_right_answer():
    assert checks.check_topk_routing(topk_routing).passed


def test_topk_routing_grader_accepts_the_experts_in_any_order():
    def reversed_order(logits, k, norm):
        w, i = topk_routing(logits, k, norm)
        return w.flip(-1), i.flip(-1)
    assert checks.check_topk_routing(reversed_order).passed


@pytest.mark.parametrize("wrong,says", [
    (lambda lg, k, n: topk_routing(lg, k, n, softmax_after=True), "top-k first, softmax after"),
    (lambda lg, k, n: topk_routing(lg, k, n, renorm=False), "not renormalised"),
    (lambda lg, k, n: topk_routing(lg, k, n, renorm=True), "renormalised although"),
    (lambda lg, k, n: topk_routing(lg, k, n, use_logits=True), "raw logits"),
    (lambda lg, k, n: (lambda w, i: (w, torch.topk(lg, k, largest=False).indices))(
        *topk_routing(lg, k, n)), "k smallest"),
])
def test_topk_routing_grader_names_the_mistake(wrong, says):
    result = checks.check_topk_routing(wrong)
    assert not result.passed
    assert says in result.message


def test_topk_routing_grader_spots_an_untouched_stub():
    assert checks.check_topk_routing(stub).status == "not attempted"


# --------------------------------------------------------------------------- balancing loss

def test_load_balancing_loss_grader_passes_a_right_answer():
    assert checks.check_load_balancing_loss(balancing_loss).passed
    assert checks.check_load_balancing_loss(lambda lg, k: balancing_loss(lg, k).item()).passed


@pytest.mark.parametrize("wrong,says", [
    (lambda lg, k: balancing_loss(lg, k, counts=True), "counts, not fractions"),
    (lambda lg, k: balancing_loss(lg, k, no_e=True), "factor num_experts is missing"),
    (lambda lg, k: balancing_loss(lg, k, top1=True), "first choice"),
    (lambda lg, k: balancing_loss(lg, k, p_from_weights=True), "only the top-k weights"),
    (lambda lg, k: balancing_loss(lg, k) / k, "divided f_e by k"),
])
def test_load_balancing_loss_grader_names_the_mistake(wrong, says):
    result = checks.check_load_balancing_loss(wrong)
    assert not result.passed
    assert says in result.message


def test_load_balancing_loss_grader_spots_an_untouched_stub():
    assert checks.check_load_balancing_loss(stub).status == "not attempted"
