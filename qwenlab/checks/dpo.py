"""Graders for the exercises of chapter 12: DPO.

- ``check_sequence_logprobs(fn)``: fn(logits, input_ids, prompt_lengths, completion_lengths)
  -> (B,) tensor, the **summed** log-probabilities of each row's completion tokens. Row b is
  ``prompt_lengths[b]`` prompt tokens, then ``completion_lengths[b]`` completion tokens (the
  reply and its ``<|im_end|>``), then right padding; ``logits`` (B, T, V) are the model's
  output on ``input_ids`` (B, T), so the token at position t is predicted by the logits at
  position t - 1.
- ``check_dpo_loss(fn)``: fn(pol_chosen, pol_rejected, ref_chosen, ref_rejected, beta) ->
  ``(loss, chosen_rewards, rejected_rewards)``, as ``qwenlab.dpo.dpo_loss``: the batch mean of
  ``-log sigmoid(beta * ((pol_chosen - ref_chosen) - (pol_rejected - ref_rejected)))`` and
  the implicit rewards ``beta * (policy - reference)``, detached.

Each trial runs the learner's function on seeded random inputs, compares it with the
reference, and when it is wrong, recomputes the typical wrong answers to name the mistake.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..dpo import dpo_loss
from ._grading import compare, first_match, grade

__all__ = ["check_dpo_loss", "check_sequence_logprobs"]


# --------------------------------------------------------------------------- sequence log-probs

def _logprob_inputs(seed: int = 0):
    """Random logits over a vocabulary of 11, four rows of different prompt and completion
    lengths, right-padded with id 0."""
    g = torch.Generator().manual_seed(seed)
    prompt_lengths, completion_lengths = [3, 5, 2, 4], [4, 2, 5, 3]
    T, V = 11, 11
    input_ids = torch.zeros(4, T, dtype=torch.long)
    for b, (p, c) in enumerate(zip(prompt_lengths, completion_lengths)):
        input_ids[b, :p + c] = torch.randint(1, V, (p + c,), generator=g)
    logits = 2.0 * torch.randn(4, T, V, generator=g)
    return logits, input_ids, prompt_lengths, completion_lengths


def _span_logprobs(logits, input_ids, starts, stops, shift: bool = True) -> torch.Tensor:
    """Sum over tokens t in [start, stop) of log p(token t): predicted at t - 1 (shift=True),
    or, wrongly, read at t itself (shift=False)."""
    log_probs = torch.log_softmax(logits.double(), dim=-1)           # (B, T, V)
    out = []
    for b, (lo, hi) in enumerate(zip(starts, stops)):
        total = torch.zeros((), dtype=torch.float64)
        for t in range(lo, hi):
            pos = t - 1 if shift else t
            if 0 <= pos < logits.shape[1] and t < logits.shape[1]:
                total = total + log_probs[b, pos, input_ids[b, t]]
        out.append(total)
    return torch.stack(out)


def reference_sequence_logprobs(logits, input_ids, prompt_lengths, completion_lengths):
    ends = [p + c for p, c in zip(prompt_lengths, completion_lengths)]
    return _span_logprobs(logits, input_ids, prompt_lengths, ends).float()


def _logprob_mistakes(logits, ids, P, C) -> dict[str, torch.Tensor]:
    ends = [p + c for p, c in zip(P, C)]
    right = _span_logprobs(logits, ids, P, ends)
    lengths = torch.tensor(C, dtype=torch.float64)
    return {
        "you averaged the completion log-probs over tokens (the length-normalised variant); "
        "DPO's log pi(y|x) is the log-probability of the whole sequence, the **sum** over "
        "its tokens":
            right / lengths,
        "you returned the negative log-likelihood (a loss, positive); return the "
        "log-probability itself, sum of log p(token), which is negative":
            -right,
        "the mask is off by one: it includes the last prompt token. The completion starts at "
        "token prompt_length (predicted by the logits at prompt_length - 1), not one earlier":
            _span_logprobs(logits, ids, [p - 1 for p in P], ends),
        "the mask is off by one: <|im_end|>, the completion's last token, is left out. The "
        "completion is the reply and its <|im_end|>: the model must learn to stop":
            _span_logprobs(logits, ids, P, [e - 1 for e in ends]),
        "the mask is off by one in the other direction: you skipped the first completion "
        "token and counted the token after <|im_end|> (a pad). Token t is predicted by the "
        "logits at t - 1, so the completion's log-probs sit at positions "
        "prompt_length - 1 ... prompt_length + completion_length - 2":
            _span_logprobs(logits, ids, [p + 1 for p in P], [e + 1 for e in ends]),
        "the logits are not shifted: the logits at position t predict token t + 1, so read "
        "log_softmax(logits[:, :-1]) at input_ids[:, 1:]":
            _span_logprobs(logits, ids, P, ends, shift=False),
        "you used the raw logits instead of log-probabilities: apply log_softmax over the "
        "vocabulary first":
            _raw_logit_sum(logits, ids, P, ends),
        "you summed over the whole sequence, prompt included; only the completion's tokens "
        "count":
            _span_logprobs(logits, ids, [1] * len(P), ends),
    }


def _raw_logit_sum(logits, ids, starts, stops) -> torch.Tensor:
    out = []
    for b, (lo, hi) in enumerate(zip(starts, stops)):
        out.append(sum(logits[b, t - 1, ids[b, t]].double() for t in range(lo, hi)))
    return torch.stack(out)


def _sequence_logprobs_trial(fn) -> str | None:
    for seed in (0, 1):
        logits, ids, P, C = _logprob_inputs(seed)
        out = fn(logits.clone(), ids.clone(), list(P), list(C))
        if not isinstance(out, torch.Tensor):
            return f"fn should return a torch.Tensor of shape (B,), got {type(out).__name__}"
        if out.shape != (len(P),):
            return (f"fn should return one log-probability per row, shape ({len(P)},); got "
                    f"shape {tuple(out.shape)}")
        expected = reference_sequence_logprobs(logits, ids, P, C)
        if compare(out.float(), expected, "log-probs", atol=1e-4, rtol=1e-5) is None:
            continue
        known = first_match(out.double(), _logprob_mistakes(logits, ids, P, C), atol=1e-4)
        return known or compare(out.float(), expected, "log-probs", atol=1e-4, rtol=1e-5)
    return None


def check_sequence_logprobs(fn):
    """fn(logits, input_ids, prompt_lengths, completion_lengths) -> (B,) summed log-probs of
    each row's completion tokens."""
    return grade(
        "sequence_logprobs", fn, _sequence_logprobs_trial,
        hint="log_probs = log_softmax(logits, -1); the completion's tokens are t = P ... "
             "P + C - 1 of each row, and token t is predicted at position t - 1: add up "
             "log_probs[b, t - 1, input_ids[b, t]] (or shift once: logits[:, :-1] against "
             "input_ids[:, 1:], with the completion mask shifted the same way).",
        success="summed completion log-probs, shifted right, <|im_end|> in, prompt out: equal "
                "to the reference on two random batches.")


