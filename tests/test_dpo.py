"""DPO: the loss, the sequence log-probs, parity with TRL's DPOTrainer, the frozen reference,
rejection sampling, and a deterministic training loop."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from qwenlab import QwenConfig, QwenForCausalLM, dpo, tasks
from qwenlab.tokenizer import load_course_tokenizer

# A small model keeps the tests fast; the vocabulary is the course tokenizer's.
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
             num_key_value_heads=1)


@pytest.fixture(scope="module")
def tok():
    return load_course_tokenizer()


@pytest.fixture(scope="module")
def pairs():
    train, _ = tasks.splits(n_train=64, n_eval=8)
    return tasks.preference_pairs(train)


def small_model(seed: int) -> QwenForCausalLM:
    torch.manual_seed(seed)
    return QwenForCausalLM(QwenConfig.tiny(**SMALL))


def perturbed_copy(model: QwenForCausalLM, seed: int, scale: float = 0.05) -> QwenForCausalLM:
    """The same architecture with weights moved a little: a policy that differs from its
    reference by enough that the loss is clearly not log 2."""
    other = QwenForCausalLM(model.config)
    other.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other


# --------------------------------------------------------------------------- the loss

def test_dpo_loss_is_log2_when_policy_equals_reference():
    logps = torch.tensor([-3.0, -7.5, -12.25])
    loss, chosen, rejected = dpo.dpo_loss(logps, logps - 1.0, logps, logps - 1.0, beta=0.1)
    assert abs(loss.item() - math.log(2)) < 1e-7
    assert torch.equal(chosen, torch.zeros(3)) and torch.equal(rejected, torch.zeros(3))


def test_dpo_loss_matches_a_float64_hand_computation():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-20 * torch.rand(8, generator=g) for _ in range(4))
    beta = 0.3
    loss, chosen, rejected = dpo.dpo_loss(pc, pr, rc, rr, beta)
    expected = 0.0
    for i in range(8):
        z = beta * ((pc[i].item() - rc[i].item()) - (pr[i].item() - rr[i].item()))
        expected += math.log1p(math.exp(-z)) / 8          # -log sigmoid(z)
    assert abs(loss.item() - expected) < 1e-6              # float32 inputs: ~1e-7 relative
    assert torch.allclose(chosen, beta * (pc - rc)) and torch.allclose(rejected, beta * (pr - rr))


def test_dpo_loss_rewards_are_detached():
    pc = torch.tensor([-2.0, -3.0], requires_grad=True)
    loss, chosen, rejected = dpo.dpo_loss(pc, pc.detach() - 1, pc.detach(), pc.detach(), 0.1)
    assert loss.requires_grad and not chosen.requires_grad and not rejected.requires_grad


class TableModel(torch.nn.Module):
    """A "model" whose logits are a fixed (B, T, V) table: log-probs known by hand."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": self.logits})()


def test_sequence_logprobs_sums_or_averages_the_completion_tokens():
    # vocabulary of 3; one row of 5 tokens: prompt [0, 1], completion [2, 0, 1]
    probs = torch.tensor([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2], [0.25, 0.5, 0.25],
                          [1 / 3, 1 / 3, 1 / 3]])
    model = TableModel(probs.log()[None])
    ids = torch.tensor([[0, 1, 2, 0, 1]])
    completion = torch.tensor([[0, 0, 1, 1, 1]])
    # token t is predicted at position t - 1: p(2 | pos 1) = 0.8, p(0 | pos 2) = 0.6,
    # p(1 | pos 3) = 0.5
    total = math.log(0.8) + math.log(0.6) + math.log(0.5)
    summed = dpo.sequence_logprobs(model, ids, None, completion)
    averaged = dpo.sequence_logprobs(model, ids, None, completion, average=True)
    assert abs(summed.item() - total) < 1e-6
    assert abs(averaged.item() - total / 3) < 1e-6


