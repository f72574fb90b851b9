"""Graders for the exercises of chapter 06 (FlashAttention): the online-softmax update and one
tile of causal tiled attention. The references are ``qwenlab.kernels.reference``."""

from __future__ import annotations

import torch

from ..kernels.reference import attention_tile, online_softmax_update
from ._grading import compare, first_match, grade

__all__ = ["check_online_softmax_update", "check_attention_tile"]


def _state(result, name: str):
    """The learner's (m, l, acc), or a diagnosis string."""
    if not isinstance(result, tuple | list) or len(result) != 3:
        return f"{name} should return the tuple (m, l, acc), got {type(result).__name__}"
    return tuple(result)


def _flat(state) -> torch.Tensor:
    return torch.cat([torch.as_tensor(x).double().flatten() for x in state])


def _diagnose(got, expected, mistakes: dict[str, tuple]) -> str | None:
    """None when got == expected; else the named mistake, else which of m, l, acc is off."""
    problems = [compare(g, e, what)
                for g, e, what in zip(got, expected, ("m", "l", "acc"), strict=True)]
    if not any(problems):
        return None
    try:
        flat = _flat(got)
    except (TypeError, RuntimeError):
        flat = None
    if flat is not None:
        named = first_match(flat, {d: _flat(w) for d, w in mistakes.items()}, atol=1e-5)
        if named:
            return named
    return next(p for p in problems if p)


def _softmax_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    R, N, D = 6, 5, 4
    scores = 2.0 * torch.randn(R, N, generator=g)
    v = torch.randn(N, D, generator=g)
    # the state after earlier blocks; half the rows had a larger max than this block's
    m = scores.amax(-1) + torch.tensor([1.5, -1.5, 0.7, -0.7, 2.0, -2.0])
    l = 1.0 + 3.0 * torch.rand(R, generator=g)  # noqa: E741
    acc = torch.randn(R, D, generator=g)
    return m, l, acc, scores, v


def _softmax_mistakes(m, l, acc, scores, v) -> dict[str, tuple]:  # noqa: E741
    m_new = torch.maximum(m, scores.amax(-1))
    alpha = torch.exp(m - m_new)
    p = torch.exp(scores - m_new[:, None])
    m_blk = scores.amax(-1)
    p_blk = torch.exp(scores - m_blk[:, None])
    alpha_blk = torch.exp(m - m_blk)
    right_l, right_acc = l * alpha + p.sum(-1), acc * alpha[:, None] + p @ v
    return {
        "acc is not rescaled: multiply the old acc by exp(m_old - m_new) before adding p @ v "
        "(its terms were summed under the old max)":
            (m_new, right_l, acc + p @ v),
        "l is not rescaled: multiply the old l by exp(m_old - m_new) before adding the "
        "block's sum of p (acc is rescaled, l must be too)":
            (m_new, l + p.sum(-1), right_acc),
        "neither l nor acc is rescaled by exp(m_old - m_new): the old sums were taken under "
        "the old max and are too large once the max grows":
            (m_new, l + p.sum(-1), acc + p @ v),
        "m is this block's max, not the running max: m_new = max(m_old, rowmax(scores)), "
        "so it never decreases":
            (m_blk, l * alpha_blk + p_blk.sum(-1), acc * alpha_blk[:, None] + p_blk @ v),
        "acc is divided by l: keep acc unnormalised while streaming and divide by l once, "
        "after the last block":
            (m_new, right_l, (acc * alpha[:, None] + p @ v) / right_l[:, None]),
    }


