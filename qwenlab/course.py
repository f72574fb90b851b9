"""The course's table of contents, generated from the files that exist.

Colab badges that point at files which moved are a classic failure of course repositories.
Here every badge, chapter-map row and book entry is generated from the notebooks actually in
``chapters/`` and ``solutions/``, and a test fails when the generated parts are out of date.

    python -m qwenlab.course          rewrite README.md, book/intro.md, book/_toc.yml and the
                                      badge line of every chapter (then `make notebooks`)
    python -m qwenlab.course --check  exit 1 when any of them is stale

CPU run times come from ``book/run_times.json``, which ``make notebooks`` writes.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = "qwenlab/qwenlab"
BRANCH = "main"
ROOT = Path(__file__).resolve().parent.parent
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"

# number: (slug, what it builds, what it needs with SCALE="gpu")
PLAN = {
    0: ("welcome", "tour, environment check, first generation", "any GPU, or none"),
    1: ("rope", "rotary position embeddings", "none: the CPU is enough"),
    2: ("rmsnorm", "RMSNorm and why it runs in fp32", "none: the CPU is enough"),
    3: ("swiglu", "the gated MLP", "none: the CPU is enough"),
    4: ("gqa_kv_cache", "grouped-query attention, the KV cache and its memory math",
        "a T4 (16 GB) for the long-context timings"),
    5: ("decoder", "the full Qwen2.5 model, real weights and tokenizer",
        "a T4 (16 GB; fp16, no bf16) to chat with Qwen2.5-0.5B-Instruct"),
    6: ("flash_attention", "the Triton attention kernel (CUDA-accelerated attention)",
        "an Ampere or newer GPU (A100, L4, H100) for bf16 and the benchmark"),
    7: ("tokenizer", "byte-level BPE, the real Qwen2.5 vocabulary, ChatML", "none"),
    8: ("data_quality", "quality scoring, dedup, effective tokens", "none"),
    9: ("pretraining", "raw vs filtered data, a Chinchilla-style fit", "a T4 (16 GB)"),
    10: ("sft", "supervised fine-tuning with assistant-only loss", "a T4 (16 GB)"),
    11: ("reward_model", "Bradley–Terry reward model, best-of-n", "a T4 (16 GB)"),
    12: ("dpo", "direct preference optimization, iterated", "a T4 (16 GB)"),
    13: ("moe_routing", "mixture of experts: routing, balancing, capacity", "a T4 (16 GB)"),
    14: ("capstone", "the whole recipe at toy scale, measured stage by stage", "a T4 (16 GB)"),
}


@dataclass
class Chapter:
    number: int
    slug: str
    builds: str
    gpu_needs: str

    @property
    def stem(self) -> str:
        return f"{self.number:02d}_{self.slug}"

    @property
    def notebook(self) -> str:
        return f"chapters/{self.stem}.ipynb"

    @property
    def solution(self) -> str:
        return f"solutions/{self.stem}_solutions.ipynb"

    def exists(self, path: str) -> bool:
        return (ROOT / path).is_file()


def chapters() -> list[Chapter]:
    return [Chapter(n, *PLAN[n]) for n in sorted(PLAN)]


def colab_url(path: str) -> str:
    return f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/{path}"


def badge(path: str) -> str:
    return f"[![Open In Colab]({COLAB_BADGE})]({colab_url(path)})"


def run_times() -> dict[str, float]:
    path = ROOT / "book" / "run_times.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{round(seconds)} s" if seconds < 90 else f"~{math.ceil(seconds / 60)} min"


def chapter_table(link_prefix: str = "") -> str:
    """The chapter map: a row per chapter, with badges and run times for those that exist."""
    times = run_times()
    rows = ["| # | chapter | builds | CPU time | open |", "| --- | --- | --- | --- | --- |"]
    for ch in chapters():
        if ch.exists(ch.notebook):
            name = f"[{ch.slug}]({link_prefix}{ch.notebook})"
            links = badge(ch.notebook)
            if ch.exists(ch.solution):
                links += f" [solutions]({link_prefix}{ch.solution})"
            when = _minutes(times.get(ch.notebook))
        else:
            name, links, when = ch.slug, "coming", ""
        rows.append(f"| {ch.number:02d} | {name} | {ch.builds} | {when} | {links} |")
    return "\n".join(rows)


def toc() -> str:
    lines = ["format: jb-book", "root: book/intro", "parts:", "  - caption: Chapters",
             "    chapters:"]
    for ch in chapters():
        if ch.exists(ch.notebook):
            lines.append(f"      - file: chapters/{ch.stem}")
    solved = [ch for ch in chapters() if ch.exists(ch.solution)]
    if solved:
        lines += ["  - caption: Solutions", "    chapters:"]
        lines += [f"      - file: solutions/{ch.stem}_solutions" for ch in solved]
    lines += ["  - caption: Reference", "    chapters:", "      - file: book/glossary",
              "      - file: book/references"]
    return "# generated by `python -m qwenlab.course`; edit PLAN there\n" + "\n".join(lines) + "\n"


def chapter_badge_line(ch: Chapter) -> str:
    return f"# {badge(ch.notebook)}  \n# *On `SCALE=\"gpu\"` this chapter needs:* {ch.gpu_needs}."


_REGION = re.compile(r"(<!-- chapters:start -->\n).*?(<!-- chapters:end -->)", re.S)
_BADGE_LINE = re.compile(r"^# \[!\[Open In Colab\].*\n# \*On `SCALE=\"gpu\"`.*$", re.M)


def expected_files() -> dict[Path, str]:
    """Every generated file with the content it should have."""
    out = {ROOT / "book" / "_toc.yml": toc()}
    for path, prefix in [(ROOT / "README.md", ""), (ROOT / "book" / "intro.md", "../")]:
        text = path.read_text()
        out[path] = _REGION.sub(lambda m: m.group(1) + chapter_table(prefix) + "\n" + m.group(2),
                             text)
    for ch in chapters():
        source = ROOT / "chapters" / f"{ch.stem}.py"
        if source.is_file():
            text = source.read_text()
            if _BADGE_LINE.search(text):
                text = _BADGE_LINE.sub(lambda m: chapter_badge_line(ch), text)
            else:  # first time: right after the chapter's title line
                text = re.sub(r"^(# # .*)$", lambda m: m.group(1) + "\n#\n"
                              + chapter_badge_line(ch), text, count=1, flags=re.M)
            out[source] = text
    return out


def record_run_time(notebook: str, started: float) -> None:
    """Store how long ``notebook`` took to execute, since the epoch time ``started``."""
    path = ROOT / "book" / "run_times.json"
    times = run_times()
    times[notebook] = round(time.time() - started, 1)
    path.write_text(json.dumps(dict(sorted(times.items())), indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qwenlab.course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    parser.add_argument("--record", nargs=2, metavar=("NOTEBOOK", "STARTED"),
                        help="record a notebook's run time (make notebooks does this)")
    args = parser.parse_args(argv)
    if args.record:
        record_run_time(args.record[0], float(args.record[1]))
        return 0
    stale = [p for p, text in expected_files().items() if p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)} (run python -m qwenlab.course)")
        return 1 if stale else 0
    for p in stale:
        p.write_text(expected_files()[p])
        print(f"updated {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
