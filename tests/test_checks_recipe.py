"""The chapter 14 graders pass right answers, name typical mistakes, and spot untouched stubs."""

import math

import pytest

from qwenlab import checks, recipe


def stub(*args):
    raise NotImplementedError("write this function")


def test_stages_to_rerun_grader_passes_the_library_and_a_hand_written_answer():
    assert checks.check_stages_to_rerun(recipe.stages_to_rerun).passed

    def mine(changed):
        dirty = {changed}
        for stage in recipe.STAGES:
            if dirty & set(recipe.DEPENDS_ON[stage]):
                dirty.add(stage)
        return [s for s in recipe.STAGES if s in dirty]
    assert checks.check_stages_to_rerun(mine).passed


@pytest.mark.parametrize("wrong,says", [
    (lambda c: list(recipe.STAGES[recipe.STAGES.index(c):]), "every stage after it"),
    (lambda c: recipe.stages_to_rerun(c)[1:], "left out the changed stage"),
    (lambda c: [c] + [s for s in recipe.STAGES if c in recipe.DEPENDS_ON[s]],
     "only the stages that read it directly"),
    (lambda c: recipe.stages_to_rerun(c)[::-1], "wrong order"),
])
def test_stages_to_rerun_grader_names_the_mistake(wrong, says):
    result = checks.check_stages_to_rerun(wrong)
    assert not result.passed and says in result.message


def test_stages_to_rerun_grader_spots_a_stub():
    assert checks.check_stages_to_rerun(stub).status == "not attempted"


def test_accuracy_stderr_grader_passes_the_formula():
    assert checks.check_accuracy_stderr(lambda p, n: math.sqrt(p * (1 - p) / n)).passed


@pytest.mark.parametrize("wrong,says", [
    (lambda p, n: p * (1 - p) / n, "variance"),
    (lambda p, n: math.sqrt(p * (1 - p) / (n - 1)), "n - 1"),
    (lambda p, n: math.sqrt(p * (1 - p)), "one example"),
    (lambda p, n: math.sqrt(p / n), "left out (1 - p)"),
    (lambda p, n: 100 * math.sqrt(p * (1 - p) / n), "percentage points"),
])
def test_accuracy_stderr_grader_names_the_mistake(wrong, says):
    result = checks.check_accuracy_stderr(wrong)
    assert not result.passed and says in result.message


def test_accuracy_stderr_grader_spots_a_stub():
    assert checks.check_accuracy_stderr(stub).status == "not attempted"
