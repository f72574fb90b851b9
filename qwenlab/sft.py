"""Supervised fine-tuning (SFT): teach a base model to answer in the chat format.

A base model continues text. An assistant answers a user's turn and then *stops*. SFT gets
from one to the other with the pretraining loss, applied to conversations rendered in ChatML:

    <|im_start|>user\\nWhat is 2 + 3?<|im_end|>\\n<|im_start|>assistant\\n5<|im_end|>\\n
                                                                   ^^^^^^^^^^^  trained
What this module chooses, and why:
- **The loss mask is built at tokenization time**, next to the rendering: one place knows
  which tokens are the assistant's (``tokenize_conversation``). The chat template marks each
  assistant reply with ``{% generation %}``, and transformers' ``return_assistant_tokens_mask``
  turns the marks into a 0/1 mask over the tokens. Labels are the token ids where the mask is
  1 and -100 elsewhere, as in TRL's ``SFTTrainer(assistant_only_loss=True)``.
- **Only assistant tokens are trained, ``<|im_end|>`` included** (the model must learn to
  stop), the ``\\n`` after it not (generation stops at ``<|im_end|>``; that ``\\n`` is part of
  the template, never generated). System and user tokens are context, never targets: a model
  trained on them would learn to write prompts, and would spend capacity on it.
- **The loss is the mean over the batch's assistant tokens** (``model(ids, labels=labels)``,
  i.e. transformers' and TRL's normalisation), not a mean of per-conversation means.
- **Batches**: right padding (``collate``) or **packing** (``pack``): several conversations
  in one row, no padding. qwenlab packs *correctly*: position ids restart at 0 for each
  conversation and attention is block-diagonal (a token sees only earlier tokens of its own
  conversation), so a packed batch gives the same per-token losses as the padded one; only the
  layout, and the wasted compute on pads, changes. (Naive packing, with one causal mask over
  the whole row, lets a conversation attend to the previous one: cheaper, slightly wrong.)
- **Training** (``train``): AdamW with decay on matrices only, linear warmup and a cosine to
  ``min_lr``, global-norm clipping (all from ``qwenlab.train``); epochs over the data in a
  seeded order, optionally grouped by length so that batches carry little padding. Same seed,
  same model in -> bit-identical model out. Every ``eval_every`` steps the model answers the
  held-out task prompts greedily and ``qwenlab.tasks`` checks the answers.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .loss import IGNORE_INDEX, chunked_lm_loss
from .train import LRSchedule, make_optimizer, optimizer_step

__all__ = ["IGNORE_INDEX", "SFTConfig", "SFTHistory", "assistant_mask", "batch_loss", "collate",
           "collate_packed", "length_grouped_batches", "pack", "packed_attention_mask",
           "require_generation_markers", "token_efficiency", "tokenize_conversation",
           "tokenize_records", "train"]


# --------------------------------------------------------------------------- tokenization

def require_generation_markers(tokenizer) -> None:
    """Raise a ValueError that says what to do when ``tokenizer`` cannot give an assistant mask:
    no chat template, or a template without ``{% generation %}`` markers."""
    template = getattr(tokenizer, "chat_template", None)
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    if not template:
        raise ValueError(
            f"the tokenizer {name!r} has no chat template, so it cannot render a conversation; "
            "use qwenlab.tokenizer.load_course_tokenizer() or load_qwen25_tokenizer(), or set "
            "tok.chat_template (e.g. to qwenlab.tokenizer.COURSE_CHAT_TEMPLATE)")
    if isinstance(template, dict):
        template = template.get("default", "")
    if not re.search(r"{%-?\s*generation\s*-?%}", template):
        raise ValueError(
            f"the chat template of {name!r} has no {{% generation %}} ... {{% endgeneration %}} "
            "markers around the assistant's reply, so the assistant's tokens cannot be found; "
            "wrap each reply and its <|im_end|> in them (as qwenlab.tokenizer."
            "COURSE_CHAT_TEMPLATE does)")


def tokenize_conversation(tokenizer, messages: Sequence[dict]) -> dict[str, list[int]]:
    """One conversation -> ``{"input_ids", "labels", "assistant_mask"}`` (lists, same length).

    The chat template renders the conversation; its generation markers give
    ``assistant_mask`` (1 on each assistant reply and its ``<|im_end|>``, 0 on everything else,
    including the ``\\n`` after ``<|im_end|>``); ``labels`` are the ids where the mask is 1 and
    -100 elsewhere. The labels are *not* shifted: the model's loss shifts them.
    """
    require_generation_markers(tokenizer)
    enc = tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
    if any(m["role"] == "assistant" and m.get("content") for m in messages) and not any(mask):
        raise ValueError("the conversation has an assistant reply but its mask is all 0: the "
                         "template's generation markers do not enclose the reply")
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
    return {"input_ids": ids, "labels": labels, "assistant_mask": mask}


def assistant_mask(input_ids: Sequence[int], assistant_header: Sequence[int],
                   im_end_id: int) -> list[int]:
    """The assistant mask read from the token ids alone (no template markers needed).

    ``assistant_header`` is the ids of ``<|im_start|>assistant\\n``. Every token after a header,
    up to and including the next ``<|im_end|>``, is the assistant's (1); all else is 0. For
    ChatML this equals the mask the generation markers give (a test checks it).
    """
    ids, header, n = list(input_ids), list(assistant_header), len(assistant_header)
    mask = [0] * len(ids)
    i = 0
    while i < len(ids):
        if ids[i:i + n] == header:
            j = i + n
            while j < len(ids):
                mask[j] = 1
                if ids[j] == im_end_id:
                    break
                j += 1
            i = j + 1
        else:
            i += 1
    return mask


def tokenize_records(tokenizer, records: Sequence[dict]) -> list[dict[str, list[int]]]:
    """``tokenize_conversation`` over ``tasks.sft_records``-style dicts (``"messages"``)."""
    return [tokenize_conversation(tokenizer, r["messages"]) for r in records]


# --------------------------------------------------------------------------- batches

def collate(rows: Sequence[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) ``input_ids``, ``attention_mask`` (1 real, 0 pad) and ``labels``
    (-100 on pads), T the longest row."""
    if pad_token_id is None:
        raise ValueError("pad_token_id is None; pass the tokenizer's pad id (<|endoftext|>)")
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pack(rows: Sequence[dict], seq_len: int) -> list[dict[str, list[int]]]:
    """Pack tokenized conversations into rows of at most ``seq_len`` tokens (first fit, in
    order of decreasing length; a conversation is never split).

    Each packed row has ``input_ids``, ``labels``, ``position_ids`` (restarting at 0 for each
    conversation) and ``document_ids`` (1, 2, ... per conversation in the row), from which
    ``packed_attention_mask`` builds the block-diagonal causal mask.
    """
    too_long = [len(r["input_ids"]) for r in rows if len(r["input_ids"]) > seq_len]
    if too_long:
        raise ValueError(f"{len(too_long)} conversation(s) are longer than seq_len={seq_len} "
                         f"(longest {max(too_long)} tokens); raise seq_len")
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = len(rows[i]["input_ids"])
        k = next((b for b, free in enumerate(room) if free >= n), None)
        if k is None:
            bins.append([])
            room.append(seq_len)
            k = len(bins) - 1
        bins[k].append(i)
        room[k] -= n
    packed = []
    for members in bins:
        row: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": [],
                                     "document_ids": []}
        for doc, i in enumerate(members, start=1):
            n = len(rows[i]["input_ids"])
            row["input_ids"] += rows[i]["input_ids"]
            row["labels"] += rows[i]["labels"]
            row["position_ids"] += list(range(n))
            row["document_ids"] += [doc] * n
        packed.append(row)
    return packed


