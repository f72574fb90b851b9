"""Graders for the exercises of chapter 02: RMSNorm and why it runs in float32.

- ``check_rms_norm(fn)``: fn(x (..., C), weight (C,), eps) -> (..., C) in float32,
  ``weight * x / sqrt(mean(x^2 over the last dim) + eps)`` (``qwenlab.norm.RMSNorm``).
- ``check_rms_norm_bf16(fn)``: the same function given bfloat16 (and float16) tensors must
  return exactly what Qwen's recipe returns: upcast to float32, normalise, cast back to the
  input's dtype, then multiply by the weight.

Each trial runs the learner's function on seeded random inputs, compares it with the library,
and when it is wrong, recomputes the typical wrong answers to name the mistake.
"""

from __future__ import annotations

import torch

from ..norm import RMSNorm
from ._grading import compare, first_match, grade

__all__ = ["check_rms_norm", "check_rms_norm_bf16"]

EPS = 1e-6


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def reference_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``qwenlab.norm.RMSNorm`` with the given gain, as a function."""
    norm = RMSNorm(x.shape[-1], eps).to(weight.dtype)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


# --------------------------------------------------------------------------- float32

def _fp32_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """(2, 5, 16) activations with a non-zero mean (so LayerNorm's statistics differ from
    RMSNorm's), rows of very different scales, and one near-zero row (mean square 1e-10, far
    below eps = 1e-6), where eps decides the answer."""
    x = _randn(2, 5, 16, seed=0) + 0.7                       # (B, T, C), mean ≈ 0.7
    x = x * torch.tensor([0.3, 1.0, 4.0, 20.0, 1.0])[None, :, None]
    x[1, 4] = 1e-5 * _randn(16, seed=1)                      # a near-zero token vector
    weight = 1.0 + 0.3 * _randn(16, seed=2)
    return x, weight


def _fp32_mistakes(x, w, eps) -> dict[str, torch.Tensor]:
    ms = x.pow(2).mean(-1, keepdim=True)                     # (..., 1)
    centred = x - x.mean(-1, keepdim=True)
    var = centred.pow(2).mean(-1, keepdim=True)
    return {
        "eps is missing: x / sqrt(mean(x^2)) blows a near-zero vector up to unit RMS (its "
        "noise becomes signal); add eps inside the square root: sqrt(mean(x^2) + eps)":
            w * x / ms.sqrt(),
        "eps is added outside the square root, sqrt(mean(x^2)) + eps; Qwen adds it inside: "
        "rsqrt(mean(x^2) + eps). The two differ for vectors whose RMS is near sqrt(eps)":
            w * x / (ms.sqrt() + eps),
        "the square root is missing: you divided by mean(x^2) + eps, the mean square, instead "
        "of its root":
            w * x / (ms + eps),
        "you subtracted the mean (x - mean) and divided by the standard deviation: that is "
        "LayerNorm. RMSNorm neither centres x nor uses the variance, only mean(x^2)":
            w * centred * torch.rsqrt(var + eps),
        "you divided by the variance's root, sqrt(mean((x - mean)^2) + eps), LayerNorm's "
        "statistic; RMSNorm uses the mean of the squares, mean(x^2), with no centring":
            w * x * torch.rsqrt(var + eps),
        "the mean of squares runs over the whole tensor; RMSNorm normalises each token vector "
        "on its own: mean over the last dim, keepdim=True":
            w * x * torch.rsqrt(x.pow(2).mean() + eps),
        "the mean of squares runs over dim 0 (the batch); it must run over the last dim "
        "(the hidden channels of one token), with keepdim=True":
            w * x * torch.rsqrt(x.pow(2).mean(0, keepdim=True) + eps),
        "the mean of squares runs over dim -2 (the tokens); it must run over the last dim "
        "(the hidden channels of one token), with keepdim=True":
            w * x * torch.rsqrt(x.pow(2).mean(-2, keepdim=True) + eps),
        "you used the sum of squares, not their mean: divide by the number of channels "
        "(x.pow(2).mean(-1, keepdim=True))":
            w * x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps),
        "the weight is missing: multiply the normalised x by the learned gain `weight`":
            x * torch.rsqrt(ms + eps),
    }


def _rms_norm_trial(fn) -> str | None:
    x, w = _fp32_inputs()
    expected = reference_rms_norm(x, w, EPS)
    actual = fn(x.clone(), w.clone(), EPS)
    problem = compare(actual, expected, atol=1e-5, rtol=1e-5)
    if problem is None:
        return None
    return first_match(actual, _fp32_mistakes(x, w, EPS), atol=1e-5) or problem


def check_rms_norm(fn):
    """fn(x (..., C), weight (C,), eps) -> weight * x / sqrt(mean(x^2, last dim) + eps)."""
    return grade(
        "rms_norm", fn, _rms_norm_trial,
        hint="the mean of squares over the last dim, keepdim=True: "
             "x.pow(2).mean(-1, keepdim=True); then x * torch.rsqrt(that + eps), times weight.",
        success="matches qwenlab's RMSNorm on float32 activations of many scales, a non-zero "
                "mean and a near-zero vector, where eps matters.")


# --------------------------------------------------------------------------- bf16 / fp16

def _low_precision_inputs(dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(8, 256) activations whose rows span 0.1 to 100 in scale, plus a learned-looking gain."""
    scales = torch.logspace(-1, 2, 8)[:, None]               # (8, 1)
    x = (_randn(8, 256, seed=seed) * scales).to(dtype)
    weight = (1.0 + 0.1 * _randn(256, seed=seed + 1)).to(dtype)
    return x, weight


