"""Chapter 01's graders: they pass a right answer, name the typical wrong ones, and say
"not attempted" for the stub a learner starts from."""

from __future__ import annotations

import pytest
import torch

from qwenlab import checks
from qwenlab.rope import apply_rope, rope_inv_freq, rotate_half


def stub(*args):
    raise NotImplementedError("write this function")


def rotate_every_two(x):
    return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)


def half(x):
    return x.chunk(2, dim=-1)


# ---------------------------------------------------------------- inv_freq

def test_inv_freq_grader_passes_the_library_and_an_equivalent_formula(capsys):
    assert checks.check_inv_freq(rope_inv_freq).passed
    # theta ** (-x) instead of 1 / theta ** x: last-bit differences are fine
    assert checks.check_inv_freq(
        lambda d, theta: theta ** (-torch.arange(0, d, 2, dtype=torch.float) / d)).passed
    assert "✓ inv_freq" in capsys.readouterr().out


@pytest.mark.parametrize("wrong,named", [
    (lambda d, theta: 1.0 / theta ** (torch.arange(d // 2, dtype=torch.float) / d),
     "exponent is i/d"),
    (lambda d, theta: theta ** (torch.arange(0, d, 2, dtype=torch.float) / d),
     "theta^(+2i/d)"),
    (lambda d, theta: rope_inv_freq(d, theta).flip(0), "reverse order"),
    (lambda d, theta: rope_inv_freq(d, theta).repeat(2), "one per pair"),
    (lambda d, theta: rope_inv_freq(d, theta).double(), "compute it in float32"),
])
def test_inv_freq_grader_names_the_mistake(wrong, named):
    result = checks.check_inv_freq(wrong)
    assert result.status == "fail" and named in result.message


def test_inv_freq_grader_says_not_attempted_for_the_stub(capsys):
    assert checks.check_inv_freq(stub).status == "not attempted"
    assert "○ inv_freq: not attempted yet. Hint:" in capsys.readouterr().out


# ---------------------------------------------------------------- rotate_half

def test_rotate_half_grader_passes_the_library():
    assert checks.check_rotate_half(rotate_half).passed


@pytest.mark.parametrize("wrong,named", [
    (rotate_every_two, "interleaved pairing"),
    (lambda x: torch.cat((half(x)[1], -half(x)[0]), dim=-1), "sign is flipped"),
    (lambda x: torch.cat((half(x)[1], half(x)[0]), dim=-1), "minus sign is missing"),
    (lambda x: x.clone(), "equals the input"),
    (lambda x: x.mul_(2), "in place"),
])
def test_rotate_half_grader_names_the_mistake(wrong, named):
    result = checks.check_rotate_half(wrong)
    assert result.status == "fail" and named in result.message


def test_rotate_half_grader_says_not_attempted_for_the_stub():
    assert checks.check_rotate_half(stub).status == "not attempted"


# ---------------------------------------------------------------- cos/sin tables

def cos_sin(position_ids, inv_freq, shift=0, layout="half", swap=False):
    freqs = (position_ids[..., None] + shift).float() * inv_freq
    emb = freqs.repeat_interleave(2, -1) if layout == "interleaved" else torch.cat((freqs, freqs), -1)
    return (emb.sin(), emb.cos()) if swap else (emb.cos(), emb.sin())


def test_cos_sin_grader_passes_a_right_answer():
    assert checks.check_rope_cos_sin(cos_sin).passed


def ignores_position_ids(position_ids, inv_freq):
    return cos_sin(torch.arange(position_ids.shape[1]).expand_as(position_ids), inv_freq)


@pytest.mark.parametrize("wrong,named", [
    (ignores_position_ids, "ignored position_ids"),
    (lambda p, f: cos_sin(p, f, shift=1), "off by one"),
    (lambda p, f: cos_sin(p, f, layout="interleaved"), "interleaved layout"),
    (lambda p, f: cos_sin(p, f, swap=True), "cos and sin are swapped"),
    (lambda p, f: ((p[..., None] * f).cos(), (p[..., None] * f).sin()), "(B, T, D/2)"),
])
def test_cos_sin_grader_names_the_mistake(wrong, named):
    result = checks.check_rope_cos_sin(wrong)
    assert result.status == "fail" and named in result.message


def test_cos_sin_grader_says_not_attempted_for_the_stub():
    assert checks.check_rope_cos_sin(stub).status == "not attempted"


# ---------------------------------------------------------------- apply_rope

def test_apply_rope_grader_passes_the_library_and_the_pairwise_formula():
    assert checks.check_apply_rope(apply_rope).passed

    def pairwise(q, k, cos, sin):  # x1' = x1 cos - x2 sin, x2' = x1 sin + x2 cos, by halves
        c, s = half(cos.unsqueeze(1))[0], half(sin.unsqueeze(1))[0]

        def rot(x):
            x1, x2 = half(x)
            return torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)
        return rot(q), rot(k)

    assert checks.check_apply_rope(pairwise).passed


def rope_with(rotate, sign=1.0, rotate_k=True, swap=False):
    def fn(q, k, cos, sin):
        c, s = cos.unsqueeze(1), sin.unsqueeze(1)
        if swap:
            c, s = s, c
        q_rot = q * c + sign * rotate(q) * s
        return q_rot, (k * c + sign * rotate(k) * s) if rotate_k else k
    return fn


@pytest.mark.parametrize("wrong,named", [
    (rope_with(rotate_every_two), "interleaved pairing"),
    (rope_with(rotate_half, sign=-1.0), "wrong sign"),
    (rope_with(rotate_half, swap=True), "cos and sin are swapped"),
    (rope_with(rotate_half, rotate_k=False), "keys are not rotated"),
    (lambda q, k, cos, sin: (q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin),
     "cos.unsqueeze(1)"),
])
def test_apply_rope_grader_names_the_mistake(wrong, named):
    result = checks.check_apply_rope(wrong)
    assert result.status == "fail" and named in result.message


def test_apply_rope_grader_says_not_attempted_for_the_stub():
    assert checks.check_apply_rope(stub).status == "not attempted"