def collate_packed(packed: Sequence[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Packed rows -> (B, T) ``input_ids``, ``labels``, ``position_ids``, ``document_ids``
    (0 on the padding that fills a row up to the longest one)."""
    batch = collate(packed, pad_token_id)
    width = batch["input_ids"].shape[1]
    pos = torch.zeros((len(packed), width), dtype=torch.long)
    docs = torch.zeros((len(packed), width), dtype=torch.long)
    for i, r in enumerate(packed):
        n = len(r["input_ids"])
        pos[i, :n] = torch.tensor(r["position_ids"])
        docs[i, :n] = torch.tensor(r["document_ids"])
    return {"input_ids": batch["input_ids"], "labels": batch["labels"], "position_ids": pos,
            "document_ids": docs}


def packed_attention_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) document ids -> (B, 1, T, T) bool mask: query i sees key j when j <= i and both
    are in the same conversation (padding, id 0, sees only itself: no empty softmax row)."""
    T = document_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=document_ids.device).tril()
    same = document_ids[:, :, None] == document_ids[:, None, :]          # (B, T, T)
    real = (document_ids != 0)[:, None, :]                               # (B, 1, T) real keys
    eye = torch.eye(T, dtype=torch.bool, device=document_ids.device)
    return ((causal & same & real) | eye)[:, None]


def token_efficiency(batch: dict[str, torch.Tensor]) -> float:
    """Fraction of the batch's (B, T) slots that hold real tokens (not padding)."""
    real = batch["attention_mask"] if "attention_mask" in batch else batch["document_ids"] != 0
    return real.sum().item() / real.numel()


def batch_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The SFT loss of a padded (``collate``) or packed (``collate_packed``) batch: the mean
    next-token cross-entropy over the assistant tokens (labels != -100), computed in chunks.

    A packed batch goes through the model's blocks with the block-diagonal mask and its
    restarting position ids, so it gives the loss the same conversations give padded.
    """
    device = model.device
    batch = {k: v.to(device) for k, v in batch.items()}
    if "document_ids" not in batch:
        return model(batch["input_ids"], attention_mask=batch["attention_mask"],
                     labels=batch["labels"], return_logits=False).loss
    from .model import CausalLMOutput

    m, ids = model.model, batch["input_ids"]
    T = ids.shape[1]
    mask = packed_attention_mask(batch["document_ids"])
    cos, sin = m.rotary_emb(batch["position_ids"], num_positions=T)
    router_logits = [] if (model.config.is_moe and model.config.output_router_logits) else None
    h = m.embed_tokens(ids)                                               # (B, T, C)
    for layer in m.layers:
        h = layer(h, cos, sin, mask, None, router_logits)
    h = m.norm(h)
    out = CausalLMOutput(loss=chunked_lm_loss(h, model.lm_head.weight, batch["labels"]))
    if router_logits is not None:
        model._add_router_losses(out, tuple(router_logits), batch["document_ids"] != 0, T)
    return out.loss


def length_grouped_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                           group_by_length: bool = True, mega: int = 16) -> list[list[int]]:
    """One epoch of batches of indices, in a seeded random order.

    With ``group_by_length``: shuffle, cut into chunks of ``mega`` batches, sort each chunk by
    length and split it into batches, then shuffle the batches, so each batch holds conversations
    of similar length (little padding) while the epoch stays random. The last, incomplete batch
    is dropped, so every step has ``batch_size`` conversations.
    """
    perm = torch.randperm(len(lengths), generator=generator).tolist()
    if group_by_length:
        chunk = batch_size * mega
        perm = [i for s in range(0, len(perm), chunk)
                for i in sorted(perm[s:s + chunk], key=lambda i: lengths[i])]
    batches = [perm[s:s + batch_size] for s in range(0, len(perm) - batch_size + 1, batch_size)]
    if group_by_length:
        order = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in order]
    return batches


# --------------------------------------------------------------------------- training

@dataclass
class SFTConfig(LRSchedule):
    """The knobs of an SFT run. A step trains on ``batch_size`` conversations."""
    max_steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 20
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0          # max global gradient norm; 0 or None turns clipping off
    seed: int = 0                   # seeds the order of the conversations
    eval_every: int = 200           # steps between task evaluations; 0: only at the end
    eval_max_new_tokens: int = 32   # a JSON answer is ~20 tokens of the course tokenizer
    # Batches of similar lengths waste less on padding, but here length *is* the task family,
    # so such batches hold one family each, and the tiny model then barely learns (9% task
    # accuracy after 600 steps instead of 39%). Packing saves the padding without that cost.
    group_by_length: bool = False
    packing: bool = False           # pack each step's conversations into rows of seq_len
    seq_len: int = 256              # packed row length (packing only)



@dataclass
class SFTHistory:
    """What a run measured: one row per step, one per evaluation."""
    step: list[int] = field(default_factory=list)           # steps completed (1, 2, ...)
    lr: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)   # mean loss on that step's batch
    tokens: list[int] = field(default_factory=list)         # assistant tokens trained so far
    slots: list[int] = field(default_factory=list)          # (B x T) slots computed so far
    eval_step: list[int] = field(default_factory=list)
    eval_accuracy: list[dict] = field(default_factory=list)  # tasks.evaluate per eval_step

    @property
    def final_accuracy(self) -> dict | None:
        return self.eval_accuracy[-1] if self.eval_accuracy else None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SFTHistory:
        return cls(**d)


def _make_batch(rows: Sequence[dict], cfg: SFTConfig, pad_token_id: int) -> dict:
    if cfg.packing:
        return collate_packed(pack(rows, cfg.seq_len), pad_token_id)
    return collate(rows, pad_token_id)


def train(model, tokenizer, records: Sequence[dict], cfg: SFTConfig | None = None,
          eval_examples: Sequence | None = None, progress: bool = True) -> SFTHistory:
    """Fine-tune ``model`` in place on ``records`` (``tasks.sft_records``-style conversations).

    Deterministic: the conversation order comes from a generator seeded with ``cfg.seed``, and
    nothing else is random, so the same model and data give bit-identical weights (on the same
    device and thread count). With ``eval_examples`` (``tasks.Example``s), greedy task accuracy
    is measured every ``cfg.eval_every`` steps and at the end.
    """
    from tqdm.auto import tqdm

    from . import tasks

    cfg = cfg or SFTConfig()
    pad = tokenizer.pad_token_id
    rows = tokenize_records(tokenizer, records)
    if len(rows) < cfg.batch_size:
        raise ValueError(f"{len(rows)} conversations, fewer than one batch of {cfg.batch_size}")
    lengths = [len(r["input_ids"]) for r in rows]
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = make_optimizer(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    history = SFTHistory()

    def run_eval(step: int) -> None:
        history.eval_step.append(step)
        history.eval_accuracy.append(tasks.evaluate(model, tokenizer, list(eval_examples),
                                                    max_new_tokens=cfg.eval_max_new_tokens))

    model.train()
    batches: list[list[int]] = []
    tokens = slots = 0
    bar = tqdm(range(cfg.max_steps), desc="SFT", disable=not progress)
    for step in bar:
        if not batches:
            batches = length_grouped_batches(lengths, cfg.batch_size, generator,
                                             cfg.group_by_length)
        batch = _make_batch([rows[i] for i in batches.pop(0)], cfg, pad)
        lr = cfg.lr_at(step)
        loss = batch_loss(model, batch)
        optimizer_step(optimizer, params, loss, lr, cfg.grad_clip)
        tokens += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        slots += batch["input_ids"].numel()
        history.step.append(step + 1)
        history.lr.append(lr)
        history.train_loss.append(loss.item())
        history.tokens.append(tokens)
        history.slots.append(slots)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        done = step + 1
        if eval_examples is not None and (
                done == cfg.max_steps or (cfg.eval_every and done % cfg.eval_every == 0)):
            run_eval(done)
            bar.set_postfix(loss=f"{loss.item():.3f}",
                            acc=f"{history.eval_accuracy[-1]['all']:.2f}")
    model.eval()
    return history
