"""Direct preference optimisation (DPO), and the on-policy loop that iterates it.

RLHF maximises a reward while staying close to a reference model (the SFT model):

    max_pi  E_{x, y~pi}[ r(x, y) ] - beta * KL( pi(.|x) || pi_ref(.|x) )

Its optimum is pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x), so any reward can be written
through the policy that is optimal for it: r(x, y) = beta * log(pi(y|x) / pi_ref(y|x)) +
beta * log Z(x). Put that *implicit reward* into the Bradley-Terry model of a preference
(chosen y_w over rejected y_l), and Z(x) cancels:

    loss = -log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x))
                                - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

No reward model and no sampling during training: a classification loss on preference pairs
(Rafailov et al., 2023). Qwen2 and Qwen2.5 run DPO offline on curated pairs, then online, on
pairs sampled from the current policy and ranked by a reward model or a checker.

What this module chooses, and why:
- ``log pi(y|x)`` is the **sum** of the completion tokens' log-probs: the log-probability of
  the whole sequence, which is what the derivation needs. Averaging over tokens (the
  length-normalised variant, ``average=True``) is another objective: it removes the pull
  towards short answers that summing has, and it no longer cancels Z(x) exactly.
- The completion is the assistant's reply and its ``<|im_end|>`` (the stop token is part of the
  answer: a reply that does not stop is wrong), as in SFT's loss mask. TRL also counts the
  ``\\n`` that the chat template writes after ``<|im_end|>``, a token generation never produces;
  on the same batch and mask, ``dpo_loss`` equals TRL's ``DPOTrainer`` loss (tests).
- The reference model is frozen (``requires_grad=False``, eval mode, no autograd), and since it
  never changes, its log-probs are computed once for the whole data set before training
  (TRL's ``precompute_ref_log_probs``): each step then costs one policy forward, not two.
- Iteration (``on_policy_pairs``): sample n replies per prompt from the current policy, judge
  them with the task checker (or a reward model's score), pair a good reply with a bad one,
  and train again with the previous round's model as the reference.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from . import tasks
from .train import LRSchedule, make_optimizer, optimizer_step

__all__ = ["DPOConfig", "DPOHistory", "batch_loss", "collate_pairs", "completion_logprobs",
           "dpo_loss", "freeze", "frozen_copy", "implicit_reward_stats", "kl_to_reference",
           "label_pairs", "mix_pairs", "on_policy_pairs", "pair_logprobs", "rows_logprobs",
           "sample_and_judge", "sequence_logprobs", "token_logprobs", "tokenize_pair", "train"]


# --------------------------------------------------------------------------- the loss

def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """(B, T) ids -> (B, T - 1): log p(token t + 1 | tokens <= t), in float32."""
    logits = model(input_ids, attention_mask=attention_mask).logits      # (B, T, V)
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)        # (B, T-1, V)
    return log_probs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)      # (B, T-1)


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                        completion_mask: torch.Tensor) -> torch.Tensor:
    """(B, T - 1): log p(token t + 1 | tokens <= t) where token t + 1 is a completion token,
    0 elsewhere. Equal to ``token_logprobs(...) * completion_mask[:, 1:]``; for a qwenlab model
    the LM head runs only at those positions (a few in ten of a batch's tokens: the prompts and
    the padding are the rest), which makes a DPO step much cheaper."""
    from .model import QwenForCausalLM

    targets = completion_mask[:, 1:].bool()                                # (B, T-1)
    if not isinstance(model, QwenForCausalLM):
        return token_logprobs(model, input_ids, attention_mask) * targets
    h, _ = model.model(input_ids, attention_mask)                          # (B, T, C)
    logits = model.lm_head(h[:, :-1][targets]).float()                     # (N, V)
    picked = torch.log_softmax(logits, dim=-1).gather(
        -1, input_ids[:, 1:][targets][:, None]).squeeze(-1)                # (N,)
    return torch.zeros(targets.shape, dtype=picked.dtype,
                       device=picked.device).masked_scatter(targets, picked)


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      completion_mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """log pi(completion | prompt) per row: (B,).

    completion_mask (B, T) is 1 on the completion's tokens (the reply and its ``<|im_end|>``).
    Token t is predicted at position t - 1, so the mask is shifted like the labels.
    average=True divides by the number of completion tokens (the length-normalised variant).
    """
    per_token = completion_logprobs(model, input_ids, attention_mask, completion_mask)
    total = per_token.sum(-1)                                             # (B,)
    if not average:
        return total
    return total / completion_mask[:, 1:].sum(-1).clamp(min=1).to(total.dtype)


def dpo_loss(pol_chosen: torch.Tensor, pol_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO (sigmoid) loss from sequence log-probs, each (B,).

    Returns ``(loss, chosen_rewards, rejected_rewards)``: the mean of
    ``-log sigmoid(beta * (chosen log-ratio - rejected log-ratio))``, and the implicit rewards
    ``beta * (log pi - log pi_ref)`` of each side, detached (what TRL logs as rewards/chosen and
    rewards/rejected). With the policy equal to the reference the loss is log 2.
    """
    chosen_logratios = pol_chosen - ref_chosen                            # (B,)
    rejected_logratios = pol_rejected - ref_rejected                      # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)               # (B,)
    loss = -F.logsigmoid(logits).mean()
    return loss, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


