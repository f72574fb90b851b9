"""qwenlab.reward: the Bradley-Terry loss, the last-token read-out, and parity with
transformers' Qwen2ForSequenceClassification and TRL's RewardTrainer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from qwenlab import QwenConfig, QwenForCausalLM, reward, tasks
from qwenlab.tokenizer import load_course_tokenizer

# A small model: every test here builds and runs it in well under a second.
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1)


@pytest.fixture(scope="module")
def tok():
    return load_course_tokenizer()


def small_lm(seed: int = 0) -> QwenForCausalLM:
    torch.manual_seed(seed)
    return QwenForCausalLM(QwenConfig.tiny(**SMALL))


def random_rm(seed: int = 0) -> reward.RewardModel:
    """A reward model whose rewards are O(1) and depend on every token (a fresh head's
    std-0.02 weights give rewards of ~0.01, too small to tell a wrong read-out apart)."""
    rm = reward.RewardModel.from_causal_lm(small_lm(seed), seed=seed)
    with torch.no_grad():
        rm.score.weight.mul_(50.0)
    return rm.eval()


def some_pairs(n: int = 8, seed: int = 1) -> list[dict]:
    return tasks.preference_pairs(tasks.make_examples(n, seed=seed), seed=seed)


# --------------------------------------------------------------------------- the loss

def test_bradley_terry_loss_is_mean_negative_log_sigmoid_of_the_difference():
    torch.manual_seed(0)
    chosen, rejected = torch.randn(16), torch.randn(16)
    expected = torch.tensor(sum(math.log(1 + math.exp(-(c - r)))     # -log sigmoid(c - r)
                                for c, r in zip(chosen.tolist(), rejected.tolist())) / 16)
    loss = reward.bradley_terry_loss(chosen, rejected)
    assert loss.shape == ()
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-6)  # float32 vs float64


def test_bradley_terry_loss_is_log2_for_equal_rewards_and_stable_for_large_margins():
    zeros = torch.zeros(4)
    torch.testing.assert_close(reward.bradley_terry_loss(zeros, zeros),
                               torch.tensor(math.log(2.0)))
    # -log sigmoid(-200) = 200 exactly in float32; log(sigmoid(.)) would give inf
    far = reward.bradley_terry_loss(torch.tensor([-100.0]), torch.tensor([100.0]))
    assert far.item() == pytest.approx(200.0)
    assert reward.bradley_terry_loss(torch.tensor([100.0]), torch.tensor([-100.0])).item() == 0.0


def test_bradley_terry_loss_with_a_margin_matches_trl_formula():
    torch.manual_seed(1)
    c, r, m = torch.randn(8), torch.randn(8), torch.rand(8)
    torch.testing.assert_close(reward.bradley_terry_loss(c, r, m),
                               -F.logsigmoid(c - r - m).mean())


def test_reward_loss_adds_the_centering_term_only_when_asked():
    c, r = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    bt = reward.bradley_terry_loss(c, r)
    torch.testing.assert_close(reward.reward_loss(c, r), bt)
    torch.testing.assert_close(reward.reward_loss(c, r, 0.01),
                               bt + 0.01 * ((c + r) ** 2).mean())


# --------------------------------------------------------------------------- the read-out

def test_last_token_index_under_right_left_and_no_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0],     # right padding
                         [0, 0, 1, 1, 1],     # left padding
                         [1, 1, 1, 1, 1],     # none
                         [0, 1, 1, 0, 0]])    # both sides
    assert reward.last_token_index(mask).tolist() == [2, 4, 4, 2]
    assert reward.last_token_index(mask.bool()).tolist() == [2, 4, 4, 2]


def test_rewards_are_the_same_under_left_and_right_padding(tok):
    rm = random_rm()
    rows = [ids for p in some_pairs(6) for ids in reward.tokenize_pair(tok, p)]
    assert len({len(r) for r in rows}) > 1, "the test needs rows of different lengths"
    right = rm(*reward.pad_rows(rows, tok.pad_token_id, "right"))
    left = rm(*reward.pad_rows(rows, tok.pad_token_id, "left"))
    alone = torch.cat([rm(torch.tensor([r])) for r in rows])
    # the same arithmetic up to float32 summation order over masked keys
    torch.testing.assert_close(left, right, atol=1e-6, rtol=0)
    torch.testing.assert_close(right, alone, atol=1e-6, rtol=0)
    assert right.std() > 0.1, "rewards must differ between rows for the test to mean anything"


def test_reading_column_minus_one_under_right_padding_gives_other_rewards(tok):
    rm = random_rm()
    rows = [ids for p in some_pairs(4) for ids in reward.tokenize_pair(tok, p)]
    ids, mask = reward.pad_rows(rows, tok.pad_token_id, "right")
    h, _ = rm.model(ids, mask)
    wrong = rm.score(h[:, -1]).squeeze(-1)
    padded = mask[:, -1] == 0
    assert padded.any()
    assert not torch.allclose(wrong[padded], rm(ids, mask)[padded], atol=1e-3)


def test_reward_model_equals_transformers_sequence_classification(tok):
    from transformers import Qwen2ForSequenceClassification

    rm = random_rm()
    hf = reward.to_transformers(rm, tok.pad_token_id)
    assert isinstance(hf, Qwen2ForSequenceClassification)
    assert hf.config.num_labels == 1
    # transformers finds the last token via pad_token_id and counts positions from column 0,
    # so the reference is run with right padding
    rows = [ids for p in some_pairs(6) for ids in reward.tokenize_pair(tok, p)]
    ids, mask = reward.pad_rows(rows, tok.pad_token_id, "right")
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        ours = rm(ids, mask)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_from_causal_lm_copies_the_backbone_and_leaves_the_lm_and_global_rng_alone():
    lm = small_lm()
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    state = torch.get_rng_state()
    rm = reward.RewardModel.from_causal_lm(lm, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for name, t in rm.model.state_dict().items():
        assert torch.equal(t, lm.model.state_dict()[name])
    with torch.no_grad():
        rm.model.norm.weight.add_(1.0)
    for name, t in lm.state_dict().items():
        assert torch.equal(t, before[name])
    again = reward.RewardModel.from_causal_lm(lm, seed=3)
    assert torch.equal(again.score.weight, rm.score.weight)
    assert not torch.equal(reward.RewardModel.from_causal_lm(lm, seed=4).score.weight,
                           rm.score.weight)


# --------------------------------------------------------------------------- TRL parity

def trl_trainer(hf_model, tok, pairs, tmp_path, **config):
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    args = RewardConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to=[],
                        activation_checkpointing=False, gradient_checkpointing=False,
                        per_device_train_batch_size=len(pairs), **config)
    return RewardTrainer(model=hf_model, args=args, train_dataset=Dataset.from_list(pairs),
                         processing_class=tok)


@pytest.mark.parametrize("center", [None, 0.01])
def test_loss_equals_trl_reward_trainer_on_one_collated_batch(tok, tmp_path, center):
    rm = random_rm()
    pairs = some_pairs(8)
    trainer = trl_trainer(reward.to_transformers(rm, tok.pad_token_id), tok, pairs, tmp_path,
                          center_rewards_coefficient=center)
    rows = [trainer.train_dataset[i] for i in range(len(pairs))]
    batch = trainer.data_collator([{k: r[k] for k in ("chosen_ids", "rejected_ids")}
                                   for r in rows])
    ours = reward.collate_pairs(*zip(*[reward.tokenize_pair(tok, p) for p in pairs]),
                                tok.pad_token_id)
    # the same token ids, padding and row order (chosen rows, then rejected rows)
    assert torch.equal(batch["input_ids"], ours["input_ids"])
    assert torch.equal(batch["attention_mask"], ours["attention_mask"])

    trl_loss = trainer.compute_loss(trainer.model, dict(batch))
    chosen, rejected = rm(ours["input_ids"], ours["attention_mask"]).chunk(2)
    our_loss = reward.reward_loss(chosen, rejected, center)
    assert abs(trl_loss.item() - our_loss.item()) < 1e-5
    assert abs(our_loss.item() - math.log(2)) > 0.01, "rewards too flat to test anything"


def test_trl_dataloader_batch_gives_the_same_loss(tok, tmp_path):
    rm = random_rm(seed=2)
    trainer = trl_trainer(reward.to_transformers(rm, tok.pad_token_id), tok, some_pairs(6),
                          tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(trainer.model, dict(batch))
    chosen, rejected = rm(batch["input_ids"], batch["attention_mask"]).chunk(2)
    assert abs(trl_loss.item() - reward.bradley_terry_loss(chosen, rejected).item()) < 1e-5


# --------------------------------------------------------------------------- measuring

def test_pair_accuracy_counts_strictly_higher_chosen_rewards(tok):
    rm = random_rm()
    pairs = some_pairs(16)
    chosen, rejected = reward.pair_scores(rm, tok, pairs)
    assert chosen.shape == rejected.shape == (16,)
    assert reward.pair_accuracy(rm, tok, pairs) == pytest.approx(
        (chosen > rejected).float().mean().item())
    swapped = [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in pairs]
    assert reward.pair_accuracy(rm, tok, pairs) + reward.pair_accuracy(rm, tok, swapped) == \
        pytest.approx(1.0)
    ties = [{**p, "rejected": p["chosen"]} for p in pairs]
    assert reward.pair_accuracy(rm, tok, ties) == 0.0


def test_score_reads_prompt_and_reply_as_one_conversation(tok):
    rm = random_rm()
    pairs = some_pairs(4)
    examples = tasks.make_examples(4, seed=1)
    replies = [p["chosen"][0]["content"] for p in pairs]
    chosen, _ = reward.pair_scores(rm, tok, pairs)
    torch.testing.assert_close(reward.score(rm, tok, examples, replies), chosen)


def test_best_of_n_returns_the_highest_scored_sample(tok):
    policy, rm = small_lm(5), random_rm()
    examples = tasks.make_examples(4, seed=2)
    candidates = reward.sample_candidates(policy, tok, examples, n=4, temperature=1.0, seed=0,
                                          max_new_tokens=6)
    assert [len(c) for c in candidates] == [4, 4, 4, 4]
    rewards = reward.score_candidates(rm, tok, examples, candidates)
    assert rewards.shape == (4, 4)
    best = reward.best_of_n(policy, rm, tok, examples, n=4, temperature=1.0, seed=0,
                            max_new_tokens=6)
    for ex, cands, r, b in zip(examples, candidates, rewards, best):
        assert b == cands[int(r.argmax())]
        assert reward.score(rm, tok, [ex], [b]).item() == pytest.approx(r.max().item(),
                                                                         abs=1e-6)


def test_pick_best_takes_the_argmax_of_each_row():
    rewards = torch.tensor([[0.1, 0.9, 0.3], [2.0, -1.0, 2.0]])
    assert reward.pick_best([["a", "b", "c"], ["d", "e", "f"]], rewards) == ["b", "d"]


# --------------------------------------------------------------------------- training, files

def test_train_is_deterministic_and_learns(tok):
    pairs = some_pairs(64, seed=3)
    cfg = reward.RewardConfig(max_steps=12, batch_size=16, lr=3e-3, warmup_steps=2,
                              eval_every=6)
    runs = []
    for _ in range(2):
        rm = reward.RewardModel.from_causal_lm(small_lm())
        history = reward.train(rm, tok, pairs, cfg, eval_pairs=pairs[:16], progress=False)
        runs.append((rm, history))
    (a, ha), (b, hb) = runs
    for name, t in a.state_dict().items():
        assert torch.equal(t, b.state_dict()[name]), name
    assert ha.loss == hb.loss
    assert len(ha.loss) == 12 and ha.eval_step == [6, 12]
    assert sum(ha.loss[-4:]) / 4 < ha.loss[0]
    assert not a.training


def test_train_batches_cover_each_pair_once_per_epoch():
    gen = torch.Generator().manual_seed(0)
    lengths = [i % 7 for i in range(40)]
    batches = reward._batch_indices(lengths, 8, gen, group_by_length=True)
    epoch = [next(batches) for _ in range(5)]
    assert sorted(i for b in epoch for i in b) == list(range(40))
    assert all(len(b) == 8 for b in epoch)


def test_save_load_round_trip(tok, tmp_path):
    rm = random_rm()
    path = reward.save(rm, tmp_path / "rm.safetensors")
    loaded = reward.load(path)
    assert loaded.config == rm.config
    assert set(loaded.state_dict()) == set(rm.state_dict())
    for name, t in rm.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name
    pairs = some_pairs(4)
    for x, y in zip(reward.pair_scores(rm, tok, pairs), reward.pair_scores(loaded, tok, pairs)):
        assert torch.equal(x, y)


def test_load_refuses_a_file_that_is_not_a_reward_model(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a qwenlab reward model"):
        reward.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        reward.load(tmp_path / "missing.safetensors")
