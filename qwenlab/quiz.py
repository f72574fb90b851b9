"""Review quizzes: multiple-choice questions with feedback.

In a live notebook each question is a set of radio buttons with a "Check" button that says
whether the choice is right and why. The same output also carries a static version, each
answer folded in a ``<details>`` block, which is what the book (built without a live kernel)
and any viewer without widgets show.

    quiz([
        Question("What does GQA shrink?", ["the weights", "the KV cache", "the vocabulary"],
                 answer=1, why="K and V are stored per KV head, and there are fewer of them."),
    ])
"""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass
class Question:
    prompt: str
    choices: list[str]
    answer: int   # index into choices
    why: str      # the explanation shown with the verdict

    def __post_init__(self) -> None:
        if not 0 <= self.answer < len(self.choices):
            raise ValueError(f"answer {self.answer} is not an index into {len(self.choices)} "
                             f"choices for {self.prompt!r}")

    def feedback(self, choice: int) -> str:
        verdict = "Right." if choice == self.answer else \
            f"Not quite: the answer is \u201c{self.choices[self.answer]}\u201d."
        return f"{verdict} {self.why}"


def static_html(questions: list[Question]) -> str:
    """The questions as HTML, each answer and explanation folded away."""
    parts = []
    for i, q in enumerate(questions, 1):
        options = "".join(f"<li>{html.escape(c)}</li>" for c in q.choices)
        parts.append(
            f"<p><b>{i}. {html.escape(q.prompt)}</b></p><ol type='a'>{options}</ol>"
            f"<details><summary>Answer</summary><p>"
            f"{html.escape(q.choices[q.answer])}. {html.escape(q.why)}</p></details>")
    return "\n".join(parts)


def _widget(questions: list[Question]):
    import ipywidgets as widgets

    rows = []
    for i, q in enumerate(questions, 1):
        buttons = widgets.RadioButtons(options=list(q.choices), value=None,
                                       layout=widgets.Layout(width="auto"))
        check = widgets.Button(description="Check")
        verdict = widgets.HTML()

        def on_click(_, q=q, buttons=buttons, verdict=verdict):
            if buttons.index is None:
                verdict.value = "<i>Pick an answer first.</i>"
            else:
                colour = "green" if buttons.index == q.answer else "#b00"
                text = html.escape(q.feedback(buttons.index))
                verdict.value = f"<span style='color:{colour}'>{text}</span>"

        check.on_click(on_click)
        rows.append(widgets.VBox([widgets.HTML(f"<b>{i}. {html.escape(q.prompt)}</b>"),
                                  buttons, widgets.HBox([check, verdict])]))
    return widgets.VBox(rows)


def quiz(questions: list[Question]) -> None:
    """Show the questions: widgets where a live kernel renders them, static HTML elsewhere."""
    from IPython.display import display

    bundle = {"text/plain": f"Review quiz: {len(questions)} questions",
              "text/html": static_html(questions)}
    try:
        bundle.update({k: v for k, v in _widget(questions)._repr_mimebundle_().items()
                       if k != "text/plain"})
    except ImportError:  # no ipywidgets: the static version alone
        pass
    display(bundle, raw=True)
