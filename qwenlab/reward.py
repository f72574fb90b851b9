"""Reward models: a decoder that reads a conversation and returns one number, how good it is.

Qwen2.5's post-training scores candidate replies with a reward model, both to pick training
data (rejection sampling) and as the signal of its RL stages. The model is the language model's
backbone with its LM head replaced by a scalar head (transformers:
``Qwen2ForSequenceClassification`` with ``num_labels=1``):

    h = QwenModel(ids, attention_mask)            (B, T, C)  hidden states, final norm applied
    r = score(h[b, last_token_index(mask)[b]])    (B,)       one linear read-out per sequence

The read-out position is the last *real* token: the hidden state there has attended to the
whole prompt and reply. Under right padding that is not column -1, under left padding it is; an
index computed from the attention mask (the rightmost 1 of each row) is right under both.
transformers finds it from ``pad_token_id`` instead (the rightmost token that is not the pad
id), which is the same thing unless a sequence contains the pad token as text.

Training uses the Bradley-Terry model of pairwise preference: a reply y_c is preferred to y_r
with probability ``sigmoid(r(x, y_c) - r(x, y_r))``. Maximising the likelihood of the
observed preferences gives the loss ``mean(-log sigmoid(r_c - r_r))`` (``bradley_terry_loss``,
TRL ``RewardTrainer``'s loss). Only differences of rewards are learned, so their offset is free;
TRL's optional ``center_rewards_coefficient`` adds ``coef * mean((r_c + r_r)^2)`` to pin it
near 0 (``center_penalty``).

What this module chooses, and why:
- Sequences are tokenized exactly as TRL does: the chat template applied to ``prompt +
  completion`` (``tokenize_pair``), so the reward is read at the ``"\\n"`` after the reply's
  ``<|im_end|>``; batches are the chosen rows, then the rejected rows, right-padded
  (``collate_pairs``). The parity test feeds one batch to both and gets the same loss.
- ``from_causal_lm`` copies a trained LM's backbone (the LM itself stays intact, since the
  recipe keeps the policy) and adds a head initialised from a seeded generator, so building a
  reward model never changes torch's global random state.
- Best-of-n (``best_of_n``) samples n replies per prompt from a policy and returns the one the
  reward model scores highest: the simplest way to turn a reward model into better answers,
  at n times the generation cost.
- Weights are saved as safetensors (``save`` / ``load``) with the model config as metadata;
  tensor names are transformers' (``model.layers.0...``, ``score.weight``), so
  ``to_transformers`` is a copy.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import QwenConfig
from .model import QwenForCausalLM, QwenModel
from .train import LRSchedule, make_optimizer, optimizer_step

__all__ = ["RewardConfig", "RewardHistory", "RewardModel", "best_of_n", "bradley_terry_loss",
           "center_penalty", "collate_pairs", "last_token_index", "load", "pair_accuracy",
           "pair_scores", "pick_best", "reward_loss", "sample_candidates", "save", "score",
           "score_candidates", "to_transformers", "tokenize_conversation", "tokenize_pair",
           "train"]

FORMAT = "qwenlab-reward-v1"


# --------------------------------------------------------------------------- the model

def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) column of each row's last real token: the rightmost 1 of the (B, T) mask.

    Right padding ``[1 1 1 0 0]`` -> 2; left padding ``[0 0 1 1 1]`` -> 4; no padding -> T - 1.
    (A row with no real token gives 0.)
    """
    T = attention_mask.shape[-1]
    positions = torch.arange(T, device=attention_mask.device)            # (T,)
    return (positions * (attention_mask != 0)).argmax(dim=-1)            # (B,)


