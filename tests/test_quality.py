"""qwenlab.quality: the toy score, the heuristic filters, dedup (exact and MinHash + LSH), the
bigram perplexity, the quality classifier and effective tokens."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from qwenlab import quality as Q

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "quality_labels.jsonl"


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: on a busy 2-core machine, intra-op threads only add waiting
    (MinHash of 600 small sets: ~8 s with 2 threads, ~1.4 s with one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fixture() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- the toy score

@pytest.mark.parametrize("text,expected", [
    ("Too short.", 0.1),                                   # 10 characters
    (" " * 25, 0.1),                                       # long enough, but no words
    ("a b c d e f g h i j", 0.1),                          # 19 characters
    # 20 characters: 10 distinct words, one line -> 0.4 + 0.3 * 10/500 + 0.3
    ("a b c d e f g h i jj", 0.4 + 0.3 * 10 / 500 + 0.3),
    # 12 words, 5 distinct; 3 lines, 2 distinct (one repeats)
    ("the cat saw the dog\nthe cat saw the dog\nthe end",
     0.4 * 5 / 12 + 0.3 * 12 / 500 + 0.3 * (1 - 1 / 3)),
    # blank lines are not lines, so not duplicates either
    ("one two three four\n\n\n\nfive six seven eight", 0.4 + 0.3 * 8 / 500 + 0.3),
    # "The" and "the" are different words
    ("The cat and the hat.", 0.4 * 5 / 5 + 0.3 * 5 / 500 + 0.3),
    # 1,000 words, 1 distinct: the length term is capped at 1
    ("spam " * 1000, 0.4 * 1 / 1000 + 0.3 * 1.0 + 0.3),
])
def test_toy_score_matches_hand_computed_values(text, expected):
    assert Q.toy_quality_score(text) == pytest.approx(expected, abs=1e-12)


def test_toy_score_reaches_exactly_one_at_the_clip():
    # every term at its maximum: all words distinct, >= 500 of them, no repeated line
    text = " ".join(f"w{i}" for i in range(600))
    assert Q.toy_quality_score(text) == 1.0


def test_toy_score_stays_in_the_unit_interval_on_random_texts():
    rng = random.Random(0)
    for _ in range(200):
        text = "\n".join(" ".join(rng.choice(["a", "bb", "ccc", "The", "!"])
                                  for _ in range(rng.randint(0, 30)))
                         for _ in range(rng.randint(0, 40)))
        assert 0.0 <= Q.toy_quality_score(text) <= 1.0


# ---------------------------------------------------------------- heuristics

def test_heuristics_pass_the_good_and_catch_the_bad_fixture_samples():
    records = fixture()
    assert len(records) >= 20
    for r in records:
        report = Q.heuristic_filter(r["text"])
        assert report.failed == r["fails"], (r["id"], str(report))
        if r["label"] == "good" and r["kind"] != "short":
            assert report.passed, r["id"]


@pytest.mark.parametrize("text,name", [
    ("word " * 30, "doc_length"),
    (" ".join(["extraordinarily"] * 60), "mean_word_length"),
    (" ".join(["the #tag and"] * 30), "symbol_ratio"),
    (" ".join(["123 456 the of"] * 20), "alpha_words"),
    (" ".join(f"apple{i} pear{i}" for i in range(40)), "stop_words"),
])
def test_each_heuristic_fails_its_own_example(text, name):
    report = Q.heuristic_filter(text)
    assert name in report.failed


def test_boilerplate_lines_are_flagged_and_stripped():
    text = ("The tide came in slowly over the sand.\nClick here to subscribe to our newsletter.\n"
            "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nThe gulls went quiet.")
    assert Q.boilerplate_lines(text) == ["Click here to subscribe to our newsletter.",
                                         "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***"]
    assert Q.strip_boilerplate(text) == ("The tide came in slowly over the sand.\n"
                                         "The gulls went quiet.")
    result = Q.boilerplate_filter(text)
    assert not result.passed and result.value == 0.5


def test_duplicate_lines_filter_measures_the_characters_of_repeated_lines():
    text = "alpha line\nbeta\nalpha line\ngamma gamma"   # one repeat of 10 chars, 35 in all
    result = Q.duplicate_lines_filter(text)
    assert result.value == pytest.approx(10 / 35)
    assert not result.passed                              # 25% of lines, 29% of characters


# ---------------------------------------------------------------- exact dedup

def test_exact_dedup_finds_planted_copies_up_to_case_and_spacing():
    texts = ["The quick brown fox.", "A different text.", "the  QUICK brown\nfox!",
             "Another one.", "A different text."]
    assert Q.exact_duplicates(texts) == [[0, 2], [1, 4]]
    assert Q.exact_hash("Hello, world") == Q.exact_hash("hello world")
    assert len(Q.exact_hash("x")) == 40 and len(Q.exact_hash("x", "md5")) == 32


def prepared(name: str) -> list[dict]:
    from qwenlab.data import load_corpus
    try:
        return load_corpus(name)
    except FileNotFoundError:
        pytest.skip(f"data/prepared/{name}.jsonl is missing: run `make data` to test on the "
                    "real corpora")


def test_exact_dedup_finds_the_milton_copies_in_the_prepared_data():
    docs = prepared("milton")
    groups = Q.exact_duplicates([d["text"] for d in docs])
    ids = [[docs[i]["id"] for i in g] for g in groups]
    assert len(groups) == 7 and all(len(g) == 2 for g in groups), ids
    assert ["milton/areopagitica", "milton/areopagitica_gut"] in ids


# ---------------------------------------------------------------- MinHash + LSH

def random_pair(rng: random.Random) -> tuple[set, set]:
    """Two random shingle sets with a random overlap (Jaccard anywhere in [0, 1])."""
    a = [f"s{rng.randrange(10**9)}" for _ in range(rng.randint(20, 400))]
    shared = rng.randint(0, len(a))
    b = set(a[:shared]) | {f"t{rng.randrange(10**9)}" for _ in range(rng.randint(0, 400))}
    return set(a), b


def test_minhash_estimate_is_within_0_1_of_the_true_jaccard():
    # k = 256 hash functions: the estimate's standard deviation sqrt(J(1-J)/k) is at most
    # 0.031, so 0.1 is more than three of them; the pairs are seeded, hence reproducible.
    rng = random.Random(0)
    a, b = Q.minhash_params(256, seed=1)
    errors = []
    for _ in range(300):
        s1, s2 = random_pair(rng)
        est = Q.minhash_jaccard(Q.minhash_signature(s1, a, b), Q.minhash_signature(s2, a, b))
        errors.append(abs(est - Q.jaccard(s1, s2)))
    assert max(errors) < 0.1
    assert sum(errors) / len(errors) < 0.025


def test_minhash_is_deterministic_and_exact_for_identical_and_disjoint_sets():
    a, b = Q.minhash_params(64, seed=0)
    a2, b2 = Q.minhash_params(64, seed=0)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert ((a >= 1) & (a < Q.MERSENNE_PRIME)).all() and ((b >= 0) & (b < Q.MERSENNE_PRIME)).all()
    s = Q.shingles("the cat sat on the mat with the hat")
    assert Q.minhash_jaccard(Q.minhash_signature(s, a, b), Q.minhash_signature(set(s), a, b)) == 1
    other = Q.shingles("completely unrelated words appear here only")
    assert Q.minhash_jaccard(Q.minhash_signature(s, a, b), Q.minhash_signature(other, a, b)) < 0.1


def test_shingles_are_word_or_character_runs_of_the_normalised_text():
    assert Q.shingles("The cat, the HAT!", n=2) == {"the cat", "cat the", "the hat"}
    assert Q.shingles("Ab, c", n=3, unit="char") == {"ab ", "b c"}
    assert Q.shingles("Hi there", n=5) == {"hi there"}
    assert Q.shingles("", n=3) == set()


def edited(text_words: list[str], fraction: float, rng: random.Random) -> str:
    out = list(text_words)
    for i in rng.sample(range(len(out)), int(fraction * len(out))):
        out[i] = f"edit{rng.randrange(10**6)}"
    return " ".join(out)


def test_near_dedup_finds_planted_near_duplicates_and_nothing_else():
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(5000)]
    originals = [[rng.choice(vocab) for _ in range(300)] for _ in range(10)]
    texts = [" ".join(w) for w in originals]
    texts += [edited(originals[0], 0.03, rng), edited(originals[4], 0.05, rng)]  # planted
    found = {(i, j) for i, j, _ in Q.near_duplicates(texts, threshold=0.5, bands=32)}
    assert found == {(0, 10), (4, 11)}


def test_lsh_buckets_identical_signatures_and_rejects_bad_band_shapes():
    sigs = torch.tensor([[1, 2, 3, 4], [1, 2, 9, 9], [5, 6, 7, 8], [0, 0, 7, 8]])
    assert Q.lsh_candidates(sigs, bands=2, rows=2) == {(0, 1), (2, 3)}
    assert Q.lsh_candidates(sigs, bands=1, rows=4) == set()
    with pytest.raises(ValueError, match="must equal the signature length"):
        Q.lsh_candidates(sigs, bands=3, rows=2)
    assert Q.lsh_probability(1.0, 8, 4) == 1.0 and Q.lsh_probability(0.0, 8, 4) == 0.0


# ---------------------------------------------------------------- perplexity

CLEAN = ["the king is dead and the queen is sad .",
         "the queen is in the garden and the king is in the hall .",
         "a soldier is at the gate and the king is in the hall ."] * 5


def test_bigram_lm_conditional_probabilities_sum_to_one():
    lm = Q.BigramLM(min_count=1).fit(CLEAN)
    for prev in ["the", "king", "<s>", "never-seen"]:
        total = sum(lm.prob(prev, w) for w in [*lm.vocab, lm.UNK])
        assert total == pytest.approx(1.0, abs=1e-12)


def test_bigram_lm_gives_clean_text_lower_perplexity_than_shuffled_or_symbols():
    lm = Q.BigramLM(min_count=1).fit(CLEAN)
    clean = "the king is in the garden and the queen is sad ."
    shuffled = "garden the is sad king the queen and in is the ."
    assert lm.perplexity(clean) < lm.perplexity(shuffled) < lm.perplexity("@#$ %^& *() !!")
    assert lm.perplexity("") == math.inf


# ---------------------------------------------------------------- classifier

def test_quality_classifier_learns_a_held_out_split_and_is_deterministic():
    rng = random.Random(0)
    good_words = "the river carried the boat down to the town where the market was".split()
    bad_words = "buy cheap free click win now best deal casino bonus".split()
    good = [" ".join(rng.choice(good_words) for _ in range(40)) for _ in range(60)]
    bad = [" ".join(rng.choice(bad_words) for _ in range(40)) for _ in range(60)]
    texts, labels = good[:40] + bad[:40], [1] * 40 + [0] * 40
    model = Q.train_quality_classifier(texts, labels, dim=512, steps=50)
    p_good, p_bad = model.predict_proba(good[40:]), model.predict_proba(bad[40:])
    assert (p_good > 0.5).all() and (p_bad < 0.5).all()
    again = Q.train_quality_classifier(texts, labels, dim=512, steps=50)
    assert torch.equal(again.predict_proba(good[40:]), p_good)


def test_hashed_features_are_unit_norm_rows():
    x = Q.hashed_features(["a b c", "the cat sat", ""], dim=64)
    assert x.shape == (3, 64)
    assert torch.allclose(x[:2].norm(dim=1), torch.ones(2))
    assert x[2].abs().sum() == 0


# ---------------------------------------------------------------- measuring

def test_effective_tokens_is_the_quality_weighted_token_count():
    texts = ["one two three", "four five", "six"]
    assert Q.effective_tokens(texts, [1.0, 0.5, 0.0]) == 3 + 1 + 0
    assert Q.effective_tokens(texts, [1.0, 1.0, 1.0]) == 6    # q = 1: the raw count
    with pytest.raises(ValueError, match="one per document"):
        Q.effective_tokens(texts, [1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Q.effective_tokens(texts, [1.0, 2.0, 0.0])


def test_effective_tokens_counts_with_a_given_tokenizer():
    class CharTokenizer:  # one token per character, as a transformers tokenizer is called
        def encode(self, text, add_special_tokens=True):
            return list(text) + ([0] if add_special_tokens else [])

    assert Q.effective_tokens(["abcd", "ef"], [0.5, 1.0], tokenizer=CharTokenizer()) == 4.0


def test_chunk_text_keeps_every_line_and_cuts_at_line_boundaries():
    text = "\n".join(" ".join(f"w{i}_{j}" for j in range(7)) for i in range(100))  # 700 words
    chunks = Q.chunk_text(text, max_words=200)
    assert "\n".join(chunks) == text
    assert [len(c.split()) for c in chunks] == [203, 203, 294]   # the 91-word tail is merged


def test_precision_recall_of_bad_detection():
    flagged = [True, True, False, False, True]
    is_bad = [True, False, True, False, True]
    assert Q.precision_recall(flagged, is_bad) == (2 / 3, 2 / 3)
    assert Q.precision_recall([False] * 3, [True, False, False]) == (1.0, 0.0)