def test_sequence_logprobs_ignores_right_padding():
    model = small_model(0).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    completion = torch.tensor([[0, 0, 1, 1, 1]])
    alone = dpo.sequence_logprobs(model, ids, torch.ones_like(ids), completion)
    padded = dpo.sequence_logprobs(model, torch.tensor([[5, 6, 7, 8, 9, 4093, 4093]]),
                                   torch.tensor([[1, 1, 1, 1, 1, 0, 0]]),
                                   torch.tensor([[0, 0, 1, 1, 1, 0, 0]]))
    assert torch.allclose(alone, padded, atol=1e-5)


# --------------------------------------------------------------------------- data

def test_tokenize_pair_completion_is_the_reply_and_im_end(tok, pairs):
    row = dpo.tokenize_pair(tok, pairs[0])
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for side in ("chosen", "rejected"):
        ids, mask = row[f"{side}_ids"], row[f"{side}_mask"]
        completion = [i for i, m in zip(ids, mask) if m]
        assert ids[-1] == end and mask[-1] == 1                   # ends on <|im_end|>, counted
        assert tok.decode(completion[:-1]) == pairs[0][side][0]["content"]
        prompt = tok.apply_chat_template(pairs[0]["prompt"], tokenize=True,
                                         add_generation_prompt=True, return_dict=True)
        assert ids[:len(mask) - sum(mask)] == list(prompt["input_ids"])


def test_collate_pairs_puts_chosen_rows_first_and_pads_right(tok, pairs):
    rows = [dpo.tokenize_pair(tok, p) for p in pairs[:3]]
    batch = dpo.collate_pairs(rows, tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 6
    for i, r in enumerate(rows):
        n = len(r["rejected_ids"])
        assert batch["input_ids"][3 + i, :n].tolist() == r["rejected_ids"]
        assert batch["attention_mask"][3 + i].sum().item() == n
        assert batch["completion_mask"][i].sum().item() == sum(r["chosen_mask"])


# --------------------------------------------------------------------------- TRL parity

def _trl_trainer(policy, reference, tok, pairs, beta, tmp_path, sft_weight=0.0):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from qwenlab.hf import to_transformers

    ds = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
    losses = dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, sft_weight]) if sft_weight \
        else dict(loss_type=["sigmoid"])
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, bf16=False,
                     activation_checkpointing=False, use_cpu=True, report_to=[],
                     per_device_train_batch_size=len(pairs), max_length=None, **losses)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DPOTrainer(to_transformers(policy), ref_model=to_transformers(reference),
                             args=args, train_dataset=ds, processing_class=tok)
    return trainer


def _trl_loss(trainer, batch):
    trainer.model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = trainer.compute_loss(trainer.model, batch).item()
    metrics = trainer._metrics["train"]
    return loss, metrics["rewards/chosen"][-1], metrics["rewards/margins"][-1]


@pytest.fixture(scope="module")
def policy_and_reference():
    reference = small_model(0)
    return perturbed_copy(reference, seed=1), reference


def test_dpo_loss_equals_trl_dpo_trainer_on_the_same_batch(tok, pairs, policy_and_reference,
                                                           tmp_path):
    policy, reference = policy_and_reference
    beta = 0.5
    batch_pairs = pairs[:8]
    trainer = _trl_trainer(policy, reference, tok, batch_pairs, beta, tmp_path)
    processed = [trainer.train_dataset[i] for i in range(len(batch_pairs))]
    trl_batch = trainer.data_collator(processed)

    # TRL's tokenization = ours + the template's "\n" after <|im_end|> (also in its mask)
    newline = tok.encode("\n")
    ours = [dpo.tokenize_pair(tok, p) for p in batch_pairs]
    for t, o in zip(processed, ours):
        assert t["prompt_ids"] + t["chosen_ids"] == o["chosen_ids"] + newline
        assert t["prompt_ids"] + t["rejected_ids"] == o["rejected_ids"] + newline

    # on TRL's batch (its mask) and on ours, the two implementations agree
    for batch in (trl_batch, dpo.collate_pairs(ours, tok.pad_token_id)):
        trl_loss, trl_chosen, trl_margin = _trl_loss(trainer, batch)
        with torch.no_grad():
            pc, pr = dpo.sequence_logprobs(policy, batch["input_ids"], batch["attention_mask"],
                                           batch["completion_mask"]).chunk(2)
            rc, rr = dpo.sequence_logprobs(reference, batch["input_ids"],
                                           batch["attention_mask"],
                                           batch["completion_mask"]).chunk(2)
        loss, chosen, rejected = dpo.dpo_loss(pc, pr, rc, rr, beta)
        assert abs(loss.item() - math.log(2)) > 1e-2          # a real test, not log 2 twice
        assert abs(loss.item() - trl_loss) < 1e-5             # float32, summed over ~25 tokens
        assert abs(chosen.mean().item() - trl_chosen) < 1e-5
        assert abs((chosen - rejected).mean().item() - trl_margin) < 1e-5