def check_online_softmax_update(fn):
    """fn(m (R,), l (R,), acc (R, D), scores (R, N), v (N, D)) -> (m, l, acc) after the block."""

    def trial(fn):
        m, l, acc, scores, v = _softmax_inputs()  # noqa: E741
        got = _state(fn(m.clone(), l.clone(), acc.clone(), scores.clone(), v.clone()),
                     "online_softmax_update")
        if isinstance(got, str):
            return got
        problem = _diagnose(got, online_softmax_update(m, l, acc, scores, v),
                            _softmax_mistakes(m, l, acc, scores, v))
        if problem:
            return problem
        # from the empty state (-inf, 0, 0), three blocks must give softmax(scores) @ v
        g = torch.Generator().manual_seed(1)
        s_all, v_all = 3.0 * torch.randn(4, 12, generator=g), torch.randn(12, 3, generator=g)
        state = (torch.full((4,), float("-inf")), torch.zeros(4), torch.zeros(4, 3))
        for start in range(0, 12, 4):
            state = _state(fn(*state, s_all[:, start:start + 4], v_all[start:start + 4]),
                           "online_softmax_update")
            if isinstance(state, str):
                return state
        out = state[2] / state[1][:, None]
        if not torch.allclose(out, torch.softmax(s_all, -1) @ v_all, atol=1e-5):
            return ("one step is right, but three blocks streamed from the empty state "
                    "(m = -inf, l = 0, acc = 0) do not give softmax(scores) @ v: check the "
                    "first block, where m is still -inf")
        return None

    return grade("online_softmax_update", fn, trial,
                 hint="m_new = max(m, rowmax(scores)); rescale l and acc by exp(m - m_new); "
                      "add p = exp(scores - m_new): l += p.sum(-1), acc += p @ v",
                 success="running max, rescaled sum and accumulator all match; three blocks "
                         "streamed from the empty state equal softmax(scores) @ v")


def _tile_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    M, N, D = 4, 6, 8
    q, k, v = (torch.randn(n, D, generator=g) for n in (M, N, N))
    q_pos = torch.arange(20, 24)        # queries at positions 20..23
    k_pos = torch.arange(18, 24)        # keys 18..23: the tile on the causal diagonal
    m = torch.full((M,), 1.5)           # state after the tiles of keys 0..17
    l = 2.0 + torch.rand(M, generator=g)  # noqa: E741
    acc = torch.randn(M, D, generator=g)
    return q, k, v, m, l, acc, q_pos, k_pos, D ** -0.5


def _tile_mistakes(q, k, v, m, l, acc, q_pos, k_pos, scale) -> dict[str, tuple]:  # noqa: E741
    raw = q @ k.T
    visible = k_pos[None, :] <= q_pos[:, None]

    def update(scores, keep=visible, fill=float("-inf")):
        return online_softmax_update(m, l, acc, scores.masked_fill(~keep, fill), v)

    return {
        "the scores are not scaled: multiply q @ k.T by scale (1/sqrt(head_dim))":
            update(raw),
        "the scores are divided by scale: scale is already 1/sqrt(head_dim), multiply by it":
            update(raw / scale),
        "no causal mask: on the diagonal tile a query must not see keys after its own "
        "position (mask where k_pos > q_pos)":
            update(raw * scale, torch.ones_like(visible)),
        "the diagonal is masked too: a query sees its own key (k_pos <= q_pos is visible)":
            update(raw * scale, k_pos[None, :] < q_pos[:, None]),
        "the mask points the wrong way: keys *before* the query are the visible ones":
            update(raw * scale, k_pos[None, :] >= q_pos[:, None]),
        "masked scores are set to 0, which still gets weight exp(0 - m); set them to -inf":
            update(raw * scale, fill=0.0),
    }


def check_attention_tile(fn):
    """fn(q (M, D), k (N, D), v (N, D), m, l, acc, q_pos (M,), k_pos (N,), scale) -> (m, l, acc):
    one tile of causal attention folded into the running state."""

    def trial(fn):
        inputs = _tile_inputs()
        got = _state(fn(*(x.clone() if isinstance(x, torch.Tensor) else x for x in inputs)),
                     "attention_tile")
        if isinstance(got, str):
            return got
        return _diagnose(got, attention_tile(*inputs), _tile_mistakes(*inputs))

    return grade("attention_tile", fn, trial,
                 hint="scores = (q @ k.T) * scale; set scores where k_pos > q_pos to -inf; then "
                      "return online_softmax_update(m, l, acc, scores, v)",
                 success="scaled scores, causal mask on the diagonal tile and the online update "
                         "all match")