class RewardModel(nn.Module):
    """A QwenModel backbone and a scalar ``score`` head (transformers:
    ``Qwen2ForSequenceClassification`` with ``num_labels=1``; same parameter names)."""

    def __init__(self, backbone: QwenModel | QwenConfig, seed: int = 0):
        """backbone: a QwenModel to score with (used as is, not copied), or a QwenConfig to
        build a fresh one from. The head is normal(0, initializer_range), drawn from a
        generator seeded with ``seed`` (torch's global random state is left alone)."""
        super().__init__()
        if isinstance(backbone, QwenConfig):
            backbone = QwenModel(backbone)
        self.config = backbone.config
        self.model = backbone
        embed = self.model.embed_tokens.weight
        # built on the meta device (nn.Linear's own init would draw from the global RNG)
        self.score = nn.Linear(self.config.hidden_size, 1, bias=False, device="meta")
        generator = torch.Generator().manual_seed(seed)
        init = torch.randn((1, self.config.hidden_size), generator=generator)   # (1, C)
        init = (init * self.config.initializer_range).to(embed.device, embed.dtype)
        self.score.weight = nn.Parameter(init)

    @classmethod
    def from_causal_lm(cls, lm: QwenForCausalLM, seed: int = 0) -> RewardModel:
        """A reward model whose backbone is a copy of ``lm.model`` (the LM stays as it was)
        and whose scalar head is new (seeded with ``seed``)."""
        rm = cls(copy.deepcopy(lm.model), seed=seed)
        return rm.train(lm.training)

    @property
    def device(self) -> torch.device:
        return self.score.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.score.weight.dtype

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """input_ids (B, T), attention_mask (B, T) with 1 on real tokens (left or right
        padding) -> rewards (B,), float32. Without a mask every token is real."""
        h, _ = self.model(input_ids, attention_mask)                      # (B, T, C)
        if attention_mask is None:
            last = torch.full((input_ids.shape[0],), input_ids.shape[1] - 1,
                              device=input_ids.device)
        else:
            last = last_token_index(attention_mask)                       # (B,)
        h_last = h[torch.arange(h.shape[0], device=h.device), last]       # (B, C)
        return self.score(h_last).squeeze(-1).float()                     # (B,)


# --------------------------------------------------------------------------- the loss

def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor,
                       margin: torch.Tensor | float | None = None) -> torch.Tensor:
    """``mean(-log sigmoid(r_c - r_r [- margin]))``: the negative log-likelihood of the
    preferences under Bradley-Terry (TRL ``RewardTrainer``'s loss, its optional margin too).

    ``-log sigmoid(x)`` is computed as ``softplus(-x)`` (``F.logsigmoid``), which is exact for
    large |x|; ``torch.log(torch.sigmoid(x))`` underflows to -inf once sigmoid(x) rounds to 0.
    """
    diff = chosen_scores - rejected_scores
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


def center_penalty(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """``mean((r_c + r_r)^2)``: TRL's reward-centering term (Eisenstein et al., 2023)."""
    return ((chosen_scores + rejected_scores) ** 2).mean()


def reward_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor,
                center_rewards_coefficient: float | None = None) -> torch.Tensor:
    """The training loss: Bradley-Terry, plus ``coef * center_penalty`` when a coefficient is
    given (the same sum TRL's ``RewardTrainer.compute_loss`` returns)."""
    loss = bradley_terry_loss(chosen_scores, rejected_scores)
    if center_rewards_coefficient is not None:
        loss = loss + center_rewards_coefficient * center_penalty(chosen_scores,
                                                                  rejected_scores)
    return loss


# --------------------------------------------------------------------------- data

def tokenize_conversation(tokenizer, messages: list[dict]) -> list[int]:
    """The chat template applied to a whole conversation (no generation prompt), as ids."""
    return list(tokenizer.apply_chat_template(messages, tokenize=True,
                                              return_dict=True)["input_ids"])


def tokenize_pair(tokenizer, pair: dict) -> tuple[list[int], list[int]]:
    """(chosen_ids, rejected_ids) of a conversational preference pair
    (``tasks.preference_pairs``): ``prompt + chosen`` and ``prompt + rejected`` through the
    chat template, as TRL's RewardTrainer tokenizes them."""
    return (tokenize_conversation(tokenizer, pair["prompt"] + pair["chosen"]),
            tokenize_conversation(tokenizer, pair["prompt"] + pair["rejected"]))