def test_batch_loss_with_an_sft_term_equals_trl_sigmoid_plus_sft(tok, pairs,
                                                                 policy_and_reference, tmp_path):
    policy, reference = policy_and_reference
    cfg = dpo.DPOConfig(beta=0.2, sft_weight=0.5)
    batch_pairs = pairs[8:16]
    trainer = _trl_trainer(policy, reference, tok, batch_pairs, cfg.beta, tmp_path,
                           sft_weight=cfg.sft_weight)
    rows = [dpo.tokenize_pair(tok, p) for p in batch_pairs]
    batch = dpo.collate_pairs(rows, tok.pad_token_id)
    trl_loss, _, _ = _trl_loss(trainer, batch)
    ref_chosen, ref_rejected = dpo.rows_logprobs(reference, rows, tok.pad_token_id)
    with torch.no_grad():
        loss, _, _ = dpo.batch_loss(policy, batch, ref_chosen, ref_rejected, cfg)
    assert abs(loss.item() - trl_loss) < 1e-5


def test_completion_logprobs_equal_the_full_logits_computation(tok, pairs):
    model = small_model(2).eval()
    batch = dpo.collate_pairs([dpo.tokenize_pair(tok, p) for p in pairs[:4]], tok.pad_token_id)
    with torch.no_grad():
        fast = dpo.completion_logprobs(model, batch["input_ids"], batch["attention_mask"],
                                       batch["completion_mask"])
        full = dpo.token_logprobs(model, batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(fast, full * batch["completion_mask"][:, 1:], atol=1e-5)


# --------------------------------------------------------------------------- training

def _tiny_run(pairs, tok, steps=4, seed=0):
    policy = small_model(0)
    reference = dpo.frozen_copy(policy)
    cfg = dpo.DPOConfig(max_steps=steps, batch_size=8, warmup_steps=1, eval_every=2,
                        kl_prompts=4, eval_max_new_tokens=8, seed=seed, lr=1e-3)
    history = dpo.train(policy, reference, tok, pairs[:24], cfg, progress=False)
    return policy, reference, history


def test_reference_is_frozen_by_train(tok, pairs):
    policy = small_model(0)
    reference = small_model(0)
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    cfg = dpo.DPOConfig(max_steps=3, batch_size=8, warmup_steps=1, kl_prompts=0, lr=1e-2)
    dpo.train(policy, reference, tok, pairs[:16], cfg, progress=False)
    assert all(torch.equal(before[k], v) for k, v in reference.state_dict().items())
    assert all(not p.requires_grad and p.grad is None for p in reference.parameters())
    assert not reference.training
    assert any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())


def test_train_refuses_the_policy_as_its_own_reference(tok, pairs):
    policy = small_model(0)
    with pytest.raises(ValueError, match="frozen copy"):
        dpo.train(policy, policy, tok, pairs[:8], dpo.DPOConfig(max_steps=1, warmup_steps=0),
                  progress=False)


def test_train_is_deterministic(tok, pairs):
    p1, _, h1 = _tiny_run(pairs, tok)
    p2, _, h2 = _tiny_run(pairs, tok)
    assert all(torch.equal(a, b) for a, b in zip(p1.state_dict().values(),
                                                  p2.state_dict().values()))
    assert h1.to_dict() == h2.to_dict()
    assert h1.eval_step == [2, 4] and len(h1.kl) == 2 and h1.kl[0] >= 0


