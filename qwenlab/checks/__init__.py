"""Exercise graders: ``qwenlab.checks.check_x(fn)`` says whether your ``fn`` is right.

Each chapter's graders live in a module named after the chapter's concept and are collected
here, so a notebook needs only ``from qwenlab import checks``. See ``_grading`` for what a
grader prints and returns.
"""

from ._grading import CheckResult, grade
from .attention import *  # noqa: F403  (chapter 04)
from .decoder import *  # noqa: F403  (chapter 05)
from .flash import *  # noqa: F403  (chapter 06)
from .mlp import *  # noqa: F403  (chapter 03)
from .norm import *  # noqa: F403  (chapter 02)
from .rope import *  # noqa: F403  (chapter 01)

__all__ = ["CheckResult", "grade"]
