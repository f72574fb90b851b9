"""The chapter 04 graders pass right answers, name typical mistakes, and spot untouched stubs."""

from __future__ import annotations

import math

import pytest
import torch

from qwenlab import checks
from qwenlab.attention import causal_mask


def stub(*args):
    raise NotImplementedError("write this function")


# --------------------------------------------------------------------------- repeat_kv

def repeat_kv_by_index(x, n_rep):
    index = torch.arange(x.shape[1] * n_rep) // n_rep  # query head h reads KV head h // n_rep
    return x[:, index]


def test_repeat_kv_grader_passes_a_right_answer():
    assert checks.check_repeat_kv(repeat_kv_by_index).passed
    assert checks.check_repeat_kv(lambda x, n: x.repeat_interleave(n, dim=1)).passed


@pytest.mark.parametrize("wrong,says", [
    (lambda x, n: x.repeat(1, n, 1, 1), "tiled [0, 1, 2, 0, 1, 2"),
    (lambda x, n: x.repeat_interleave(n, dim=2), "sequence dimension (dim 2)"),
    (lambda x, n: x.repeat_interleave(n, dim=0), "batch dimension (dim 0)"),
    (lambda x, n: x[:, :, None].expand(-1, -1, n, -1, -1), "still 5-dimensional"),
])
def test_repeat_kv_grader_names_the_mistake(wrong, says):
    result = checks.check_repeat_kv(wrong)
    assert not result.passed
    assert says in result.message


def test_repeat_kv_grader_reports_a_stub_as_not_attempted():
    result = checks.check_repeat_kv(stub)
    assert result.status == "not attempted"
    assert "h // n_rep" in result.message


# --------------------------------------------------------------------------- GQA attention

def gqa_attention(q, k, v, *, scale=None, mask="causal", masked_value=-math.inf,
                  tiled=False, softmax_dim=-1):
    """A right GQA attention, with switches that reproduce the typical mistakes."""
    H, Hkv, T, S, D = q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3]
    G = H // Hkv
    if tiled:
        k, v = k.repeat(1, G, 1, 1), v.repeat(1, G, 1, 1)
    else:
        k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)
    scores = q @ k.transpose(-1, -2) * (1 / math.sqrt(D) if scale is None else scale)
    if mask == "causal":
        scores = scores.masked_fill(~causal_mask(T, S), masked_value)
    elif mask == "top-left":
        scores = scores.masked_fill(~torch.ones(T, S, dtype=torch.bool).tril(), masked_value)
    return scores.softmax(dim=softmax_dim) @ v


def grouped_gqa_attention(q, k, v):
    """The same attention without copying K/V: the G query heads of a group share one matmul."""
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    G = H // Hkv
    q5 = q.view(B, Hkv, G * T, D)                                   # rows (g, t)
    scores = (q5 @ k.transpose(-1, -2) / math.sqrt(D)).view(B, Hkv, G, T, S)
    scores = scores.masked_fill(~causal_mask(T, S), -math.inf)
    out = scores.softmax(-1).view(B, Hkv, G * T, S) @ v            # (B, Hkv, G*T, D)
    return out.view(B, H, T, D)


def sdpa_gqa_attention(q, k, v):
    T, S = q.shape[2], k.shape[2]
    G = q.shape[1] // k.shape[1]
    return torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(G, 1), v.repeat_interleave(G, 1), attn_mask=causal_mask(T, S))


@pytest.mark.parametrize("right", [gqa_attention, grouped_gqa_attention, sdpa_gqa_attention])
def test_gqa_attention_grader_passes_right_answers(right):
    assert checks.check_gqa_attention(right).passed


@pytest.mark.parametrize("mistake,says", [
    (dict(mask=None), "no causal mask"),
    (dict(scale=1.0), "not scaled"),
    (dict(tiled=True), "wrong KV head order"),
    (dict(masked_value=0.0), "set to 0, not -inf"),
    (dict(softmax_dim=-2), "over the queries"),
    (dict(mask="top-left"), "aligned top-left"),
])
def test_gqa_attention_grader_names_the_mistake(mistake, says):
    result = checks.check_gqa_attention(lambda q, k, v: gqa_attention(q, k, v, **mistake))
    assert not result.passed
    assert says in result.message


def test_gqa_attention_grader_says_when_the_off_by_one_only_shows_after_a_cache():
    result = checks.check_gqa_attention(
        lambda q, k, v: gqa_attention(q, k, v, mask="top-left"))
    assert "after 5 cached tokens" in result.message


def test_gqa_attention_grader_reports_a_wrong_shape():
    result = checks.check_gqa_attention(lambda q, k, v: gqa_attention(q, k, v).transpose(1, 2))
    assert not result.passed
    assert "shape" in result.message


def test_gqa_attention_grader_reports_a_stub_as_not_attempted():
    assert checks.check_gqa_attention(stub).status == "not attempted"


# --------------------------------------------------------------------------- KV cache bytes

def kv_bytes(config, batch_size, seq_len, bytes_per_element, *, kv=True, pair=2):
    heads = config.num_key_value_heads if kv else config.num_attention_heads
    return (pair * config.num_hidden_layers * heads * config.head_dim * seq_len * batch_size
            * bytes_per_element)


def test_kv_cache_bytes_grader_passes_a_right_answer():
    assert checks.check_kv_cache_bytes(kv_bytes).passed


@pytest.mark.parametrize("wrong,says", [
    (lambda c, b, s, n: kv_bytes(c, b, s, n, pair=1), "factor 2 is missing"),
    (lambda c, b, s, n: kv_bytes(c, b, s, n, kv=False), "num_attention_heads"),
    (lambda c, b, s, n: kv_bytes(c, b, s, n) // c.num_hidden_layers, "number of layers"),
    (lambda c, b, s, n: kv_bytes(c, b, s, n) // n, "counts elements, not bytes"),
    (lambda c, b, s, n: 2 * c.num_hidden_layers * c.hidden_size * s * b * n,
     "hidden_size"),
])
def test_kv_cache_bytes_grader_names_the_mistake(wrong, says):
    result = checks.check_kv_cache_bytes(wrong)
    assert not result.passed
    assert says in result.message


def test_kv_cache_bytes_grader_shows_the_formula_for_an_unknown_mistake():
    result = checks.check_kv_cache_bytes(lambda c, b, s, n: kv_bytes(c, b, s, n) + 1)
    assert not result.passed
    assert "2 x layers x kv_heads" in result.message


def test_kv_cache_bytes_grader_reports_a_stub_as_not_attempted():
    assert checks.check_kv_cache_bytes(stub).status == "not attempted"
