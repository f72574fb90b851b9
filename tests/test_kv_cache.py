"""The KV cache: decoding with it equals the full forward pass, and its size equals the formula."""

from __future__ import annotations

import pytest
import torch

import qwenlab
from qwenlab import KVCache, QwenConfig, QwenForCausalLM, kv_cache_bytes
from qwenlab.config import PRESETS
from qwenlab.decode import decode_step, prefill

ATOL = 1e-4  # float32, the same math in a different order


@pytest.fixture
def model():
    torch.manual_seed(0)
    return QwenForCausalLM(QwenConfig.tiny(num_hidden_layers=2, initializer_range=0.1)).eval()


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_kv_cache_decode_matches_full_forward(backend):
    torch.manual_seed(0)
    model = QwenForCausalLM(QwenConfig.tiny(num_hidden_layers=2, attn_backend=backend)).eval()
    ids = torch.randint(0, 4096, (2, 20))
    with torch.no_grad():
        full = model(ids).logits  # (2, 20, V)
        state = prefill(model, ids[:, :8], None, max_len=20)
        torch.testing.assert_close(state.logits, full[:, 7], atol=ATOL, rtol=0)
        for t in range(8, 20):
            decode_step(model, state, ids[:, t], ids[:, :t + 1])
            torch.testing.assert_close(state.logits, full[:, t], atol=ATOL, rtol=0,
                                       msg=lambda m: f"position {t}: {m}")


def test_forward_in_chunks_with_cache_matches_full_forward(model):
    ids = torch.randint(0, 4096, (2, 30))
    cache = KVCache(model.config, batch_size=2, max_len=30)
    with torch.no_grad():
        full = model(ids).logits
        parts = [model(ids[:, a:b], cache=cache).logits for a, b in [(0, 10), (10, 11), (11, 30)]]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=ATOL, rtol=0)
    assert cache.length == 30


def test_generation_feeds_one_token_per_step_and_the_cache_grows_by_one(model, monkeypatch):
    seen = []  # (layer, tokens written, cache length before) for every cache write
    original = KVCache.update

    def spy(self, layer_idx, k, v):
        seen.append((layer_idx, k.shape[2], self.length))
        return original(self, layer_idx, k, v)

    monkeypatch.setattr(KVCache, "update", spy)
    prompt = torch.randint(0, 4096, (1, 7))
    qwenlab.generate(model, prompt, max_new_tokens=5)
    layers = model.config.num_hidden_layers
    prefill_writes, decode_writes = seen[:layers], seen[layers:]
    assert all(n == 7 and length == 0 for _, n, length in prefill_writes)
    # 5 new tokens need 4 decode steps (the last token is never fed back)
    assert len(decode_writes) == 4 * layers
    for step in range(4):
        writes = decode_writes[step * layers:(step + 1) * layers]
        assert [n for _, n, _ in writes] == [1] * layers, "each step feeds exactly one token"
        assert {length for _, _, length in writes} == {7 + step}, "the cache grows by one per step"


def test_decode_step_reads_the_past_only_from_the_cache(model):
    ids = torch.randint(0, 4096, (1, 12))
    with torch.no_grad():
        state = prefill(model, ids[:, :11], None, max_len=12)
        garbage_history = torch.zeros_like(ids)  # decode_step must not look at it
        decode_step(model, state, ids[:, 11], garbage_history)
        torch.testing.assert_close(state.logits, model(ids).logits[:, -1], atol=ATOL, rtol=0)


def test_cache_without_room_says_so(model):
    cache = KVCache(model.config, batch_size=1, max_len=4)
    with pytest.raises(RuntimeError, match="KV cache is full"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kv_cache_bytes_equals_what_the_cache_allocates(dtype):
    cfg = QwenConfig.tiny()
    cache = KVCache(cfg, batch_size=3, max_len=100, dtype=dtype)
    assert cache.nbytes == kv_cache_bytes(cfg, batch_size=3, seq_len=100, dtype=dtype)


def test_kv_cache_bytes_of_a_filled_cache_equals_the_formula():
    torch.manual_seed(0)
    model = QwenForCausalLM(QwenConfig.tiny(num_hidden_layers=2)).eval()
    out = qwenlab.generate(model, torch.zeros(2, 5, dtype=torch.long), max_new_tokens=11)
    cache = KVCache(model.config, batch_size=2, max_len=out.shape[1])
    model(out, cache=cache)
    assert cache.length == 16
    assert cache.nbytes == kv_cache_bytes(model.config, 2, 16, torch.float32)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("dtype,size", [(torch.bfloat16, 2), ("fp32", 4), ("fp16", 2)])
def test_kv_cache_bytes_formula_for_every_preset(name, dtype, size):
    cfg = QwenConfig.preset(name)
    for batch, tokens in [(1, 4096), (4, 32768), (1, 131072)]:
        expected = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim \
            * tokens * batch * size
        assert kv_cache_bytes(cfg, batch, tokens, dtype) == expected


def test_gqa_shrinks_the_cache_by_kv_heads_over_heads():
    gqa = QwenConfig.preset("qwen2.5-72b")  # 64 query heads, 8 KV heads
    mha = gqa.replace(num_key_value_heads=gqa.num_attention_heads)
    assert kv_cache_bytes(mha, 1, 131072) == 8 * kv_cache_bytes(gqa, 1, 131072)
    assert kv_cache_bytes(gqa, 1, 131072, torch.bfloat16) == 40 * 2**30  # 40 GiB


def test_unknown_dtype_name_is_refused():
    with pytest.raises(ValueError, match="unknown dtype 'fp12'"):
        kv_cache_bytes(QwenConfig.tiny(), 1, 10, "fp12")


def test_cache_of_another_dtype_than_the_model_says_so(model):
    cache = KVCache(model.config, batch_size=1, max_len=8, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="the cache holds torch.bfloat16 but the model produced torch.float32"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
