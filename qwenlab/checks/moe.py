"""Graders for the exercises of chapter 13: mixture-of-experts routing and balancing.

- ``check_topk_routing(fn)``: fn(router_logits (N, E), top_k, norm_topk_prob) ->
  (weights (N, k), indices (N, k)): softmax over all E experts, the k largest probabilities
  and their experts, renormalised to sum to 1 when norm_topk_prob (``qwenlab.moe.route``).
- ``check_load_balancing_loss(fn)``: fn(router_logits (N, E), top_k) -> scalar:
  E * sum_e f_e * P_e, f_e the fraction of tokens whose top-k includes e, P_e the mean router
  probability of e (``qwenlab.moe.load_balancing_loss``, transformers'
  ``load_balancing_loss_func``).

Each trial runs the learner's function on seeded logits without ties, compares it with the
reference, and when it is wrong, recomputes the typical wrong answers to name the mistake.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from ..moe import load_balancing_loss, route
from ._grading import close, compare, first_match, grade

__all__ = ["check_load_balancing_loss", "check_topk_routing"]


def _logits(N: int, E: int, seed: int) -> torch.Tensor:
    return 1.5 * torch.randn(N, E, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- top-k routing

def _by_expert(weights: torch.Tensor, indices: torch.Tensor):
    """Each row's (index, weight) pairs sorted by expert index: the order of the k is free."""
    order = indices.argsort(dim=-1)
    return weights.gather(-1, order), indices.gather(-1, order)


def _routing_mistakes(logits: torch.Tensor, k: int, norm: bool) -> dict[str, torch.Tensor]:
    probs = F.softmax(logits, dim=-1)
    top_p, idx = torch.topk(probs, k, dim=-1)
    top_logits = logits.gather(-1, idx)
    raw, renormed = top_p, top_p / top_p.sum(-1, keepdim=True)
    mistakes = {
        "these weights sum to 1 per token, but norm_topk_prob=False: Qwen2-MoE keeps the "
        "softmax probabilities over all E experts as they are. Either you renormalised "
        "although norm_topk_prob=False, or you took the softmax over the k chosen logits "
        "only (top-k first, softmax after), which renormalises them":
            renormed,
        "these are the raw logits of the chosen experts; the weights are softmax "
        "probabilities (over all E experts)":
            top_logits,
        "these are the raw logits of the chosen experts, renormalised; the weights are "
        "softmax probabilities (over all E experts)":
            top_logits / top_logits.sum(-1, keepdim=True),
        "the top-k probabilities are not renormalised: with norm_topk_prob=True divide them "
        "by their sum, so each token's weights add up to 1":
            raw,
        "the weights are sigmoid(logits), not softmax probabilities over all experts":
            torch.sigmoid(top_logits),
    }
    correct = renormed if norm else raw
    return {d: w for d, w in mistakes.items() if not close(w, correct, atol=1e-5)}


def _routing_trial(fn) -> str | None:
    for seed, (N, E, k) in enumerate([(12, 8, 2), (9, 6, 3), (7, 5, 1)]):
        logits = _logits(N, E, seed)
        for norm in (True, False):
            expected_w, expected_i = route(logits, k, norm)
            result = fn(logits.clone(), k, norm)
            if not isinstance(result, tuple) or len(result) != 2:
                return ("fn should return a tuple (weights, indices), got "
                        f"{type(result).__name__}")
            weights, indices = result
            where = f"(E={E}, top_k={k}, norm_topk_prob={norm})"
            if not isinstance(indices, torch.Tensor) or indices.shape != expected_i.shape:
                shape = tuple(indices.shape) if isinstance(indices, torch.Tensor) else None
                return (f"indices should be a ({N}, {k}) tensor, got {shape} {where}: one row "
                        "per token, one column per chosen expert")
            if indices.dtype != torch.long:
                return f"indices should be torch.long (int64), got {indices.dtype}"
            if not torch.equal(indices.sort(-1).values, expected_i.sort(-1).values):
                lowest = torch.topk(logits, k, dim=-1, largest=False).indices
                if torch.equal(indices.sort(-1).values, lowest.sort(-1).values):
                    return f"you picked the k smallest probabilities {where}; use the largest"
                return (f"the chosen experts differ from the k most probable ones {where}; "
                        "torch.topk(probs, k, dim=-1) picks them")
            if not isinstance(weights, torch.Tensor):
                return f"weights should be a torch.Tensor, got {type(weights).__name__}"
            weights, indices = _by_expert(weights, indices)
            expected_w, _ = _by_expert(expected_w, expected_i)
            problem = compare(weights, expected_w, what=f"weights {where}")
            if problem is None:
                continue
            mistakes = {d: _by_expert(w, expected_i)[0]
                        for d, w in _routing_mistakes(logits, k, norm).items()}
            return first_match(weights, mistakes) or problem
    return None


