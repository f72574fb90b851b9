"""Checkable tasks: the yardstick of post-training (chapters 10-14).

Qwen2.5's post-training leans on data whose answers a program can verify (maths with known
results, code with unit tests, instructions with format constraints): such answers can be
generated in bulk, filtered by rejection sampling, and scored without a human. This module is
that idea at toy scale. Eight small task families, each with a seeded generator, a canonical
answer and a checker:

    add       "What is 23 + 18?"                            -> "41"
    reverse   "Reverse the letters: d a c b"                -> "b c a d"
    sort      "Sort the digits: 7 2 9 4"                    -> "2 4 7 9"
    count     "How many times does a appear in: b a n a n a" -> "3"
    json      "Answer in JSON only: name Ada, age 12"       -> '{"name": "Ada", "age": 12}'
    convert   "Convert 3 km to m."                          -> "3000"
    compare   "Which is larger, 37 or 73?"                  -> "73"
    next      "Which letter comes after k?"                 -> "l"   (or before: "j")

Letters and digits are written with spaces between them so that the course tokenizer (and
Qwen's, which splits digits) gives one token per item: the tasks test what a model learned,
not how BPE happened to cut a word.

From the examples come the three data sets of post-training, in the conversational forms TRL
reads: SFT conversations (``sft_records``), preference pairs whose rejected answer is a near
miss (``preference_pairs``; on-policy mistakes are added by chapter 12's rejection sampling),
and a held-out evaluation split whose prompts never occur in training (``splits``).
``evaluate`` generates greedily and reports accuracy per task family, judged by the checkers.

``python -m qwenlab.data tasks`` writes the splits to ``data/tasks/`` (committed, small; a test
checks that they equal what this module generates).
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

TASKS = ("add", "reverse", "sort", "count", "json", "convert", "compare", "next")
NEAR_MISS_KINDS = ("off_by_one", "swapped_items", "wrong_type", "missing_stop")

_LETTERS = "abcdefgh"
_NAMES = ("Ada", "Tom", "Eve", "Max", "Ian", "Zoe", "Sam", "Kim", "Leo", "Mia")
_UNITS = {("km", "m"): 1000, ("m", "cm"): 100, ("kg", "g"): 1000, ("l", "ml"): 1000}


@dataclass(frozen=True)
class Example:
    """One task instance: the user's prompt and the one correct answer (as text)."""
    task: str
    prompt: str
    answer: str

    def prompt_messages(self) -> list[dict]:
        return [{"role": "user", "content": self.prompt}]

    def messages(self, response: str | None = None) -> list[dict]:
        """The conversation: the prompt, then ``response`` (default: the correct answer)."""
        content = self.answer if response is None else response
        return self.prompt_messages() + [{"role": "assistant", "content": content}]

    def check(self, response: str) -> bool:
        return check(self, response)


# --------------------------------------------------------------------------- generators

def _spaced(items: Iterable) -> str:
    return " ".join(str(x) for x in items)


def _add(rng: random.Random) -> Example:
    a, b = rng.randint(0, 49), rng.randint(0, 49)
    return Example("add", f"What is {a} + {b}?", str(a + b))


def _reverse(rng: random.Random) -> Example:
    letters = rng.sample(_LETTERS, rng.randint(3, 5))
    return Example("reverse", f"Reverse the letters: {_spaced(letters)}", _spaced(letters[::-1]))


def _sort(rng: random.Random) -> Example:
    digits = [rng.randint(0, 9) for _ in range(rng.randint(3, 5))]
    return Example("sort", f"Sort the digits: {_spaced(digits)}", _spaced(sorted(digits)))


def _count(rng: random.Random) -> Example:
    target = rng.choice(_LETTERS[:4])
    word = [rng.choice(_LETTERS[:4]) for _ in range(rng.randint(4, 7))]
    return Example("count", f"How many times does {target} appear in: {_spaced(word)}",
                   str(word.count(target)))


def _json(rng: random.Random) -> Example:
    name, age = rng.choice(_NAMES), rng.randint(1, 99)
    return Example("json", f"Answer in JSON only: name {name}, age {age}",
                   json.dumps({"name": name, "age": age}))


def _convert(rng: random.Random) -> Example:
    (src, dst), factor = rng.choice(sorted(_UNITS.items()))
    x = rng.randint(1, 30)
    return Example("convert", f"Convert {x} {src} to {dst}.", str(x * factor))


def _compare(rng: random.Random) -> Example:
    a, b = rng.sample(range(10, 100), 2)
    return Example("compare", f"Which is larger, {a} or {b}?", str(max(a, b)))


def _next(rng: random.Random) -> Example:
    letter = rng.choice(string.ascii_lowercase[1:-1])
    if rng.random() < 0.5:
        return Example("next", f"Which letter comes after {letter}?", chr(ord(letter) + 1))
    return Example("next", f"Which letter comes before {letter}?", chr(ord(letter) - 1))


