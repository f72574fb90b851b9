"""The chapter 09 graders pass right answers, name typical mistakes, and spot untouched stubs."""

from __future__ import annotations

import math

import pytest
import torch

from qwenlab import checks
from qwenlab.train import cosine_lr


def stub(*args):
    raise NotImplementedError("write this function")


# --------------------------------------------------------------------------- cosine schedule

def schedule(step, max_steps, warmup, lr, min_lr, *, warm=True, start_at_zero=False,
             span="right", floor=True, flat_after=True):
    """A right schedule, with switches that reproduce the typical mistakes."""
    low = min_lr if floor else 0.0
    if warm and step < warmup:
        return lr * (step if start_at_zero else step + 1) / warmup
    if flat_after and step >= max_steps:
        return min_lr
    start, width = {"right": (warmup, max_steps - warmup), "from_zero": (0, max_steps),
                    "too_long": (warmup, max_steps)}[span]
    progress = (step - start) / width
    return low + (lr - low) * 0.5 * (1 + math.cos(math.pi * progress))


def test_cosine_lr_grader_passes_a_right_answer():
    assert checks.check_cosine_lr(schedule).passed
    assert checks.check_cosine_lr(cosine_lr).passed


def test_cosine_lr_grader_accepts_a_tensor_valued_answer():
    assert checks.check_cosine_lr(lambda *a: torch.tensor(cosine_lr(*a))).passed


@pytest.mark.parametrize("wrong,says", [
    (lambda s, m, w, lr, lo: schedule(s, m, w, lr, lo, warm=False, span="from_zero"),
     "there is no warmup"),
    (lambda s, m, w, lr, lo: lr if s < w else schedule(s, m, w, lr, lo),
     "the warmup is missing"),
    (lambda s, m, w, lr, lo: schedule(s, m, w, lr, lo, start_at_zero=True),
     "the warmup starts at 0"),
    (lambda s, m, w, lr, lo: schedule(s, m, w, lr, lo, span="from_zero"),
     "You used step / max_steps"),
    (lambda s, m, w, lr, lo: schedule(s, m, w, lr, lo, span="too_long"),
     "instead of (max_steps - warmup)"),
    (lambda s, m, w, lr, lo: schedule(s, m, w, lr, lo, floor=False),
     "ends at 0 instead of min_lr"),
    (lambda s, m, w, lr, lo: schedule(s, m, w, lr, lo, flat_after=False),
     "after it the lr must stay at min_lr"),
])
def test_cosine_lr_grader_names_the_mistake(wrong, says):
    result = checks.check_cosine_lr(wrong)
    assert not result.passed
    assert says in result.message


def test_cosine_lr_grader_points_at_the_first_wrong_step_of_an_unknown_mistake():
    result = checks.check_cosine_lr(lambda s, m, w, lr, lo: 0.9 * cosine_lr(s, m, w, lr, lo))
    assert not result.passed
    assert "at step 0 you return" in result.message


def test_cosine_lr_grader_reports_a_stub_as_not_attempted():
    result = checks.check_cosine_lr(stub)
    assert result.status == "not attempted"
    assert "(step - warmup) / (max_steps - warmup)" in result.message


# --------------------------------------------------------------------------- clipping

def clip(grads, max_norm):
    total = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    factor = min(1.0, max_norm / (total.item() + 1e-6))
    return [g * factor for g in grads]


def clip_in_place_with_torch(grads, max_norm):
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g
    torch.nn.utils.clip_grad_norm_(params, max_norm)   # scales the given tensors in place


def test_clip_grad_norm_grader_passes_a_right_answer():
    assert checks.check_clip_grad_norm(clip).passed


def test_clip_grad_norm_grader_passes_torchs_in_place_clipping():
    assert checks.check_clip_grad_norm(clip_in_place_with_torch).passed


def test_clip_grad_norm_grader_passes_an_answer_without_the_epsilon():
    def no_eps(grads, max_norm):
        total = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        return [g * min(1.0, max_norm / total.item()) for g in grads]

    assert checks.check_clip_grad_norm(no_eps).passed


@pytest.mark.parametrize("wrong,says", [
    (lambda grads, m: [g * min(1.0, m / g.norm().item()) for g in grads],
     "per-parameter clipping"),
    (lambda grads, m: grads, "clipping or scaling the loss does not bound them"),
    (lambda grads, m: [g.clamp(-m, m) for g in grads], "clip_grad_value_"),
    (lambda grads, m: [g * min(1.0, m / sum(g.norm().item() for g in grads)) for g in grads],
     "not the sum of their norms"),
    (lambda grads, m: [g * min(1.0, m / sum(g.pow(2).sum().item() for g in grads))
                       for g in grads],
     "the square root is missing"),
    (lambda grads, m: [g * (m / torch.sqrt(sum(x.pow(2).sum() for x in grads)))
                       for g in grads],
     "clipping only ever shrinks"),
])
def test_clip_grad_norm_grader_names_the_mistake(wrong, says):
    result = checks.check_clip_grad_norm(wrong)
    assert not result.passed
    assert says in result.message


def test_clip_grad_norm_grader_reports_a_stub_as_not_attempted():
    result = checks.check_clip_grad_norm(stub)
    assert result.status == "not attempted"
    assert "global_norm" in result.message
