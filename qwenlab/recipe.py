"""The Qwen2.5 recipe end to end at toy scale, one stage at a time (chapter 14).

    python -m qwenlab.recipe                      # SCALE from the machine, filtered data
    python -m qwenlab.recipe --data raw           # the same pipeline on the unfiltered crawl
    python -m qwenlab.recipe --moe                # an MoE model with the dense model's active size
    python -m qwenlab.recipe --scale test         # a minuscule run, for tests

Stages, each reading what the one before wrote:

    filter    score the crawl (chapter 08): exact dedup, heuristic rules, a quality classifier
    pretrain  next-token training on the kept text, mixed with plain-text task
              demonstrations (the toy stand-in for maths, code and synthetic data) (chapter 09)
    sft       assistant-only fine-tuning on the checkable tasks (chapter 10)
    reward    a Bradley-Terry reward model on near-miss preference pairs (chapter 11)
    dpo       DPO from the SFT model on the same pairs (chapter 12)
    iterate   rejection sampling: on-policy replies judged by the checkers, then DPO again,
              with an NLL term on the chosen replies (12)

Every stage ends by writing its model (safetensors, with a SHA-256 of the tensors) and then
``stage.json`` (its measurements, its wall time and the digest of what it read). A stage whose
``stage.json`` exists, whose model verifies and whose input is unchanged is not run again: kill
the run at any moment and start it again, and it continues with the first incomplete stage
(pretraining also resumes mid-stage from its own checkpoints). Every stage is seeded and runs
on one CPU thread, so a resumed run writes the same bytes as an uninterrupted one. A corrupt
model file is detected by its digest; that stage is rerun, and, being deterministic, it gives
back the same model, so the stages after it stay valid.

``results.json`` holds, per stage: held-out LM loss on clean text, task accuracy (per family),
preference-pair accuracy, and wall time; with versions and hardware.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from qwenlab import tasks
from qwenlab.config import QwenConfig
from qwenlab.model import QwenForCausalLM

STAGES = ("filter", "pretrain", "sft", "reward", "dpo", "iterate")
# What each stage reads. DPO starts from the SFT model, not from the reward model: at this
# scale the checkers label the pairs, so the reward model is measured, not trained against.
DEPENDS_ON = {"filter": (), "pretrain": ("filter",), "sft": ("pretrain",), "reward": ("sft",),
              "dpo": ("sft",), "iterate": ("dpo",)}
POLICY_STAGES = ("pretrain", "sft", "dpo", "iterate")

# The settings of each scale. Chapters 10-12 import these, so the model a chapter trains is
# the one the recipe trains at the same scale.
STAGE_CONFIGS: dict[str, dict] = {
    "cpu": {
        "model": {},                                  # QwenConfig.tiny()
        "moe_model": {},                              # QwenConfig.tiny_moe(): same active size
        "data": {"crawl_plays": 12, "chunk_words": 200, "n_train": 2000, "n_eval": 200,
                 "task_text": 0.3},
        "pretrain": {"max_steps": 300, "batch_size": 16, "seq_len": 128, "lr": 3e-3,
                     "min_lr": 3e-4, "warmup_steps": 20, "eval_every": 100,
                     "eval_batches": 8, "checkpoint_every": 100},
        "sft": {"max_steps": 600, "batch_size": 32, "lr": 1e-3, "min_lr": 1e-4,
                "warmup_steps": 20, "packing": True, "seq_len": 256},
        "reward": {"max_steps": 150, "batch_size": 32, "lr": 1e-3, "min_lr": 1e-4,
                   "warmup_steps": 10},
        "dpo": {"beta": 0.1, "max_steps": 60, "batch_size": 16, "lr": 5e-4, "min_lr": 5e-5,
                "warmup_steps": 10, "kl_prompts": 0},
        "iterate": {"prompts": 200, "samples": 4, "temperature": 1.0, "sft_weight": 1.0},
    },
    "gpu": {
        "model": {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 6,
                  "num_attention_heads": 8, "num_key_value_heads": 2},
        "moe_model": {"moe_intermediate_size": 176, "shared_expert_intermediate_size": 352},
        "data": {"crawl_plays": 33, "chunk_words": 200, "n_train": 20000, "n_eval": 400,
                 "task_text": 0.3},
        "pretrain": {"max_steps": 3000, "batch_size": 32, "seq_len": 256, "lr": 2e-3,
                     "min_lr": 2e-4, "warmup_steps": 100, "eval_every": 500,
                     "eval_batches": 16, "checkpoint_every": 500},
        "sft": {"max_steps": 3000, "batch_size": 64, "lr": 2e-3, "min_lr": 2e-4,
                "warmup_steps": 100, "packing": True, "seq_len": 512},
        "reward": {"max_steps": 1000, "batch_size": 64, "lr": 5e-4, "min_lr": 5e-5,
                   "warmup_steps": 50},
        "dpo": {"beta": 0.1, "max_steps": 600, "batch_size": 64, "lr": 3e-4, "min_lr": 3e-5,
                "warmup_steps": 30, "kl_prompts": 0},
        "iterate": {"prompts": 2000, "samples": 8, "temperature": 1.0, "sft_weight": 1.0},
    },
    "test": {   # minuscule: the pipeline's plumbing in seconds
        "model": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                  "num_attention_heads": 2, "num_key_value_heads": 1},
        "moe_model": {"num_experts": 2, "num_experts_per_tok": 1, "moe_intermediate_size": 32,
                      "shared_expert_intermediate_size": 32},
        "data": {"crawl_plays": 2, "chunk_words": 200, "n_train": 64, "n_eval": 16,
                 "task_text": 0.3},
        "pretrain": {"max_steps": 4, "batch_size": 2, "seq_len": 32, "lr": 3e-3,
                     "min_lr": 3e-4, "warmup_steps": 1, "eval_every": 2, "eval_batches": 1,
                     "checkpoint_every": 2},
        "sft": {"max_steps": 3, "batch_size": 4, "warmup_steps": 1},
        "reward": {"max_steps": 3, "batch_size": 4, "warmup_steps": 1},
        "dpo": {"max_steps": 3, "batch_size": 4, "warmup_steps": 1, "kl_prompts": 0},
        "iterate": {"prompts": 8, "samples": 2, "temperature": 1.0, "sft_weight": 1.0},
    },
}
HELDOUT_PLAYS = 2     # clean text no stage trains on: the held-out LM loss
REFERENCE_PLAYS = 3   # the quality classifier's "good" examples


class StageError(RuntimeError):
    """A stage's saved output is missing, corrupt or stale."""


