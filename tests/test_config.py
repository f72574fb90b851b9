"""QwenConfig: the real Qwen2.5 shapes, the course's tiny model, and errors that say what's wrong."""

from __future__ import annotations

import pytest
from transformers import Qwen2Config

from qwenlab import ConfigError, QwenConfig
from qwenlab.config import PRESETS

# DESIGN.md's table: vocab, layers, heads, kv heads, hidden, intermediate, head_dim, tied
QWEN25 = {
    "qwen2.5-0.5b": (151936, 24, 14, 2, 896, 4864, 64, True),
    "qwen2.5-1.5b": (151936, 28, 12, 2, 1536, 8960, 128, True),
    "qwen2.5-3b": (151936, 36, 16, 2, 2048, 11008, 128, True),
    "qwen2.5-7b": (152064, 28, 28, 4, 3584, 18944, 128, False),
    "qwen2.5-14b": (152064, 48, 40, 8, 5120, 13824, 128, False),
    "qwen2.5-32b": (152064, 64, 40, 8, 5120, 27648, 128, False),
    "qwen2.5-72b": (152064, 80, 64, 8, 8192, 29568, 128, False),
}


def test_there_is_a_preset_for_every_qwen25_size():
    assert set(PRESETS) == set(QWEN25)


@pytest.mark.parametrize("name", sorted(QWEN25))
def test_presets_have_the_published_shapes(name):
    vocab, layers, heads, kv, hidden, inter, head_dim, tied = QWEN25[name]
    cfg = QwenConfig.preset(name)
    assert (cfg.vocab_size, cfg.num_hidden_layers, cfg.num_attention_heads,
            cfg.num_key_value_heads, cfg.hidden_size, cfg.intermediate_size, cfg.head_dim,
            cfg.tie_word_embeddings) == (vocab, layers, heads, kv, hidden, inter, head_dim, tied)
    assert cfg.rope_theta == 1e6 and cfg.rms_norm_eps == 1e-6


def test_preset_names_are_forgiving_about_case_and_instruct_suffix():
    assert QwenConfig.preset("Qwen2.5-7B-Instruct") == QwenConfig.preset("qwen2.5-7b")


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'qwen2.5-9b'.*qwen2.5-0.5b"):
        QwenConfig.preset("qwen2.5-9b")


def test_tiny_is_a_small_gqa_model_with_room_for_512_positions():
    cfg = QwenConfig.tiny()
    assert cfg.max_position_embeddings >= 512
    assert cfg.num_key_value_groups > 1
    assert QwenConfig.tiny(num_hidden_layers=2).num_hidden_layers == 2


@pytest.mark.parametrize("name", sorted(QWEN25))
def test_round_trip_through_transformers_config(name):
    cfg = QwenConfig.preset(name)
    hf = cfg.to_hf()
    assert isinstance(hf, Qwen2Config)
    assert hf.rope_parameters["rope_theta"] == cfg.rope_theta
    assert QwenConfig.from_hf(hf) == cfg
    assert QwenConfig.from_hf(hf.to_dict()) == cfg


@pytest.mark.parametrize("changes, message", [
    (dict(hidden_size=100, num_attention_heads=3), "hidden_size \\(100\\) is not divisible by num_attention_heads \\(3\\)"),
    (dict(num_attention_heads=6, num_key_value_heads=4, hidden_size=96), "num_attention_heads \\(6\\) is not divisible by num_key_value_heads \\(4\\)"),
    (dict(hidden_size=60, num_attention_heads=4, num_key_value_heads=2), "head_dim \\(15 = 60 / 4\\) is odd"),
    (dict(vocab_size=0), "vocab_size must be a positive integer, got 0"),
    (dict(num_hidden_layers=-2), "num_hidden_layers must be a positive integer, got -2"),
    (dict(intermediate_size=12.5), "intermediate_size must be a positive integer"),
    (dict(num_key_value_heads=0), "num_key_value_heads must be a positive integer"),
    (dict(rms_norm_eps=0.0), "rms_norm_eps must be positive"),
    (dict(rope_theta=-1.0), "rope_theta must be positive"),
    (dict(attn_backend="flash"), "attn_backend must be one of"),
])
def test_invalid_configs_raise_an_error_that_names_the_problem(changes, message):
    with pytest.raises(ConfigError, match=message):
        QwenConfig.tiny(**changes)


def test_transformers_configs_we_cannot_run_are_refused():
    with pytest.raises(ConfigError, match="model_type 'qwen2'"):
        QwenConfig.from_hf({"model_type": "llama"})
    hf = QwenConfig.tiny().to_hf().to_dict()
    with pytest.raises(ConfigError, match="use_sliding_window"):
        QwenConfig.from_hf({**hf, "use_sliding_window": True})
    with pytest.raises(ConfigError, match="rope type 'yarn'"):
        QwenConfig.from_hf({**hf, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6}})