_LOSS = {
    torch.bfloat16: "x.pow(2), the mean and rsqrt all round to bfloat16's 8 significant bits",
    torch.float16: "x.pow(2) overflows float16 (max 65504) for |x| > 256, the mean becomes "
                   "inf and the whole vector comes out 0",
}


def _low_precision_mistakes(x, w, eps) -> dict[str, torch.Tensor]:
    dt = x.dtype
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)   # float32
    return {
        f"your function computes in {dt} without upcasting: {_LOSS[dt]}. Convert x to "
        "float32 first (x.to(torch.float32)), normalise, then cast back with .to(x.dtype)":
            w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)),
        "you multiplied by the weight in float32 and cast afterwards; Qwen casts the "
        f"normalised x back to {dt} first, then multiplies by the weight in {dt}: "
        "weight * normed.to(input_dtype). One rounding more or less changes some outputs":
            (w.float() * normed).to(dt),
        f"the statistic is right but the scaling is done in {dt}: you cast "
        f"rsqrt(mean + eps) to {dt} and multiplied the {dt} x by it. Multiply in float32 "
        "(x.float() * rsqrt(...)) and cast the product back":
            w * (x * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps).to(dt)),
    }


def _rms_norm_bf16_trial(fn) -> str | None:
    for dtype, seed in ((torch.bfloat16, 10), (torch.float16, 20)):
        x, w = _low_precision_inputs(dtype, seed)
        expected = reference_rms_norm(x, w, EPS)
        actual = fn(x.clone(), w.clone(), EPS)
        if not isinstance(actual, torch.Tensor):
            return f"fn should return a torch.Tensor, got {type(actual).__name__}"
        if actual.shape != expected.shape:
            return f"the output has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
        if actual.dtype != dtype:
            return (f"given {dtype} inputs your function returns {actual.dtype}: cast the "
                    f"normalised x back to the input's dtype (.to(input_dtype)) before "
                    f"multiplying by the {dtype} weight, so the model stays in {dtype}")
        if torch.equal(actual, expected):
            continue
        for diagnosis, wrong in _low_precision_mistakes(x, w, EPS).items():
            if torch.equal(actual, wrong):
                return diagnosis
        if dtype == torch.float16 and not torch.isfinite(actual).all():
            return ("in float16 your output has inf or NaN: x^2 overflows float16 (max 65504) "
                    "for |x| > 256; square in float32")
        if (problem := compare(actual, expected, atol=1e-2, rtol=1e-2)) is not None:
            return f"with {dtype} inputs {problem}"
        differ = (actual != expected).sum().item()
        return (f"with {dtype} inputs your output is close to Qwen's, but {differ} of "
                f"{expected.numel()} values differ in their last bits: follow the recipe "
                "exactly (float32 statistic and scaling, cast back, then times weight)")
    return None


def check_rms_norm_bf16(fn):
    """fn(x, weight, eps) given bfloat16 or float16 tensors returns, bit for bit, Qwen's
    ``weight * (x.float() * rsqrt(mean(x.float()^2) + eps)).to(x.dtype)``."""
    return grade(
        "rms_norm_bf16", fn, _rms_norm_bf16_trial,
        hint="remember input_dtype = x.dtype; compute in float32 (x.to(torch.float32)); cast "
             "the normalised x back with .to(input_dtype); then multiply by weight.",
        success="bit-identical to Qwen's recipe in bfloat16 and float16 (float32 statistic, "
                "cast back, then times weight).")
