"""Graders for the exercises of chapter 10: supervised fine-tuning.

- ``check_assistant_mask(fn)``: fn(input_ids: list[int], assistant_header: list[int],
  im_end_id: int) -> list of 0/1, one per token: 1 on every assistant reply's tokens and the
  ``<|im_end|>`` that closes it, 0 on everything else (system and user turns, the
  ``<|im_start|>assistant\\n`` header, the ``\\n`` after ``<|im_end|>``). The reference is
  ``qwenlab.sft.assistant_mask``, which equals the chat template's generation mask.
- ``check_masked_loss(fn)``: fn(logits (B, T, V), labels (B, T)) -> scalar, the mean
  cross-entropy of position t's logits against label t + 1, over the labels that are not -100
  (``qwenlab.loss.causal_lm_loss``: what ``model(ids, labels=labels).loss`` and TRL compute).

Each trial runs the learner's function on fixed conversations or seeded tensors, compares with
the reference and, when it is wrong, recomputes the typical wrong answers to name the mistake.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from ..loss import IGNORE_INDEX, causal_lm_loss
from ..sft import assistant_mask
from ._grading import close, compare, first_match, grade

__all__ = ["check_assistant_mask", "check_masked_loss"]


# --------------------------------------------------------------------------- assistant mask

def _conversations() -> list[list[dict]]:
    user = [{"role": "user", "content": "What is 23 + 18?"}]
    reply = [{"role": "assistant", "content": "41"}]
    return [
        user + reply,
        [{"role": "system", "content": "Answer in one word."},
         {"role": "user", "content": "Reverse the letters: d a c b"},
         {"role": "assistant", "content": "b c a d"}],
        user + reply + [{"role": "user", "content": "And 5 + 6?"},
                        {"role": "assistant", "content": "11"},
                        {"role": "user", "content": "Answer in JSON only: name Ada, age 12"},
                        {"role": "assistant", "content": '{"name": "Ada", "age": 12}'}],
    ]


@lru_cache(maxsize=1)
def _mask_cases() -> list[tuple[list[int], list[int], int]]:
    """(input_ids, assistant_header, im_end_id) of each conversation, course tokenizer."""
    from ..tokenizer import load_course_tokenizer

    tok = load_course_tokenizer()
    header = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    return [(tok.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"], header,
             end) for c in _conversations()]


def _replies(ids, header, end) -> list[tuple[int, int]]:
    """(first content token, index of its <|im_end|>) of each assistant reply."""
    out, n = [], len(header)
    for i in range(len(ids) - n + 1):
        if ids[i:i + n] == header:
            out.append((i + n, ids.index(end, i + n)))
    return out


def _variant(ids, header, end, start=0, stop=0, header_too=False, last_only=False):
    """A mask over the replies with its edges moved (the typical wrong answers)."""
    mask = [0] * len(ids)
    replies = _replies(ids, header, end)
    for a, b in replies[-1:] if last_only else replies:
        a = a - len(header) if header_too else a + start
        for i in range(max(a, 0), min(b + 1 + stop, len(ids))):
            mask[i] = 1
    return mask


def _mask_mistakes(ids, header, end) -> dict[str, list[int]]:
    return {
        "your mask trains the prompt too: system and user tokens must be 0, only the "
        "assistant's reply (and its <|im_end|>) is 1": [1] * len(ids),
        "off by one at the start: your mask begins on the last token of the header (the "
        "\"\\n\" of \"<|im_start|>assistant\\n\"); it must begin on the reply's first token":
            _variant(ids, header, end, start=-1),
        "off by one at the start: your mask misses the reply's first token (it must start "
        "right after the \"<|im_start|>assistant\\n\" header)": _variant(ids, header, end, start=1),
        "<|im_end|> is missing from your mask: without it as a target the model never learns "
        "to stop": _variant(ids, header, end, stop=-1),
        "your mask also covers the \"\\n\" after <|im_end|>: that newline belongs to the "
        "template (generation stops at <|im_end|>), so it is not trained":
            _variant(ids, header, end, stop=1),
        "your mask includes the \"<|im_start|>assistant\\n\" header: the model never has to "
        "write it (the prompt ends with it), so it is not a target":
            _variant(ids, header, end, header_too=True),
        "your mask covers only the last assistant reply: in a multi-turn conversation every "
        "reply is trained": _variant(ids, header, end, last_only=True),
    }


def _assistant_mask_trial(fn) -> str | None:
    for ids, header, end in _mask_cases():
        got = fn(list(ids), list(header), end)
        if got is None:
            return "your function returned None; return the mask, one 0 or 1 per token"
        got = [int(x) for x in torch.as_tensor(got).reshape(-1).tolist()]
        if len(got) != len(ids):
            return f"your mask has {len(got)} entries for {len(ids)} tokens: one per token"
        if got != assistant_mask(ids, header, end):
            return first_match(torch.tensor(got), {k: torch.tensor(v) for k, v in
                                                   _mask_mistakes(ids, header, end).items()}) \
                or "your mask differs from the reference: 1 from the first token after each " \
                   "\"<|im_start|>assistant\\n\" through its <|im_end|>, 0 everywhere else"
    return None


def check_assistant_mask(fn):
    """Grade ``fn(input_ids, assistant_header, im_end_id) -> mask`` (see the module doc)."""
    return grade("assistant_mask", fn, _assistant_mask_trial,
                 hint="find each occurrence of assistant_header in input_ids; mark every "
                      "token after it, through the next im_end_id, with 1",
                 success="1 on each reply and its <|im_end|>, 0 on the prompt, the header and "
                         "the \"\\n\" after <|im_end|>, in single- and multi-turn chats")


# --------------------------------------------------------------------------- masked loss

def _loss_case(seed: int, B: int = 3, T: int = 9, V: int = 11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * 2
    labels = torch.randint(0, V, (B, T), generator=g)
    # a prompt of a different length in each row, then the reply; one row padded at the end
    masked = torch.zeros(B, T, dtype=torch.bool)
    for b, (prompt, pad) in enumerate([(3, 0), (5, 2), (2, 4)][:B]):
        masked[b, :prompt] = True
        masked[b, T - pad:] = True
    return logits, labels.masked_fill(masked, IGNORE_INDEX)


def _loss_mistakes(logits, labels) -> dict[str, torch.Tensor]:
    B, T, V = logits.shape
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    per_token = F.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                ignore_index=IGNORE_INDEX, reduction="none").view(B, T)
    valid = targets != IGNORE_INDEX
    unshifted = F.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                ignore_index=IGNORE_INDEX)
    backwards = F.cross_entropy(logits[:, 1:].flatten(0, 1), labels[:, :-1].flatten(),
                                ignore_index=IGNORE_INDEX)
    return {
        "the labels are not shifted: position t's logits predict token t + 1, so compare "
        "logits[:, :-1] with labels[:, 1:]": unshifted,
        "the shift goes the wrong way: compare logits[:, :-1] (positions 0..T-2) with "
        "labels[:, 1:] (the tokens that follow them)": backwards,
        "you averaged over all positions, counting the masked ones as 0: divide the sum by "
        "the number of labels that are not -100": per_token.sum() / (B * T),
        "you averaged over all T - 1 positions per row, counting the masked ones as 0: divide "
        "by the number of labels that are not -100": per_token.sum() / (B * (T - 1)),
        "you took a mean per conversation, then the mean over the batch: that weights a short "
        "reply's tokens more than a long one's. Average over all trained tokens at once (what "
        "transformers and TRL do)": (per_token.sum(1) / valid.sum(1)).mean(),
        "you returned the sum over tokens: divide by the number of trained tokens":
            per_token.sum(),
    }


def _masked_loss_trial(fn) -> str | None:
    for seed in (0, 1):
        logits, labels = _loss_case(seed)
        got = fn(logits.clone(), labels.clone())
        if not isinstance(got, torch.Tensor):
            got = torch.as_tensor(got, dtype=torch.float32)
        if got.numel() != 1:
            return f"the loss should be one number (a scalar), got shape {tuple(got.shape)}"
        got = got.reshape(())
        expected = causal_lm_loss(logits, labels)
        if not close(got, expected, atol=1e-5, rtol=1e-5):
            return first_match(got, _loss_mistakes(logits, labels)) or \
                compare(got.float(), expected, "loss")
    return None


def check_masked_loss(fn):
    """Grade ``fn(logits, labels) -> loss`` (see the module doc)."""
    return grade("masked_loss", fn, _masked_loss_trial,
                 hint="shift (logits[:, :-1] against labels[:, 1:]), then F.cross_entropy with "
                      "ignore_index=-100 averages over the trained tokens only",
                 success="shifted by one, -100 ignored, mean over the batch's trained tokens")
