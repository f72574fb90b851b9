"""The chapter 03 graders pass right answers, name typical mistakes, and spot untouched stubs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwenlab import checks


def stub(*args):
    raise NotImplementedError("write this function")


def swiglu(x, gate_w, up_w, down_w, act=F.silu, swap=False):
    """A right SwiGLU, with switches that reproduce the typical mistakes."""
    gate, up = x @ gate_w.T, x @ up_w.T
    if swap:
        gate, up = up, gate
    return (act(gate) * up) @ down_w.T


# --------------------------------------------------------------------------- swiglu

def test_swiglu_grader_passes_a_right_answer():
    assert checks.check_swiglu(swiglu).passed
    assert checks.check_swiglu(
        lambda x, g, u, d: F.linear(F.silu(F.linear(x, g)) * F.linear(x, u), d)).passed


@pytest.mark.parametrize("wrong,says", [
    (lambda x, g, u, d: swiglu(x, g, u, d, swap=True), "gate and up are swapped"),
    (lambda x, g, u, d: swiglu(x, g, u, d, act=F.relu), "ReLU"),
    (lambda x, g, u, d: swiglu(x, g, u, d, act=F.gelu), "GELU"),
    (lambda x, g, u, d: swiglu(x, g, u, d, act=torch.sigmoid), "the original GLU"),
    (lambda x, g, u, d: F.silu(x @ u.T) @ d.T, "the gate is missing"),
    (lambda x, g, u, d: F.silu(x @ g.T) @ d.T, "the up branch is missing"),
    (lambda x, g, u, d: (F.silu(x @ g.T) + x @ u.T) @ d.T, "added, not multiplied"),
])
def test_swiglu_grader_names_the_mistake(wrong, says):
    result = checks.check_swiglu(wrong)
    assert not result.passed
    assert says in result.message


def test_swiglu_grader_reports_untransposed_weights_as_a_crash():
    result = checks.check_swiglu(lambda x, g, u, d: (F.silu(x @ g) * (x @ u)) @ d)
    assert result.status == "fail"
    assert "raised RuntimeError" in result.message


def test_swiglu_grader_reports_a_stub_as_not_attempted():
    result = checks.check_swiglu(stub)
    assert result.status == "not attempted"
    assert "F.linear" in result.message


# --------------------------------------------------------------------------- parameter count

def test_mlp_params_grader_passes_a_right_answer():
    assert checks.check_mlp_params(lambda h, i: 3 * h * i).passed
    assert checks.check_mlp_params(lambda h, i: torch.tensor(3 * h * i)).passed


@pytest.mark.parametrize("wrong,says", [
    (lambda h, i: 2 * h * i, "two matrices"),
    (lambda h, i: 3 * h * i + 2 * i + h, "you counted biases"),
    (lambda h, i: 8 * h * h, "classic 4x MLP"),
    (lambda h, i: h * i, "one matrix"),
])
def test_mlp_params_grader_names_the_mistake(wrong, says):
    result = checks.check_mlp_params(wrong)
    assert not result.passed
    assert says in result.message


def test_mlp_params_grader_rejects_a_non_number():
    result = checks.check_mlp_params(lambda h, i: [h, i])
    assert not result.passed
    assert "should return a number" in result.message


def test_mlp_params_grader_reports_a_stub_as_not_attempted():
    result = checks.check_mlp_params(stub)
    assert result.status == "not attempted"
    assert "bias=False" in result.message


# --------------------------------------------------------------------------- matched size

@pytest.mark.parametrize("right", [
    lambda h, r: 2 * r * h / 3,
    lambda h, r: round(2 * r * h / 3),
    lambda h, r: 2 * r * h // 3,
])
def test_matched_size_grader_passes_exact_and_rounded_answers(right):
    assert checks.check_matched_intermediate_size(right).passed


@pytest.mark.parametrize("wrong,says", [
    (lambda h, r: r * h, "the classic MLP's own width"),
    (lambda h, r: 3 * r * h / 2, "the fraction is inverted"),
    (lambda h, r: 2 * r * h * h / 3, "a factor of h too many"),
    (lambda h, r: 2 * h / 3, "the ratio r is missing"),
    (lambda h, r: 256 * -(-(2 * r * h // 3) // 256), "hardware-friendly multiple"),
])
def test_matched_size_grader_names_the_mistake(wrong, says):
    result = checks.check_matched_intermediate_size(wrong)
    assert not result.passed
    assert says in result.message


def test_matched_size_grader_reports_a_stub_as_not_attempted():
    result = checks.check_matched_intermediate_size(stub)
    assert result.status == "not attempted"
    assert "solve for i" in result.message
