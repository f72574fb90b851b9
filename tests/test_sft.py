"""SFT: the assistant mask, padding and packing, the masked loss, TRL parity and the loop."""

from __future__ import annotations

import dataclasses
import tempfile
import warnings

import pytest
import torch

import qwenlab.hf
from qwenlab import QwenConfig, QwenForCausalLM, sft, tasks
from qwenlab.loss import causal_lm_loss, chunked_lm_loss
from qwenlab.tokenizer import load_course_tokenizer

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1)


@pytest.fixture(scope="module")
def tok():
    return load_course_tokenizer()


def small_model(seed: int = 0, **overrides) -> QwenForCausalLM:
    torch.manual_seed(seed)
    return QwenForCausalLM(QwenConfig.tiny(**{**SMALL, **overrides}))


def conversations() -> list[list[dict]]:
    """Single-turn task conversations, one with a system prompt, one with three turns."""
    convs = [ex.messages() for ex in tasks.make_examples(8, seed=3)]
    convs.append([{"role": "system", "content": "Answer briefly."}] + convs[0])
    convs.append(convs[1] + [{"role": "user", "content": "And once more?"},
                             {"role": "assistant", "content": "Once more: done."},
                             {"role": "user", "content": "Thanks."},
                             {"role": "assistant", "content": "You are welcome."}])
    return convs


def spans(tok, ids: list[int], role: str) -> list[tuple[int, int]]:
    """(start, end) token ranges of each ``role`` message's content and its <|im_end|>."""
    start_id = tok.convert_tokens_to_ids("<|im_start|>")
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    header = tok.encode(f"{role}\n", add_special_tokens=False)
    out = []
    for i, t in enumerate(ids):
        if t == start_id and ids[i + 1:i + 1 + len(header)] == header:
            j = ids.index(end_id, i)
            out.append((i + 1 + len(header), j + 1))
    return out


# --------------------------------------------------------------------------- the mask

def test_assistant_content_and_its_im_end_are_trained_and_the_newline_after_is_not(tok):
    row = sft.tokenize_conversation(tok, tasks.Example("add", "What is 2 + 3?", "5").messages())
    ids, labels, mask = row["input_ids"], row["labels"], row["assistant_mask"]
    trained = [tok.convert_ids_to_tokens(t) for t, m in zip(ids, mask) if m]
    assert trained == ["5", "<|im_end|>"]
    assert tok.convert_ids_to_tokens(ids[-1]) == "Ċ" and mask[-1] == 0   # the "\n" after it
    assert labels == [t if m else -100 for t, m in zip(ids, mask)]


def test_system_and_user_tokens_are_never_trained(tok):
    for messages in conversations():
        row = sft.tokenize_conversation(tok, messages)
        for role in ("system", "user"):
            for a, b in spans(tok, row["input_ids"], role):
                assert set(row["labels"][a:b]) == {-100}, (role, messages)
        # the role headers "<|im_start|>assistant\n" are not trained either
        assistant = spans(tok, row["input_ids"], "assistant")
        trained = {i for i, m in enumerate(row["assistant_mask"]) if m}
        assert trained == {i for a, b in assistant for i in range(a, b)}


def test_every_assistant_turn_of_a_multi_turn_conversation_is_trained(tok):
    messages = conversations()[-1]
    row = sft.tokenize_conversation(tok, messages)
    ids, mask = row["input_ids"], row["assistant_mask"]
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    runs, current = [], []
    for t, m in zip(ids, mask):
        if m:
            current.append(t)
        elif current:
            runs.append(current)
            current = []
    assert len(runs) == len(replies) == 3
    for run, reply in zip(runs, replies):
        assert run[-1] == end_id
        assert tok.decode(run[:-1]) == reply


def test_mask_from_token_ids_equals_the_templates_generation_mask(tok):
    header = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    for messages in conversations():
        row = sft.tokenize_conversation(tok, messages)
        assert sft.assistant_mask(row["input_ids"], header, end_id) == row["assistant_mask"]


def test_the_qwen25_tokenizer_masks_the_same_spans():
    from qwenlab.tokenizer import load_qwen25_tokenizer

    qtok = load_qwen25_tokenizer("local")
    header = qtok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    for messages in conversations():
        row = sft.tokenize_conversation(qtok, messages)   # adds Qwen's default system prompt
        assert sft.assistant_mask(row["input_ids"], header, 151645) == row["assistant_mask"]
        trained = [t for t, m in zip(row["input_ids"], row["assistant_mask"]) if m]
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        assert qtok.decode(trained) == "<|im_end|>".join(replies) + "<|im_end|>"


def test_a_tokenizer_without_a_chat_template_is_refused_with_advice(tok):
    bare = load_course_tokenizer()
    bare.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        sft.tokenize_conversation(bare, conversations()[0])


