"""The chapter 10 graders pass right answers, name typical mistakes, and spot untouched stubs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qwenlab import checks
from qwenlab.sft import assistant_mask


def stub(*args):
    raise NotImplementedError("write this function")


# --------------------------------------------------------------------------- assistant mask

def mask_with(start=0, stop=0, header_too=False):
    """An assistant mask written by hand, with switches for the typical mistakes."""
    def fn(ids, header, end):
        mask, n, i = [0] * len(ids), len(header), 0
        while i <= len(ids) - n:
            if ids[i:i + n] == header:
                j = ids.index(end, i + n)
                first = i if header_too else i + n + start
                for k in range(first, min(j + 1 + stop, len(ids))):
                    mask[k] = 1
                i = j
            i += 1
        return mask
    return fn


def test_assistant_mask_grader_passes_right_answers():
    assert checks.check_assistant_mask(assistant_mask).passed
    assert checks.check_assistant_mask(mask_with()).passed
    assert checks.check_assistant_mask(lambda *a: torch.tensor(assistant_mask(*a))).passed


def test_assistant_mask_grader_names_an_off_by_one_start():
    result = checks.check_assistant_mask(mask_with(start=-1))
    assert not result.passed and "off by one at the start" in result.message
    assert "last token of the header" in result.message
    result = checks.check_assistant_mask(mask_with(start=1))
    assert "misses the reply's first token" in result.message


def test_assistant_mask_grader_names_a_missing_im_end():
    result = checks.check_assistant_mask(mask_with(stop=-1))
    assert not result.passed and "<|im_end|> is missing" in result.message


def test_assistant_mask_grader_names_the_newline_after_im_end():
    result = checks.check_assistant_mask(mask_with(stop=1))
    assert not result.passed and "after <|im_end|>" in result.message


def test_assistant_mask_grader_names_a_trained_prompt_or_header():
    result = checks.check_assistant_mask(lambda ids, header, end: [1] * len(ids))
    assert not result.passed and "trains the prompt" in result.message
    result = checks.check_assistant_mask(mask_with(header_too=True))
    assert not result.passed and "includes the" in result.message


def test_assistant_mask_grader_names_a_mask_of_the_last_reply_only():
    def last_only(ids, header, end):
        mask = [0] * len(ids)
        starts = [i for i in range(len(ids)) if ids[i:i + len(header)] == header]
        j = ids.index(end, starts[-1] + len(header))
        for k in range(starts[-1] + len(header), j + 1):
            mask[k] = 1
        return mask
    result = checks.check_assistant_mask(last_only)
    assert not result.passed and "only the last assistant reply" in result.message


def test_assistant_mask_grader_reports_a_wrong_length():
    result = checks.check_assistant_mask(lambda ids, header, end: [0])
    assert not result.passed and "one per token" in result.message


def test_assistant_mask_grader_spots_an_untouched_stub():
    assert checks.check_assistant_mask(stub).status == "not attempted"


# --------------------------------------------------------------------------- masked loss

def loss_with(shift=True, reduce="tokens"):
    def fn(logits, labels):
        if shift:
            logits, labels = logits[:, :-1], labels[:, 1:]
        per = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                              reduction="none").view(labels.shape)
        valid = labels != -100
        if reduce == "tokens":
            return per.sum() / valid.sum()
        if reduce == "all":
            return per.mean()
        if reduce == "rows":
            return (per.sum(1) / valid.sum(1)).mean()
        return per.sum()
    return fn


def test_masked_loss_grader_passes_right_answers():
    from qwenlab.loss import causal_lm_loss

    assert checks.check_masked_loss(loss_with()).passed
    assert checks.check_masked_loss(causal_lm_loss).passed
    assert checks.check_masked_loss(lambda lg, lb: loss_with()(lg, lb).item()).passed


def test_masked_loss_grader_names_unshifted_labels():
    result = checks.check_masked_loss(loss_with(shift=False))
    assert not result.passed and "not shifted" in result.message


def test_masked_loss_grader_names_a_mean_over_all_positions():
    result = checks.check_masked_loss(loss_with(reduce="all"))
    assert not result.passed and "counting the masked ones as 0" in result.message


def test_masked_loss_grader_names_a_mean_of_per_conversation_means():
    result = checks.check_masked_loss(loss_with(reduce="rows"))
    assert not result.passed and "mean per conversation" in result.message


def test_masked_loss_grader_names_a_sum():
    result = checks.check_masked_loss(loss_with(reduce="sum"))
    assert not result.passed and "returned the sum" in result.message


def test_masked_loss_grader_names_a_backwards_shift():
    def backwards(logits, labels):
        return F.cross_entropy(logits[:, 1:].flatten(0, 1), labels[:, :-1].flatten())
    result = checks.check_masked_loss(backwards)
    assert not result.passed and "wrong way" in result.message


def test_masked_loss_grader_spots_an_untouched_stub():
    assert checks.check_masked_loss(stub).status == "not attempted"
