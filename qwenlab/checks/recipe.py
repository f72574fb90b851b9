"""Graders for the exercises of chapter 14: the recipe end to end.

- ``check_stages_to_rerun(fn)``: fn(changed: str) -> the stages that must run again when
  stage ``changed`` produced a different output: itself and every stage that reads it,
  directly or through another (``qwenlab.recipe.DEPENDS_ON``), in pipeline order
  (``qwenlab.recipe.stages_to_rerun``).
- ``check_accuracy_stderr(fn)``: fn(accuracy, n) -> the standard error of an accuracy
  measured on ``n`` independent examples, sqrt(p (1 - p) / n): how far a stage's gain must
  exceed before it is more than the luck of the evaluation set.
"""

from __future__ import annotations

import math

from ._grading import grade

__all__ = ["check_accuracy_stderr", "check_stages_to_rerun"]


# --------------------------------------------------------------------------- stages to rerun

# qwenlab.recipe is imported when a grader runs, not with qwenlab.checks, so that
# `python -m qwenlab.recipe` does not find itself imported already.

def _linear(changed: str) -> list[str]:
    from ..recipe import STAGES

    return list(STAGES[STAGES.index(changed):])


def _direct(changed: str) -> list[str]:
    from ..recipe import DEPENDS_ON, STAGES

    return [changed] + [s for s in STAGES if changed in DEPENDS_ON[s]]


def _stages_trial(fn) -> str | None:
    from ..recipe import STAGES, stages_to_rerun

    for changed in STAGES:
        got = fn(changed)
        try:
            got = list(got)
        except TypeError:
            return f"fn should return a list of stage names, got {type(got).__name__}"
        want = stages_to_rerun(changed)
        if got == want:
            continue
        if sorted(got) == sorted(want):
            return (f"for {changed!r} you have the right stages in the wrong order: list them "
                    f"in pipeline order, {want}")
        if got == _linear(changed) and got != want:
            return (f"for {changed!r} you rerun every stage after it ({got}); only the stages "
                    f"that read its output, directly or indirectly, need to: {want}. Nothing "
                    f"reads the reward model here (DEPENDS_ON says what reads what)")
        if got == [s for s in want if s != changed]:
            return f"for {changed!r} you left out the changed stage itself; it reruns first"
        if got == _direct(changed) and got != want:
            return (f"for {changed!r} you rerun only the stages that read it directly ({got}); "
                    f"a stage that reads one of those must rerun too: {want}")
        return f"for {changed!r} you return {got}, expected {want}"
    return None


def check_stages_to_rerun(fn):
    """fn(changed) -> the stages to rerun, in pipeline order."""
    return grade(
        "stages_to_rerun", fn, _stages_trial,
        hint="start with {changed}; walk STAGES in order and add every stage one of whose "
             "DEPENDS_ON entries is already in the set; return them in STAGES order.",
        success="the changed stage and everything downstream of it through DEPENDS_ON, in "
                "pipeline order, for every stage.")


# --------------------------------------------------------------------------- standard error

_CASES = [(0.5, 200), (0.23, 200), (0.9, 1000), (0.0, 50)]


def _stderr_trial(fn) -> str | None:
    for p, n in _CASES:
        got = float(fn(p, n))
        want = math.sqrt(p * (1 - p) / n)
        if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12):
            continue
        mistakes = {
            "this is the variance p (1 - p) / n; the standard error is its square root":
                p * (1 - p) / n,
            "you divided by sqrt(n - 1) (a sample standard deviation's correction); for a "
            "proportion use sqrt(p (1 - p) / n)": math.sqrt(p * (1 - p) / (n - 1)),
            "this is the standard deviation of one example's 0/1 score, sqrt(p (1 - p)); the "
            "mean of n of them varies sqrt(n) times less": math.sqrt(p * (1 - p)),
            "you left out (1 - p): the variance of a 0/1 score is p (1 - p)": math.sqrt(p / n),
            "this is in percentage points; return a fraction like the accuracy":
                100 * math.sqrt(p * (1 - p) / n),
        }
        for message, value in mistakes.items():
            if math.isclose(got, value, rel_tol=1e-6, abs_tol=1e-12) and \
                    not math.isclose(value, want, rel_tol=1e-6):
                return message
        return f"for accuracy {p} on n = {n} you return {got:.6g}, expected {want:.6g}"
    return None


def check_accuracy_stderr(fn):
    """fn(accuracy, n) -> sqrt(accuracy (1 - accuracy) / n)."""
    return grade(
        "accuracy_stderr", fn, _stderr_trial,
        hint="each example is a coin with P(correct) = p, variance p (1 - p); the mean of n "
             "of them has variance p (1 - p) / n. Return its square root.",
        success="sqrt(p (1 - p) / n) for four accuracies and set sizes.")