def test_a_template_without_generation_markers_is_refused_with_advice(tok):
    plain = load_course_tokenizer()
    plain.chat_template = plain.chat_template.replace("{%- generation %}", "").replace(
        "{%- endgeneration %}", "")
    assert "endgeneration" not in plain.chat_template
    with pytest.raises(ValueError, match="generation"):
        sft.tokenize_conversation(plain, conversations()[0])


# --------------------------------------------------------------------------- batches

def test_collate_pads_on_the_right_and_ignores_the_pads(tok):
    rows = sft.tokenize_records(tok, tasks.sft_records(tasks.make_examples(5, seed=0)))
    batch = sft.collate(rows, tok.pad_token_id)
    width = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == batch["labels"].shape == (5, width)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == r["input_ids"]
        assert batch["labels"][i, :n].tolist() == r["labels"]
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (width - n)
        assert (batch["input_ids"][i, n:] == tok.pad_token_id).all()
        assert (batch["labels"][i, n:] == -100).all()


def test_pack_keeps_every_conversation_whole_and_restarts_positions(tok):
    rows = sft.tokenize_records(tok, tasks.sft_records(tasks.make_examples(40, seed=0)))
    packed = sft.pack(rows, seq_len=128)
    assert all(len(p["input_ids"]) <= 128 for p in packed)
    pieces = []
    for p in packed:
        for doc in sorted(set(p["document_ids"])):
            idx = [i for i, d in enumerate(p["document_ids"]) if d == doc]
            assert idx == list(range(idx[0], idx[-1] + 1))          # contiguous
            assert [p["position_ids"][i] for i in idx] == list(range(len(idx)))
            pieces.append(tuple(p["input_ids"][i] for i in idx))
    assert sorted(pieces) == sorted(tuple(r["input_ids"]) for r in rows)
    efficiency = sft.token_efficiency(sft.collate_packed(packed, tok.pad_token_id))
    assert efficiency > sft.token_efficiency(sft.collate(rows, tok.pad_token_id))
    with pytest.raises(ValueError, match="longer than seq_len"):
        sft.pack(rows, seq_len=10)


def test_packed_batch_gives_the_padded_batchs_loss_and_gradients(tok):
    # Block-diagonal attention and restarting positions make packing a change of layout only.
    # 1e-5: the same sums in a different order (float32).
    rows = sft.tokenize_records(tok, tasks.sft_records(tasks.make_examples(12, seed=2)))
    model = small_model(initializer_range=0.2)
    padded = sft.batch_loss(model, sft.collate(rows, tok.pad_token_id))
    grads_padded = torch.autograd.grad(padded, list(model.parameters()))
    packed = sft.batch_loss(model, sft.collate_packed(sft.pack(rows, 96), tok.pad_token_id))
    grads_packed = torch.autograd.grad(packed, list(model.parameters()))
    assert abs(padded.item() - packed.item()) < 1e-5
    for a, b in zip(grads_padded, grads_packed):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_naive_packing_lets_conversations_see_each_other(tok):
    # One causal mask over the whole packed row: the loss is no longer the padded one.
    rows = sft.tokenize_records(tok, tasks.sft_records(tasks.make_examples(12, seed=2)))
    model = small_model(initializer_range=0.2)
    padded = sft.batch_loss(model, sft.collate(rows, tok.pad_token_id))
    batch = sft.collate_packed(sft.pack(rows, 96), tok.pad_token_id)
    naive = model(batch["input_ids"], labels=batch["labels"]).loss
    assert abs(naive.item() - padded.item()) > 1e-3


# --------------------------------------------------------------------------- the loss

