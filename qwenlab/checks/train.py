"""Graders for the exercises of chapter 09: pretraining.

- ``check_cosine_lr(fn)``: fn(step, max_steps, warmup, lr, min_lr) -> float, the learning rate
  of optimizer step ``step`` (from 0): linear warmup ``lr * (step + 1) / warmup`` for
  ``step < warmup``, then a half cosine from ``lr`` at ``warmup`` to ``min_lr`` at
  ``max_steps``, and ``min_lr`` after that (``qwenlab.train.cosine_lr``).
- ``check_clip_grad_norm(fn)``: fn(grads: list of tensors, max_norm) -> the gradients scaled
  together by ``min(1, max_norm / (global_norm + 1e-6))``, where the global norm is that of
  all gradients concatenated (what ``torch.nn.utils.clip_grad_norm_`` does). Returning None
  after scaling the given tensors in place is accepted too.

Each trial runs the learner's function on fixed inputs, compares it with the reference, and
when it is wrong, recomputes the typical wrong answers to name the mistake.
"""

from __future__ import annotations

import math

import torch

from ..train import cosine_lr
from ._grading import close, first_match, grade

__all__ = ["check_clip_grad_norm", "check_cosine_lr"]


# --------------------------------------------------------------------------- cosine schedule

# (max_steps, warmup, lr, min_lr): a typical run, and one with a long warmup
_SCHEDULES = [(100, 10, 3e-3, 3e-4), (40, 8, 1.0, 0.1)]


def _half_cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _schedule_mistakes(max_steps, warmup, lr, min_lr) -> dict[str, list[float]]:
    """Each typical wrong schedule at steps 0 .. max_steps - 1 (what a wrong schedule does
    after max_steps is checked on its own)."""
    steps = range(max_steps)
    ref = [cosine_lr(s, max_steps, warmup, lr, min_lr) for s in steps]

    def decay(s, start, span, floor=min_lr):
        return floor + (lr - floor) * _half_cosine((s - start) / span)

    return {
        "there is no warmup: your schedule starts at the full lr and decays from step 0. For "
        "step < warmup the lr must rise linearly, lr * (step + 1) / warmup":
            [decay(s, 0, max_steps) for s in steps],
        "the warmup is missing: the first `warmup` steps run at the full lr. Ramp it up "
        "linearly instead, lr * (step + 1) / warmup":
            [lr if s < warmup else r for s, r in zip(steps, ref)],
        "the warmup starts at 0 (lr * step / warmup), so the first step does not move the "
        "weights at all; use lr * (step + 1) / warmup, which reaches lr at step warmup - 1":
            [lr * s / warmup if s < warmup else r for s, r in zip(steps, ref)],
        "the cosine runs over the wrong span: after warmup, progress must be "
        "(step - warmup) / (max_steps - warmup), so it goes from 0 at the end of the warmup to "
        "1 at max_steps. You used step / max_steps, which starts the decay below lr":
            [r if s < warmup else decay(s, 0, max_steps) for s, r in zip(steps, ref)],
        "the cosine runs over the wrong span: you divided (step - warmup) by max_steps instead "
        "of (max_steps - warmup), so the lr has not reached min_lr at max_steps":
            [r if s < warmup else decay(s, warmup, max_steps) for s, r in zip(steps, ref)],
        "the schedule ends at 0 instead of min_lr: the cosine should go from lr down to "
        "min_lr, min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2":
            [r if s < warmup else decay(s, warmup, max_steps - warmup, floor=0.0)
             for s, r in zip(steps, ref)],
    }


def _first_difference(actual, expected) -> int:
    return int(((actual - expected).abs() > 1e-9 + 1e-6 * expected.abs()).nonzero()[0])


def _cosine_lr_trial(fn) -> str | None:
    for max_steps, warmup, lr, min_lr in _SCHEDULES:
        steps = range(max_steps + 6)
        expected = torch.tensor([cosine_lr(s, max_steps, warmup, lr, min_lr) for s in steps],
                                dtype=torch.float64)
        values = []
        for s in steps:
            value = fn(s, max_steps, warmup, lr, min_lr)
            try:
                values.append(float(value))
            except (TypeError, ValueError):
                return f"fn should return a number, got {type(value).__name__} at step {s}"
        actual = torch.tensor(values, dtype=torch.float64)
        if close(actual, expected, atol=1e-9, rtol=1e-6):
            continue
        where = (f"with max_steps={max_steps}, warmup={warmup}, lr={lr}, min_lr={min_lr}: at "
                 "step {step} you return {got:.6g}, expected {want:.6g}")
        if close(actual[:max_steps], expected[:max_steps], atol=1e-9, rtol=1e-6):
            bad = _first_difference(actual, expected)
            return ("right up to max_steps, but after it the lr must stay at min_lr (a cosine "
                    "continued past progress 1 rises again); "
                    + where.format(step=bad, got=actual[bad].item(), want=expected[bad].item()))
        mistakes = {d: torch.tensor(v, dtype=torch.float64)
                    for d, v in _schedule_mistakes(max_steps, warmup, lr, min_lr).items()}
        known = first_match(actual[:max_steps], mistakes, atol=1e-9)
        if known:
            return known
        bad = _first_difference(actual, expected)
        return where.format(step=bad, got=actual[bad].item(), want=expected[bad].item())
    return None