def pad_rows(rows: Sequence[Sequence[int]], pad_token_id: int, padding_side: str = "right"
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids -> (input_ids, attention_mask), both (N, longest row)."""
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        cols = slice(0, len(row)) if padding_side == "right" else slice(width - len(row), width)
        ids[i, cols] = torch.tensor(row, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def collate_pairs(chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]],
                  pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """One batch of B pairs: ``input_ids`` and ``attention_mask`` of shape (2B, T), the B
    chosen rows first, then the B rejected rows (TRL's ``DataCollatorForPreference`` layout),
    right-padded by default."""
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen but {len(rejected)} rejected sequences")
    ids, mask = pad_rows(list(chosen) + list(rejected), pad_token_id, padding_side)
    return {"input_ids": ids, "attention_mask": mask}


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
        tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token; set "
                         "tokenizer.pad_token")
    return pad


# --------------------------------------------------------------------------- scoring

@torch.no_grad()
def score_ids(rm: RewardModel, rows: Sequence[Sequence[int]], pad_token_id: int,
              batch_size: int = 256) -> torch.Tensor:
    """Rewards (N,) of tokenized sequences, in eval mode, batched and right-padded."""
    was_training = rm.training
    rm.eval()
    out = []
    for start in range(0, len(rows), batch_size):
        ids, mask = pad_rows(rows[start:start + batch_size], pad_token_id)
        out.append(rm(ids.to(rm.device), mask.to(rm.device)).cpu())
    rm.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def pair_scores(rm: RewardModel, tokenizer, pairs: Sequence[dict], batch_size: int = 256
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen rewards, rejected rewards), each (len(pairs),)."""
    tokenized = [tokenize_pair(tokenizer, p) for p in pairs]
    rows = [c for c, _ in tokenized] + [r for _, r in tokenized]
    rewards = score_ids(rm, rows, _pad_id(tokenizer), batch_size)
    return rewards[:len(pairs)], rewards[len(pairs):]


def pair_accuracy(rm: RewardModel, tokenizer, pairs: Sequence[dict]) -> float:
    """Fraction of pairs whose chosen reply gets the strictly higher reward."""
    chosen, rejected = pair_scores(rm, tokenizer, pairs)
    return (chosen > rejected).float().mean().item()


def score(rm: RewardModel, tokenizer, examples: Sequence, replies: Sequence[str],
          batch_size: int = 256) -> torch.Tensor:
    """Rewards (N,) of each ``tasks.Example``'s prompt answered by the matching reply."""
    if len(examples) != len(replies):
        raise ValueError(f"{len(examples)} examples but {len(replies)} replies")
    rows = [tokenize_conversation(tokenizer, ex.messages(r)) for ex, r in zip(examples, replies)]
    return score_ids(rm, rows, _pad_id(tokenizer), batch_size)


# --------------------------------------------------------------------------- best-of-n

def sample_candidates(policy: QwenForCausalLM, tokenizer, examples: Sequence, n: int,
                      temperature: float = 1.0, seed: int = 0, top_p: float | None = None,
                      max_new_tokens: int = 20) -> list[list[str]]:
    """n sampled replies per example, ``[[reply_1, ..., reply_n], ...]`` (seeded)."""
    from .tasks import respond

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    repeated = [ex for ex in examples for _ in range(n)]
    replies = respond(policy, tokenizer, repeated, max_new_tokens=max_new_tokens,
                      temperature=temperature, top_p=top_p, seed=seed)
    return [replies[i * n:(i + 1) * n] for i in range(len(examples))]


def score_candidates(rm: RewardModel, tokenizer, examples: Sequence,
                     candidates: Sequence[Sequence[str]]) -> torch.Tensor:
    """Rewards (N, n) of each example's candidate replies."""
    n = len(candidates[0]) if candidates else 0
    if any(len(c) != n for c in candidates):
        raise ValueError("every example needs the same number of candidates")
    flat_ex = [ex for ex in examples for _ in range(n)]
    flat = [r for c in candidates for r in c]
    return score(rm, tokenizer, flat_ex, flat).view(len(candidates), n)


def pick_best(candidates: Sequence[Sequence[str]], rewards: torch.Tensor) -> list[str]:
    """The highest-reward candidate of each example (the first of equals)."""
    best = rewards.argmax(dim=-1).tolist()
    return [c[i] for c, i in zip(candidates, best)]


def best_of_n(policy: QwenForCausalLM, rm: RewardModel, tokenizer, examples: Sequence, n: int,
              temperature: float = 1.0, seed: int = 0, top_p: float | None = None,
              max_new_tokens: int = 20) -> list[str]:
    """Sample n replies per example from ``policy`` and keep the one ``rm`` scores highest."""
    candidates = sample_candidates(policy, tokenizer, examples, n, temperature, seed, top_p,
                                   max_new_tokens)
    return pick_best(candidates, score_candidates(rm, tokenizer, examples, candidates))


# --------------------------------------------------------------------------- training

@dataclass
class RewardConfig(LRSchedule):
    """The knobs of a reward-model run. A step sees ``batch_size`` pairs (2 x rows)."""
    max_steps: int = 120             # the defaults are the CPU scale: ~30 s on one thread
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 10
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0           # max global gradient norm; 0 or None turns clipping off
    center_rewards_coefficient: float | None = None   # TRL's name; e.g. 0.01
    max_length: int | None = None    # drop pairs longer than this (as TRL does); None keeps all
    group_by_length: bool = True     # batches of pairs of similar length: less padding
    eval_every: int = 40             # steps between held-out pair accuracies (and at the end)
    seed: int = 0                    # seeds the order of the pairs



@dataclass
class RewardHistory:
    """Per optimizer step: lr, loss, batch pair accuracy and mean margin r_c - r_r; per
    evaluation: held-out pair accuracy."""
    step: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    margin: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_accuracy: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RewardHistory:
        return cls(**d)


def _batch_indices(lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                   group_by_length: bool) -> Iterator[list[int]]:
    """Endless batches of indices, epoch after epoch, each epoch a fresh seeded permutation
    (the tail that does not fill a batch is dropped). With ``group_by_length``, each window of
    16 batches is sorted by length before it is cut, and the batches are then shuffled: rows
    of a batch have similar lengths, so little of the (2B, T) tensor is padding."""
    n, B = len(lengths), batch_size
    while True:
        order = torch.randperm(n, generator=generator).tolist()[:n - n % B]
        if group_by_length:
            window = 16 * B
            order = [i for w in range(0, len(order), window)
                     for i in sorted(order[w:w + window], key=lambda i: lengths[i])]
        batches = [order[i:i + B] for i in range(0, len(order), B)]
        if group_by_length:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        yield from batches


def train(rm: RewardModel, tokenizer, pairs: Sequence[dict], cfg: RewardConfig,
          eval_pairs: Sequence[dict] | None = None, progress: bool = True,
          desc: str = "reward") -> RewardHistory:
    """Train ``rm`` on preference pairs with the Bradley-Terry loss for ``cfg.max_steps``.

    Pairs are tokenized once, then visited in epochs, each a fresh permutation from a
    generator seeded with ``cfg.seed`` (grouped by length unless ``cfg.group_by_length`` is
    off); each step's B pairs form one (2B, T) right-padded batch. AdamW (no decay on
    gains), warmup + cosine schedule and global-norm clipping as in ``qwenlab.train``.
    Deterministic: the same model, pairs and config give the same weights.
    """
    from tqdm.auto import tqdm

    pad = _pad_id(tokenizer)
    data = [tokenize_pair(tokenizer, p) for p in pairs]
    if cfg.max_length is not None:
        data = [(c, r) for c, r in data if len(c) <= cfg.max_length and len(r) <= cfg.max_length]
    if not data:
        raise ValueError("no preference pairs to train on (all longer than max_length?)")
    params = list(dict.fromkeys(p for p in rm.parameters() if p.requires_grad))
    optimizer = make_optimizer(rm, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    lengths = [max(len(c), len(r)) for c, r in data]
    batches = _batch_indices(lengths, min(cfg.batch_size, len(data)), generator,
                             cfg.group_by_length)
    history = RewardHistory()

    rm.train()
    bar = tqdm(total=cfg.max_steps, desc=desc, disable=not progress, dynamic_ncols=True)
    postfix: dict[str, str] = {}
    for step in range(cfg.max_steps):
        idx = next(batches)
        batch = collate_pairs([data[i][0] for i in idx], [data[i][1] for i in idx], pad)
        lr = cfg.lr_at(step)
        rewards = rm(batch["input_ids"].to(rm.device), batch["attention_mask"].to(rm.device))
        chosen, rejected = rewards.chunk(2)                                # (B,), (B,)
        loss = reward_loss(chosen, rejected, cfg.center_rewards_coefficient)
        optimizer_step(optimizer, params, loss, lr, cfg.grad_clip)

        history.step.append(step + 1)
        history.lr.append(lr)
        history.loss.append(loss.item())
        history.accuracy.append((chosen > rejected).float().mean().item())
        history.margin.append((chosen - rejected).mean().item())
        postfix["loss"] = f"{history.loss[-1]:.3f}"
        if eval_pairs is not None and ((step + 1) % cfg.eval_every == 0
                                       or step + 1 == cfg.max_steps):
            history.eval_step.append(step + 1)
            history.eval_accuracy.append(pair_accuracy(rm, tokenizer, eval_pairs))
            postfix["eval acc"] = f"{history.eval_accuracy[-1]:.3f}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
    bar.close()
    rm.eval()
    return history


# --------------------------------------------------------------------------- files

def save(rm: RewardModel, path: str | os.PathLike) -> Path:
    """Write the weights and config to one safetensors file; return its path."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in rm.state_dict().items()}
    meta = {"format": FORMAT, "config": dataclasses.asdict(rm.config)}
    save_file(tensors, str(path), metadata={"qwenlab": json.dumps(meta)})
    return path


def load(path: str | os.PathLike, device: torch.device | str = "cpu") -> RewardModel:
    """A RewardModel from a file written by ``save`` (safetensors only: nothing is unpickled),
    in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no reward model file at {path}")
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("qwenlab")
    meta = json.loads(raw) if raw else {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a qwenlab reward model (format "
                         f"{meta.get('format')!r}, expected {FORMAT!r})")
    with torch.device("meta"):   # no time spent initialising weights that are overwritten
        rm = RewardModel(QwenConfig(**meta["config"]))
    rm.load_state_dict(load_file(str(path)), assign=True)
    rm.model.rotary_emb.reset()  # its tables were created on the meta device
    return rm.to(device).eval()


def to_transformers(rm: RewardModel, pad_token_id: int | None = None):
    """The same weights as a transformers ``Qwen2ForSequenceClassification`` (num_labels=1),
    in eval mode. transformers locates the last token through ``config.pad_token_id``
    (needed for batches of more than one sequence), so pass the tokenizer's pad id."""
    from transformers import Qwen2ForSequenceClassification

    hf_config = rm.config.to_hf()
    hf_config.num_labels = 1
    if pad_token_id is not None:
        hf_config.pad_token_id = pad_token_id
    with torch.device("meta"):
        reference = Qwen2ForSequenceClassification(hf_config)
    state = {name: t.detach().clone() for name, t in rm.state_dict().items()}
    missing, unexpected = reference.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"cannot map to transformers: missing {missing}, "
                         f"unexpected {unexpected}")
    rotary = reference.model.rotary_emb
    inv_freq, _ = rotary.compute_default_rope_parameters(hf_config)  # its buffers were on meta
    rotary.inv_freq = inv_freq.to(rm.device)
    rotary.original_inv_freq = inv_freq.clone().to(rm.device)
    return reference.to(rm.device).eval()
