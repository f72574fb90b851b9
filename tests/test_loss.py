"""The LM loss: shifted, -100 ignored, and the chunked version equal to the plain one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qwenlab.loss import causal_lm_loss, chunked_lm_loss, shift_labels


def test_position_t_is_scored_against_token_t_plus_1():
    labels = torch.tensor([[5, 6, 7, -100]])
    assert shift_labels(labels).tolist() == [[6, 7, -100, -100]]
    logits = torch.randn(1, 4, 10)
    expected = F.cross_entropy(logits[0, :2], torch.tensor([6, 7]))
    torch.testing.assert_close(causal_lm_loss(logits, labels), expected)


def test_chunked_loss_and_gradients_equal_the_plain_loss():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 11, 16, generator=g, requires_grad=True)
    w = torch.randn(50, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 50, (3, 11), generator=g)
    labels[1, :4] = -100
    plain = causal_lm_loss(h @ w.T, labels)
    dh, dw = torch.autograd.grad(plain * 3.0, (h, w))  # an upstream factor flows through
    for chunk in (1, 7, 64):
        chunked = chunked_lm_loss(h, w, labels, chunk_size=chunk)
        torch.testing.assert_close(chunked, plain, atol=1e-6, rtol=1e-6)
        ch, cw = torch.autograd.grad(chunked * 3.0, (h, w))
        torch.testing.assert_close(ch, dh, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(cw, dw, atol=1e-6, rtol=1e-5)


def test_chunked_loss_without_grad_skips_the_gradient_work():
    h, w = torch.randn(2, 5, 8), torch.randn(20, 8)
    labels = torch.randint(0, 20, (2, 5))
    with torch.no_grad():
        loss = chunked_lm_loss(h, w, labels, chunk_size=3)
    torch.testing.assert_close(loss, causal_lm_loss(h @ w.T, labels))
    assert loss.grad_fn is None