def check_cosine_lr(fn):
    """fn(step, max_steps, warmup, lr, min_lr) -> the lr of step ``step``: linear warmup to lr,
    half cosine to min_lr at max_steps, min_lr after."""
    return grade(
        "cosine_lr", fn, _cosine_lr_trial,
        hint="three cases: step < warmup -> lr * (step + 1) / warmup; step >= max_steps -> "
             "min_lr; else progress = (step - warmup) / (max_steps - warmup) and "
             "min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress)).",
        success="linear warmup to lr, a half cosine to min_lr at max_steps, flat after: right "
                "at every step of two schedules.")


# --------------------------------------------------------------------------- clipping

def _grads(scale: float) -> list[torch.Tensor]:
    """Gradients of a tiny 'model': one large matrix and a few small vectors, so clipping each
    tensor on its own gives a visibly different answer from clipping them together."""
    g = torch.Generator().manual_seed(0)
    shapes = [(8, 6), (6,), (4, 8), (4,)]
    grads = [torch.randn(*s, generator=g) for s in shapes]
    grads[0] = grads[0] * 3.0                                 # the dominant tensor
    total = torch.linalg.vector_norm(torch.cat([t.flatten() for t in grads]))
    return [t * (scale / total) for t in grads]              # global norm = scale


def reference_clip_grad_norm(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return [g * factor for g in grads]


def _clip_mistakes(grads, max_norm) -> dict[str, list[torch.Tensor]]:
    norms = [torch.linalg.vector_norm(g) for g in grads]
    total = torch.stack(norms).pow(2).sum().sqrt()
    return {
        "the gradients came back unchanged although their global norm "
        f"{total.item():.3g} is above max_norm = {max_norm}: clipping rescales the gradients "
        "themselves, after backward() (clipping or scaling the loss does not bound them)":
            [g.clone() for g in grads],
        "you clipped each tensor by its own norm (per-parameter clipping); clip by the global "
        "norm, sqrt(sum of every tensor's squared norm), and scale all tensors by the same "
        "factor, so the update keeps its direction":
            [g * torch.clamp(max_norm / (n + 1e-6), max=1.0) for g, n in zip(grads, norms)],
        "you clamped each element to [-max_norm, max_norm] (that is clip_grad_value_); clipping "
        "by norm scales all gradients by one factor, min(1, max_norm / global_norm)":
            [g.clamp(-max_norm, max_norm) for g in grads],
        "the global norm is the square root of the sum of the squared norms of the tensors, "
        "not the sum of their norms":
            [g * torch.clamp(max_norm / (torch.stack(norms).sum() + 1e-6), max=1.0)
             for g in grads],
        "the square root is missing: you divided by the sum of squares (the squared global "
        "norm) instead of the norm itself":
            [g * torch.clamp(max_norm / (total**2 + 1e-6), max=1.0) for g in grads],
    }


def _scaled_up_mistake(grads, max_norm) -> list[torch.Tensor]:
    total = torch.stack([torch.linalg.vector_norm(g) for g in grads]).pow(2).sum().sqrt()
    return [g * (max_norm / (total + 1e-6)) for g in grads]


def _same_list(actual, expected, atol=1e-6) -> bool:
    return len(actual) == len(expected) and all(
        close(a, e, atol=atol, rtol=1e-5) for a, e in zip(actual, expected))


def _clip_trial(fn) -> str | None:
    # (global norm of the gradients, max_norm): one that must be clipped, one that must not
    for norm, max_norm in ((5.0, 1.0), (0.4, 1.0)):
        grads = _grads(norm)
        given = [g.clone() for g in grads]
        out = fn(given, max_norm)
        out = given if out is None else list(out)            # in-place versions return None
        if len(out) != len(grads):
            return f"fn returned {len(out)} tensors for {len(grads)} gradients"
        for a, g in zip(out, grads):
            if not isinstance(a, torch.Tensor) or a.shape != g.shape:
                return "fn should return one tensor of the same shape per gradient"
        expected = reference_clip_grad_norm(grads, max_norm)
        if _same_list(out, expected):
            continue
        if norm < max_norm:
            if _same_list(out, _scaled_up_mistake(grads, max_norm)):
                return (f"the global norm ({norm}) is already below max_norm ({max_norm}), yet "
                        "you scaled the gradients up to max_norm: clipping only ever shrinks, "
                        "factor = min(1, max_norm / global_norm)")
            return (f"the global norm ({norm}) is below max_norm ({max_norm}), so the gradients "
                    "must come back unchanged")
        known = [d for d, wrong in _clip_mistakes(grads, max_norm).items()
                 if _same_list(out, wrong)]
        if known:
            return known[0]
        got = torch.linalg.vector_norm(torch.cat([a.flatten() for a in out])).item()
        return (f"gradients of global norm {norm} clipped to max_norm={max_norm} should have "
                f"global norm {max_norm} and keep their direction; yours have norm {got:.4g}"
                + (" (the norm is right but the direction changed: scale every tensor by the "
                   "same factor)" if abs(got - max_norm) < 1e-4 else ""))
    return None


def check_clip_grad_norm(fn):
    """fn(grads, max_norm) -> grads scaled by min(1, max_norm / (global norm + 1e-6))."""
    return grade(
        "clip_grad_norm", fn, _clip_trial,
        hint="global_norm = sqrt(sum(g.pow(2).sum() for g in grads)); factor = "
             "min(1, max_norm / (global_norm + 1e-6)); return [g * factor for g in grads].",
        success="scales all gradients by one factor to a global norm of max_norm, and leaves "
                "gradients already within max_norm unchanged, like "
                "torch.nn.utils.clip_grad_norm_.")
