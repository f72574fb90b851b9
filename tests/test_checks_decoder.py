"""The chapter 05 graders pass the solution, name typical mistakes, and spot an untouched stub."""

from __future__ import annotations

import pytest
import torch

from qwenlab import QwenConfig, QwenForCausalLM, checks
from qwenlab.checks.decoder import _param_configs, count_parameters


def stub(*args):
    raise NotImplementedError("write me")


# ---------------------------------------------------------------- decoder block
def block_solution(block, h, cos, sin):
    h = h + block.self_attn(block.input_layernorm(h), cos, sin)
    return h + block.mlp(block.post_attention_layernorm(h))


def block_post_norm(block, h, cos, sin):
    h = block.input_layernorm(h + block.self_attn(h, cos, sin))
    return block.post_attention_layernorm(h + block.mlp(h))


def block_no_attention_residual(block, h, cos, sin):
    h = block.self_attn(block.input_layernorm(h), cos, sin)
    return h + block.mlp(block.post_attention_layernorm(h))


def block_no_mlp_residual(block, h, cos, sin):
    h = h + block.self_attn(block.input_layernorm(h), cos, sin)
    return block.mlp(block.post_attention_layernorm(h))


def block_norm_after_residual(block, h, cos, sin):
    h = block.post_attention_layernorm(h + block.self_attn(block.input_layernorm(h), cos, sin))
    return h + block.mlp(h)


def block_residual_of_normalised(block, h, cos, sin):
    x = block.input_layernorm(h)
    h = x + block.self_attn(x, cos, sin)
    x = block.post_attention_layernorm(h)
    return x + block.mlp(x)


def block_parallel(block, h, cos, sin):
    return (h + block.self_attn(block.input_layernorm(h), cos, sin)
            + block.mlp(block.post_attention_layernorm(h)))


def test_decoder_block_grader_passes_the_pre_norm_block():
    assert checks.check_decoder_block(block_solution).passed


@pytest.mark.parametrize("wrong, diagnosis", [
    (block_post_norm, "post-norm"),
    (block_no_attention_residual, "attention sub-layer has no residual"),
    (block_no_mlp_residual, "MLP sub-layer has no residual"),
    (block_norm_after_residual, "normalised after the residual sum"),
    (block_residual_of_normalised, "residual adds the normalised input"),
    (block_parallel, "parallel block"),
])
def test_decoder_block_grader_names_the_mistake(wrong, diagnosis):
    result = checks.check_decoder_block(wrong)
    assert result.status == "fail" and diagnosis in result.message


def test_decoder_block_grader_reports_a_stub_as_not_attempted():
    assert checks.check_decoder_block(stub).status == "not attempted"


def test_decoder_block_grader_reports_an_unknown_mistake_by_its_difference():
    result = checks.check_decoder_block(lambda b, h, c, s: 1.01 * block_solution(b, h, c, s))
    assert result.status == "fail" and "differs from the reference" in result.message


# ---------------------------------------------------------------- parameter count
def param_solution(cfg):
    h, V, L, i = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers, cfg.intermediate_size
    kv = cfg.num_key_value_heads * cfg.head_dim
    embeddings = V * h * (1 if cfg.tie_word_embeddings else 2)
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h
    return embeddings + L * layer + h


def test_reference_formula_equals_num_parameters_of_a_meta_model():
    for cfg in _param_configs():
        with torch.device("meta"):
            model = QwenForCausalLM(cfg)
        assert count_parameters(cfg) == model.num_parameters(), cfg


def test_param_count_grader_passes_the_formula():
    assert checks.check_param_count(param_solution).passed


def test_param_count_grader_accepts_an_integer_tensor():
    assert checks.check_param_count(lambda cfg: torch.tensor(param_solution(cfg))).passed


def head_counted_twice(cfg):
    return param_solution(cfg) + (cfg.vocab_size * cfg.hidden_size
                                  if cfg.tie_word_embeddings else 0)


def no_qkv_bias(cfg):
    return param_solution(cfg) - cfg.num_hidden_layers * (
        cfg.hidden_size + 2 * cfg.num_key_value_heads * cfg.head_dim)


def kv_with_all_heads(cfg):
    return param_solution(QwenConfig(**{**cfg.__dict__,
                                        "num_key_value_heads": cfg.num_attention_heads}))


def no_norms(cfg):
    return param_solution(cfg) - (2 * cfg.num_hidden_layers + 1) * cfg.hidden_size


@pytest.mark.parametrize("wrong, diagnosis", [
    (head_counted_twice, "counted twice"),
    (no_qkv_bias, "biases are missing"),
    (kv_with_all_heads, "sized with num_attention_heads"),
    (no_norms, "RMSNorm weights are missing"),
])
def test_param_count_grader_names_the_mistake(wrong, diagnosis):
    result = checks.check_param_count(wrong)
    assert result.status == "fail" and diagnosis in result.message


def test_param_count_grader_refuses_a_float():
    result = checks.check_param_count(lambda cfg: float(param_solution(cfg)))
    assert result.status == "fail" and "as an int" in result.message


def test_param_count_grader_points_at_the_first_wrong_size():
    result = checks.check_param_count(lambda cfg: param_solution(cfg) + 7)
    assert result.status == "fail" and "preset 0" in result.message and "(+7)" in result.message


def test_param_count_grader_reports_a_stub_as_not_attempted():
    assert checks.check_param_count(stub).status == "not attempted"


# ---------------------------------------------------------------- sampling distribution
def sampling_solution(logits, temperature, top_p):
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_p, order = probs.sort(descending=True)
    before = sorted_p.cumsum(-1) - sorted_p
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order[before < top_p]] = True
    probs = probs * keep
    return probs / probs.sum()


def sampling_times_temperature(logits, temperature, top_p):
    return sampling_solution(logits * temperature * temperature, temperature, top_p)


def sampling_not_renormalised(logits, temperature, top_p):
    full = torch.softmax(logits / temperature, dim=-1)
    return torch.where(sampling_solution(logits, temperature, top_p) > 0, full, 0.0)


def sampling_drops_crossing_token(logits, temperature, top_p):
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_p, order = probs.sort(descending=True)
    keep_sorted = sorted_p.cumsum(-1) <= top_p
    keep_sorted[0] = True
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order[keep_sorted]] = True
    return probs * keep / (probs * keep).sum()


def sampling_nucleus_before_temperature(logits, temperature, top_p):
    keep = sampling_solution(logits, 1.0, top_p) > 0
    return torch.softmax((logits / temperature).masked_fill(~keep, float("-inf")), dim=-1)


def test_sampling_grader_passes_the_solution():
    assert checks.check_sampling_probs(sampling_solution).passed


@pytest.mark.parametrize("wrong, diagnosis", [
    (sampling_times_temperature, "multiplied by the temperature"),
    (sampling_not_renormalised, "not renormalised"),
    (sampling_drops_crossing_token, "crosses top_p is dropped"),
    (sampling_nucleus_before_temperature, "nucleus is chosen before the temperature"),
    (lambda logits, t, p: sampling_solution(logits, 1.0, p), "temperature is ignored"),
])
def test_sampling_grader_names_the_mistake(wrong, diagnosis):
    result = checks.check_sampling_probs(wrong)
    assert result.status == "fail" and diagnosis in result.message


def test_sampling_grader_reports_a_stub_as_not_attempted():
    assert checks.check_sampling_probs(stub).status == "not attempted"
