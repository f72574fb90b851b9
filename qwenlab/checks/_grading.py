"""How an exercise is graded: run the learner's function, compare, diagnose, say so in one line.

A grader is a function ``check_x(fn)`` that
- prints ``○ x: not attempted yet`` plus a hint when ``fn`` still raises NotImplementedError;
- prints ``✗ x: <diagnosis>`` for a wrong answer, naming the mistake when it recognises it
  (for example: "this is interleaved pairing; Qwen pairs coordinate i with i + d/2");
- prints ``✓ x: <what was checked>`` for a right one;
and returns a ``CheckResult`` (``.passed``, ``.status``, ``.message``) for tests to inspect.
A notebook shows only the printed line: the result object displays as nothing.

Writing a grader: give ``grade`` a ``trial(fn) -> str | None`` that returns a diagnosis, or
None when ``fn`` is right; ``compare`` and ``first_match`` help to build it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

PASS, FAIL, NOT_ATTEMPTED = "pass", "fail", "not attempted"
_SYMBOL = {PASS: "✓", FAIL: "✗", NOT_ATTEMPTED: "○"}


@dataclass
class CheckResult:
    name: str
    status: str
    message: str

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def __str__(self) -> str:
        return f"{_SYMBOL[self.status]} {self.name}: {self.message}"

    def _ipython_display_(self) -> None:  # already printed; show nothing more
        pass


def grade(name: str, fn: Callable, trial: Callable[[Callable], str | None], hint: str,
          success: str) -> CheckResult:
    """Run ``trial(fn)`` and print/return the verdict (see the module docstring)."""
    try:
        problem = trial(fn)
    except NotImplementedError:
        result = CheckResult(name, NOT_ATTEMPTED, f"not attempted yet. Hint: {hint}")
    except Exception as e:  # a learner's bug: report it, never crash the notebook
        result = CheckResult(name, FAIL, f"your function raised {type(e).__name__}: {e}")
    else:
        result = CheckResult(name, FAIL, problem) if problem else \
            CheckResult(name, PASS, success)
    print(result)
    return result


def close(actual, expected, atol: float = 1e-5, rtol: float = 1e-5) -> bool:
    """Same shape and values within tolerance (no exception for a shape mismatch)."""
    actual = torch.as_tensor(actual)
    expected = torch.as_tensor(expected)
    if actual.shape != expected.shape:
        return False
    return torch.allclose(actual.double(), expected.double(), atol=atol, rtol=rtol)


def compare(actual, expected, what: str = "output", atol: float = 1e-5,
            rtol: float = 1e-5) -> str | None:
    """None when ``actual`` equals ``expected``; else a diagnosis of shape, dtype or values."""
    if not isinstance(actual, torch.Tensor):
        return f"the {what} should be a torch.Tensor, got {type(actual).__name__}"
    if actual.shape != expected.shape:
        return f"the {what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    if actual.dtype != expected.dtype:
        return f"the {what} has dtype {actual.dtype}, expected {expected.dtype}"
    if not close(actual, expected, atol, rtol):
        worst = (actual.double() - expected.double()).abs().max().item()
        return f"the {what} differs from the reference by up to {worst:.3g}"
    return None


def first_match(actual, mistakes: dict[str, object], atol: float = 1e-5) -> str | None:
    """The diagnosis of the first known wrong answer that ``actual`` reproduces, if any."""
    for diagnosis, wrong in mistakes.items():
        if isinstance(actual, torch.Tensor) and close(actual, wrong, atol=atol, rtol=atol):
            return diagnosis
    return None
