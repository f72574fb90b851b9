"""qwenlab.generate: greedy, sampling, batches with left padding, stopping."""

from __future__ import annotations

import pytest
import torch

import qwenlab
from qwenlab import QwenConfig, QwenForCausalLM
from qwenlab.generate import sample_next, top_p_filter


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return QwenForCausalLM(QwenConfig.tiny(num_hidden_layers=2, initializer_range=0.1)).eval()


def test_returns_prompt_followed_by_new_tokens(model):
    prompt = torch.randint(0, 4096, (2, 6))
    out = qwenlab.generate(model, prompt, max_new_tokens=9)
    assert out.shape == (2, 15)
    assert torch.equal(out[:, :6], prompt)


def test_greedy_with_and_without_cache_agree(model):
    prompt = torch.randint(0, 4096, (2, 5))
    assert torch.equal(qwenlab.generate(model, prompt, 20, use_cache=True),
                       qwenlab.generate(model, prompt, 20, use_cache=False))


def test_greedy_is_argmax_of_the_full_forward(model):
    prompt = torch.randint(0, 4096, (1, 4))
    out = qwenlab.generate(model, prompt, 6)
    with torch.no_grad():
        for t in range(4, 10):
            assert out[0, t] == model(out[:, :t]).logits[0, -1].argmax()


def test_left_padded_batch_equals_each_prompt_alone(model):
    prompts = [torch.randint(0, 4096, (n,)) for n in (3, 8, 5)]
    width = max(len(p) for p in prompts)
    pad = 0
    batch = torch.full((3, width), pad)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, p in enumerate(prompts):
        batch[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    out = qwenlab.generate(model, batch, 12, attention_mask=mask)
    for i, p in enumerate(prompts):
        alone = qwenlab.generate(model, p[None], 12)
        assert torch.equal(out[i, width:], alone[0, len(p):]), f"row {i}"


def test_left_padded_logits_equal_unpadded_logits(model):
    ids = torch.randint(1, 4096, (1, 7))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 7, dtype=torch.long)], 1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded, attention_mask=mask).logits[:, 3:],
                                   model(ids).logits, atol=1e-4, rtol=0)


def test_stops_at_eos_and_pads_finished_rows(model):
    prompt = torch.randint(0, 4096, (2, 4))
    free = qwenlab.generate(model, prompt, 10)
    eos = int(free[0, 6])  # row 0's third new token becomes the stop token
    out = qwenlab.generate(model, prompt, 10, eos_token_id=eos, pad_token_id=4095)
    row0 = out[0, 4:].tolist()
    stop = row0.index(eos)
    assert stop <= 2
    assert all(t == 4095 for t in row0[stop + 1:])
    if eos not in free[1, 4:].tolist():
        assert torch.equal(out[1, :out.shape[1]], free[1, :out.shape[1]])


def test_generation_ends_early_when_every_row_has_stopped(model):
    prompt = torch.randint(0, 4096, (1, 4))
    first = int(qwenlab.generate(model, prompt, 1)[0, -1])
    out = qwenlab.generate(model, prompt, 50, eos_token_id=first)
    assert out.shape == (1, 5)


def test_sampling_is_reproducible_with_a_seed_and_varies_without(model):
    prompt = torch.randint(0, 4096, (1, 4))
    a = qwenlab.generate(model, prompt, 15, temperature=1.5, seed=7)
    b = qwenlab.generate(model, prompt, 15, temperature=1.5, seed=7)
    c = qwenlab.generate(model, prompt, 15, temperature=1.5, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(a, qwenlab.generate(model, prompt, 15, temperature=1.5, generator=g))


def test_top_k_1_is_greedy(model):
    prompt = torch.randint(0, 4096, (2, 4))
    assert torch.equal(qwenlab.generate(model, prompt, 10, temperature=1.0, top_k=1, seed=0),
                       qwenlab.generate(model, prompt, 10))


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.1, 0.3, 0.1]])
    kept = torch.isfinite(top_p_filter(probs.log(), 0.75))
    assert kept.tolist() == [[True, False, True, False]]  # 0.5 + 0.3 >= 0.75
    kept = torch.isfinite(top_p_filter(probs.log(), 0.4))
    assert kept.tolist() == [[True, False, False, False]]  # the top token is always kept


def test_sampled_tokens_come_from_the_allowed_set():
    logits = torch.tensor([[3.0, 2.9, -5.0, 2.8, -9.0]]).repeat(200, 1)
    g = torch.Generator().manual_seed(0)
    picks = sample_next(logits, temperature=1.0, top_k=2, generator=g)
    assert set(picks.tolist()) == {0, 1}


def test_negative_temperature_is_refused(model):
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        qwenlab.generate(model, torch.zeros(1, 2, dtype=torch.long), 3, temperature=-1.0)


def test_generation_in_bfloat16_runs_and_matches_its_own_forward():
    torch.manual_seed(0)
    model = QwenForCausalLM(QwenConfig.tiny(num_hidden_layers=2, initializer_range=0.1))
    model = model.to(torch.bfloat16).eval()
    prompt = torch.randint(0, 4096, (1, 5))
    out = qwenlab.generate(model, prompt, 4)
    with torch.no_grad():
        assert out[0, 5] == model(prompt).logits[0, -1].argmax()