# --------------------------------------------------------------------------- dpo loss

def _dpo_inputs(seed: int = 0):
    """Sequence log-probs of 6 pairs: negative, of realistic size, policy near the reference."""
    g = torch.Generator().manual_seed(seed)
    ref_chosen = -5 - 10 * torch.rand(6, generator=g)
    ref_rejected = -5 - 10 * torch.rand(6, generator=g)
    pol_chosen = ref_chosen + 2 * torch.randn(6, generator=g)
    pol_rejected = ref_rejected + 2 * torch.randn(6, generator=g)
    return pol_chosen, pol_rejected, ref_chosen, ref_rejected


def _dpo_mistakes(pc, pr, rc, rr, beta) -> dict[str, torch.Tensor]:
    delta = (pc - rc) - (pr - rr)
    return {
        "the sign is flipped: your loss falls when the *rejected* reply gains probability "
        "(chosen and rejected swapped, or reference - policy instead of policy - reference). "
        "It is -log sigmoid(beta * ((log pi - log pi_ref)(chosen) - (log pi - log pi_ref)"
        "(rejected)))":
            -F.logsigmoid(-beta * delta).mean(),
        "the log sigmoid has lost its minus sign: the loss is -log sigmoid(...), a positive "
        "number that falls as the margin grows":
            F.logsigmoid(beta * delta).mean(),
        "beta is missing inside the sigmoid: -log sigmoid(beta * margin), where beta scales "
        "the log-ratios (the implicit rewards)":
            -F.logsigmoid(delta).mean(),
        "beta multiplies the loss instead of the margin: it belongs inside the sigmoid, "
        "-log sigmoid(beta * margin)":
            (-beta * F.logsigmoid(delta)).mean(),
        "you summed the per-pair losses; take their mean over the batch (as TRL does)":
            -F.logsigmoid(beta * delta).sum(),
        "the reference is missing: DPO compares the policy's log-ratio against the "
        "reference's, (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))":
            -F.logsigmoid(beta * (pc - pr)).mean(),
    }