def test_train_starts_at_log2_and_widens_the_margin(tok, pairs):
    policy = small_model(0)
    reference = dpo.frozen_copy(policy)
    cfg = dpo.DPOConfig(max_steps=12, batch_size=8, warmup_steps=1, kl_prompts=0, lr=3e-3,
                        beta=0.5)
    history = dpo.train(policy, reference, tok, pairs[:8], cfg, progress=False)
    assert abs(history.loss[0] - math.log(2)) < 1e-6
    assert history.margin[-1] > 0.1 and history.loss[-1] < history.loss[0]


# --------------------------------------------------------------------------- iteration

@pytest.fixture
def scripted_replies(monkeypatch):
    """Replace sampling with scripted replies, n per prompt in order."""
    script: list[str] = []

    def respond(model, tokenizer, examples, max_new_tokens=20, temperature=0.0, top_p=None,
                seed=None, batch_size=128):
        assert len(examples) == len(script)
        return list(script)

    monkeypatch.setattr(dpo.tasks, "respond", respond)
    return script


def test_on_policy_pairs_labels_with_the_checker(scripted_replies):
    examples = [tasks.Example("add", "What is 2 + 3?", "5"),
                tasks.Example("add", "What is 1 + 1?", "2"),
                tasks.Example("add", "What is 4 + 4?", "8")]
    scripted_replies[:] = ["6", "5", "5 5", "5",     # mixed: a right one over a wrong one
                           "3", "1", "3", "0",       # all wrong: the reference answer wins
                           "8", " 8", "8", "8 "]     # all right: nothing to prefer
    pairs = dpo.on_policy_pairs(None, None, examples, n=4)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == \
        [("5", "6"), ("2", "3")]
    assert all(p["kind"] == "on_policy" and p["task"] == "add" for p in pairs)
    assert all(tasks.check(ex, p["chosen"][0]["content"])
               and not tasks.check(ex, p["rejected"][0]["content"])
               for ex, p in zip(examples, pairs))


def test_on_policy_pairs_with_a_judge_prefers_the_best_scored_reply(scripted_replies):
    examples = [tasks.Example("add", "What is 2 + 3?", "5"),
                tasks.Example("add", "What is 1 + 1?", "2")]
    scripted_replies[:] = ["a", "bbb", "cc", "x", "x", "x"]

    def by_length(exs, replies):      # a stand-in reward model: longer is better
        return [float(len(r)) for r in replies]

    pairs = dpo.on_policy_pairs(None, None, examples, n=3, judge=by_length)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == \
        [("bbb", "a")]


def test_on_policy_pairs_are_reproducible_with_a_real_model(tok):
    policy = small_model(0)
    examples = tasks.make_examples(4, seed=3)
    a = dpo.sample_and_judge(policy, tok, examples, n=2, seed=5, max_new_tokens=6)
    b = dpo.sample_and_judge(policy, tok, examples, n=2, seed=5, max_new_tokens=6)
    assert a == b and all(len(replies) == 2 for replies, _ in a)


def test_a_reply_that_merges_with_the_generation_prompt_is_tokenized_after_it():
    from qwenlab import dpo, tasks
    from qwenlab.tokenizer import load_course_tokenizer

    tok = load_course_tokenizer()
    ex = tasks.Example("sort", "Sort the digits: 0 9 2", "0 2 9")
    pair = tasks.pair_record(ex, "0 2 9", "\nPHOLUS", "on_policy")
    rows = dpo.tokenize_pair(tok, pair)
    prompt = tok.apply_chat_template(ex.prompt_messages(), tokenize=True,
                                     add_generation_prompt=True, return_dict=True)["input_ids"]
    n = len(prompt)
    assert rows["rejected_ids"][:n] == list(prompt)
    assert tok.decode(rows["rejected_ids"][n:]) == "\nPHOLUS<|im_end|>"
    assert rows["rejected_mask"] == [0] * n + [1] * (len(rows["rejected_ids"]) - n)
