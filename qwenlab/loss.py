"""The language-modelling loss: next-token cross-entropy, plain and chunked.

Position t predicts token t + 1, so logits are compared with the labels shifted by one; labels
equal to -100 (padding, prompt tokens in SFT) are skipped, and the loss is the mean over the
rest. That is transformers' ``ForCausalLMLoss`` and what TRL's trainers minimise.

The full logits tensor is large: batch 8 x 256 tokens x 151,936 vocabulary entries is 1.2 GiB in
float32, and autograd keeps it for the backward pass. ``chunked_lm_loss`` never holds it: it
walks over the tokens in chunks and, while each chunk's logits exist, already computes their
gradient (softmax - one_hot), turns it into the gradients of the hidden states and of the LM
head weight, and drops the logits. Same loss, same gradients, a fraction of the memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) labels -> (B, T) targets: target t is label t + 1; the last position has none."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (B, T, V) against the next token of labels (B, T)."""
    targets = shift_labels(labels)
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                           ignore_index=IGNORE_INDEX)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Sum of cross-entropies of (h @ W^T) against targets, with the gradients computed in the
    forward pass, chunk by chunk, so the (N, V) logits never exist all at once."""

    @staticmethod
    def forward(ctx, h, weight, targets, chunk_size: int, needs_grad: bool):
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if needs_grad else None
        # float32 accumulation across chunks, whatever the model's dtype
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if needs_grad else None
        for start in range(0, h.shape[0], chunk_size):
            hc, tc = h[start:start + chunk_size], targets[start:start + chunk_size]  # (n, C), (n,)
            log_probs = torch.log_softmax((hc @ weight.T).float(), dim=-1)  # (n, V)
            valid = tc != IGNORE_INDEX
            safe_t = tc.clamp(min=0)
            picked = log_probs.gather(1, safe_t[:, None]).squeeze(1)        # (n,)
            total -= (picked * valid).sum()
            if needs_grad:
                # d(sum of CE)/d logits = softmax - one_hot(target), zero for ignored rows;
                # computed in place in the log-probs' buffer, which is not needed any more
                dlogits = log_probs.exp_()
                dlogits[torch.arange(len(tc), device=h.device), safe_t] -= 1.0
                dlogits.mul_(valid[:, None])
                dlogits = dlogits.to(h.dtype)
                torch.mm(dlogits, weight, out=grad_h[start:start + chunk_size])  # (n, C)
                grad_w.addmm_(dlogits.T.float(), hc.float())                    # (V, C)
        if needs_grad:
            ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_total, grad_w * grad_total, None, None, None


def chunked_lm_loss(hidden: torch.Tensor, lm_head_weight: torch.Tensor, labels: torch.Tensor,
                    chunk_size: int = 1024) -> torch.Tensor:
    """``causal_lm_loss(hidden @ lm_head_weight.T, labels)`` without materialising the logits.

    hidden: (B, T, C) final hidden states; lm_head_weight: (V, C); labels: (B, T).
    """
    targets = shift_labels(labels).flatten()          # (B*T,)
    n_valid = (targets != IGNORE_INDEX).sum()
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or lm_head_weight.requires_grad)
    total = _ChunkedLinearCrossEntropy.apply(hidden.flatten(0, 1), lm_head_weight, targets,
                                             chunk_size, needs_grad)
    return total / n_valid  # NaN when no label is valid, as F.cross_entropy gives
