"""The chapter 02 graders pass right answers, name typical mistakes, and spot untouched stubs."""

from __future__ import annotations

import pytest
import torch

from qwenlab import checks


def stub(*args):
    raise NotImplementedError("write this function")


def rms_norm(x, weight, eps, *, upcast=True, weight_in_fp32=False):
    """A right RMSNorm (Qwen's recipe), with switches that reproduce the dtype mistakes."""
    input_dtype = x.dtype
    xf = x.to(torch.float32) if upcast else x
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if weight_in_fp32:
        return (weight.float() * normed).to(input_dtype)
    return weight * normed.to(input_dtype)


# --------------------------------------------------------------------------- float32

def test_rms_norm_grader_passes_a_right_answer():
    assert checks.check_rms_norm(rms_norm).passed
    assert checks.check_rms_norm(
        lambda x, w, eps: w * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)).passed


def test_rms_norm_grader_passes_torchs_fused_rms_norm():
    assert checks.check_rms_norm(
        lambda x, w, eps: torch.nn.functional.rms_norm(x, (x.shape[-1],), w, eps)).passed


@pytest.mark.parametrize("wrong,says", [
    (lambda x, w, eps: w * x / x.pow(2).mean(-1, keepdim=True).sqrt(), "eps is missing"),
    (lambda x, w, eps: w * x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps),
     "eps is added outside the square root"),
    (lambda x, w, eps: w * x / (x.pow(2).mean(-1, keepdim=True) + eps),
     "the square root is missing"),
    (lambda x, w, eps: torch.nn.functional.layer_norm(x, (x.shape[-1],), w, None, eps),
     "that is LayerNorm"),
    (lambda x, w, eps: w * x * torch.rsqrt(x.var(-1, keepdim=True, unbiased=False) + eps),
     "LayerNorm's statistic"),
    (lambda x, w, eps: w * x * torch.rsqrt(x.pow(2).mean() + eps), "over the whole tensor"),
    (lambda x, w, eps: w * x * torch.rsqrt(x.pow(2).mean(-2, keepdim=True) + eps),
     "over dim -2 (the tokens)"),
    (lambda x, w, eps: w * x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps),
     "the sum of squares"),
    (lambda x, w, eps: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps),
     "the weight is missing"),
])
def test_rms_norm_grader_names_the_mistake(wrong, says):
    result = checks.check_rms_norm(wrong)
    assert not result.passed
    assert says in result.message


def test_rms_norm_grader_reports_a_crash_as_a_failure():
    result = checks.check_rms_norm(lambda x, w, eps: w * x * x.pow(2).mean(-1).rsqrt())
    assert result.status == "fail"
    assert "raised RuntimeError" in result.message


def test_rms_norm_grader_reports_a_stub_as_not_attempted():
    result = checks.check_rms_norm(stub)
    assert result.status == "not attempted"
    assert "keepdim=True" in result.message


# --------------------------------------------------------------------------- bf16 / fp16

def test_rms_norm_bf16_grader_passes_qwens_recipe():
    assert checks.check_rms_norm_bf16(rms_norm).passed


@pytest.mark.parametrize("wrong,says", [
    (lambda x, w, eps: rms_norm(x, w, eps, upcast=False), "without upcasting"),
    (lambda x, w, eps: rms_norm(x, w, eps, weight_in_fp32=True),
     "multiplied by the weight in float32"),
    (lambda x, w, eps: w.float() * rms_norm(x.float(), w.float(), eps),
     "returns torch.float32"),
    (lambda x, w, eps: w * (x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
                            .to(x.dtype)),
     "the scaling is done in"),
])
def test_rms_norm_bf16_grader_names_the_mistake(wrong, says):
    result = checks.check_rms_norm_bf16(wrong)
    assert not result.passed
    assert says in result.message


def test_rms_norm_bf16_grader_catches_float16_overflow_in_an_fp32_only_upcast():
    def upcasts_bf16_only(x, w, eps):  # computes float16 natively: x^2 overflows
        return rms_norm(x, w, eps, upcast=x.dtype == torch.bfloat16)

    result = checks.check_rms_norm_bf16(upcasts_bf16_only)
    assert not result.passed
    assert "overflows float16" in result.message


def test_rms_norm_bf16_grader_reports_a_stub_as_not_attempted():
    result = checks.check_rms_norm_bf16(stub)
    assert result.status == "not attempted"
    assert "input_dtype" in result.message
