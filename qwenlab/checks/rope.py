"""Graders for chapter 01 (RoPE): inv_freq, rotate_half, the cos/sin tables, apply_rope.

Each grader runs the learner's function on seeded random inputs, compares it with
``qwenlab.rope`` and, when it is wrong, recognises the typical mistakes: interleaved pairing
(2i with 2i+1, the RoFormer layout) where Qwen pairs i with i + d/2, a flipped sign, an
exponent of i/d instead of 2i/d, angles of the wrong positions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..rope import apply_rope, rope_inv_freq, rotate_half
from ._grading import CheckResult, compare, first_match, grade

__all__ = ["check_inv_freq", "check_rotate_half", "check_rope_cos_sin", "check_apply_rope"]

INTERLEAVED = ("this is interleaved pairing (2i with 2i+1, the RoFormer paper's layout); "
               "Qwen pairs coordinate i with coordinate i + d/2")


# ---------------------------------------------------------------- wrong answers, computed

def _rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    """The interleaved rotate: (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def _to_interleaved_table(table: torch.Tensor) -> torch.Tensor:
    """A rotate-half cos/sin table (angles repeated as two halves) in the interleaved layout."""
    half = table[..., : table.shape[-1] // 2]
    return half.repeat_interleave(2, dim=-1)


def _cos_sin_reference(position_ids: torch.Tensor, inv_freq: torch.Tensor):
    freqs = position_ids[..., None].float() * inv_freq  # (B, T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)              # (B, T, D)
    return emb.cos(), emb.sin()


# ---------------------------------------------------------------- graders

def check_inv_freq(fn: Callable) -> CheckResult:
    """``fn(head_dim, theta)`` -> the (head_dim/2,) float32 tensor theta^(-2i/d)."""

    def trial(fn):
        for head_dim, theta in [(64, 1e6), (128, 1e4), (16, 1e4), (8, 500.0)]:
            out = fn(head_dim, theta)
            expected = rope_inv_freq(head_dim, theta)
            where = f" (head_dim={head_dim}, theta={theta:g})"
            if isinstance(out, torch.Tensor) and out.shape == (head_dim,):
                return (f"you returned {head_dim} frequencies, one per coordinate{where}; RoPE "
                        f"has one per pair of coordinates: head_dim/2 = {head_dim // 2} "
                        "(i = 0, 1, ..., d/2 - 1, or torch.arange(0, d, 2) / d as the exponent)")
            pairs = torch.arange(head_dim // 2, dtype=torch.float64)
            mistakes = {
                "the exponent is i/d; it must be 2i/d (i counts pairs, so the exponents are 0, "
                "2/d, 4/d, ..., (d-2)/d)": theta ** (-pairs / head_dim),
                "this is theta^(+2i/d): the frequencies must fall from 1 to about 1/theta, "
                "inv_freq[i] = theta^(-2i/d) = 1 / theta^(2i/d)": theta ** (2 * pairs / head_dim),
                "the frequencies are in reverse order: pair 0 must turn fastest "
                "(inv_freq[0] = 1) and the last pair slowest": expected.flip(0),
            }
            problem = first_match(out, mistakes, atol=1e-4)
            if problem is None and isinstance(out, torch.Tensor) \
                    and out.dtype != torch.float32 and out.shape == expected.shape:
                problem = (f"inv_freq has dtype {out.dtype}; compute it in float32, as "
                           "transformers does, so that your angles match the checkpoint's "
                           "to the bit (torch.arange(0, d, 2, dtype=torch.float))")
            problem = problem or compare(out, expected, "inv_freq")
            if problem:
                return problem + where
        return None

    return grade("inv_freq", fn, trial,
                 hint="one frequency per pair, inv_freq[i] = theta^(-2i/d) for i = 0 .. d/2 - 1, "
                      "in float32 (start from torch.arange(0, head_dim, 2, dtype=torch.float))",
                 success="theta^(-2i/d) for 4 head_dims and thetas, one frequency per pair")


def check_rotate_half(fn: Callable) -> CheckResult:
    """``fn(x)`` -> (-x2, x1), x1 and x2 being the two halves of the last dim."""

    def trial(fn):
        g = torch.Generator().manual_seed(1)
        for shape in [(2, 3, 5, 8), (4, 16)]:
            x = torch.randn(shape, generator=g)
            x_before = x.clone()
            out = fn(x)
            if not torch.equal(x, x_before):
                return "your function changed its input in place; return a new tensor"
            x1, x2 = x.chunk(2, dim=-1)
            mistakes = {
                INTERLEAVED + ": split the last dim into two halves, x1 = x[..., :d/2] and "
                              "x2 = x[..., d/2:]": _rotate_every_two(x),
                INTERLEAVED + ", and the sign is flipped too": -_rotate_every_two(x),
                "the sign is flipped: (x2, -x1) turns each pair by -90 degrees; rotate_half "
                "returns (-x2, x1), a turn by +90 degrees": torch.cat((x2, -x1), dim=-1),
                "the minus sign is missing: (x2, x1) swaps the halves, which is a reflection, "
                "not a rotation; rotate_half returns (-x2, x1)": torch.cat((x2, x1), dim=-1),
                "the output equals the input: rotate_half must swap the halves and negate the "
                "new first half, (x1, x2) -> (-x2, x1)": x,
            }
            problem = first_match(out, mistakes) or compare(out, rotate_half(x), "rotated x")
            if problem:
                return problem
        return None

    return grade("rotate_half", fn, trial,
                 hint="split the last dim into halves x1, x2 (x.chunk(2, dim=-1)); a +90-degree "
                      "turn of the pair (x1[i], x2[i]) is (-x2[i], x1[i])",
                 success="(x1, x2) -> (-x2, x1) on the halves of the last dim, input untouched")


def check_rope_cos_sin(fn: Callable) -> CheckResult:
    """``fn(position_ids, inv_freq)`` -> (cos, sin), each (B, T, D) float32, rotate-half layout."""

    def trial(fn):
        inv_freq = rope_inv_freq(16, 1e4)
        # row 1 is a cached decode: its positions do not start at 0
        position_ids = torch.tensor([[0, 1, 2, 3, 4], [57, 58, 59, 60, 61]])
        out = fn(position_ids, inv_freq)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            return "return a pair (cos, sin)"
        cos, sin = out
        expected_cos, expected_sin = _cos_sin_reference(position_ids, inv_freq)
        if isinstance(cos, torch.Tensor) and cos.shape == (2, 5, 8):
            return ("your tables have shape (B, T, D/2): one angle per pair. apply_rope "
                    "multiplies them with q and k of D coordinates, and coordinates i and "
                    "i + D/2 share pair i's angle: torch.cat((freqs, freqs), dim=-1)")

        def wrong(positions, layout="half"):
            c, s = _cos_sin_reference(positions, inv_freq)
            if layout == "interleaved":
                c, s = _to_interleaved_table(c), _to_interleaved_table(s)
            return torch.cat((c, s), dim=-1)

        first_rows = torch.arange(5).expand(2, 5)
        mistakes = {
            "you ignored position_ids and used 0..T-1 for every row: a cached decode step at "
            "position 57 would get the angle of position 0; use position_ids[..., None] * "
            "inv_freq": wrong(first_rows),
            "off by one: these are the angles of position m + 1; the token at position m is "
            "rotated by m * inv_freq (position 0 is not rotated at all)": wrong(position_ids + 1),
            "this is the interleaved layout (each angle repeated for coordinates 2i and 2i+1, "
            "repeat_interleave); Qwen's rotate-half layout repeats the whole half: "
            "torch.cat((freqs, freqs), dim=-1)": wrong(position_ids, "interleaved"),
            "cos and sin are swapped: return (cos, sin) in that order":
                torch.cat((expected_sin, expected_cos), dim=-1),
        }
        if isinstance(cos, torch.Tensor) and isinstance(sin, torch.Tensor) \
                and cos.shape == sin.shape:
            problem = first_match(torch.cat((cos, sin), dim=-1), mistakes, atol=1e-4)
            if problem:
                return problem
        return compare(cos, expected_cos, "cos table") or compare(sin, expected_sin, "sin table")

    return grade("rope_cos_sin", fn, trial,
                 hint="the angle of pair i at position m is m * inv_freq[i], shape (B, T, D/2); "
                      "coordinates i and i + D/2 share pair i's angle, so repeat the angles as "
                      "two halves",
                 success="cos/sin of position_ids * inv_freq, (B, T, D), rotate-half layout, "
                         "decode positions included")


def check_apply_rope(fn: Callable) -> CheckResult:
    """``fn(q, k, cos, sin)`` -> (q_rot, k_rot); q (B, H, T, D), k (B, Hkv, T, D), cos/sin
    (B, T, D)."""

    def trial(fn):
        g = torch.Generator().manual_seed(2)
        q = torch.randn(2, 4, 6, 16, generator=g)   # (B, H, T, D)
        k = torch.randn(2, 2, 6, 16, generator=g)   # (B, Hkv, T, D): grouped-query attention
        position_ids = torch.stack((torch.arange(6), torch.arange(57, 63)))
        cos, sin = _cos_sin_reference(position_ids, rope_inv_freq(16, 1e4))  # (B, T, D)
        q_in, k_in = q.clone(), k.clone()
        try:
            out = fn(q, k, cos, sin)
        except RuntimeError as e:
            if "size of tensor" in str(e) or "broadcast" in str(e):
                return ("shapes do not broadcast: cos and sin are (B, T, D) and q is "
                        "(B, H, T, D); add a heads dimension with cos.unsqueeze(1) "
                        f"(the error was: {e})")
            raise
        if not (torch.equal(q, q_in) and torch.equal(k, k_in)):
            return "your function changed q or k in place; return new tensors"
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            return "return a pair (q_rot, k_rot)"
        q_rot, k_rot = out
        q_ref, k_ref = apply_rope(q, k, cos, sin)
        c, s = cos.unsqueeze(1), sin.unsqueeze(1)
        c_il, s_il = _to_interleaved_table(c), _to_interleaved_table(s)

        def both(f):  # a wrong recipe applied to q and k, as one tensor to match
            return torch.cat((f(q), f(k)), dim=1)

        mistakes = {
            INTERLEAVED + ": your rotation mixes x[..., 0::2] with x[..., 1::2]; rotate the "
                          "two halves with rotate_half":
                both(lambda x: x * c + _rotate_every_two(x) * s),
            INTERLEAVED + ": your rotation mixes x[..., 0::2] with x[..., 1::2] (angles "
                          "repeated for 2i, 2i+1); rotate the two halves with rotate_half":
                both(lambda x: x * c_il + _rotate_every_two(x) * s_il),
            "the sin term has the wrong sign (or your rotate_half returns (x2, -x1)): this "
            "rotates by -m*theta; RoPE is x * cos + rotate_half(x) * sin":
                both(lambda x: x * c - rotate_half(x) * s),
            "cos and sin are swapped: x * cos + rotate_half(x) * sin":
                both(lambda x: x * s + rotate_half(x) * c),
            "the keys are not rotated: rotate both q and k, so that their dot product depends "
            "on the offset m - n": torch.cat((q_ref, k), dim=1),
            "the queries are not rotated: rotate both q and k, so that their dot product "
            "depends on the offset m - n": torch.cat((q, k_ref), dim=1),
        }
        if isinstance(q_rot, torch.Tensor) and isinstance(k_rot, torch.Tensor) \
                and q_rot.shape == q.shape and k_rot.shape == k.shape:
            problem = first_match(torch.cat((q_rot, k_rot), dim=1), mistakes)
            if problem:
                return problem
        return compare(q_rot, q_ref, "rotated q") or compare(k_rot, k_ref, "rotated k")

    return grade("apply_rope", fn, trial,
                 hint="cos/sin are (B, T, D) and q is (B, H, T, D), so add a heads dimension; "
                      "then each rotated vector is x * cos + rotate_half(x) * sin",
                 success="q and k (GQA: fewer key heads) rotated in the rotate-half layout, "
                         "including decode positions")
