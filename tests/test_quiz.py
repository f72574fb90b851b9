"""Review quizzes: right/wrong feedback, and a static fallback that hides the answers."""

from __future__ import annotations

import pytest

from qwenlab.quiz import Question, _widget, static_html

Q = Question("What does GQA shrink?", ["the weights", "the KV cache"], answer=1,
             why="K and V are stored per KV head.")


def test_feedback_says_right_or_gives_the_answer_with_the_reason():
    assert Q.feedback(1) == "Right. K and V are stored per KV head."
    assert Q.feedback(0).startswith("Not quite: the answer is \u201cthe KV cache\u201d.")


def test_static_version_folds_the_answer_away():
    page = static_html([Q])
    assert page.index("<details>") < page.index("the KV cache. K and V")
    assert "<li>the weights</li>" in page


def test_checking_a_choice_in_the_widget_shows_the_verdict():
    box = _widget([Q])
    buttons, (check, verdict) = box.children[0].children[1], box.children[0].children[2].children
    check.click()
    assert "Pick an answer first" in verdict.value
    buttons.index = 0
    check.click()
    assert "Not quite" in verdict.value
    buttons.index = 1
    check.click()
    assert "Right." in verdict.value


def test_an_answer_outside_the_choices_is_refused():
    with pytest.raises(ValueError, match="answer 2 is not an index into 2 choices"):
        Question("?", ["a", "b"], answer=2, why="")