# --------------------------------------------------------------------------- data

def _end_token_id(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<|im_end|>")


def tokenize_pair(tokenizer, pair: dict) -> dict[str, list[int]]:
    """A conversational preference pair -> ``chosen_ids``, ``chosen_mask``, ``rejected_ids``,
    ``rejected_mask`` (the masks: 1 on the completion).

    Each sequence is the ChatML prompt with its generation prompt (``<|im_start|>assistant\\n``)
    followed by the reply and ``<|im_end|>``; the completion is what follows the generation
    prompt, up to and including ``<|im_end|>`` (the template's ``\\n`` after it is dropped).
    """
    end = _end_token_id(tokenizer)
    prompt = tokenizer.apply_chat_template(pair["prompt"], tokenize=True,
                                           add_generation_prompt=True, return_dict=True)
    prompt_ids = list(prompt["input_ids"])
    out: dict[str, list[int]] = {}
    for side in ("chosen", "rejected"):
        full = tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=True,
                                             return_dict=True)["input_ids"]
        full = list(full)
        if full[:len(prompt_ids)] == prompt_ids:
            completion = full[len(prompt_ids):]
        else:
            # The reply's first characters merged with the prompt's last token (a sampled
            # reply that starts with "\n" joins the "\n" of the generation prompt). Tokenize
            # the reply on its own, as the model produced it: after the prompt's tokens.
            content = pair[side][0]["content"] + "<|im_end|>"
            completion = list(tokenizer(content, add_special_tokens=False)["input_ids"])
        if end not in completion:
            raise ValueError(f"the {side} completion has no <|im_end|>: {completion}")
        completion = completion[:completion.index(end) + 1]             # reply + <|im_end|>
        out[f"{side}_ids"] = prompt_ids + completion
        out[f"{side}_mask"] = [0] * len(prompt_ids) + [1] * len(completion)
    return out


