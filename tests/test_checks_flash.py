"""The chapter 06 graders pass the solution, name typical mistakes, and spot untouched stubs."""

from __future__ import annotations

import pytest
import torch

from qwenlab import checks
from qwenlab.kernels.reference import attention_tile, online_softmax_update


def not_attempted(*args):
    raise NotImplementedError("write me")


# ------------------------------------------------------------------ online softmax update
def softmax_update(m, l, acc, scores, v, rescale_acc=True, rescale_l=True, block_max=False,  # noqa: E741
                   normalise=False):
    m_new = scores.amax(-1) if block_max else torch.maximum(m, scores.amax(-1))
    alpha = torch.exp(m - m_new)
    p = torch.exp(scores - m_new[:, None])
    l_new = (l * alpha if rescale_l else l) + p.sum(-1)
    acc_new = (acc * alpha[:, None] if rescale_acc else acc) + p @ v
    if normalise:
        acc_new = acc_new / l_new[:, None]
    return m_new, l_new, acc_new


def test_online_softmax_grader_passes_the_solution(capsys):
    result = checks.check_online_softmax_update(softmax_update)
    assert result.passed, result.message
    assert capsys.readouterr().out.startswith("✓ online_softmax_update")


def test_online_softmax_grader_passes_the_library_reference():
    assert checks.check_online_softmax_update(online_softmax_update).passed


@pytest.mark.parametrize("wrong,diagnosis", [
    (dict(rescale_acc=False), "acc is not rescaled"),
    (dict(rescale_l=False), "l is not rescaled"),
    (dict(rescale_acc=False, rescale_l=False), "neither l nor acc is rescaled"),
    (dict(block_max=True), "not the running max"),
    (dict(normalise=True), "acc is divided by l"),
])
def test_online_softmax_grader_names_the_mistake(wrong, diagnosis):
    result = checks.check_online_softmax_update(
        lambda *args: softmax_update(*args, **wrong))
    assert not result.passed and diagnosis in result.message


def test_online_softmax_grader_rejects_a_wrong_return_shape():
    result = checks.check_online_softmax_update(lambda m, l, acc, s, v: acc)  # noqa: E741
    assert not result.passed and "should return the tuple (m, l, acc)" in result.message


def test_online_softmax_grader_catches_an_update_that_breaks_from_the_empty_state():
    def nan_at_start(m, l, acc, scores, v):  # noqa: E741  (right whenever m is finite)
        if torch.isinf(m).any():
            return m, l * float("nan"), acc * float("nan")
        return softmax_update(m, l, acc, scores, v)

    result = checks.check_online_softmax_update(nan_at_start)
    assert not result.passed and "from the empty state" in result.message


def test_online_softmax_grader_reports_a_stub_as_not_attempted():
    result = checks.check_online_softmax_update(not_attempted)
    assert result.status == "not attempted" and "Hint" in result.message


# ------------------------------------------------------------------ one attention tile
def tile(q, k, v, m, l, acc, q_pos, k_pos, scale, use_scale=True, mask="causal", fill=None):  # noqa: E741
    scores = q @ k.T
    scores = scores * scale if use_scale else scores
    visible = {"causal": k_pos[None, :] <= q_pos[:, None],
               "strict": k_pos[None, :] < q_pos[:, None],
               "none": torch.ones(len(q_pos), len(k_pos), dtype=torch.bool)}[mask]
    scores = scores.masked_fill(~visible, float("-inf") if fill is None else fill)
    return online_softmax_update(m, l, acc, scores, v)


def test_attention_tile_grader_passes_the_solution():
    assert checks.check_attention_tile(tile).passed
    assert checks.check_attention_tile(attention_tile).passed


@pytest.mark.parametrize("wrong,diagnosis", [
    (dict(use_scale=False), "not scaled"),
    (dict(mask="none"), "no causal mask"),
    (dict(mask="strict"), "the diagonal is masked too"),
    (dict(fill=0.0), "set to 0"),
])
def test_attention_tile_grader_names_the_mistake(wrong, diagnosis):
    result = checks.check_attention_tile(lambda *args: tile(*args, **wrong))
    assert not result.passed and diagnosis in result.message


def test_attention_tile_grader_reports_a_stub_as_not_attempted(capsys):
    result = checks.check_attention_tile(not_attempted)
    assert result.status == "not attempted"
    assert capsys.readouterr().out.startswith("○ attention_tile: not attempted yet. Hint:")
