"""Every chapter and solution notebook is a synced, executed pair.

The jupytext ``.py`` is the source of truth; the ``.ipynb`` beside it is committed executed,
because strict nbval compares the stored outputs with a fresh run. That comparison only means
something when the two files hold the same code and the notebook has outputs: a notebook that
was never executed has nothing to compare, and nbval passes it. These tests close both gaps,
and check that each notebook can install qwenlab on Colab.
"""

from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("chapters/[0-9]*.py"), *ROOT.glob("solutions/[0-9]*.py")])
REGENERATE = "run `make notebooks` to regenerate and execute it"


def code_cells(notebook) -> list[str]:
    return [cell.source.rstrip() for cell in notebook.cells if cell.cell_type == "code"]


def read_pair(source: Path):
    notebook = source.with_suffix(".ipynb")
    if not notebook.exists():
        pytest.fail(f"{notebook.relative_to(ROOT)} is missing; {REGENERATE}")
    return jupytext.read(source), jupytext.read(notebook)


def test_notebook_sources_are_found():
    assert any(s.parent.name == "chapters" for s in SOURCES), "no chapters/NN_*.py found"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_ipynb_has_the_same_code_as_its_py(source):
    py, ipynb = read_pair(source)
    py_cells, nb_cells = code_cells(py), code_cells(ipynb)
    for i, (a, b) in enumerate(zip(py_cells, nb_cells, strict=False)):
        assert a == b, (f"code cell {i + 1} differs between {source.name} and its .ipynb; "
                        f"{REGENERATE}\n--- .py:\n{a}\n--- .ipynb:\n{b}")
    assert len(py_cells) == len(nb_cells), (
        f"{source.name} has {len(py_cells)} code cells, its .ipynb {len(nb_cells)}; {REGENERATE}")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_ipynb_is_executed_with_outputs_stored(source):
    _, ipynb = read_pair(source)
    cells = [cell for cell in ipynb.cells if cell.cell_type == "code"]
    for i, cell in enumerate(cells):
        if cell.source.strip():  # nbconvert skips empty cells
            assert cell.get("execution_count") is not None, (
                f"{source.with_suffix('.ipynb').name}: code cell {i + 1} was never executed, so "
                f"strict nbval has no stored output to compare; {REGENERATE}")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_first_code_cell_installs_qwenlab_on_colab(source):
    cells = code_cells(jupytext.read(source))
    assert cells and "google.colab" in cells[0], (
        f"{source.name}: the first code cell must install qwenlab on Colab, guarded by "
        '`if "google.colab" in sys.modules:` (see chapters/00_welcome.py)')