def _as_triple(out):
    if isinstance(out, torch.Tensor):
        return out, None, None
    if isinstance(out, (tuple, list)) and len(out) == 3:
        return tuple(out)
    return None


def _dpo_loss_trial(fn) -> str | None:
    for seed, beta in ((0, 0.1), (1, 0.5)):
        pc, pr, rc, rr = _dpo_inputs(seed)
        pc_in = pc.clone().requires_grad_(True)
        pr_in = pr.clone().requires_grad_(True)
        out = _as_triple(fn(pc_in, pr_in, rc.clone(), rr.clone(), beta))
        if out is None:
            return "fn should return (loss, chosen_rewards, rejected_rewards)"
        loss, chosen, rejected = out
        expected, exp_chosen, exp_rejected = dpo_loss(pc, pr, rc, rr, beta)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            return "the loss should be a scalar tensor (the mean over the pairs)"
        if compare(loss.detach(), expected, "loss", atol=1e-5) is not None:
            known = first_match(loss.detach(), _dpo_mistakes(pc, pr, rc, rr, beta), atol=1e-5)
            return known or compare(loss.detach(), expected, "loss", atol=1e-5)
        if not loss.requires_grad:
            return ("the loss is right but carries no gradient: compute it from the policy "
                    "log-probs with torch operations (no .item(), no .detach() on the loss)")
        if chosen is None:
            return ("the loss is right; now return the implicit rewards too: (loss, "
                    "beta * (pol_chosen - ref_chosen), beta * (pol_rejected - ref_rejected))")
        for got, want, side in ((chosen, exp_chosen, "chosen"),
                                (rejected, exp_rejected, "rejected")):
            if not isinstance(got, torch.Tensor):
                return f"the {side} rewards should be a tensor of shape (B,)"
            no_beta = want / beta
            if compare(got.detach(), want, f"{side} rewards") is None:
                continue
            if got.shape == want.shape and torch.allclose(got.detach(), no_beta, atol=1e-5):
                return (f"the {side} rewards lack beta: the implicit reward is "
                        "beta * (log pi - log pi_ref)")
            if got.shape == want.shape and torch.allclose(got.detach(), -want, atol=1e-5):
                return (f"the {side} rewards have the wrong sign: beta * (log pi - log pi_ref), "
                        "policy minus reference")
            return compare(got.detach(), want, f"{side} rewards")
        if chosen.requires_grad or rejected.requires_grad:
            return ("the rewards are right but still attached to the graph: .detach() them "
                    "(they are for logging and must not feed a backward pass)")
    return None


def check_dpo_loss(fn):
    """fn(pol_chosen, pol_rejected, ref_chosen, ref_rejected, beta) -> (loss, chosen_rewards,
    rejected_rewards)."""
    return grade(
        "dpo_loss", fn, _dpo_loss_trial,
        hint="chosen = pol_chosen - ref_chosen; rejected = pol_rejected - ref_rejected; loss "
             "= -F.logsigmoid(beta * (chosen - rejected)).mean(); return loss, "
             "beta * chosen.detach(), beta * rejected.detach().",
        success="-log sigmoid(beta * margin of log-ratios), mean over pairs, with detached "
                "implicit rewards: equal to qwenlab.dpo.dpo_loss at two betas.")