# --------------------------------------------------------------------------- run folder

def default_run_dir(scale: str = "cpu", data: str = "filtered", moe: bool = False) -> Path:
    from qwenlab.data import prepared_dir

    return prepared_dir() / "recipe" / f"{scale}-{data}{'-moe' if moe else ''}"


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch and Python and run on one thread: a stage then computes the same bytes
    whenever and however often it runs (two threads may sum in another order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _digest_file(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(model: torch.nn.Module, path: Path, kind: str = "causal_lm") -> str:
    """Save a stage's model as safetensors (atomically), with its config and a digest of its
    tensors in the metadata; return the digest."""
    from qwenlab.train import _digest, _model_tensors, write_safetensors

    tensors = {k: v.detach().cpu().contiguous() for k, v in _model_tensors(model).items()}
    meta = {"kind": kind, "config": json.dumps(dataclasses.asdict(model.config)),
            "sha256": _digest(tensors)}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(tensors, path, meta)
    return meta["sha256"]


def read_model_file(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a stage model, verified against its digest (StageError if not)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from qwenlab.train import _digest

    if not path.is_file():
        raise StageError(f"stage model {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise StageError(f"stage model {path} is truncated or corrupt ({e})") from e
    if "sha256" not in meta or _digest(tensors) != meta["sha256"]:
        raise StageError(f"stage model {path} is corrupt: its tensors do not match the "
                         "SHA-256 recorded when it was written")
    return tensors, meta


def load_model(path: Path) -> torch.nn.Module:
    """A stage's model (a QwenForCausalLM, or a reward model), verified."""
    tensors, meta = read_model_file(path)
    config = QwenConfig(**json.loads(meta["config"]))
    if meta["kind"] == "reward":
        from qwenlab import reward

        model = reward.RewardModel(config)
    else:
        model = QwenForCausalLM(config)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise StageError(f"stage model {path} does not fit its config: missing "
                         f"{sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.eval()


# --------------------------------------------------------------------------- the pipeline

class Recipe:
    """One run of the pipeline in ``run_dir``: ``Recipe(...).run()`` runs what is missing."""

    def __init__(self, scale: str = "cpu", data: str = "filtered", moe: bool = False,
                 run_dir: str | os.PathLike | None = None, seed: int = 0,
                 progress: bool = True):
        if scale not in STAGE_CONFIGS:
            raise ValueError(f"unknown scale {scale!r}; choose one of {list(STAGE_CONFIGS)}")
        if data not in ("filtered", "raw"):
            raise ValueError(f"data must be 'filtered' or 'raw', not {data!r}")
        self.scale, self.data, self.moe, self.seed = scale, data, moe, seed
        self.settings = STAGE_CONFIGS[scale]
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(scale, data,
                                                                                 moe)
        self.progress = progress
        # A GPU when there is one (its results are not bit-reproducible across runs; the
        # CPU's are).
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._cache: dict[str, object] = {}

    # ------------------------------------------------------------------ bookkeeping
    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def record(self, stage: str) -> dict | None:
        path = self.stage_dir(stage) / "stage.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None

    def _inputs(self, stage: str) -> dict[str, str]:
        """The digests of the earlier stages' outputs this stage read."""
        return {s: self.record(s)["output"] for s in DEPENDS_ON[stage]}

    def settings_of(self, stage: str) -> dict:
        """What a stage's result depends on besides its input: change any of it, and the
        stage (and every stage after it) runs again."""
        uses = {"filter": ["data"], "iterate": ["iterate", "dpo"]}.get(stage, [stage])
        return {"seed": self.seed, "data": self.data, "moe": self.moe,
                "model": dataclasses.asdict(self.model_config()),
                "tasks": self.settings["data"], "task_data": self.task_digest(),
                **{k: self.settings[k] for k in uses}}

    def task_digest(self) -> str:
        """SHA-256 of the task splits and pairs this run trains and evaluates on, so that a
        change in how ``qwenlab.tasks`` generates them makes the stages stale."""
        import hashlib

        def digest() -> str:
            train, evals = self.task_splits()
            blob = json.dumps([[dataclasses.astuple(e) for e in train],
                               [dataclasses.astuple(e) for e in evals],
                               tasks.preference_pairs(train, self.seed)])
            return hashlib.sha256(blob.encode()).hexdigest()

        return self._cached("task_digest", digest)

    def _cached(self, key: str, make):
        """``make()``, computed once per Recipe: the tokenizer, corpora, splits and the
        held-out stream are read by every stage and every evaluation."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _key(self, stage: str) -> dict:
        """The settings and inputs of a stage, as they read back from JSON."""
        return json.loads(json.dumps({"settings": self.settings_of(stage),
                                      "inputs": self._inputs(stage)}))

    def is_complete(self, stage: str) -> bool:
        """Done, intact, computed with the current settings and from the current output of
        the stages it read."""
        rec = self.record(stage)
        if rec is None:
            return False
        try:
            key = self._key(stage)
            return (rec.get("settings") == key["settings"] and rec["inputs"] == key["inputs"]
                    and rec["output"] == self._output_digest(stage))
        except (StageError, TypeError, KeyError):
            return False

    def _output_path(self, stage: str) -> Path:
        name = "kept.jsonl" if stage == "filter" else "model.safetensors"
        return self.stage_dir(stage) / name

    def _output_digest(self, stage: str) -> str:
        path = self._output_path(stage)
        if stage == "filter":
            if not path.is_file():
                raise StageError(f"{path} does not exist")
            return _digest_file(path)
        return read_model_file(path)[1]["sha256"]

    def _begin(self, stage: str) -> None:
        """Keep what an interrupted attempt at this same stage left (pretraining's
        checkpoints); wipe what an attempt with other settings or inputs left."""
        import shutil

        key = self._key(stage)
        folder = self.stage_dir(stage)
        marker = folder / "attempt.json"
        if folder.is_dir():
            previous = json.loads(marker.read_text()) if marker.is_file() else None
            if previous != key:
                shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(key, indent=1))

    def _finish(self, stage: str, metrics: dict, started: float) -> dict:
        rec = {"stage": stage, "settings": self.settings_of(stage), "inputs": self._inputs(stage),
               "output": self._output_digest(stage), "metrics": metrics,
               "wall_s": round(time.time() - started, 2)}
        path = self.stage_dir(stage) / "stage.json"
        tmp = path.with_name(".stage.json.tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        os.replace(tmp, path)
        return rec

    # ------------------------------------------------------------------ shared inputs
    def tokenizer(self):
        from qwenlab.tokenizer import load_course_tokenizer

        return self._cached("tokenizer", load_course_tokenizer)

    def task_splits(self) -> tuple[list[tasks.Example], list[tasks.Example]]:
        d = self.settings["data"]
        return self._cached("splits", lambda: tasks.splits(d["n_train"], d["n_eval"],
                                                           seed=self.seed))

    def heldout_stream(self) -> torch.Tensor:
        from qwenlab import quality as Q
        from qwenlab import train as qtrain

        def stream() -> torch.Tensor:
            plays, _, _ = self._corpora()
            order = random.Random(self.seed).sample(range(len(plays)), len(plays))
            chunks = [c for i in order[:HELDOUT_PLAYS]
                      for c in Q.chunk_text(plays[i]["text"], self.settings["data"]["chunk_words"])
                      if c.strip()]
            random.Random(self.seed + 1).shuffle(chunks)
            return qtrain.tokenize_texts(chunks, self.tokenizer())

        return self._cached("heldout", stream)

    def _corpora(self):
        from qwenlab import data as qdata

        def read():
            needed = ("plays", "markov", "junk")
            if not all(qdata.corpus_path(n).is_file() for n in needed):
                qdata.prepare(needed, verbose=self.progress)
            return tuple(qdata.load_corpus(n) for n in needed)

        return self._cached("corpora", read)

    def model_config(self) -> QwenConfig:
        """The dense model of this scale, or (``moe``) an MoE model with the same active
        MLP width: a shared expert plus the top-k routed experts."""
        if self.moe:
            return QwenConfig.tiny_moe(**self.settings["model"], **self.settings["moe_model"])
        return QwenConfig.tiny(**self.settings["model"])

    # ------------------------------------------------------------------ stages
    def stage_filter(self) -> dict:
        """Chapter 08's filter on a crawl of plays + Markov nonsense + junk."""
        from qwenlab import quality as Q

        plays, markov, junk = self._corpora()
        d = self.settings["data"]
        order = random.Random(self.seed).sample(range(len(plays)), len(plays))
        reference = [plays[i] for i in order[HELDOUT_PLAYS:HELDOUT_PLAYS + REFERENCE_PLAYS]]
        start = HELDOUT_PLAYS + REFERENCE_PLAYS
        crawl_plays = [plays[i] for i in order[start:start + d["crawl_plays"]]]

        def chunks_of(docs):
            return [(c, doc["source"]) for doc in docs for c in Q.chunk_text(doc["text"],
                                                                             d["chunk_words"])
                    if c.strip()]

        crawl = (chunks_of(crawl_plays) + chunks_of(m for i, m in enumerate(markov) if i % 4)
                 + chunks_of(j for i, j in enumerate(junk) if i % 4))
        random.Random(self.seed).shuffle(crawl)
        texts = [t for t, _ in crawl]
        good = [t for t, _ in chunks_of(reference)]
        bad = [t for t, _ in chunks_of(markov[::4] + junk[::4])]
        classifier = Q.train_quality_classifier(good + bad, [1] * len(good) + [0] * len(bad),
                                                dim=4096, steps=100)
        p_good = classifier.predict_proba(texts).tolist()
        duplicate = {i for group in Q.exact_duplicates(texts) for i in group[1:]}
        q = [0.0 if i in duplicate or not Q.heuristic_filter(t).passed else p_good[i]
             for i, t in enumerate(texts)]
        keep = [qi >= 0.5 for qi in q] if self.data == "filtered" else [True] * len(texts)
        kept = [{"text": t, "source": s, "q": round(qi, 4)}
                for (t, s), qi, k in zip(crawl, q, keep) if k]
        out = self._output_path("filter")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in kept))
        sources = sorted({s for _, s in crawl})
        return {"chunks": len(texts), "kept": len(kept),
                "kept_by_source": {s: sum(r["source"] == s for r in kept) for s in sources},
                "mean_q_kept": round(sum(r["q"] for r in kept) / max(len(kept), 1), 4)}

    def task_text(self, n_tokens: int) -> list[str]:
        """Plain-text task demonstrations ("What is 5 + 46? 51", 16 to a document, no chat
        format) of about ``n_tokens`` tokens: the toy counterpart of the maths, code and
        synthetic data in Qwen2.5's pretraining mix. No evaluation prompt occurs in them."""
        _, evals = self.task_splits()
        held_out = {ex.prompt for ex in evals}
        docs, tokens, seed = [], 0, self.seed + 1
        while tokens < n_tokens:
            examples = [ex for ex in tasks.make_examples(1600, seed=seed)
                        if ex.prompt not in held_out]
            for i in range(0, len(examples), 16):
                doc = "\n".join(f"{ex.prompt} {ex.answer}" for ex in examples[i:i + 16])
                docs.append(doc)
                tokens += len(self.tokenizer()(doc)["input_ids"]) + 1
                if tokens >= n_tokens:
                    break
            seed += 1
        return docs

    def stage_pretrain(self) -> dict:
        from qwenlab import train as qtrain

        kept = [json.loads(line)["text"]
                for line in self._output_path("filter").read_text().splitlines()]
        corpus_tokens = len(qtrain.tokenize_texts(kept, self.tokenizer()))
        share = self.settings["data"]["task_text"]
        task_docs = self.task_text(int(corpus_tokens * share / (1 - share)))
        docs = kept + task_docs
        random.Random(self.seed).shuffle(docs)
        stream = qtrain.tokenize_texts(docs, self.tokenizer())
        model = QwenForCausalLM(self.model_config()).to(self.device)
        cfg = qtrain.TrainConfig(seed=self.seed, **self.settings["pretrain"])
        history = qtrain.train(model, stream, cfg, self.heldout_stream(),
                               checkpoint_dir=self.stage_dir("pretrain") / "checkpoints",
                               progress=self.progress, desc="pretrain")
        save_model(model, self._output_path("pretrain"))
        return {"train_tokens": len(stream), "corpus_tokens": corpus_tokens,
                "task_text_tokens": len(stream) - corpus_tokens, "history": history.to_dict()}

    def stage_sft(self) -> dict:
        from qwenlab import sft

        model = self.load("pretrain")
        train, evals = self.task_splits()
        cfg = sft.SFTConfig(seed=self.seed, **self.settings["sft"])
        history = sft.train(model, self.tokenizer(), tasks.sft_records(train), cfg,
                            progress=self.progress)
        save_model(model, self._output_path("sft"))
        return {"history": _jsonable(history)}

    def stage_reward(self) -> dict:
        from qwenlab import reward

        train, _ = self.task_splits()
        rm = reward.RewardModel.from_causal_lm(self.load("sft"))
        cfg = reward.RewardConfig(seed=self.seed, **self.settings["reward"])
        history = reward.train(rm, self.tokenizer(), tasks.preference_pairs(train, self.seed),
                               cfg, progress=self.progress)
        save_model(rm, self._output_path("reward"), kind="reward")
        return {"history": _jsonable(history)}

    def stage_dpo(self) -> dict:
        from qwenlab import dpo

        train, _ = self.task_splits()
        policy, reference = self.load("sft"), self.load("sft")
        cfg = dpo.DPOConfig(seed=self.seed, **self.settings["dpo"])
        history = dpo.train(policy, reference, self.tokenizer(),
                            tasks.preference_pairs(train, self.seed), cfg,
                            progress=self.progress)
        save_model(policy, self._output_path("dpo"))
        return {"history": _jsonable(history)}

    def stage_iterate(self) -> dict:
        """Rejection sampling on the DPO model's own replies, judged by the checkers, then a
        second DPO round against the DPO model as the new reference."""
        from qwenlab import dpo

        it = self.settings["iterate"]
        train, _ = self.task_splits()
        policy, reference = self.load("dpo"), self.load("dpo")
        prompts = random.Random(self.seed + 7).sample(train, min(it["prompts"], len(train)))
        pairs = dpo.on_policy_pairs(policy, self.tokenizer(), prompts, n=it["samples"],
                                    temperature=it["temperature"], seed=self.seed)
        # Most on-policy pairs have the reference answer as "chosen" (few samples are right),
        # and pure DPO on them can push both replies down; an NLL term on the chosen reply
        # (TRL's loss_type ["sigmoid", "sft"]) keeps the right answer likely.
        cfg = dpo.DPOConfig(seed=self.seed + 1, **{**self.settings["dpo"],
                                                   "sft_weight": it["sft_weight"]})
        history = dpo.train(policy, reference, self.tokenizer(), pairs, cfg,
                            progress=self.progress)
        save_model(policy, self._output_path("iterate"))
        return {"on_policy_pairs": len(pairs), "history": _jsonable(history)}

    # ------------------------------------------------------------------ driving
    def load(self, stage: str) -> torch.nn.Module:
        """The model a completed stage wrote (run the pipeline up to it first)."""
        if stage == "filter":
            raise ValueError("the filter stage writes text, not a model")
        return load_model(self._output_path(stage)).to(self.device)

    def run(self, until: str | None = None, measure: bool = True) -> dict | None:
        """Run every stage that is not complete, up to and including ``until``; then (with
        ``measure``) evaluate, write and return ``results.json``'s content."""
        stages = STAGES if until is None else STAGES[:STAGES.index(until) + 1]
        for i, stage in enumerate(stages):
            if self.is_complete(stage):
                continue
            self._begin(stage)
            started = time.time()
            with deterministic(self.seed + 1000 * i):
                metrics = getattr(self, f"stage_{stage}")()
            self._finish(stage, metrics, started)
        return self.evaluate(stages) if measure else None

    def evaluate(self, stages=STAGES) -> dict:
        """Measure every completed model stage (cached in ``stage_dir/eval.json``)."""
        results = {"scale": self.scale, "data": self.data, "moe": self.moe,
                   "seed": self.seed, "environment": environment(), "stages": {}}
        for stage in stages:
            rec = self.record(stage)
            row = {"wall_s": rec["wall_s"] if rec else None}
            if stage == "filter":
                row.update(rec["metrics"] if rec else {})
            else:
                row.update(self._measure(stage))
            results["stages"][stage] = row
        out = self.run_dir / "results.json"
        out.write_text(json.dumps(results, indent=1))
        return results

    def _measure(self, stage: str) -> dict:
        cache = self.stage_dir(stage) / "eval.json"
        digest = self.record(stage)["output"]
        if cache.is_file():
            saved = json.loads(cache.read_text())
            if saved.get("output") == digest:
                return saved["metrics"]
        from qwenlab import train as qtrain

        with deterministic(self.seed):
            model = self.load(stage)
            tok = self.tokenizer()
            train, evals = self.task_splits()
            eval_pairs = tasks.preference_pairs(evals, seed=self.seed + 1)
            if stage == "reward":
                from qwenlab import reward

                metrics = {"pair_accuracy": reward.pair_accuracy(model, tok, eval_pairs)}
            else:
                batches = qtrain.sequential_batches(
                    self.heldout_stream(), self.settings["pretrain"]["batch_size"],
                    self.settings["pretrain"]["seq_len"],
                    self.settings["pretrain"]["eval_batches"])
                metrics = {"heldout_loss": qtrain.evaluate(model, batches),
                           "task_accuracy": tasks.evaluate(model, tok, evals),
                           "pair_accuracy": policy_pair_accuracy(model, tok, eval_pairs)}
        cache.write_text(json.dumps({"output": digest, "metrics": metrics}, indent=1))
        return metrics


def stages_to_rerun(changed: str) -> list[str]:
    """The stages that must run again when ``changed``'s output changes: itself and every
    stage that reads it, directly or through another, in pipeline order."""
    dirty = {changed}
    for stage in STAGES:                     # STAGES is in dependency order
        if any(dep in dirty for dep in DEPENDS_ON[stage]):
            dirty.add(stage)
    return [s for s in STAGES if s in dirty]


def policy_pair_accuracy(model, tokenizer, pairs) -> float:
    """How often the policy gives the chosen reply a higher (summed) log-probability than
    the rejected one: a language model's own preference accuracy."""
    from qwenlab import dpo

    chosen, rejected = dpo.pair_logprobs(model, tokenizer, pairs)
    return (chosen > rejected).float().mean().item()


def _jsonable(history) -> dict:
    if dataclasses.is_dataclass(history):
        return dataclasses.asdict(history)
    if hasattr(history, "to_dict"):
        return history.to_dict()
    return dict(history)


def environment() -> dict:
    from qwenlab.env import environment_report

    return environment_report()


# --------------------------------------------------------------------------- entry points

def load_stage(stage: str, scale: str = "cpu", data: str = "filtered", moe: bool = False,
               progress: bool = True) -> torch.nn.Module:
    """The model of one stage of the course pipeline at ``scale``, built (and cached under
    ``data/prepared/recipe/``) on first use. Chapters 10-12 start from these."""
    recipe = Recipe(scale, data, moe, progress=progress)
    if not recipe.is_complete(stage):
        recipe.run(until=stage, measure=False)
    return recipe.load(stage)


def main(argv: list[str] | None = None) -> int:
    from qwenlab.env import detect_scale

    p = argparse.ArgumentParser(prog="python -m qwenlab.recipe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=list(STAGE_CONFIGS), default=None,
                   help="default: gpu when CUDA is available, else cpu")
    p.add_argument("--data", choices=("filtered", "raw"), default="filtered")
    p.add_argument("--moe", action="store_true")
    p.add_argument("--until", choices=STAGES, default=None)
    p.add_argument("--run-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    recipe = Recipe(args.scale or detect_scale(), args.data, args.moe, args.run_dir, args.seed)
    results = recipe.run(until=args.until)
    print(format_table(results))
    print(f"results: {recipe.run_dir / 'results.json'}")
    return 0


def format_table(results: dict) -> str:
    lines = [f"{'stage':<9} {'held-out loss':>13} {'task acc':>9} {'pair acc':>9} {'wall s':>7}"]
    for stage, row in results["stages"].items():
        loss = row.get("heldout_loss")
        acc = (row.get("task_accuracy") or {}).get("all")
        pair = row.get("pair_accuracy")
        wall = row.get("wall_s")
        lines.append(f"{stage:<9} {'' if loss is None else f'{loss:.3f}':>13} "
                     f"{'' if acc is None else f'{acc:.1%}':>9} "
                     f"{'' if pair is None else f'{pair:.1%}':>9} "
                     f"{'' if wall is None else f'{wall:.0f}':>7}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