def test_loss_equals_trl_sft_trainer_with_assistant_only_loss(tok):
    """TRL tokenizes the same ids and labels, and SFTTrainer.compute_loss on its collated
    batch equals qwenlab's loss to 1e-5 (float32, same weights through qwenlab.hf)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    records = [{"messages": m} for m in conversations()]
    model = small_model(initializer_range=0.2)
    reference = qwenlab.hf.to_transformers(model)
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = SFTConfig(output_dir=out, bf16=False, use_cpu=True, report_to=[],
                         activation_checkpointing=False, assistant_only_loss=True,
                         per_device_train_batch_size=len(records), disable_tqdm=True)
        trainer = SFTTrainer(model=reference, args=args, train_dataset=Dataset.from_list(records),
                             processing_class=tok)
        processed = [trainer.train_dataset[i] for i in range(len(records))]
        ours = sft.tokenize_records(tok, records)
        assert [p["input_ids"] for p in processed] == [o["input_ids"] for o in ours]
        assert [p["labels"] for p in processed] == [o["labels"] for o in ours]
        theirs = trainer.data_collator([{"input_ids": p["input_ids"], "labels": p["labels"]}
                                        for p in processed])
        reference.train()
        trl_loss = trainer.compute_loss(reference, dict(theirs))
    batch = sft.collate(ours, tok.pad_token_id)
    assert torch.equal(theirs["input_ids"], batch["input_ids"])
    loss = sft.batch_loss(model, batch)
    assert abs(loss.item() - trl_loss.item()) < 1e-5
    assert abs(loss.item() - 8.318) > 0.1   # far from the uniform guess ln(4096): peaked logits


def test_masked_positions_get_exactly_zero_gradient(tok):
    """A position whose next token is not the assistant's passes no gradient: its logits'
    gradient is exactly 0 (not small), so no prompt token is ever a training target."""
    rows = sft.tokenize_records(tok, [{"messages": m} for m in conversations()])
    batch = sft.collate(rows, tok.pad_token_id)
    model = small_model(initializer_range=0.2)
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits.retain_grad()
    causal_lm_loss(logits, batch["labels"]).backward()
    target_trained = torch.zeros_like(batch["labels"], dtype=torch.bool)
    target_trained[:, :-1] = batch["labels"][:, 1:] != -100
    assert (logits.grad[~target_trained] == 0).all()
    assert (logits.grad[target_trained].abs().sum(-1) > 0).all()
    # the chunked loss the loop uses: the final hidden states at those positions, exactly 0
    h, _ = model.model(batch["input_ids"], batch["attention_mask"])
    h.retain_grad()
    chunked_lm_loss(h, model.lm_head.weight, batch["labels"]).backward()
    assert (h.grad[~target_trained] == 0).all()


def test_changing_a_masked_label_changes_neither_loss_nor_gradient(tok):
    rows = sft.tokenize_records(tok, [{"messages": m} for m in conversations()[:4]])
    batch = sft.collate(rows, tok.pad_token_id)
    model = small_model(initializer_range=0.2)
    loss = sft.batch_loss(model, batch)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    # train "on" the prompt by mistake in a copy: the loss changes ...
    wrong = dict(batch, labels=torch.where(batch["attention_mask"] == 1, batch["input_ids"],
                                           -100))
    assert abs(sft.batch_loss(model, wrong).item() - loss.item()) > 1e-3
    # ... while relabelling an already-ignored position (-100 stays -100) changes nothing
    same = dict(batch, labels=batch["labels"].clone())
    loss2 = sft.batch_loss(model, same)
    grads2 = torch.autograd.grad(loss2, list(model.parameters()))
    assert loss2.item() == loss.item()
    assert all(torch.equal(a, b) for a, b in zip(grads, grads2))


# --------------------------------------------------------------------------- the loop

def small_run(tok, **overrides):
    train, evals = tasks.splits(n_train=64, n_eval=16)
    cfg = sft.SFTConfig(**{**dict(max_steps=6, batch_size=8, warmup_steps=2, eval_every=3),
                           **overrides})
    model = small_model()
    history = sft.train(model, tok, tasks.sft_records(train), cfg, eval_examples=evals,
                        progress=False)
    return model, history


def test_train_is_deterministic(tok):
    a, ha = small_run(tok)
    b, hb = small_run(tok)
    assert ha.to_dict() == hb.to_dict()
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_train_records_its_history_and_evaluates_on_schedule(tok):
    model, history = small_run(tok)
    assert history.step == [1, 2, 3, 4, 5, 6]
    assert len(history.train_loss) == len(history.lr) == len(history.tokens) == 6
    assert history.eval_step == [3, 6]
    assert set(history.final_accuracy) == set(tasks.TASKS) | {"all"}
    assert history.tokens == sorted(history.tokens) and history.tokens[0] > 0
    assert sft.SFTHistory.from_dict(history.to_dict()) == history


def test_packed_training_follows_the_padded_run(tok):
    # same batches, same math: the losses agree to float rounding over a few steps
    _, padded = small_run(tok, eval_every=0)
    _, packed = small_run(tok, eval_every=0, packing=True, seq_len=128)
    for a, b in zip(padded.train_loss, packed.train_loss):
        assert abs(a - b) < 1e-4
    assert packed.slots[-1] < padded.slots[-1]


def test_training_lowers_the_loss(tok):
    _, history = small_run(tok, max_steps=30, eval_every=0, lr=1e-2, min_lr=1e-3)
    assert sum(history.train_loss[-5:]) / 5 < history.train_loss[0] - 1.0


def test_config_rejects_impossible_settings():
    with pytest.raises(ValueError, match="warmup_steps"):
        sft.SFTConfig(max_steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="min_lr"):
        sft.SFTConfig(lr=1e-3, min_lr=1e-2)
    assert dataclasses.asdict(sft.SFTConfig())["packing"] is False
