"""Mixture of experts: the sparse MLP block of Qwen2-MoE (and of the hosted Qwen2.5 MoE tiers).

A dense block sends every token through one SwiGLU MLP. A sparse block holds E smaller MLPs
(the *experts*) and a *router* that picks k of them per token:

    router_logits = x @ W_router^T                      (N, E)   one score per expert
    probs         = softmax(router_logits)              (N, E)   softmax first, over all E
    w, idx        = top-k(probs)                        (N, k)   the k best experts and weights
    w             = w / w.sum(-1)   if norm_topk_prob            (Qwen2-MoE: off; Qwen3: on)
    out           = sum_j w_j * expert_{idx_j}(x)
                    + sigmoid(x @ w_gate) * shared_expert(x)      always-on, gated per token

So the block *holds* E experts' parameters but each token *uses* only k of them (plus the
shared expert): total parameters grow with E, compute per token with k.

What Qwen2-MoE chose, and what this module does:
- The shared expert is one more SwiGLU MLP that every token passes through, scaled by a
  per-token sigmoid gate (``shared_expert_gate``: hidden -> 1). It learns what all tokens
  need, so the routed experts can specialise.
- Dispatch without a Python loop over tokens: the (token, choice) pairs are sorted by expert
  (``argsort``, stable), the tokens are gathered with ``index_select``, each expert runs once
  on its contiguous slice (a loop over the E experts only), and the weighted results are
  scattered back with one ``index_add_``.
- Load balancing: without pressure the router collapses onto a few experts, which then get
  all the gradient. ``load_balancing_loss`` is Switch Transformer's auxiliary loss as
  transformers computes it, E * sum_e f_e * P_e (f_e: fraction of tokens routed to expert e
  counting all k choices, P_e: mean router probability of e); it equals k at perfect balance.
  ``router_z_loss`` (ST-MoE) keeps the router logits small: mean (logsumexp(logits))^2.
- Capacity (ours, off by default so the block equals transformers'): with a capacity factor
  c, each expert takes at most ceil(c * N * k / E) token slots per batch; the rest are
  dropped, and such a token keeps only the shared expert (and the residual). Priority is
  GShard's: every token's first choice before anyone's second choice, then token order.
- Ties: ``torch.topk`` on the float32 probabilities, exactly as transformers calls it. On a
  given device the choice is deterministic (the same probabilities always give the same
  experts, whatever else is in the batch), and identical to transformers', ties included.
  The rule is the kernel's, not "lowest index": on the CPU, 8 equal probabilities give
  experts 6 and 5 for top-2. ``stable_topk`` shows the lowest-index rule, for comparison.

Parameter names follow transformers' on-disk layout: ``mlp.gate.weight`` (router, (E, C)),
``mlp.experts.{i}.{gate,up,down}_proj.weight``, ``mlp.shared_expert.*``,
``mlp.shared_expert_gate.weight``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import QwenConfig
from .mlp import MLP

__all__ = ["Router", "SparseMoeBlock", "capacity_mask", "dispatch", "expert_capacity",
           "expert_load", "load_balancing_loss", "parameter_counts", "route",
           "router_z_loss", "stable_topk"]


# --------------------------------------------------------------------------- routing

def route(router_logits: torch.Tensor, top_k: int, norm_topk_prob: bool = False
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, E) logits -> (weights (N, k) in the logits' dtype, expert indices (N, k)).

    Softmax over all E experts first (in float32), then the top k; renormalised to sum to 1
    when ``norm_topk_prob``.
    """
    probs = F.softmax(router_logits, dim=-1, dtype=torch.float32)  # (N, E)
    weights, indices = torch.topk(probs, top_k, dim=-1)            # (N, k), (N, k)
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(router_logits.dtype), indices


