"""Shared fixtures: small random transformers Qwen2 models, saved and loaded like real ones."""

from __future__ import annotations

import os

import pytest  # noqa: E402
import torch  # noqa: E402

# Triton reads this when it is first imported (importing torch does not import it): without
# a GPU its kernels run in the interpreter on CPU tensors, which is how the kernel tests prove
# them on every machine; with one they run compiled.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from transformers import AutoModelForCausalLM, Qwen2Config  # noqa: E402

# Small configs that cover what the parity tests promise: tied and untied embeddings, KV
# groups of 1, 2, 4 and 7, head_dims 8, 16 and 32, and both RoPE thetas.
PARITY_CONFIGS = {
    "tied-gqa2-d16": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                          tie_word_embeddings=True, rope_theta=1e6),
    "untied-mha-d32": dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=4,
                           tie_word_embeddings=False, rope_theta=1e4),
    "tied-gqa7-d16": dict(hidden_size=112, num_attention_heads=7, num_key_value_heads=1,
                          tie_word_embeddings=True, rope_theta=1e6),
    "untied-gqa4-d32": dict(hidden_size=256, num_attention_heads=8, num_key_value_heads=2,
                            tie_word_embeddings=False, rope_theta=1e6),
    "untied-gqa7-d8": dict(hidden_size=112, num_attention_heads=14, num_key_value_heads=2,
                           tie_word_embeddings=False, rope_theta=1e6),
}


def hf_config(**overrides) -> Qwen2Config:
    fields = dict(vocab_size=320, hidden_size=64, intermediate_size=176, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  rms_norm_eps=1e-6, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return Qwen2Config(**{**fields, **overrides})


def random_hf_model(seed: int = 0, attn_implementation: str = "eager", **overrides):
    """A transformers Qwen2ForCausalLM whose every parameter is random: biases and norm gains
    too, so a bug that ignores one of them cannot hide behind its zero/one initial value.
    The weights are larger than usual (std 0.1) so next-token logits have clear winners and
    greedy decoding is not decided by float rounding."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(**overrides),
                                             attn_implementation=attn_implementation)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(params=sorted(PARITY_CONFIGS))
def saved_reference(request, tmp_path):
    """(transformers model, folder it was saved to with save_pretrained, config name)."""
    model = random_hf_model(seed=len(request.param), **PARITY_CONFIGS[request.param])
    model.save_pretrained(tmp_path)
    return model, tmp_path, request.param
