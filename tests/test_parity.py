"""qwenlab against transformers' Qwen2: same checkpoint in, same numbers out."""

from __future__ import annotations

import torch

import qwenlab
from qwenlab.hf import load_pretrained, to_transformers

# float32 through a few layers: identical math differs only in summation order, ~1e-6.
ATOL = 1e-4


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_logits_and_every_hidden_state_match_transformers(saved_reference):
    reference, folder, _ = saved_reference
    ours = load_pretrained(folder)
    ids = torch.randint(0, reference.config.vocab_size, (2, 23), generator=_seeded(1))
    with torch.no_grad():
        expected = reference(ids, output_hidden_states=True)
        actual = ours(ids, output_hidden_states=True)
    assert len(actual.hidden_states) == len(expected.hidden_states) == reference.config.num_hidden_layers + 1
    for i, (a, e) in enumerate(zip(actual.hidden_states, expected.hidden_states, strict=True)):
        torch.testing.assert_close(a, e, atol=ATOL, rtol=0, msg=lambda m: f"hidden state {i}: {m}")
    torch.testing.assert_close(actual.logits, expected.logits, atol=ATOL, rtol=0)


def test_greedy_generation_matches_transformers_generate(saved_reference):
    reference, folder, _ = saved_reference
    ours = load_pretrained(folder)
    prompt = torch.randint(0, reference.config.vocab_size, (1, 9), generator=_seeded(2))
    with torch.no_grad():
        expected = reference.generate(prompt, max_new_tokens=30, do_sample=False)
    actual = qwenlab.generate(ours, prompt, max_new_tokens=30, temperature=0.0)
    assert actual.shape == (1, 9 + 30)
    assert torch.equal(actual, expected)


def test_loss_matches_transformers(saved_reference):
    reference, folder, _ = saved_reference
    ours = load_pretrained(folder)
    ids = torch.randint(0, reference.config.vocab_size, (2, 16), generator=_seeded(3))
    labels = ids.clone()
    labels[0, :5] = -100  # ignored positions, as in SFT prompts
    with torch.no_grad():
        expected = reference(ids, labels=labels).loss
        plain = ours(ids, labels=labels).loss
        chunked = ours(ids, labels=labels, return_logits=False).loss
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked, expected, atol=1e-5, rtol=0)


def test_gradients_match_transformers(saved_reference):
    reference, folder, _ = saved_reference
    reference.train()
    ours = load_pretrained(folder).train()
    ids = torch.randint(0, reference.config.vocab_size, (2, 12), generator=_seeded(4))
    reference(ids, labels=ids).loss.backward()
    ours(ids, labels=ids, return_logits=False).loss.backward()
    ref_grads = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, atol=1e-5, rtol=1e-4,
                                   msg=lambda m: f"gradient of {name}: {m}")


def test_tied_embeddings_share_storage_after_loading(saved_reference):
    reference, folder, _ = saved_reference
    ours = load_pretrained(folder)
    shared = ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()
    assert shared == reference.config.tie_word_embeddings


def test_to_transformers_round_trip_gives_identical_logits(saved_reference):
    reference, folder, _ = saved_reference
    ours = load_pretrained(folder)
    back = to_transformers(ours)
    ids = torch.randint(0, reference.config.vocab_size, (2, 11), generator=_seeded(5))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, ours(ids).logits)
    assert back.config.tie_word_embeddings == reference.config.tie_word_embeddings
    if back.config.tie_word_embeddings:
        assert back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()


def test_save_pretrained_is_read_by_transformers(tmp_path):
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    ours = qwenlab.QwenForCausalLM(qwenlab.QwenConfig.tiny(num_hidden_layers=2)).eval()
    qwenlab.hf.save_pretrained(ours, tmp_path)
    reference = Qwen2ForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 4096, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(reference(ids).logits, ours(ids).logits, atol=ATOL, rtol=0)
    assert torch.equal(qwenlab.hf.load_pretrained(tmp_path)(ids).logits, ours(ids).logits)