def check_topk_routing(fn):
    """fn(router_logits (N, E), top_k, norm_topk_prob) -> (weights (N, k), indices (N, k))."""
    return grade(
        "topk_routing", fn, _routing_trial,
        hint="probs = softmax(router_logits, dim=-1) over all experts; weights, indices = "
             "torch.topk(probs, top_k, dim=-1); if norm_topk_prob, divide the weights by "
             "their sum over the k.",
        success="softmax over all experts, then top-k, renormalised only when asked: "
                "qwenlab.moe.route, as transformers' Qwen2MoeTopKRouter.")


# --------------------------------------------------------------------------- balancing loss

def _balance_mistakes(logits: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    N, E = logits.shape
    probs = F.softmax(logits, dim=-1)
    top_w, idx = torch.topk(probs, k, dim=-1)
    routed = F.one_hot(idx, E).sum(1).float()               # (N, E)
    f, P = routed.mean(0), probs.mean(0)
    f_top1 = F.one_hot(probs.argmax(-1), E).float().mean(0)
    P_routed = (F.one_hot(idx, E).float() * top_w[..., None]).sum(1).mean(0)
    return {
        "you used token counts, not fractions: divide the number of tokens routed to each "
        "expert by the number of tokens (f_e is a fraction)":
            E * (routed.sum(0) * P).sum(),
        "the factor num_experts is missing: the loss is E * sum_e f_e * P_e (so that it "
        "equals k at perfect balance, whatever E is)":
            (f * P).sum(),
        "you averaged over experts instead of summing, and left out the factor E: "
        "E * sum_e f_e * P_e":
            (f * P).mean(),
        "P_e should be the mean softmax probability of expert e over all tokens; you used "
        "the raw logits":
            E * (f * logits.mean(0)).sum(),
        "P_e should average the full softmax probabilities over all tokens; you used only "
        "the top-k weights (zero where e was not chosen)":
            E * (f * P_routed).sum(),
        "f_e counts only each token's first choice; with top-k routing count all k choices "
        "(transformers' f sums to k)":
            E * (f_top1 * P).sum(),
        "you divided f_e by k (so f sums to 1); transformers counts every choice, so f sums "
        "to k and the loss is k at perfect balance":
            E * (f / k * P).sum(),
    }


def _balance_trial(fn) -> str | None:
    for seed, (N, E, k) in enumerate([(64, 8, 2), (50, 6, 3), (40, 4, 1)]):
        logits = _logits(N, E, 10 + seed)
        expected = load_balancing_loss(logits, E, k)
        actual = fn(logits.clone(), k)
        if isinstance(actual, numbers.Real) and not isinstance(actual, bool):
            actual = torch.tensor(float(actual))
        if not isinstance(actual, torch.Tensor) or actual.numel() != 1:
            return f"fn should return a scalar tensor, got {type(actual).__name__}"
        actual = actual.reshape(()).float()
        problem = compare(actual, expected, what=f"loss (E={E}, top_k={k})")
        if problem is None:
            continue
        mistakes = {d: w for d, w in _balance_mistakes(logits, k).items()
                    if not close(w, expected)}
        return first_match(actual, mistakes) or problem
    return None


def check_load_balancing_loss(fn):
    """fn(router_logits (N, E), top_k) -> E * sum_e f_e * P_e (a scalar tensor)."""
    return grade(
        "load_balancing_loss", fn, _balance_trial,
        hint="probs = softmax(logits); idx = topk(probs, k).indices; f = one_hot(idx, E) "
             "summed over the k choices, averaged over tokens; P = probs averaged over tokens; "
             "return E * (f * P).sum().",
        success="E * sum_e f_e * P_e, equal to transformers' load_balancing_loss_func "
                "(k at perfect balance).")
