"""Each part on its own against transformers' Qwen2 part, plus the properties that define it."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.qwen2 import modeling_qwen2 as ref

from qwenlab import QwenConfig
from qwenlab.attention import (
    Backend,
    attend,
    causal_mask,
    register_backend,
    repeat_kv,
    resolve_backend,
)
from qwenlab.mlp import MLP
from qwenlab.norm import RMSNorm
from qwenlab.rope import RotaryEmbedding, apply_rope, rope_inv_freq, rotate_half

from .conftest import hf_config


@pytest.mark.parametrize("head_dim,theta", [(16, 1e4), (64, 1e6), (128, 1e6)])
def test_rope_equals_transformers_bit_for_bit(head_dim, theta):
    hf = hf_config(hidden_size=head_dim * 2, num_attention_heads=2, num_key_value_heads=1,
                   rope_theta=theta)
    theirs = ref.Qwen2RotaryEmbedding(hf)
    ours = RotaryEmbedding(head_dim, theta, initial_positions=64)
    positions = torch.tensor([[0, 1, 2, 57, 300], [5, 5, 6, 7, 1000]])
    x = torch.randn(2, 5, 8)
    cos_ref, sin_ref = theirs(x, positions)
    cos, sin = ours(positions, num_positions=1001)  # beyond the initial table: it grows
    assert torch.equal(cos, cos_ref) and torch.equal(sin, sin_ref)
    q, k = torch.randn(2, 3, 5, head_dim), torch.randn(2, 1, 5, head_dim)
    q_ref, k_ref = ref.apply_rotary_pos_emb(q, k, cos_ref, sin_ref)
    q_ours, k_ours = apply_rope(q, k, cos, sin)
    assert torch.equal(q_ours, q_ref) and torch.equal(k_ours, k_ref)


def test_inv_freq_starts_at_one_and_falls_geometrically_to_theta():
    inv = rope_inv_freq(8, 1e6).double()
    torch.testing.assert_close(inv, torch.tensor([1.0, 1e6 ** -0.25, 1e6 ** -0.5, 1e6 ** -0.75],
                                                 dtype=torch.float64), rtol=1e-6, atol=0)


def test_rotate_half_pairs_coordinate_i_with_i_plus_half():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert rotate_half(x).tolist() == [-3.0, -4.0, 1.0, 2.0]


@settings(max_examples=25, deadline=None)
@given(m=st.integers(0, 2000), n=st.integers(0, 2000), shift=st.integers(0, 2000))
def test_rope_scores_depend_only_on_relative_position(m, n, shift):
    rope = RotaryEmbedding(32, 1e6, initial_positions=8)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 32, generator=g, dtype=torch.float64), \
        torch.randn(1, 1, 1, 32, generator=g, dtype=torch.float64)

    def score(pq, pk):
        cq, sq = rope(torch.tensor([[pq]]), 5000)
        ck, sk = rope(torch.tensor([[pk]]), 5000)
        q_rot, _ = apply_rope(q, q, cq.double(), sq.double())
        _, k_rot = apply_rope(k, k, ck.double(), sk.double())
        return (q_rot * k_rot).sum()

    # float32 angle tables: positions up to ~4000 carry ~4e-4 rad of rounding
    torch.testing.assert_close(score(m, n), score(m + shift, n + shift), atol=2e-2, rtol=0)


def test_rope_preserves_vector_lengths():
    rope = RotaryEmbedding(64, 1e6)
    cos, sin = rope(torch.arange(100)[None], 100)
    q = torch.randn(1, 2, 100, 64)
    q_rot, _ = apply_rope(q, q, cos, sin)
    torch.testing.assert_close(q_rot.norm(dim=-1), q.norm(dim=-1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rmsnorm_equals_transformers(dtype):
    theirs, ours = ref.Qwen2RMSNorm(48, eps=1e-6), RMSNorm(48, eps=1e-6)
    with torch.no_grad():
        theirs.weight.copy_(torch.randn(48))
        ours.weight.copy_(theirs.weight)
    theirs, ours = theirs.to(dtype), ours.to(dtype)
    x = (torch.randn(3, 7, 48) * 30).to(dtype)
    assert torch.equal(ours(x), theirs(x))
    assert ours(x).dtype == dtype


def test_rmsnorm_output_has_unit_rms_before_the_gain():
    x = torch.randn(5, 64) * 100
    y = RMSNorm(64)(x)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(5), atol=1e-4, rtol=0)


def test_mlp_equals_transformers():
    hf = hf_config(hidden_size=32, intermediate_size=88)
    theirs, ours = ref.Qwen2MLP(hf), MLP(32, 88)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 5, 32)
    assert torch.equal(ours(x), theirs(x))


def _attention_inputs(H=6, Hkv=2, T=9, S=9, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, H, T, D, generator=g), torch.randn(2, Hkv, S, D, generator=g),
            torch.randn(2, Hkv, S, D, generator=g))


def test_attention_block_equals_transformers_eager_and_sdpa():
    torch.manual_seed(0)
    hf = hf_config(hidden_size=96, num_attention_heads=6, num_key_value_heads=2)
    from qwenlab.attention import Attention

    for impl, backend in [("eager", "eager"), ("sdpa", "sdpa")]:
        hf._attn_implementation = impl
        theirs = ref.Qwen2Attention(hf, layer_idx=0)
        ours = Attention(QwenConfig.from_hf(hf, attn_backend=backend), layer_idx=0)
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(2, 10, 96)
        cos, sin = RotaryEmbedding(16, hf.rope_parameters["rope_theta"])(torch.arange(10)[None], 10)
        mask = torch.full((10, 10), float("-inf")).triu(1)[None, None]
        expected, _ = theirs(x, (cos, sin), mask if impl == "eager" else None)
        torch.testing.assert_close(ours(x, cos, sin), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("T,S", [(9, 9), (4, 9), (1, 9)])
def test_eager_and_sdpa_agree_with_cached_prefix(T, S):
    q, k, v = _attention_inputs(T=T, S=S)
    torch.testing.assert_close(attend(q, k, v, backend="eager"), attend(q, k, v, backend="sdpa"),
                               atol=1e-5, rtol=0)


def test_eager_and_sdpa_agree_with_a_padding_mask():
    q, k, v = _attention_inputs()
    mask = causal_mask(9, 9) & torch.tensor([[0] * 3 + [1] * 6, [1] * 9]).bool()[:, None, None, :]
    mask |= torch.eye(9, dtype=torch.bool)  # pad queries attend to themselves
    torch.testing.assert_close(attend(q, k, v, mask, backend="eager"),
                               attend(q, k, v, mask, backend="sdpa"), atol=1e-5, rtol=0)


def test_causal_attention_ignores_the_future():
    q, k, v = _attention_inputs()
    out = attend(q, k, v, backend="eager")
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 5:] += 10.0
    v2[:, :, 5:] -= 10.0
    torch.testing.assert_close(attend(q, k2, v2, backend="eager")[:, :, :5], out[:, :, :5])


def test_repeat_kv_gives_each_group_of_query_heads_its_kv_head():
    k = torch.arange(3.0).view(1, 3, 1, 1)  # KV heads 0, 1, 2
    assert repeat_kv(k, 2).flatten().tolist() == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]


def test_backend_choice_auto_is_sdpa_on_cpu_and_unknown_names_are_refused():
    assert resolve_backend("auto", torch.device("cpu")) == "sdpa"
    with pytest.raises(ValueError, match="attention backend 'nope' is not available"):
        resolve_backend("nope", torch.device("cpu"))


def test_registered_backend_is_used_by_the_model_and_auto_respects_support():
    from qwenlab import QwenForCausalLM
    from qwenlab.attention import _AUTO_ORDER, _BACKENDS, eager_attention, eager_attention_decode
    from qwenlab.config import ATTN_BACKENDS

    calls = []

    def counting(q, k, v, mask, scale):
        calls.append(q.shape)
        return eager_attention(q, k, v, mask, scale)

    register_backend(Backend("counting", counting, eager_attention_decode,
                             supports=lambda device: device.type == "cuda"), auto_priority=0)
    try:
        assert resolve_backend("auto", torch.device("cpu")) == "sdpa"  # declined: no GPU
        model = QwenForCausalLM(QwenConfig.tiny(num_hidden_layers=2, attn_backend="counting"))
        model(torch.zeros(1, 4, dtype=torch.long))
        assert len(calls) == 2
    finally:
        _BACKENDS.pop("counting")
        _AUTO_ORDER.remove("counting")
        ATTN_BACKENDS.remove("counting")


def test_model_repr_shows_the_attention_backend():
    from qwenlab import QwenForCausalLM

    text = repr(QwenForCausalLM(QwenConfig.tiny(num_hidden_layers=1)))
    assert "attn_backend=auto -> sdpa on cpu" in text