def stable_topk(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k that breaks ties by the lowest expert index, on every device (a stable sort)."""
    values, indices = torch.sort(probs, dim=-1, descending=True, stable=True)
    return values[..., :k], indices[..., :k]


class Router(nn.Module):
    """The gate (transformers: ``Qwen2MoeTopKRouter``): one score per expert, then top-k."""

    def __init__(self, hidden_size: int, num_experts: int, top_k: int,
                 norm_topk_prob: bool = False):
        super().__init__()
        self.top_k, self.norm_topk_prob = top_k, norm_topk_prob
        self.weight = nn.Parameter(torch.zeros(num_experts, hidden_size))  # (E, C)

    def forward(self, x: torch.Tensor):
        """x (N, C) -> router_logits (N, E), weights (N, k), indices (N, k)."""
        router_logits = F.linear(x, self.weight)
        weights, indices = route(router_logits, self.top_k, self.norm_topk_prob)
        return router_logits, weights, indices

    def extra_repr(self) -> str:
        E, C = self.weight.shape
        return f"hidden={C}, experts={E}, top_k={self.top_k}, norm_topk_prob={self.norm_topk_prob}"


# --------------------------------------------------------------------------- capacity

def expert_capacity(num_tokens: int, num_experts: int, top_k: int,
                    capacity_factor: float) -> int:
    """Token slots per expert: ceil(capacity_factor * N * k / E) (1.0 = a perfectly even share)."""
    return max(1, math.ceil(capacity_factor * num_tokens * top_k / num_experts))


def capacity_mask(indices: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """(N, k) bool: True for the (token, choice) slots an expert of ``capacity`` slots keeps.

    Priority: all first choices (in token order), then all second choices, and so on, so a
    token's first choice is never dropped to make room for another token's second choice.
    """
    N, k = indices.shape
    in_priority = indices.t().reshape(-1)                           # (k*N,) choice-major
    one_hot = F.one_hot(in_priority, num_experts)                   # (k*N, E)
    position = (one_hot.cumsum(0) * one_hot).sum(-1) - 1            # place in its expert's queue
    return (position < capacity).view(k, N).t()                     # (N, k)


# --------------------------------------------------------------------------- dispatch

def dispatch(x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
             experts: Sequence[nn.Module], kept: torch.Tensor | None = None) -> torch.Tensor:
    """sum_j weights[n, j] * experts[indices[n, j]](x[n]) for every token n, without a loop
    over tokens. x (N, C), indices/weights (N, k), kept (N, k) bool or None -> (N, C).

    gather: sort the N*k (token, choice) slots by expert and index_select their tokens;
    compute: each expert runs once on its contiguous run of rows;
    scatter: index_add_ the weighted rows back onto their tokens.
    """
    N, k = indices.shape
    slot_expert = indices.reshape(-1)                               # (N*k,) slot s: token s // k
    slots = torch.arange(N * k, device=x.device)
    if kept is not None:
        slots = slots[kept.reshape(-1)]                             # dropped slots leave
    order = slots[torch.argsort(slot_expert[slots], stable=True)]   # grouped by expert
    token = order // k                                              # (S,) token of each slot
    counts = torch.bincount(slot_expert[order], minlength=len(experts)).tolist()
    x_sorted = x.index_select(0, token)                             # (S, C) gather
    w_sorted = weights.reshape(-1)[order, None]                     # (S, 1)
    outputs, start = [], 0
    for expert, n in zip(experts, counts, strict=True):             # a loop over experts only
        if n:
            outputs.append(expert(x_sorted[start:start + n]))
        start += n
    out = torch.zeros_like(x)
    if outputs:
        y = torch.cat(outputs) * w_sorted                           # (S, C)
        out.index_add_(0, token, y.to(out.dtype))                   # scatter
    return out


# --------------------------------------------------------------------------- the block

class SparseMoeBlock(nn.Module):
    """The MLP of a sparse block (transformers: ``Qwen2MoeSparseMoeBlock``)."""

    def __init__(self, config: QwenConfig):
        super().__init__()
        C, E = config.hidden_size, config.num_experts
        self.num_experts, self.top_k = E, config.num_experts_per_tok
        self.capacity_factor = config.moe_capacity_factor
        self.gate = Router(C, E, config.num_experts_per_tok, config.norm_topk_prob)
        self.experts = nn.ModuleList(MLP(C, config.moe_intermediate_size) for _ in range(E))
        self.shared_expert = MLP(C, config.shared_expert_intermediate_size)
        self.shared_expert_gate = nn.Linear(C, 1, bias=False)

    def forward(self, x: torch.Tensor, return_router_logits: bool = False):
        """x (..., C) -> (..., C); with return_router_logits also the (N, E) router logits."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])                                # (N, C)
        router_logits, weights, indices = self.gate(x)              # (N, E), (N, k), (N, k)
        kept = None
        if self.capacity_factor is not None:
            capacity = expert_capacity(x.shape[0], self.num_experts, self.top_k,
                                       self.capacity_factor)
            kept = capacity_mask(indices, self.num_experts, capacity)
        routed = dispatch(x, indices, weights, self.experts, kept)
        shared = torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)
        out = (routed + shared).view(shape)
        return (out, router_logits) if return_router_logits else out


# --------------------------------------------------------------------------- losses and stats

