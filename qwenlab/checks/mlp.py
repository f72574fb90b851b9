"""Graders for the exercises of chapter 03: the SwiGLU MLP and its sizes.

- ``check_swiglu(fn)``: fn(x (..., h), gate_w (i, h), up_w (i, h), down_w (h, i)) -> (..., h),
  ``down(silu(gate(x)) * up(x))`` with weights in ``nn.Linear``'s (out, in) layout
  (``qwenlab.mlp.MLP``).
- ``check_mlp_params(fn)``: fn(hidden, intermediate) -> the parameter count of one SwiGLU MLP,
  3 * hidden * intermediate (no biases).
- ``check_matched_intermediate_size(fn)``: fn(hidden, ratio) -> the intermediate size at which
  a SwiGLU MLP has as many parameters as a classic MLP of width ratio * hidden (2 matrices):
  2 * ratio * hidden / 3.

Each trial runs the learner's function on seeded inputs, compares it with the reference, and
when it is wrong, recomputes the typical wrong answers to name the mistake.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from ..mlp import MLP
from ._grading import compare, first_match, grade

__all__ = ["check_matched_intermediate_size", "check_mlp_params", "check_swiglu"]


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def reference_swiglu(x, gate_w, up_w, down_w) -> torch.Tensor:
    """``qwenlab.mlp.MLP`` with the given weights, as a function."""
    mlp = MLP(gate_w.shape[1], gate_w.shape[0]).to(x.dtype)
    with torch.no_grad():
        mlp.gate_proj.weight.copy_(gate_w)
        mlp.up_proj.weight.copy_(up_w)
        mlp.down_proj.weight.copy_(down_w)
        return mlp(x)


# --------------------------------------------------------------------------- swiglu

def _swiglu_mistakes(x, g, u, d) -> dict[str, torch.Tensor]:
    gate, up = F.linear(x, g), F.linear(x, u)                # (..., i)
    return {
        "silu is applied to the up branch, not the gate: Qwen computes "
        "silu(gate_proj(x)) * up_proj(x); your gate and up are swapped":
            F.linear(gate * F.silu(up), d),
        "you used ReLU where SwiGLU uses SiLU (x * sigmoid(x)); ReLU gives ReGLU":
            F.linear(F.relu(gate) * up, d),
        "you used GELU where SwiGLU uses SiLU (x * sigmoid(x)); GELU gives GEGLU":
            F.linear(F.gelu(gate) * up, d),
        "you used GELU (tanh approximation) where SwiGLU uses SiLU (x * sigmoid(x))":
            F.linear(F.gelu(gate, approximate="tanh") * up, d),
        "you gated with sigmoid(gate), the original GLU; SwiGLU's gate is "
        "silu(gate) = gate * sigmoid(gate)":
            F.linear(torch.sigmoid(gate) * up, d),
        "there is no activation: gate_proj(x) * up_proj(x) is the bilinear variant; "
        "apply silu to the gate branch":
            F.linear(gate * up, d),
        "the up branch is missing: down(silu(gate(x))) is a plain SiLU MLP. Multiply the "
        "activated gate by up_proj(x) elementwise":
            F.linear(F.silu(gate), d),
        "the gate is missing: down(silu(up(x))) is a plain SiLU MLP. SwiGLU multiplies "
        "silu(gate_proj(x)) by up_proj(x) elementwise":
            F.linear(F.silu(up), d),
        "the gate and up branches are added, not multiplied: SwiGLU multiplies them "
        "elementwise, silu(gate) * up":
            F.linear(F.silu(gate) + up, d),
    }


def _swiglu_trial(fn) -> str | None:
    h, i = 12, 20  # not square, so a forgotten transpose fails loudly
    x = _randn(2, 3, h, seed=0)                              # (B, T, h)
    g, u = 0.5 * _randn(i, h, seed=1), 0.5 * _randn(i, h, seed=2)
    d = 0.5 * _randn(h, i, seed=3)
    expected = reference_swiglu(x, g, u, d)
    actual = fn(x.clone(), g.clone(), u.clone(), d.clone())
    problem = compare(actual, expected, atol=1e-5, rtol=1e-5)
    if problem is None:
        return None
    return first_match(actual, _swiglu_mistakes(x, g, u, d), atol=1e-5) or problem


def check_swiglu(fn):
    """fn(x (..., h), gate_w (i, h), up_w (i, h), down_w (h, i)) -> (..., h):
    down(silu(gate(x)) * up(x)), weights laid out as in nn.Linear (out, in)."""
    return grade(
        "swiglu", fn, _swiglu_trial,
        hint="F.linear(x, W) computes x @ W.T, as nn.Linear does: project x with gate_w and "
             "with up_w, apply F.silu to the gate branch only, multiply the two, project "
             "with down_w.",
        success="matches qwenlab's MLP (and so transformers' Qwen2MLP): "
                "down(silu(gate(x)) * up(x)).")


# --------------------------------------------------------------------------- parameter count

_SIZES = [(896, 4864), (7, 11), (5120, 13824), (128, 352)]  # (hidden, intermediate)


def _as_number(value, what: str) -> tuple[float | None, str | None]:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None, f"fn should return a number ({what}), got {type(value).__name__}"
    return float(value), None


def _mlp_params_trial(fn) -> str | None:
    for h, i in _SIZES:
        actual, problem = _as_number(fn(h, i), "the parameter count")
        if problem:
            return problem
        expected = 3 * h * i
        if actual == expected:
            continue
        mistakes = {
            2 * h * i: "you counted two matrices; SwiGLU has three, gate_proj and up_proj "
                       "(h x i each) and down_proj (i x h): 3 * h * i",
            h * i: "you counted one matrix; SwiGLU has three (gate, up, down): 3 * h * i",
            3 * h * i + 2 * i + h: "you counted biases (i each for gate and up, h for down); "
                                   "Qwen's MLP projections have none (bias=False)",
            3 * h * i + 3 * i: "you counted a bias of size i per matrix; Qwen's MLP "
                               "projections have none (bias=False)",
            2 * h * i + i + h: "that is a classic two-matrix MLP with biases; SwiGLU has three "
                               "bias-free matrices: 3 * h * i",
            8 * h * h: "8 * h^2 is a classic 4x MLP's count; it ignores the intermediate size. "
                       "Count the three h x i matrices: 3 * h * i",
            3 * i * i: "you used the intermediate size for both sides of each matrix; each is "
                       "h x i: 3 * h * i",
            3 * h * h: "you used the hidden size for both sides of each matrix; each is "
                       "h x i: 3 * h * i",
        }
        diagnosis = mistakes.get(actual, f"expected {expected:,}, got {actual:,.0f}")
        return f"for hidden {h}, intermediate {i}: {diagnosis}"
    return None


def check_mlp_params(fn):
    """fn(hidden, intermediate) -> number of parameters of one SwiGLU MLP (no biases)."""
    return grade(
        "mlp_params", fn, _mlp_params_trial,
        hint="count the weights of gate_proj, up_proj and down_proj; nn.Linear(a, b, "
             "bias=False) holds a * b.",
        success="3 * hidden * intermediate, e.g. 13,074,432 per layer for Qwen2.5-0.5B.")


# --------------------------------------------------------------------------- matched size

_MATCH_CASES = [(896, 4), (4096, 4), (1536, 4), (1024, 2), (300, 6)]  # (hidden, ratio)


def _matched_trial(fn) -> str | None:
    for h, r in _MATCH_CASES:
        actual, problem = _as_number(fn(h, r), "the intermediate size")
        if problem:
            return problem
        expected = 2 * r * h / 3
        if abs(actual - expected) < 1:  # rounding either way is fine
            continue
        mistakes = {
            "that is the classic MLP's own width r * h: a SwiGLU MLP of that width has 1.5x "
            "its parameters. Solve 3 * h * i = 2 * (r * h) * h for i":
                r * h,
            "the fraction is inverted: 3 * h * i = 2 * r * h^2 gives i = 2 * r * h / 3, "
            "not 3 * r * h / 2":
                3 * r * h / 2,
            "a factor of h too many: both counts share one factor h (classic 2 * r * h * h, "
            "SwiGLU 3 * h * i), which cancels: i = 2 * r * h / 3":
                2 * r * h * h / 3,
            "the ratio r is missing: the classic MLP is r * h wide, so its count is "
            "2 * (r * h) * h; i = 2 * r * h / 3":
                2 * h / 3,
            "you matched one classic matrix (r * h * h) instead of both; the classic MLP "
            "has two (up and down): i = 2 * r * h / 3":
                r * h / 3,
        }
        diagnosis = next((d for d, wrong in mistakes.items() if abs(actual - wrong) < 1),
                         None)
        if diagnosis is None and actual > expected + 1 and actual - expected < 512 and \
                actual % 64 == 0:
            diagnosis = ("you rounded up to a hardware-friendly multiple (as Llama's code "
                         "does with 256); return the exact parameter-matched size here")
        return (f"for hidden {h}, ratio {r}: expected {expected:.1f}, got {actual:g}"
                + (f"; {diagnosis}" if diagnosis else ""))
    return None


def check_matched_intermediate_size(fn):
    """fn(hidden, ratio) -> i with 3 * hidden * i = 2 * (ratio * hidden) * hidden."""
    return grade(
        "matched_intermediate_size", fn, _matched_trial,
        hint="a classic MLP of width r * h has 2 * (r * h) * h weights, a SwiGLU MLP of width i "
             "has 3 * h * i; set them equal and solve for i.",
        success="i = 2 * ratio * hidden / 3: 2389 for Qwen2.5-0.5B's hidden 896 "
                "(it uses 4864).")