def collate_pairs(rows: Sequence[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Tokenized pairs -> one batch of 2B rows, all chosen rows then all rejected rows (TRL's
    layout), right-padded: ``input_ids``, ``attention_mask``, ``completion_mask``, each (2B, T)."""
    seqs = [r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows]
    masks = [r["chosen_mask"] for r in rows] + [r["rejected_mask"] for r in rows]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    completion_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        input_ids[i, :len(s)] = torch.tensor(s)
        attention_mask[i, :len(s)] = 1
        completion_mask[i, :len(m)] = torch.tensor(m)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "completion_mask": completion_mask}


def _batch_logprobs(model, batch: dict[str, torch.Tensor], average: bool
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) sequence log-probs of a collated batch, each (B,)."""
    device = model.device
    logps = sequence_logprobs(model, batch["input_ids"].to(device),
                              batch["attention_mask"].to(device),
                              batch["completion_mask"].to(device), average)  # (2B,)
    return logps.chunk(2)


# --------------------------------------------------------------------------- the reference

def frozen_copy(model):
    """A deep copy of ``model`` to serve as the reference: eval mode, no gradients."""
    reference = copy.deepcopy(model)
    return freeze(reference)


def freeze(model):
    model.eval()
    model.requires_grad_(False)
    return model


@torch.no_grad()
def rows_logprobs(model, rows: Sequence[dict], pad_token_id: int, average: bool = False,
                       batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``model``'s (chosen, rejected) log-probs of every tokenized pair, each (N,), on the CPU."""
    chosen, rejected = [], []
    for start in range(0, len(rows), batch_size):
        batch = collate_pairs(rows[start:start + batch_size], pad_token_id)
        c, r = _batch_logprobs(model, batch, average)
        chosen.append(c.cpu())
        rejected.append(r.cpu())
    return torch.cat(chosen), torch.cat(rejected)


@torch.no_grad()
def pair_logprobs(model, tokenizer, pairs: Sequence[dict], average: bool = False,
                  batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) sequence log-probs of preference pairs under ``model``, each (N,)."""
    was_training = model.training
    model.eval()
    rows = [tokenize_pair(tokenizer, p) for p in pairs]
    out = rows_logprobs(model, rows, tokenizer.pad_token_id, average, batch_size)
    model.train(was_training)
    return out


@torch.no_grad()
def kl_to_reference(policy, reference, tokenizer, examples: Sequence[tasks.Example],
                    max_new_tokens: int = 32, seed: int = 0, temperature: float = 1.0) -> float:
    """KL(pi || pi_ref) per prompt, estimated on replies sampled from the policy.

    For each sampled reply y, the per-token KLs of the two models' next-token distributions
    are summed over the reply's tokens (and its ``<|im_end|>``):
    sum_t KL(pi(.|x, y<t) || pi_ref(.|x, y<t)). Its mean over prompts is an unbiased estimate
    of the sequence-level KL in the RLHF objective, with less noise than
    log pi(y|x) - log pi_ref(y|x) of the same samples.
    """
    from .generate import generate

    end = _end_token_id(tokenizer)
    was_training = policy.training
    policy.eval()
    ids, mask = tasks.prompt_ids(tokenizer, examples)
    device = policy.device
    generator = torch.Generator(device).manual_seed(seed)
    out = generate(policy, ids.to(device), max_new_tokens, temperature=temperature,
                   eos_token_id=end, attention_mask=mask.to(device), generator=generator)
    P = ids.shape[1]
    new = out[:, P:]                                                      # (B, n)
    # reply tokens: up to and including the first <|im_end|>
    is_end = (new == end).long()
    before_end = (is_end.cumsum(-1) - is_end) == 0                        # (B, n)
    full_mask = torch.cat([mask.to(device), before_end.long()], dim=1)    # (B, P + n)
    logp = torch.log_softmax(policy(out, attention_mask=full_mask).logits[:, P - 1:-1].float(), -1)
    logq = torch.log_softmax(reference(out, attention_mask=full_mask).logits[:, P - 1:-1].float(),
                             -1)
    kl_per_token = (logp.exp() * (logp - logq)).sum(-1)                  # (B, n)
    policy.train(was_training)
    return (kl_per_token * before_end).sum(-1).mean().item()


# --------------------------------------------------------------------------- training

@dataclass
class DPOConfig(LRSchedule):
    """The knobs of a DPO run. Defaults are sized for the tiny model on a CPU."""
    beta: float = 0.1               # strength of the KL leash to the reference
    max_steps: int = 100
    batch_size: int = 32            # pairs per step (the forward sees 2 * batch_size rows)
    lr: float = 5e-4
    min_lr: float = 5e-5
    warmup_steps: int = 10
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    length_normalized: bool = False  # average instead of sum the completion log-probs
    sft_weight: float = 0.0          # + sft_weight * NLL of the chosen replies (TRL: loss_type
                                     # ["sigmoid", "sft"], loss_weights [1, sft_weight])
    group_by_length: bool = True     # batches of pairs of similar length: less padding
    eval_every: int = 50             # steps between accuracy/KL evaluations (and at the end)
    eval_max_new_tokens: int = 32    # a JSON answer is ~22 tokens of the course tokenizer
    kl_prompts: int = 32             # prompts sampled for the KL estimate (0: no KL)
    seed: int = 0                    # seeds the batch order and the KL samples

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")


@dataclass
class DPOHistory:
    """Per step: loss, mean implicit rewards, their margin and how often chosen > rejected.
    Per evaluation: task accuracy (when eval examples are given) and KL to the reference."""
    step: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    chosen_reward: list[float] = field(default_factory=list)
    rejected_reward: list[float] = field(default_factory=list)
    margin: list[float] = field(default_factory=list)
    reward_accuracy: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    accuracy: list[dict[str, float]] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def batch_loss(policy, batch: dict[str, torch.Tensor], ref_chosen: torch.Tensor,
               ref_rejected: torch.Tensor, cfg: DPOConfig
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training loss of one collated batch (``collate_pairs``; chosen rows, then rejected)
    given the reference's log-probs of its pairs: ``dpo_loss`` on the policy's summed (or, with
    ``cfg.length_normalized``, averaged) log-probs, plus ``cfg.sft_weight`` times the mean NLL
    of the chosen replies' tokens. Returns ``(loss, chosen_rewards, rejected_rewards)``."""
    per_token = completion_logprobs(policy, batch["input_ids"], batch["attention_mask"],
                                    batch["completion_mask"])               # (2B, T-1)
    sums = per_token.sum(-1)                                                # (2B,)
    counts = batch["completion_mask"][:, 1:].sum(-1).to(sums.dtype)         # (2B,)
    logps = sums / counts.clamp(min=1) if cfg.length_normalized else sums
    pol_chosen, pol_rejected = logps.chunk(2)
    loss, chosen_r, rejected_r = dpo_loss(pol_chosen, pol_rejected, ref_chosen, ref_rejected,
                                          cfg.beta)
    if cfg.sft_weight:   # mean NLL per chosen token, as TRL's "sft" loss type
        n = len(pol_chosen)
        loss = loss + cfg.sft_weight * -(sums[:n].sum() / counts[:n].sum())
    return loss, chosen_r, rejected_r


def _batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator,
             group_by_length: bool):
    """Endless batches of pair indices, epoch after epoch, in a seeded order (grouped by
    length as in SFT: shuffled, sorted within chunks, batches shuffled)."""
    from .sft import length_grouped_batches

    batch_size = min(batch_size, len(lengths))
    while True:
        yield from length_grouped_batches(lengths, batch_size, generator, group_by_length)


def train(policy, reference, tokenizer, pairs: Sequence[dict], cfg: DPOConfig,
          eval_examples: Sequence[tasks.Example] | None = None, progress: bool = True,
          desc: str = "dpo") -> DPOHistory:
    """Train ``policy`` with DPO on preference ``pairs`` (``tasks.preference_pairs`` form)
    against the frozen ``reference``; deterministic given ``cfg.seed`` and the models.

    The reference is frozen in place (eval mode, ``requires_grad=False``) and its log-probs are
    computed once. Every ``cfg.eval_every`` steps and at the end: greedy task accuracy on
    ``eval_examples`` (if given) and the KL to the reference on replies sampled for the
    prompts of the first ``cfg.kl_prompts`` pairs.
    """
    from tqdm.auto import tqdm

    if policy is reference:
        raise ValueError("policy and reference are the same object; pass a frozen copy as the "
                         "reference (dpo.frozen_copy(policy))")
    freeze(reference)
    rows = [tokenize_pair(tokenizer, p) for p in pairs]
    if not rows:
        raise ValueError("no preference pairs to train on")
    pad = tokenizer.pad_token_id
    ref_chosen, ref_rejected = rows_logprobs(reference, rows, pad, cfg.length_normalized)
    kl_examples = _prompt_examples(pairs[:cfg.kl_prompts])

    device = policy.device
    optimizer = make_optimizer(policy, cfg)
    params = list(dict.fromkeys(p for p in policy.parameters() if p.requires_grad))
    generator = torch.Generator().manual_seed(cfg.seed)
    lengths = [max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in rows]
    batches = _batches(lengths, cfg.batch_size, generator, cfg.group_by_length)
    history = DPOHistory()
    policy.train()
    bar = tqdm(total=cfg.max_steps, desc=desc, disable=not progress, dynamic_ncols=True)
    for step in range(1, cfg.max_steps + 1):
        lr = cfg.lr_at(step - 1)
        idx = next(batches)
        batch = {k: v.to(device) for k, v in collate_pairs([rows[i] for i in idx], pad).items()}
        loss, chosen_r, rejected_r = batch_loss(policy, batch, ref_chosen[idx].to(device),
                                                ref_rejected[idx].to(device), cfg)
        optimizer_step(optimizer, params, loss, lr, cfg.grad_clip)

        history.step.append(step)
        history.lr.append(lr)
        history.loss.append(loss.item())
        history.chosen_reward.append(chosen_r.mean().item())
        history.rejected_reward.append(rejected_r.mean().item())
        history.margin.append((chosen_r - rejected_r).mean().item())
        history.reward_accuracy.append((chosen_r > rejected_r).float().mean().item())
        postfix = {"loss": f"{history.loss[-1]:.3f}", "margin": f"{history.margin[-1]:.2f}"}
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            history.eval_step.append(step)
            if eval_examples is not None:
                history.accuracy.append(tasks.evaluate(policy, tokenizer, eval_examples,
                                                        cfg.eval_max_new_tokens))
                postfix["acc"] = f"{history.accuracy[-1]['all']:.3f}"
            if kl_examples:
                history.kl.append(kl_to_reference(policy, reference, tokenizer, kl_examples,
                                                  seed=cfg.seed,
                                                  max_new_tokens=cfg.eval_max_new_tokens))
                postfix["kl"] = f"{history.kl[-1]:.3f}"
            policy.train()
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
    bar.close()
    policy.eval()
    return history


def _prompt_examples(pairs: Sequence[dict]) -> list[tasks.Example]:
    """Examples standing for the pairs' prompts (only ``prompt`` is used)."""
    return [tasks.Example(p.get("task", ""), p["prompt"][-1]["content"],
                          p["chosen"][-1]["content"]) for p in pairs]


@torch.no_grad()
def implicit_reward_stats(policy, reference, tokenizer, pairs: Sequence[dict], beta: float,
                          average: bool = False, batch_size: int = 64) -> dict[str, float]:
    """Mean implicit rewards of held-out pairs: chosen, rejected, margin, and the fraction of
    pairs whose chosen reply gets the larger reward (the implicit reward model's accuracy)."""
    pc, pr = pair_logprobs(policy, tokenizer, pairs, average, batch_size)
    rc, rr = pair_logprobs(reference, tokenizer, pairs, average, batch_size)
    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    return {"chosen": chosen.mean().item(), "rejected": rejected.mean().item(),
            "margin": (chosen - rejected).mean().item(),
            "accuracy": (chosen > rejected).float().mean().item()}


# --------------------------------------------------------------------------- iteration

Judge = Callable[[Sequence[tasks.Example], Sequence[str]], Sequence[float]]


def _checker_judge(examples: Sequence[tasks.Example], replies: Sequence[str]) -> list[float]:
    return [float(tasks.check(ex, r)) for ex, r in zip(examples, replies)]


def sample_and_judge(policy, tokenizer, examples: Sequence[tasks.Example], n: int = 4,
                     temperature: float = 1.0, seed: int = 0, judge: Judge | None = None,
                     max_new_tokens: int = 32) -> list[tuple[list[str], list[float]]]:
    """For each example: n replies sampled from ``policy`` and their scores (default: the task
    checker, 1.0 correct / 0.0 wrong; or ``judge(examples, replies) -> scores``, e.g. a reward
    model's). Deterministic given ``seed``."""
    repeated = [ex for ex in examples for _ in range(n)]
    replies = tasks.respond(policy, tokenizer, repeated, max_new_tokens=max_new_tokens,
                            temperature=temperature, seed=seed)
    scores = [float(s) for s in (judge or _checker_judge)(repeated, replies)]
    return [(replies[i * n:(i + 1) * n], scores[i * n:(i + 1) * n]) for i in range(len(examples))]


def on_policy_pairs(policy, tokenizer, examples: Sequence[tasks.Example], n: int = 4,
                    temperature: float = 1.0, seed: int = 0, judge: Judge | None = None,
                    max_new_tokens: int = 32) -> list[dict]:
    """Rejection sampling: preference pairs from the policy's own replies.

    For each prompt, sample ``n`` replies and judge them (``sample_and_judge``), then pair them
    (``label_pairs``). With the checker (``judge=None``): a correct reply is chosen over a wrong
    one; when no sample is correct, the reference answer is chosen over a wrong sample; when
    all are correct there is nothing to prefer and the prompt gives no pair. With a ``judge``
    returning scores (a reward model): the best reply is chosen over the worst, unless they
    tie. Returns ``tasks.pair_record`` dicts of kind ``"on_policy"``.
    """
    judged = sample_and_judge(policy, tokenizer, examples, n, temperature, seed, judge,
                              max_new_tokens)
    return label_pairs(examples, judged, by_checker=judge is None)


def label_pairs(examples: Sequence[tasks.Example],
                judged: Sequence[tuple[list[str], list[float]]], by_checker: bool = True
                ) -> list[dict]:
    """Pairs from ``sample_and_judge``'s output (see ``on_policy_pairs`` for the rules);
    ``by_checker``: the scores are the checker's 1.0 / 0.0."""
    pairs = []
    for ex, (replies, scores) in zip(examples, judged):
        if by_checker:
            right = [r for r, s in zip(replies, scores) if s > 0]
            wrong = [r for r, s in zip(replies, scores) if s <= 0]
            if not wrong:
                continue
            chosen = right[0] if right else ex.answer
            rejected = wrong[0]
        else:
            best = max(range(len(scores)), key=lambda i: scores[i])
            worst = min(range(len(scores)), key=lambda i: scores[i])
            if scores[best] == scores[worst] or replies[best] == replies[worst]:
                continue
            chosen, rejected = replies[best], replies[worst]
        pairs.append(tasks.pair_record(ex, chosen, rejected, "on_policy"))
    return pairs


def mix_pairs(*pair_lists: Sequence[dict], seed: int = 0) -> list[dict]:
    """The pair lists joined and shuffled (seeded): e.g. on-policy pairs with offline ones."""
    pairs = [p for pairs in pair_lists for p in pairs]
    random.Random(seed).shuffle(pairs)
    return pairs
