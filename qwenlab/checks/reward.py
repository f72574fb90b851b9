"""Graders for the exercises of chapter 11: the reward model.

- ``check_bradley_terry_loss(fn)``: fn(chosen_scores, rejected_scores), two (B,) tensors of
  rewards -> the scalar ``mean(-log sigmoid(r_c - r_r))`` (``qwenlab.reward.bradley_terry_loss``).
  Tried on ordinary rewards, then on rewards 200 apart, where ``log(sigmoid(x))`` underflows.
- ``check_last_token_index(fn)``: fn(attention_mask), a (B, T) mask of 1s (real tokens) and 0s
  (padding) -> (B,) integer column of each row's last real token
  (``qwenlab.reward.last_token_index``), tried on a batch mixing right-padded, left-padded and
  unpadded rows.

Each trial runs the learner's function on seeded inputs, compares it with the reference, and
when it is wrong, recomputes the typical wrong answers to name the mistake.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..reward import bradley_terry_loss, last_token_index
from ._grading import compare, first_match, grade

__all__ = ["check_bradley_terry_loss", "check_last_token_index"]


# --------------------------------------------------------------------------- Bradley-Terry

def _rewards(seed: int = 0, n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected rewards: mostly chosen ahead, a few pairs the wrong way round."""
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randn(n, generator=g) + 0.8
    rejected = torch.randn(n, generator=g)
    return chosen, rejected


def _bt_mistakes(c: torch.Tensor, r: torch.Tensor) -> dict[str, torch.Tensor]:
    d = c - r
    return {
        "the preference is reversed: you computed -log σ(r_r − r_c) (which is also "
        "softplus(r_c − r_r)), so minimising it pushes the *rejected* reward up. The loss is "
        "-log σ(r_c − r_r) = softplus(r_r − r_c)":
            -F.logsigmoid(-d).mean(),
        "the sign is missing: you return the mean log-likelihood log σ(r_c − r_r), which is "
        "negative and should be maximised; the loss is its negative":
            F.logsigmoid(d).mean(),
        "you summed over the pairs; take the mean, so the loss (and the learning rate that "
        "suits it) does not grow with the batch size":
            -F.logsigmoid(d).sum(),
        "the log is missing: -σ(r_c − r_r) is the probability, not its log-likelihood, and its "
        "gradient vanishes on the pairs the model gets badly wrong; use -log σ(r_c − r_r)":
            -torch.sigmoid(d).mean(),
        "the log is missing: 1 − σ(r_c − r_r) is the probability of the wrong order, not the "
        "negative log-likelihood; use -log σ(r_c − r_r)":
            (1 - torch.sigmoid(d)).mean(),
        "you averaged the differences before the log-sigmoid; apply -log σ to each pair's "
        "difference, then take the mean":
            -F.logsigmoid(d.mean()),
    }


def _bt_trial(fn) -> str | None:
    c, r = _rewards()
    out = fn(c.clone(), r.clone())
    if not isinstance(out, torch.Tensor):
        return f"fn should return a torch.Tensor, got {type(out).__name__}"
    if out.shape == c.shape:
        per_pair = -F.logsigmoid(c - r)
        if torch.allclose(out.double(), per_pair.double(), atol=1e-5):
            return "you return one loss per pair; reduce them to one number with .mean()"
    expected = bradley_terry_loss(c, r)
    problem = compare(out, expected, "loss")
    if problem:
        return first_match(out.reshape(expected.shape) if out.numel() == 1 else out,
                           _bt_mistakes(c, r)) or problem
    # rewards far apart: a correct formula stays finite (and exact), log(sigmoid(x)) does not
    c, r = torch.tensor([150.0, -100.0, 2.0]), torch.tensor([-50.0, 100.0, 1.0])
    out = fn(c.clone(), r.clone())
    expected = bradley_terry_loss(c, r)
    if isinstance(out, torch.Tensor) and not torch.isfinite(out).all():
        return ("your loss is inf (or nan) when a rejected reward is 200 above the chosen one: "
                "torch.log(torch.sigmoid(x)) underflows to log(0) for very negative x. Use "
                "torch.nn.functional.logsigmoid(x), or -softplus(-x), which are exact there")
    return compare(out, expected, "loss for rewards 200 apart", atol=1e-4, rtol=1e-5)


def check_bradley_terry_loss(fn):
    """fn(chosen_scores, rejected_scores) -> mean(-log sigmoid(chosen - rejected))."""
    return grade(
        "bradley_terry_loss", fn, _bt_trial,
        hint="the loss is the mean over pairs of -log σ(r_c − r_r); "
             "torch.nn.functional.logsigmoid computes log σ without underflow.",
        success="mean(-log σ(r_c − r_r)), right on ordinary rewards and finite and exact on "
                "rewards 200 apart.")


# --------------------------------------------------------------------------- last token

def _masks() -> torch.Tensor:
    """A batch mixing right padding, left padding and no padding, (6, 7)."""
    lengths = [3, 7, 5, 2, 6, 4]
    sides = ["right", "right", "left", "left", "right", "left"]
    T = max(lengths)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, (n, side) in enumerate(zip(lengths, sides)):
        if side == "right":
            mask[i, :n] = 1
        else:
            mask[i, T - n:] = 1
    return mask


def _index_mistakes(mask: torch.Tensor) -> dict[str, torch.Tensor]:
    B, T = mask.shape
    return {
        "right for right padding only: mask.sum(-1) - 1 is the last real column when the pads "
        "come after the tokens, but under left padding (as for generation) the last real token "
        "sits in column T - 1. Find the rightmost 1 of each row instead":
            mask.sum(-1) - 1,
        "off by one: mask.sum(-1) is the number of real tokens, one past the last one (and "
        "right padding only). Find the index of the rightmost 1 of each row":
            mask.sum(-1),
        "you always return the last column, T - 1: that is a pad token under right padding "
        "(it is right only for left-padded and unpadded rows)":
            torch.full((B,), T - 1, dtype=torch.long),
        "that is the first real token of each row (argmax returns the first of equal "
        "values); the reward is read at the last one":
            mask.argmax(-1),
        "off by one: that is one column past the last real token":
            last_token_index(mask) + 1,
        "off by one: that is the token before the last real one":
            last_token_index(mask) - 1,
    }


def _index_trial(fn) -> str | None:
    mask = _masks()
    out = fn(mask.clone())
    if not isinstance(out, torch.Tensor):
        return f"fn should return a torch.Tensor of indices, got {type(out).__name__}"
    if out.is_floating_point():
        return (f"the indices have dtype {out.dtype}; indices must be integers "
                "(torch.long) to index the hidden states")
    expected = last_token_index(mask)
    out = out.long()
    problem = compare(out, expected, "indices", atol=0, rtol=0)
    if problem:
        known = first_match(out, _index_mistakes(mask), atol=0)
        if known:
            return known
        return f"{problem}; for the masks\n{mask}\nexpected {expected.tolist()}, " \
               f"got {out.tolist()}"
    return None


def check_last_token_index(fn):
    """fn(attention_mask) -> (B,) column of each row's last real token (any padding side)."""
    return grade(
        "last_token_index", fn, _index_trial,
        hint="the last real token is the rightmost 1 of each mask row; e.g. multiply the mask "
             "by torch.arange(T) and take the argmax over the last dimension.",
        success="the column of the last real token under right padding, left padding and none.")
