"""The checkable tasks: generators, checkers, near misses, splits and the committed files."""

import json
import random

import pytest
import torch

from qwenlab import QwenConfig, QwenForCausalLM, tasks
from qwenlab.tokenizer import load_course_tokenizer


@pytest.fixture(scope="module")
def examples():
    return tasks.make_examples(400, seed=3)


def test_every_generated_answer_passes_its_checker(examples):
    assert {ex.task for ex in examples} == set(tasks.TASKS)
    assert all(tasks.check(ex, ex.answer) for ex in examples)
    assert all(tasks.check(ex, f"  {ex.answer}\n") for ex in examples)  # whitespace is free


def test_answers_are_right(examples):
    for ex in examples:
        if ex.task == "add":
            a, b = (int(x) for x in ex.prompt.removeprefix("What is ").rstrip("?").split(" + "))
            assert int(ex.answer) == a + b
        elif ex.task == "reverse":
            assert ex.answer.split() == ex.prompt.split(": ")[1].split()[::-1]
        elif ex.task == "sort":
            assert ex.answer.split() == sorted(ex.prompt.split(": ")[1].split())
        elif ex.task == "count":
            letter = ex.prompt.split(" ")[4]
            assert int(ex.answer) == ex.prompt.split(": ")[1].split().count(letter)
        elif ex.task == "json":
            assert set(json.loads(ex.answer)) == {"name", "age"}


@pytest.mark.parametrize("kind", tasks.NEAR_MISS_KINDS)
def test_every_near_miss_fails_the_checker(examples, kind):
    rng = random.Random(0)
    for ex in examples:
        miss = tasks.near_miss(ex, kind, rng)
        assert miss != ex.answer and not tasks.check(ex, miss), (ex, kind, miss)


def test_near_misses_are_near(examples):
    rng = random.Random(0)
    for ex in examples:
        assert tasks.near_miss(ex, "missing_stop", rng).startswith(ex.answer)
        if ex.task in ("reverse", "sort") and len(set(ex.answer.split())) > 1:
            assert sorted(tasks.near_miss(ex, "swapped_items", rng).split()) == \
                sorted(ex.answer.split())


def test_json_checker_wants_json_only_and_the_right_types():
    ex = tasks.Example("json", "Answer in JSON only: name Ada, age 12",
                       '{"name": "Ada", "age": 12}')
    assert tasks.check(ex, '{"age": 12, "name": "Ada"}')          # key order is free
    assert not tasks.check(ex, '{"name": "Ada", "age": "12"}')     # a quoted number
    assert not tasks.check(ex, 'Sure! {"name": "Ada", "age": 12}')  # not JSON only
    assert not tasks.check(ex, '{"name": "Ada", "age": 12, "x": 1}')
    assert not tasks.check(ex, "[1, 2]")


def test_generation_is_deterministic_and_seeded():
    assert tasks.make_examples(50, seed=1) == tasks.make_examples(50, seed=1)
    assert tasks.make_examples(50, seed=1) != tasks.make_examples(50, seed=2)
    with pytest.raises(ValueError, match="unknown task"):
        tasks.make_examples(5, tasks=["add", "divide"])
    with pytest.raises(ValueError, match="near-miss kind"):
        tasks.near_miss(tasks.make_examples(1)[0], "typo", random.Random(0))


def test_splits_are_disjoint_distinct_and_balanced():
    train, evals = tasks.splits(600, 80, seed=0)
    assert len(train) == 600 and len(evals) == 80
    assert not {ex.prompt for ex in train} & {ex.prompt for ex in evals}
    assert len({ex.prompt for ex in train}) == 600
    assert all(sum(ex.task == t for ex in evals) == 10 for t in tasks.TASKS)


def test_preference_pairs_are_in_trl_conversational_form():
    train, _ = tasks.splits(40, 8)
    pairs = tasks.preference_pairs(train)
    assert [p["kind"] for p in pairs[:4]] == list(tasks.NEAR_MISS_KINDS)
    _, evals = tasks.splits(n_eval=64)
    eval_pairs = tasks.preference_pairs(evals)
    for family in tasks.TASKS:   # every family meets every kind of near miss
        assert {p["kind"] for p in eval_pairs if p["task"] == family} == \
            set(tasks.NEAR_MISS_KINDS)
    for ex, p in zip(train, pairs):
        assert p["prompt"] == [{"role": "user", "content": ex.prompt}]
        assert p["chosen"] == [{"role": "assistant", "content": ex.answer}]
        assert p["rejected"][0]["role"] == "assistant"
        assert not tasks.check(ex, p["rejected"][0]["content"])
    records = tasks.sft_records(train[:2])
    assert records[0]["messages"][1] == {"role": "assistant", "content": train[0].answer}


def test_committed_files_equal_what_the_generator_writes():
    expected = tasks.split_records()
    for name, filename in tasks.SPLIT_FILES.items():
        lines = (tasks.tasks_dir() / filename).read_text().splitlines()
        assert [json.loads(line) for line in lines] == expected[name], \
            f"data/tasks/{filename} is stale: run `python -m qwenlab.data tasks`"
    assert tasks.load_examples(tasks.tasks_dir() / "eval.jsonl") == tasks.splits()[1]


def test_accuracy_counts_per_family():
    exs = [tasks.Example("add", "What is 1 + 1?", "2"), tasks.Example("add", "What is 2 + 2?", "4"),
           tasks.Example("next", "Which letter comes after a?", "b")]
    acc = tasks.accuracy(exs, ["2", "5", "b"])
    assert acc == {"add": 0.5, "next": 1.0, "all": 2 / 3}


def test_prompts_are_left_padded_chatml_ending_in_the_generation_prompt():
    tok = load_course_tokenizer()
    exs = tasks.make_examples(3)
    ids, mask = tasks.prompt_ids(tok, exs)
    start = tok.convert_tokens_to_ids("<|im_start|>")
    for row, m, ex in zip(ids, mask, exs):
        real = row[m.bool()].tolist()
        assert tok.decode(real) == f"<|im_start|>user\n{ex.prompt}<|im_end|>\n" \
                                   "<|im_start|>assistant\n"
        assert real[0] == start and bool(m[-1])
        assert not m[: len(row) - len(real)].any()


def test_respond_cuts_replies_at_im_end_and_matches_single_prompts():
    tok = load_course_tokenizer()
    torch.manual_seed(0)
    model = QwenForCausalLM(QwenConfig.tiny(hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=1, num_attention_heads=2,
                                            num_key_value_heads=1))
    exs = tasks.make_examples(4)
    batched = tasks.respond(model, tok, exs, max_new_tokens=6)
    single = [tasks.respond(model, tok, [ex], max_new_tokens=6)[0] for ex in exs]
    assert batched == single            # left padding changes nothing
    assert all("<|im_end|>" not in r for r in batched)
    sampled = tasks.respond(model, tok, exs, max_new_tokens=6, temperature=1.0, seed=1)
    assert sampled == tasks.respond(model, tok, exs, max_new_tokens=6, temperature=1.0, seed=1)