def _stack(router_logits) -> tuple[torch.Tensor, int]:
    """One (L*N, E) tensor from a tensor or a sequence of per-layer (N, E) tensors."""
    if isinstance(router_logits, torch.Tensor):
        return router_logits.reshape(-1, router_logits.shape[-1]), 1
    return torch.cat([r.reshape(-1, r.shape[-1]) for r in router_logits]), len(router_logits)


def _token_weights(attention_mask, rows: int, layers: int, device) -> torch.Tensor | None:
    """(L*N,) float mask matching the stacked rows (1 = real token), or None."""
    if attention_mask is None:
        return None
    flat = attention_mask.reshape(-1).to(device=device, dtype=torch.float32)
    if flat.numel() * layers != rows:
        raise ValueError(f"attention_mask has {flat.numel()} tokens, but the router logits have "
                         f"{rows // layers} rows per layer; pass the mask of these tokens")
    return flat.repeat(layers)


def load_balancing_loss(router_logits, num_experts: int, top_k: int,
                        attention_mask: torch.Tensor | None = None,
                        per_layer: bool = False) -> torch.Tensor:
    """Switch Transformer's auxiliary loss, as ``transformers``' ``load_balancing_loss_func``.

    router_logits: (N, E) or a sequence of per-layer (N, E) tensors;
    attention_mask: (B, T) with B * T = N, 1 for real tokens (padding does not count).

        f_e = (tokens routed to e, counting each of the k choices) / tokens
        P_e = mean router probability of e
        loss = E * sum_e f_e * P_e      (= k when routing is perfectly even)

    Like transformers, the layers' rows are pooled by default, as if expert e of every layer
    were one expert: layers that overload different experts can cancel out. ``per_layer=True``
    averages each layer's own loss instead, so every layer must balance on its own.
    """
    if per_layer and not isinstance(router_logits, torch.Tensor):
        losses = [load_balancing_loss(r, num_experts, top_k, attention_mask)
                  for r in router_logits]
        return torch.stack(losses).mean()
    logits, layers = _stack(router_logits)
    probs = F.softmax(logits.float(), dim=-1)                       # (L*N, E)
    _, selected = torch.topk(probs, top_k, dim=-1)                  # (L*N, k)
    routed = F.one_hot(selected, num_experts).sum(1).float()        # (L*N, E) 0/1 per expert
    mask = _token_weights(attention_mask, logits.shape[0], layers, logits.device)
    if mask is not None:
        routed, probs = routed * mask[:, None], probs * mask[:, None]
        tokens = mask.sum()
    else:
        tokens = logits.shape[0]
    f = routed.sum(0) / tokens                                      # (E,) sums to k
    P = probs.sum(0) / tokens                                       # (E,) sums to 1
    return num_experts * (f * P).sum()


def router_z_loss(router_logits, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """ST-MoE's router z-loss: mean over tokens of logsumexp(router_logits)^2."""
    logits, layers = _stack(router_logits)
    z = torch.logsumexp(logits.float(), dim=-1) ** 2                # (L*N,)
    mask = _token_weights(attention_mask, logits.shape[0], layers, logits.device)
    return z.mean() if mask is None else (z * mask).sum() / mask.sum()


def expert_load(indices: torch.Tensor, num_experts: int) -> torch.Tensor:
    """(E,) fraction of the (token, choice) slots that went to each expert (sums to 1)."""
    counts = torch.bincount(indices.reshape(-1), minlength=num_experts).float()
    return counts / counts.sum()


def parameter_counts(config: QwenConfig) -> dict[str, int]:
    """Total and active (used by one token) parameters, from the config's shapes alone.

    Active counts the embedding, attention, norms, LM head, every dense MLP, and per sparse
    block the router, shared expert and its gate, and k of the E routed experts.
    """
    C, V, L = config.hidden_size, config.vocab_size, config.num_hidden_layers
    H, Hkv, D = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    attention = C * H * D + H * D + 2 * (C * Hkv * D + Hkv * D) + H * D * C  # q,k,v (bias), o
    norms = 2 * C
    embed = V * C * (1 if config.tie_word_embeddings else 2) + C          # + final norm
    total = active = embed
    for i in range(L):
        total += attention + norms
        active += attention + norms
        if config.is_moe_layer(i):
            expert = 3 * C * config.moe_intermediate_size
            always = C * config.num_experts + 3 * C * config.shared_expert_intermediate_size + C
            total += always + config.num_experts * expert
            active += always + config.num_experts_per_tok * expert
        else:
            total += 3 * C * config.intermediate_size
            active += 3 * C * config.intermediate_size
    return {"total": total, "active": active}
