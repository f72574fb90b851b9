"""qwenlab.moe against transformers' Qwen2-MoE: same weights in, same routing and numbers out."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, Qwen2MoeConfig
from transformers.models.qwen2_moe import modeling_qwen2_moe as hf_moe

import qwenlab
from qwenlab import QwenConfig, QwenForCausalLM
from qwenlab import train as T
from qwenlab.config import ConfigError
from qwenlab.hf import (
    CheckpointError,
    fuse_experts,
    load_pretrained,
    save_pretrained,
    to_transformers,
    unfuse_experts,
)
from qwenlab.mlp import MLP
from qwenlab.moe import (
    SparseMoeBlock,
    capacity_mask,
    dispatch,
    expert_capacity,
    expert_load,
    load_balancing_loss,
    parameter_counts,
    route,
    router_z_loss,
    stable_topk,
)

# float32, a handful of small matmuls: the same math in another summation order, ~1e-7.
BLOCK_ATOL = 1e-5
# float32 through a few layers (as tests/test_parity.py).
MODEL_ATOL = 1e-4

# (hidden, experts, top-k, moe_intermediate, shared_intermediate)
BLOCK_CONFIGS = {
    "e4-k1": (16, 4, 1, 8, 12),
    "e8-k2": (32, 8, 2, 16, 24),
    "e6-k3": (24, 6, 3, 20, 8),
    "e16-k4": (48, 16, 4, 12, 40),
}


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def hf_moe_config(**overrides) -> Qwen2MoeConfig:
    fields = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  rms_norm_eps=1e-6, num_experts=8, num_experts_per_tok=2,
                  moe_intermediate_size=32, shared_expert_intermediate_size=48,
                  norm_topk_prob=False, bos_token_id=None, eos_token_id=None,
                  pad_token_id=None, tie_word_embeddings=False)
    return Qwen2MoeConfig(**{**fields, **overrides})


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (norm gains near 1), so no zero or one can hide a bug; std 0.1
    gives clear winners in greedy decoding and distinct router probabilities."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    return module.eval()


def random_hf_moe_model(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_moe_config(**overrides),
                                             attn_implementation="eager")
    return randomize_(model, seed)


def block_pair(name: str, norm_topk_prob: bool, seed: int = 0):
    """(transformers Qwen2MoeSparseMoeBlock, qwenlab SparseMoeBlock) with the same weights."""
    C, E, k, i, s = BLOCK_CONFIGS[name]
    hf_cfg = hf_moe_config(hidden_size=C, num_experts=E, num_experts_per_tok=k,
                           moe_intermediate_size=i, shared_expert_intermediate_size=s,
                           norm_topk_prob=norm_topk_prob)
    reference = randomize_(hf_moe.Qwen2MoeSparseMoeBlock(hf_cfg), seed)
    config = QwenConfig.from_hf(hf_cfg)
    ours = SparseMoeBlock(config).eval()
    prefix = "model.layers.0.mlp."
    state = unfuse_experts({prefix + n: t for n, t in reference.state_dict().items()}, config)
    ours.load_state_dict({n.removeprefix(prefix): t for n, t in state.items()})
    return reference, ours


def hf_router_logits(reference_block, x: torch.Tensor) -> torch.Tensor:
    return reference_block.gate(x.reshape(-1, x.shape[-1]))[0]


# --------------------------------------------------------------------------- block parity

@pytest.mark.parametrize("norm_topk_prob", [False, True])
@pytest.mark.parametrize("name", sorted(BLOCK_CONFIGS))
def test_block_output_and_router_logits_match_transformers(name, norm_topk_prob):
    reference, ours = block_pair(name, norm_topk_prob, seed=len(name))
    x = torch.randn(3, 11, BLOCK_CONFIGS[name][0], generator=_seeded(1))
    with torch.no_grad():
        expected = reference(x)
        expected_logits = hf_router_logits(reference, x)
        actual, logits = ours(x, return_router_logits=True)
    torch.testing.assert_close(actual, expected, atol=BLOCK_ATOL, rtol=0)
    torch.testing.assert_close(logits, expected_logits, atol=BLOCK_ATOL, rtol=0)
    assert torch.equal(ours(x), actual)  # the plain call (decode uses it) gives the same


def test_renormalised_top_k_weights_sum_to_one_and_plain_ones_do_not():
    logits = torch.randn(20, 8, generator=_seeded(0))
    plain, idx = route(logits, 2, norm_topk_prob=False)
    normed, idx2 = route(logits, 2, norm_topk_prob=True)
    assert torch.equal(idx, idx2)
    torch.testing.assert_close(normed.sum(-1), torch.ones(20))
    assert (plain.sum(-1) < 1).all()
    torch.testing.assert_close(plain, torch.softmax(logits, -1).gather(1, idx))


# --------------------------------------------------------------------------- ties

def test_routing_with_exact_ties_equals_transformers():
    reference, ours = block_pair("e8-k2", norm_topk_prob=False)
    with torch.no_grad():  # experts 1, 4 and 6 score identically; expert 3 never wins
        for block in (reference, ours):
            block.gate.weight[4] = block.gate.weight[1]
            block.gate.weight[6] = block.gate.weight[1]
    x = torch.randn(64, 32, generator=_seeded(2))
    with torch.no_grad():
        _, hf_w, hf_idx = reference.gate(x)
        _, w, idx = ours.gate(x)
        assert torch.equal(idx, hf_idx) and torch.equal(w, hf_w)
        torch.testing.assert_close(ours(x), reference(x[None])[0], atol=BLOCK_ATOL, rtol=0)
    tied = (idx[:, :, None] == torch.tensor([1, 4, 6])).any(-1).all(-1)
    assert tied.any(), "the test should contain tokens whose two choices are tied"


def test_all_equal_router_probabilities_pick_the_same_experts_as_transformers():
    reference, ours = block_pair("e8-k2", norm_topk_prob=True)
    with torch.no_grad():
        reference.gate.weight.zero_()
        ours.gate.weight.zero_()
        x = torch.randn(5, 32, generator=_seeded(3))
        assert torch.equal(ours.gate(x)[2], reference.gate(x)[2])
        torch.testing.assert_close(ours(x), reference(x[None])[0], atol=BLOCK_ATOL, rtol=0)


def test_a_tokens_route_does_not_depend_on_the_rest_of_the_batch():
    logits = torch.randint(0, 3, (40, 8), generator=_seeded(4)).float()  # many exact ties
    _, alone = zip(*(route(row[None], 2) for row in logits), strict=True)
    _, batched = route(logits, 2)
    assert torch.equal(torch.cat(alone), batched)
    _, again = route(logits.clone(), 2)
    assert torch.equal(again, batched)


def test_stable_topk_breaks_ties_by_the_lowest_index():
    probs = torch.tensor([[0.1, 0.3, 0.3, 0.3], [0.25, 0.25, 0.25, 0.25]])
    values, indices = stable_topk(probs, 2)
    assert indices.tolist() == [[1, 2], [0, 1]]
    torch.testing.assert_close(values, probs.gather(1, indices))


# --------------------------------------------------------------------------- dispatch

def _naive_per_token(x, indices, weights, experts, kept=None):
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        for j in range(indices.shape[1]):
            if kept is None or kept[n, j]:
                out[n] += weights[n, j] * experts[indices[n, j]](x[n])
    return out


@pytest.mark.parametrize("with_drops", [False, True])
def test_dispatch_equals_a_naive_loop_over_tokens(with_drops):
    torch.manual_seed(0)
    experts = [MLP(16, 8) for _ in range(5)]
    x = torch.randn(30, 16)
    weights, indices = route(torch.randn(30, 5), 2)
    kept = capacity_mask(indices, 5, capacity=7) if with_drops else None
    assert with_drops == (kept is not None and not kept.all())
    with torch.no_grad():
        torch.testing.assert_close(dispatch(x, indices, weights, experts, kept),
                                   _naive_per_token(x, indices, weights, experts, kept),
                                   atol=1e-6, rtol=0)


def test_dispatch_skips_experts_that_receive_no_token():
    calls = []

    class Spy(torch.nn.Module):
        def __init__(self, e):
            super().__init__()
            self.e = e

        def forward(self, x):
            calls.append((self.e, x.shape[0]))
            return x * (self.e + 1)

    indices = torch.tensor([[2, 0], [2, 3], [0, 2]])
    weights = torch.ones(3, 2)
    out = dispatch(torch.ones(3, 4), indices, weights, [Spy(e) for e in range(4)])
    assert calls == [(0, 2), (2, 3), (3, 1)]  # expert 1 got nothing and did not run
    torch.testing.assert_close(out[:, 0], torch.tensor([1 + 3, 3 + 4, 1 + 3.]))


# --------------------------------------------------------------------------- capacity

def test_capacity_is_the_rounded_up_share_times_the_factor():
    assert expert_capacity(100, 8, 2, 1.0) == 25
    assert expert_capacity(100, 8, 2, 1.25) == 32        # 31.25 rounded up
    assert expert_capacity(3, 64, 1, 1.0) == 1           # never below one slot


def test_capacity_keeps_first_choices_before_second_choices_then_token_order():
    # expert 0 is everyone's favourite; capacity 2
    indices = torch.tensor([[1, 0], [0, 1], [0, 2], [0, 1]])
    kept = capacity_mask(indices, 3, capacity=2)
    assert kept.tolist() == [[True, False],   # token 0's 2nd choice (expert 0) loses to 1st choices
                             [True, True],    # expert 1: token 0's 1st choice, then token 1's 2nd
                             [True, True],
                             [False, False]]  # expert 0 full after tokens 1, 2; expert 1 after 0, 1


def test_a_dropped_token_keeps_only_the_shared_expert():
    _, ours = block_pair("e4-k1", norm_topk_prob=False)
    ours.capacity_factor = 0.25    # 16 tokens, 4 experts, k = 1: one slot per expert
    x = torch.randn(16, 16, generator=_seeded(5))
    with torch.no_grad():
        out = ours(x)
        _, _, indices = ours.gate(x)
        kept = capacity_mask(indices, 4, expert_capacity(16, 4, 1, 0.25))[:, 0]
        shared_only = torch.sigmoid(ours.shared_expert_gate(x)) * ours.shared_expert(x)
        ours.capacity_factor = None
        full = ours(x)
    assert kept.sum().item() == len(indices.unique())
    torch.testing.assert_close(out[~kept], shared_only[~kept], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[kept], full[kept], atol=1e-6, rtol=0)


def test_a_generous_capacity_drops_nothing():
    _, ours = block_pair("e8-k2", norm_topk_prob=False)
    x = torch.randn(40, 32, generator=_seeded(6))
    with torch.no_grad():
        full = ours(x)
        ours.capacity_factor = 8.0  # E / k: room for every token at every expert
        torch.testing.assert_close(ours(x), full, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- losses

@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_load_balancing_loss_matches_transformers(top_k, with_mask):
    layers = tuple(torch.randn(2 * 9, 6, generator=_seeded(i)) * 2 for i in range(3))
    mask = None
    if with_mask:
        mask = torch.ones(2, 9, dtype=torch.long)
        mask[0, :4] = 0  # left padding
    expected = hf_moe.load_balancing_loss_func(layers, 6, top_k, mask)
    torch.testing.assert_close(load_balancing_loss(layers, 6, top_k, mask), expected,
                               atol=1e-6, rtol=0)


def test_load_balancing_loss_is_top_k_when_balanced_and_larger_when_collapsed():
    # 8 tokens, 4 experts, top-2: every expert chosen by 4 tokens, probabilities uniform-ish
    balanced = torch.tensor([[1., 1., 0., 0.], [0., 0., 1., 1.]]).repeat(4, 1) * 1e-3
    assert load_balancing_loss(balanced, 4, 2).item() == pytest.approx(2.0, abs=1e-3)
    collapsed = torch.tensor([[5., 4., 0., 0.]]).repeat(8, 1)
    assert load_balancing_loss(collapsed, 4, 2).item() > 3.5


def test_pooled_loss_misses_layers_that_overload_different_experts_and_per_layer_does_not():
    to_expert_0 = torch.tensor([[4., 4., 0., 0.]]).repeat(8, 1)   # every token: experts 0, 1
    to_expert_2 = torch.tensor([[0., 0., 4., 4.]]).repeat(8, 1)   # every token: experts 2, 3
    pooled = load_balancing_loss((to_expert_0, to_expert_2), 4, 2)
    per_layer = load_balancing_loss((to_expert_0, to_expert_2), 4, 2, per_layer=True)
    assert pooled.item() == pytest.approx(2.0, abs=1e-6)     # looks perfectly balanced
    assert per_layer.item() > 3.9                             # each layer is collapsed
    torch.testing.assert_close(per_layer, load_balancing_loss(to_expert_0, 4, 2))


def test_router_z_loss_is_the_mean_squared_logsumexp():
    logits = torch.randn(12, 5, generator=_seeded(7)) * 3
    expected = (torch.log(torch.exp(logits).sum(-1)) ** 2).mean()
    torch.testing.assert_close(router_z_loss(logits), expected)
    torch.testing.assert_close(router_z_loss((logits[:6], logits[6:])), expected)
    mask = torch.tensor([[1, 1, 1, 0, 0, 1]] * 2)
    z = torch.logsumexp(logits, -1) ** 2
    torch.testing.assert_close(router_z_loss(logits, mask), z[mask.flatten().bool()].mean())


def test_expert_load_is_the_share_of_slots():
    load = expert_load(torch.tensor([[0, 1], [0, 2], [0, 1]]), 4)
    assert load.tolist() == pytest.approx([0.5, 2 / 6, 1 / 6, 0.0])


def test_a_mask_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="attention_mask has 10 tokens"):
        load_balancing_loss(torch.randn(12, 4), 4, 2, torch.ones(2, 5))


# --------------------------------------------------------------------------- config

def test_tiny_moe_has_the_active_parameters_of_tiny():
    moe, dense = QwenConfig.tiny_moe(), QwenConfig.tiny()
    counts = parameter_counts(moe)
    assert counts["total"] == QwenForCausalLM(moe).num_parameters()
    assert counts["total"] > 1.5 * counts["active"]
    # the router (8 x 128) and the shared expert's gate (128) per layer are the only extras
    assert counts["active"] - parameter_counts(dense)["active"] == 4 * (8 * 128 + 128)


@pytest.mark.parametrize("name, total, active", [
    ("qwen1.5-moe-a2.7b", 14.3e9, 2.7e9), ("qwen2-57b-a14b", 57.4e9, 14.2e9)])
def test_published_moe_shapes_give_their_advertised_sizes(name, total, active):
    counts = parameter_counts(QwenConfig.moe_preset(name))
    assert counts["total"] == pytest.approx(total, rel=0.01)
    assert counts["active"] == pytest.approx(active, rel=0.01)


def test_moe_config_round_trips_through_transformers():
    cfg = QwenConfig.tiny_moe(decoder_sparse_step=2, mlp_only_layers=[3], norm_topk_prob=True)
    hf = cfg.to_hf()
    assert isinstance(hf, Qwen2MoeConfig)
    assert QwenConfig.from_hf(hf) == cfg
    assert QwenConfig.from_hf(json.loads(hf.to_json_string())) == cfg
    assert [cfg.is_moe_layer(i) for i in range(4)] == [False, True, False, False]


@pytest.mark.parametrize("changes, message", [
    (dict(num_experts=-1), "num_experts must be a non-negative integer"),
    (dict(num_experts_per_tok=9), "num_experts_per_tok \\(9\\) exceeds num_experts \\(8\\)"),
    (dict(num_experts_per_tok=0), "num_experts_per_tok must be a positive integer"),
    (dict(moe_intermediate_size=0), "moe_intermediate_size must be a positive integer"),
    (dict(decoder_sparse_step=0), "decoder_sparse_step must be a positive integer"),
    (dict(mlp_only_layers=[1, 7]), "mlp_only_layers lists \\[7\\]"),
    (dict(router_aux_loss_coef=-0.1), "router_aux_loss_coef must be >= 0"),
    (dict(moe_capacity_factor=0.0), "moe_capacity_factor must be positive"),
])
def test_invalid_moe_configs_name_the_problem(changes, message):
    with pytest.raises(ConfigError, match=message):
        QwenConfig.tiny_moe(**changes)


def test_a_dense_config_ignores_the_moe_fields():
    cfg = QwenConfig.tiny(num_experts_per_tok=99)   # meaningless without experts, not an error
    assert not cfg.is_moe and not any(cfg.is_moe_layer(i) for i in range(4))


# --------------------------------------------------------------------------- checkpoints

CHECKPOINT_CONFIGS = {
    "every-layer": dict(),
    "norm-topk-tied": dict(norm_topk_prob=True, tie_word_embeddings=True, num_experts_per_tok=3),
    "sparse-step-2": dict(decoder_sparse_step=2, num_experts=4, num_experts_per_tok=1),
    "mlp-only-layer": dict(mlp_only_layers=[0], num_experts=6),
}


@pytest.fixture(params=sorted(CHECKPOINT_CONFIGS))
def saved_moe(request, tmp_path):
    model = random_hf_moe_model(seed=len(request.param), **CHECKPOINT_CONFIGS[request.param])
    model.save_pretrained(tmp_path)
    return model, tmp_path


def test_checkpoint_logits_and_router_logits_match_transformers(saved_moe):
    reference, folder = saved_moe
    assert any(".experts.0.gate_proj.weight" in k for k in load_file(folder / "model.safetensors"))
    ours = load_pretrained(folder)
    ids = torch.randint(0, 320, (2, 19), generator=_seeded(8))
    with torch.no_grad():
        expected = reference(ids, output_router_logits=True)
        actual = ours(ids, output_router_logits=True)
    torch.testing.assert_close(actual.logits, expected.logits, atol=MODEL_ATOL, rtol=0)
    assert len(actual.router_logits) == len(expected.router_logits) > 0
    for a, e in zip(actual.router_logits, expected.router_logits, strict=True):
        torch.testing.assert_close(a, e, atol=MODEL_ATOL, rtol=0)
    torch.testing.assert_close(actual.aux_loss, expected.aux_loss, atol=1e-5, rtol=0)


def test_fused_in_memory_layout_loads_too(tmp_path):
    reference = random_hf_moe_model(seed=3)
    reference.save_pretrained(tmp_path)  # for config.json
    state = reference.state_dict()
    assert "model.layers.0.mlp.experts.gate_up_proj" in state
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    ours = load_pretrained(tmp_path)
    ids = torch.randint(0, 320, (1, 13), generator=_seeded(9))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, reference(ids).logits,
                                   atol=MODEL_ATOL, rtol=0)


def test_loss_with_the_load_balancing_loss_matches_transformers(saved_moe):
    reference, folder = saved_moe
    ours = load_pretrained(folder)
    ids = torch.randint(0, 320, (2, 16), generator=_seeded(10))
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[0, :5] = -100
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask, labels=labels, output_router_logits=True)
        plain = ours(ids, attention_mask=mask, labels=labels, output_router_logits=True)
        chunked = ours(ids, attention_mask=mask, labels=labels, output_router_logits=True,
                       return_logits=False)
        without = ours(ids, labels=labels)
    torch.testing.assert_close(plain.loss, expected.loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked.loss, expected.loss, atol=1e-5, rtol=0)
    coef = reference.config.router_aux_loss_coef
    torch.testing.assert_close(plain.loss - without.loss, coef * plain.aux_loss, atol=1e-6, rtol=0)


def test_loss_with_padding_matches_transformers(tmp_path):
    reference = random_hf_moe_model(seed=11)
    reference.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    ids = torch.randint(0, 320, (2, 10), generator=_seeded(11))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    labels = ids.clone()
    labels[1, :4] = -100  # no target is predicted from a pad position (whose logits differ)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # transformers counts from 0 at the first column
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask, position_ids=positions, labels=labels,
                             output_router_logits=True)
        actual = ours(ids, attention_mask=mask, labels=labels, output_router_logits=True)
    torch.testing.assert_close(actual.aux_loss, expected.aux_loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(actual.loss, expected.loss, atol=1e-5, rtol=0)


def test_greedy_generation_matches_transformers_generate(saved_moe):
    reference, folder = saved_moe
    ours = load_pretrained(folder)
    prompt = torch.randint(0, 320, (1, 7), generator=_seeded(12))
    with torch.no_grad():
        expected = reference.generate(prompt, max_new_tokens=20, do_sample=False)
    assert torch.equal(qwenlab.generate(ours, prompt, max_new_tokens=20, temperature=0.0),
                       expected)


def test_kv_cache_generation_equals_generation_without_it():
    torch.manual_seed(0)
    model = randomize_(QwenForCausalLM(QwenConfig.tiny_moe(vocab_size=128)), seed=0)
    prompt = torch.randint(0, 128, (2, 5), generator=_seeded(13))
    with_cache = qwenlab.generate(model, prompt, max_new_tokens=12, temperature=0.0)
    without = qwenlab.generate(model, prompt, max_new_tokens=12, temperature=0.0,
                               use_cache=False)
    assert torch.equal(with_cache, without)


def test_to_transformers_and_save_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = QwenConfig.tiny_moe(vocab_size=128, decoder_sparse_step=2, norm_topk_prob=True)
    ours = randomize_(QwenForCausalLM(cfg), seed=1)
    ids = torch.randint(0, 128, (2, 9), generator=_seeded(14))
    reference = to_transformers(ours)
    assert type(reference).__name__ == "Qwen2MoeForCausalLM"
    save_pretrained(ours, tmp_path)
    from_disk = AutoModelForCausalLM.from_pretrained(tmp_path)
    again = load_pretrained(tmp_path)
    with torch.no_grad():
        expected = ours(ids).logits
        for other in (reference, from_disk.eval(), again):
            torch.testing.assert_close(other(ids).logits, expected, atol=MODEL_ATOL, rtol=0)


def test_missing_expert_tensor_is_named(tmp_path):
    random_hf_moe_model(seed=1).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state.pop("model.layers.2.mlp.experts.5.up_proj.weight")
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError,
                       match="missing tensors: model.layers.2.mlp.experts.5.up_proj.weight"):
        load_pretrained(tmp_path)


def test_misshaped_fused_experts_are_named_with_both_shapes(tmp_path):
    reference = random_hf_moe_model(seed=2)
    reference.save_pretrained(tmp_path)
    config = QwenConfig.from_hf(reference.config)
    state = fuse_experts(load_file(tmp_path / "model.safetensors"), config)
    state["model.layers.1.mlp.experts.gate_up_proj"] = torch.zeros(8, 32, 64)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"gate_up_proj has shape \(8, 32, 64\), the config "
                                              r"needs \(8, 64, 64\)"):
        load_pretrained(tmp_path)


def test_moe_checkpoint_whose_config_has_too_few_experts_is_caught(tmp_path):
    random_hf_moe_model(seed=4).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_experts"] = 7
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unexpected tensors: model.layers.0.mlp.experts.7"):
        load_pretrained(tmp_path)


# --------------------------------------------------------------------------- training

def test_gradients_reach_the_router_through_the_balancing_loss():
    torch.manual_seed(0)
    model = QwenForCausalLM(QwenConfig.tiny_moe(vocab_size=64, num_hidden_layers=1))
    ids = torch.randint(0, 64, (2, 8), generator=_seeded(15))
    out = model(ids, output_router_logits=True)
    out.aux_loss.backward()
    assert model.model.layers[0].mlp.gate.weight.grad.abs().sum() > 0
    assert model.model.norm.weight.grad is None  # the final norm is after every router


def test_z_loss_is_added_when_its_coefficient_is_set():
    torch.manual_seed(0)
    model = QwenForCausalLM(QwenConfig.tiny_moe(vocab_size=64, router_z_loss_coef=0.5))
    ids = torch.randint(0, 64, (2, 8), generator=_seeded(16))
    with torch.no_grad():
        out = model(ids, labels=ids)
        plain = model(ids, labels=ids, output_router_logits=False)
    expected = plain.loss + 0.01 * out.aux_loss + 0.5 * out.z_loss
    torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.z_loss, router_z_loss(out.router_logits))


def test_train_reduces_the_loss_of_an_moe_model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = QwenForCausalLM(QwenConfig.tiny_moe(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, num_experts=4,
            moe_intermediate_size=16, shared_expert_intermediate_size=32))
        pattern = torch.randint(0, 64, (37,), generator=_seeded(1))
        cfg = T.TrainConfig(max_steps=30, batch_size=4, seq_len=32, lr=1e-2, min_lr=1e-3,
                            warmup_steps=3, eval_every=30, eval_batches=1)
        history = T.train(model, pattern.repeat(100), cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
