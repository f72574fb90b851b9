"""The chapter 12 graders pass right answers, name typical mistakes, and spot untouched stubs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwenlab import checks, dpo


def stub(*args):
    raise NotImplementedError("write this function")


# --------------------------------------------------------------------------- sequence log-probs

def completion_logprobs(logits, input_ids, prompt_lengths, completion_lengths, *, start=0,
                        stop=0, average=False, shift=True, negate=False, softmax=True):
    """A right answer (vectorised, through a completion mask), with switches that reproduce
    the typical mistakes: the mask's start/stop moved, a mean, no shift, a sign, raw logits."""
    B, T = input_ids.shape
    positions = torch.arange(T)[None]                                       # (1, T)
    P = torch.tensor(prompt_lengths)[:, None] + start                       # (B, 1)
    E = torch.tensor(prompt_lengths)[:, None] + torch.tensor(completion_lengths)[:, None] + stop
    mask = ((positions >= P) & (positions < E)).float()                     # (B, T)
    scores = torch.log_softmax(logits, -1) if softmax else logits
    if shift:
        per_token = scores[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        mask = mask[:, 1:]
    else:
        per_token = scores.gather(-1, input_ids[..., None]).squeeze(-1)
    total = (per_token * mask).sum(-1)
    if average:
        total = total / mask.sum(-1)
    return -total if negate else total


def test_sequence_logprobs_grader_passes_a_right_answer():
    assert checks.check_sequence_logprobs(completion_logprobs).passed


def test_sequence_logprobs_grader_passes_the_library_through_a_mask():
    class Table(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return type("Out", (), {"logits": self.logits})()

    def via_library(logits, input_ids, prompt_lengths, completion_lengths):
        model = Table()
        model.logits = logits
        mask = torch.zeros_like(input_ids)
        for b, (p, c) in enumerate(zip(prompt_lengths, completion_lengths)):
            mask[b, p:p + c] = 1
        return dpo.sequence_logprobs(model, input_ids, None, mask)

    assert checks.check_sequence_logprobs(via_library).passed


@pytest.mark.parametrize("switches,says", [
    (dict(average=True), "averaged the completion log-probs"),
    (dict(start=-1), "includes the last prompt token"),
    (dict(stop=-1), "<|im_end|>, the completion's last token, is left out"),
    (dict(start=1, stop=1), "skipped the first completion token"),
    (dict(shift=False), "the logits are not shifted"),
    (dict(negate=True), "negative log-likelihood"),
    (dict(softmax=False), "raw logits"),
])
def test_sequence_logprobs_grader_names_the_mistake(switches, says):
    result = checks.check_sequence_logprobs(lambda *a: completion_logprobs(*a, **switches))
    assert not result.passed and says in result.message


def test_sequence_logprobs_grader_rejects_a_wrong_shape():
    result = checks.check_sequence_logprobs(lambda *a: completion_logprobs(*a)[:, None])
    assert not result.passed and "shape (4,)" in result.message


def test_sequence_logprobs_grader_spots_a_stub():
    assert checks.check_sequence_logprobs(stub).status == "not attempted"


# --------------------------------------------------------------------------- dpo loss

def make_dpo_loss(*, flip=False, no_minus=False, beta_inside=True, beta_outside=False,
                  reduce="mean", use_reference=True, detach=True, reward_beta=True):
    def fn(pc, pr, rc, rr, beta):
        chosen = pc - rc if use_reference else pc
        rejected = pr - rr if use_reference else pr
        margin = chosen - rejected
        z = (beta if beta_inside else 1.0) * (-margin if flip else margin)
        per_pair = F.logsigmoid(z) if no_minus else -F.logsigmoid(z)
        if beta_outside:
            per_pair = beta * per_pair
        loss = per_pair.mean() if reduce == "mean" else per_pair.sum()
        scale = beta if reward_beta else 1.0
        cr, rr_ = scale * chosen, scale * rejected
        if detach:
            cr, rr_ = cr.detach(), rr_.detach()
        return loss, cr, rr_
    return fn


def test_dpo_loss_grader_passes_a_right_answer():
    assert checks.check_dpo_loss(make_dpo_loss()).passed
    assert checks.check_dpo_loss(dpo.dpo_loss).passed


@pytest.mark.parametrize("switches,says", [
    (dict(flip=True), "the sign is flipped"),
    (dict(no_minus=True), "lost its minus sign"),
    (dict(beta_inside=False), "beta is missing inside the sigmoid"),
    (dict(beta_inside=False, beta_outside=True), "beta multiplies the loss"),
    (dict(reduce="sum"), "summed the per-pair losses"),
    (dict(use_reference=False), "the reference is missing"),
    (dict(detach=False), "still attached to the graph"),
    (dict(reward_beta=False), "rewards lack beta"),
])
def test_dpo_loss_grader_names_the_mistake(switches, says):
    result = checks.check_dpo_loss(make_dpo_loss(**switches))
    assert not result.passed and says in result.message


def test_dpo_loss_grader_asks_for_the_rewards_when_only_the_loss_is_returned():
    result = checks.check_dpo_loss(lambda *a: make_dpo_loss()(*a)[0])
    assert not result.passed and "implicit rewards" in result.message


def test_dpo_loss_grader_spots_a_stub():
    assert checks.check_dpo_loss(stub).status == "not attempted"