GENERATORS: dict[str, Callable[[random.Random], Example]] = {
    "add": _add, "reverse": _reverse, "sort": _sort, "count": _count, "json": _json,
    "convert": _convert, "compare": _compare, "next": _next}


def make_examples(n: int, seed: int = 0, tasks: Sequence[str] = TASKS) -> list[Example]:
    """``n`` examples cycling through ``tasks`` (so every family is equally represented),
    deterministic given ``seed``. Duplicates are possible; ``splits`` removes them."""
    unknown = [t for t in tasks if t not in GENERATORS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; the tasks are {list(TASKS)}")
    rng = random.Random(seed)
    return [GENERATORS[tasks[i % len(tasks)]](rng) for i in range(n)]


def splits(n_train: int = 2000, n_eval: int = 200, seed: int = 0,
           tasks: Sequence[str] = TASKS) -> tuple[list[Example], list[Example]]:
    """(train, eval): distinct examples, no eval prompt occurring in train. The eval split is
    balanced over the task families (``n_eval`` should be a multiple of ``len(tasks)``)."""
    rng = random.Random(seed)
    per_task = -(-n_eval // len(tasks))
    seen: set[str] = set()
    evals: dict[str, list[Example]] = {t: [] for t in tasks}
    train: list[Example] = []
    for _ in range(100 * (n_train + n_eval)):
        if len(train) >= n_train and all(len(v) >= per_task for v in evals.values()):
            break
        task = tasks[rng.randrange(len(tasks))]
        ex = GENERATORS[task](rng)
        if ex.prompt in seen:
            continue
        seen.add(ex.prompt)
        if len(evals[task]) < per_task:   # eval first: its prompts are then never trained on
            evals[task].append(ex)
        elif len(train) < n_train:
            train.append(ex)
    else:
        raise ValueError(f"cannot draw {n_train} + {n_eval} distinct examples from {tasks}")
    eval_examples = [ex for i in range(per_task) for t in tasks for ex in evals[t][i:i + 1]]
    return train, eval_examples[:n_eval]


# --------------------------------------------------------------------------- checkers

def _ints(text: str) -> list[int] | None:
    try:
        return [int(x) for x in text.split()]
    except ValueError:
        return None


def check(example: Example, response: str) -> bool:
    """Is ``response`` (the assistant's text, without ``<|im_end|>``) a correct answer?

    Whitespace around the answer is ignored; anything else (a preamble, a second answer, a
    different format) makes it wrong, as it would for a program reading the reply. JSON is
    parsed, so key order and spacing are free, but the types must be right (age a number).
    """
    response = response.strip()
    if example.task == "json":
        try:
            got = json.loads(response)
        except ValueError:
            return False
        want = json.loads(example.answer)
        return isinstance(got, dict) and got == want and all(
            type(got[k]) is type(v) for k, v in want.items())
    if example.task in ("sort", "add", "count", "convert", "compare"):
        got = _ints(response)
        return got is not None and got == _ints(example.answer)
    return response.split() == example.answer.split()


# --------------------------------------------------------------------------- near misses

def near_miss(example: Example, kind: str, rng: random.Random) -> str:
    """A wrong answer that looks almost right, of one of ``NEAR_MISS_KINDS``:

    off_by_one     a number one too large or too small (a letter one step off)
    swapped_items  two neighbouring items exchanged (for single items: a wrong neighbour)
    wrong_type     the right value in the wrong form (a quoted number, words around it)
    missing_stop   the right answer that does not stop (it runs on into more text)
    """
    a = example.answer
    if kind == "missing_stop":
        return f"{a} {a}"
    if kind == "wrong_type":
        if example.task == "json":
            d = json.loads(a)
            return json.dumps({"name": d["name"], "age": str(d["age"])})
        return f"The answer is {a}."
    if kind == "swapped_items":
        items = a.split()
        if example.task == "json":   # the values swapped between the keys
            d = json.loads(a)
            return json.dumps({"name": d["age"], "age": d["name"]})
        if len(items) > 1 and len(set(items)) > 1:
            while True:
                i = rng.randrange(len(items) - 1)
                if items[i] != items[i + 1]:
                    break
            items[i], items[i + 1] = items[i + 1], items[i]
            return " ".join(items)
        kind = "off_by_one"
    if kind == "off_by_one":
        step = rng.choice((-1, 1))
        if example.task == "json":
            d = json.loads(a)
            return json.dumps({"name": d["name"], "age": d["age"] + step})
        items = a.split()
        i = rng.randrange(len(items))
        if items[i].isdigit():
            value = int(items[i]) + step
            items[i] = str(value if value >= 0 else int(items[i]) + 1)
        else:
            c = items[i]
            items[i] = chr(ord(c) + step) if "a" < c < "z" else chr(ord(c) - 1 if c == "z"
                                                                     else ord(c) + 1)
        return " ".join(items)
    raise ValueError(f"unknown near-miss kind {kind!r}; the kinds are {list(NEAR_MISS_KINDS)}")


# --------------------------------------------------------------------------- data sets

def sft_records(examples: Iterable[Example]) -> list[dict]:
    """SFT conversations in TRL's conversational form: ``{"messages": [...], "task": ...}``."""
    return [{"messages": ex.messages(), "task": ex.task} for ex in examples]


def preference_pairs(examples: Iterable[Example], seed: int = 0) -> list[dict]:
    """One preference pair per example, in TRL's conversational preference form
    (``prompt``, ``chosen``, ``rejected`` as message lists), the rejected answer a near miss
    whose kind cycles through ``NEAR_MISS_KINDS``, shifted by one every ``len(TASKS)``
    examples so that a split that cycles through the families (the eval split) still meets
    every kind in every family. Every rejected answer fails the checker."""
    rng = random.Random(seed)
    pairs = []
    for i, ex in enumerate(examples):
        kind = NEAR_MISS_KINDS[(i + i // len(TASKS)) % len(NEAR_MISS_KINDS)]
        rejected = near_miss(ex, kind, rng)
        assert not check(ex, rejected), (ex, kind, rejected)
        pairs.append(pair_record(ex, ex.answer, rejected, kind))
    return pairs


def pair_record(example: Example, chosen: str, rejected: str, kind: str) -> dict:
    return {"prompt": example.prompt_messages(),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "task": example.task, "kind": kind}


# --------------------------------------------------------------------------- generation

def prompt_ids(tokenizer, examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """The ChatML prompts (ending in ``<|im_start|>assistant\\n``), left-padded:
    ``(input_ids, attention_mask)``, both ``(len(examples), longest prompt)``."""
    texts = [tokenizer.apply_chat_template(ex.prompt_messages(), tokenize=False,
                                           add_generation_prompt=True) for ex in examples]
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


@torch.no_grad()
def respond(model, tokenizer, examples: Sequence[Example], max_new_tokens: int = 32,
            temperature: float = 0.0, top_p: float | None = None, seed: int | None = None,
            batch_size: int = 128) -> list[str]:
    """The model's reply to each example's prompt, up to its ``<|im_end|>`` (a reply that
    never ends is returned as far as it got). Greedy by default; sampling is seeded."""
    from qwenlab.generate import generate

    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    generator = torch.Generator(model.device).manual_seed(seed) if seed is not None else None
    was_training = model.training
    model.eval()
    replies: list[str] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        ids, mask = prompt_ids(tokenizer, chunk)
        out = generate(model, ids.to(model.device), max_new_tokens, temperature=temperature,
                       top_p=top_p, eos_token_id=end, attention_mask=mask.to(model.device),
                       generator=generator)
        for row in out[:, ids.shape[1]:].tolist():
            row = row[:row.index(end)] if end in row else row
            replies.append(tokenizer.decode(row, skip_special_tokens=True))
    model.train(was_training)
    return replies


def accuracy(examples: Sequence[Example], replies: Sequence[str]) -> dict[str, float]:
    """Fraction correct per task family, plus ``"all"`` (the mean over examples)."""
    result: dict[str, float] = {}
    for task in dict.fromkeys(ex.task for ex in examples):
        pairs = [(ex, r) for ex, r in zip(examples, replies) if ex.task == task]
        result[task] = sum(check(ex, r) for ex, r in pairs) / len(pairs)
    result["all"] = sum(check(ex, r) for ex, r in zip(examples, replies)) / len(examples)
    return result


def evaluate(model, tokenizer, examples: Sequence[Example], max_new_tokens: int = 32
             ) -> dict[str, float]:
    """Greedy task accuracy, per family and ``"all"``, judged by the checkers."""
    return accuracy(examples, respond(model, tokenizer, examples, max_new_tokens))


# --------------------------------------------------------------------------- files

def tasks_dir() -> Path:
    from qwenlab.data import data_dir

    return data_dir() / "tasks"


SPLIT_FILES = {"train": "sft_train.jsonl", "eval": "eval.jsonl", "pairs": "pairs_train.jsonl"}


def split_records(seed: int = 0) -> dict[str, list[dict]]:
    """What ``python -m qwenlab.tasks`` writes: the default splits and their near-miss pairs."""
    train, evals = splits(seed=seed)
    return {"train": [asdict(ex) for ex in train], "eval": [asdict(ex) for ex in evals],
            "pairs": preference_pairs(train, seed=seed)}


def write_splits(folder: str | Path | None = None, seed: int = 0) -> dict[str, Path]:
    folder = Path(folder) if folder is not None else tasks_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, records in split_records(seed).items():
        paths[name] = folder / SPLIT_FILES[name]
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return paths


def load_examples(path: str | Path) -> list[Example]:
    with open(path, encoding="utf-8") as f:
        return [Example(**json.loads(line)) for line in f if line.strip()]

