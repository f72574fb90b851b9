"""Exercise graders: ``qwenlab.checks.check_x(fn)`` says whether your ``fn`` is right.

Each chapter's graders live in a module named after the chapter's concept and are collected
here, so a notebook needs only ``from qwenlab import checks``. See ``_grading`` for what a
grader prints and returns.
"""

from ._grading import CheckResult, grade
from .attention import *  # noqa: F403  (chapter 04)
from .bpe import *  # noqa: F403  (chapter 07)
from .decoder import *  # noqa: F403  (chapter 05)
from .dpo import *  # noqa: F403  (chapter 12)
from .flash import *  # noqa: F403  (chapter 06)
from .mlp import *  # noqa: F403  (chapter 03)
from .moe import *  # noqa: F403  (chapter 13)
from .norm import *  # noqa: F403  (chapter 02)
from .quality import *  # noqa: F403  (chapter 08)
from .recipe import *  # noqa: F403  (chapter 14)
from .reward import *  # noqa: F403  (chapter 11)
from .rope import *  # noqa: F403  (chapter 01)
from .sft import *  # noqa: F403  (chapter 10)
from .train import *  # noqa: F403  (chapter 09)

__all__ = ["CheckResult", "grade"]
