"""The published course: generated chapter map and badges, the built book, rendered math."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qwenlab import course

ROOT = course.ROOT
COLAB_LINK = re.compile(r"colab\.research\.google\.com/github/" + re.escape(course.REPO)
                        + r"/blob/" + course.BRANCH + r"/([^\s)\"'\\]+)")


def test_generated_chapter_map_toc_and_badges_are_up_to_date():
    stale = [str(p.relative_to(ROOT)) for p, text in course.expected_files().items()
             if p.read_text() != text]
    assert not stale, f"stale generated files {stale}: run `python -m qwenlab.course`"


def test_every_colab_badge_points_at_a_file_that_exists():
    files = [ROOT / "README.md", ROOT / "book" / "intro.md",
             *sorted((ROOT / "chapters").glob("[0-9]*.*"))]
    links = [(f, m.group(1)) for f in files for m in COLAB_LINK.finditer(f.read_text())]
    assert links, "no Colab links found at all"
    missing = [(str(f.relative_to(ROOT)), target) for f, target in links
               if not (ROOT / target).is_file()]
    assert not missing, f"badges pointing at missing files: {missing}"


@pytest.mark.parametrize("chapter", [c for c in course.chapters() if c.exists(c.notebook)],
                         ids=lambda c: c.stem)
def test_each_chapter_opens_with_a_badge_to_itself_and_its_gpu_needs(chapter):
    text = (ROOT / chapter.notebook).read_text()
    assert course.colab_url(chapter.notebook) in text
    assert 'On `SCALE=\\"gpu\\"` this chapter needs' in text


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """The book built from the stored outputs (nbval already re-executes every notebook)."""
    if not (ROOT / "book" / "mathjax" / "es5" / "tex-chtml.js").is_file():
        pytest.fail("book/mathjax is missing: `make test` fetches it (make book/mathjax/es5/tex-chtml.js)")
    out = tmp_path_factory.mktemp("book")
    config = (ROOT / "book" / "_config.yml").read_text()
    config = config.replace("execute_notebooks: force", "execute_notebooks: 'off'")
    (out / "_config.yml").write_text(config)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run(
        [str(jupyter_book), "build", "--all", str(ROOT), "--config", str(out / "_config.yml"),
         "--toc", str(ROOT / "book" / "_toc.yml"), "--path-output", str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out / "_build" / "html"


def test_book_has_a_page_with_executed_output_for_every_chapter_and_solution(built_book):
    pages = [c.notebook for c in course.chapters() if c.exists(c.notebook)]
    pages += [c.solution for c in course.chapters() if c.exists(c.solution)]
    for notebook in pages:
        page = built_book / notebook.replace(".ipynb", ".html")
        assert page.is_file(), f"no page for {notebook}"
        html = page.read_text()
        assert "cell_output" in html, f"{page.name} shows no executed output"
    for page in ("index.html", "book/glossary.html", "book/references.html"):
        assert (built_book / page).is_file()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic",
                  "--virtual-time-budget=15000"]


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    binary = _chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")

    def run(*args: str) -> str:
        profile = tmp_path_factory.mktemp("chromium-profile")
        result = subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                                capture_output=True, text=True, timeout=120)
        return result.stdout
    return run


def test_math_is_rendered_offline(built_book, chromium):
    dom = chromium("--dump-dom", (built_book / "book" / "glossary.html").as_uri())
    assert "<mjx-container" in dom, "MathJax did not render (is book/mathjax served?)"
    assert "$$" not in dom and "\\(" not in dom


@pytest.mark.parametrize("page", ["index.html", "chapters/00_welcome.html"])
def test_screenshot_of_the_page_is_not_blank(built_book, chromium, tmp_path, page):
    from PIL import Image, ImageStat

    png = tmp_path / "shot.png"
    chromium("--window-size=1280,900", f"--screenshot={png}", (built_book / page).as_uri())
    image = Image.open(png).convert("L")
    non_white = sum(image.histogram()[:200]) / (image.width * image.height)
    assert ImageStat.Stat(image).stddev[0] > 10 and non_white > 0.01, \
        f"{page} renders blank ({non_white:.1%} non-white pixels)"
