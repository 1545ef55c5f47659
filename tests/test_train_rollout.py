"""A written response (the guaranteed positive) turned into completion tokens within max_new_tokens."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("transformers")

from mmrbench.parsing import parse_answer  # noqa: E402
from mmrbench.testing.tiny_qwen import build_tokenizer  # noqa: E402
from mmrbench.train.rollout import text_to_completion  # noqa: E402

ANSWER = "<answer>Yes. [[10, 12, 30, 40]]</answer>"
TEXT = "<think>" + "The surface shows a dark irregular region near the top left corner. " * 4 + "</think>" + ANSWER


@pytest.fixture(scope="module")
def policy():
    tok = build_tokenizer()
    return SimpleNamespace(tokenizer=tok, eos_ids=lambda: [tok.eos_token_id])


def decode(policy, ids):
    return policy.tokenizer.decode(ids, skip_special_tokens=True)


def test_short_text_unchanged_and_ended(policy):
    ids = text_to_completion(policy, ANSWER, 200)
    assert ids[-1] == policy.tokenizer.eos_token_id and decode(policy, ids) == ANSWER


def test_long_reasoning_is_cut_but_the_answer_kept(policy):
    full = text_to_completion(policy, TEXT, 10_000)
    assert len(full) > 120  # one token per byte in the tiny tokenizer
    ids = text_to_completion(policy, TEXT, 120)
    assert len(ids) == 120 and ids[-1] == policy.tokenizer.eos_token_id
    text = decode(policy, ids)
    assert text.startswith("<think>The surface") and text.endswith("</think>" + ANSWER)
    ans = parse_answer(text)
    assert ans.decision is True and ans.boxes, "the answer (decision and box) must survive the cut"
    # before the fix the tail was cut: the same budget lost the whole answer
    assert parse_answer(decode(policy, full[:120])).decision is None


def test_answer_alone_when_even_the_tags_do_not_fit(policy):
    n_answer = len(text_to_completion(policy, ANSWER, 10_000))
    ids = text_to_completion(policy, TEXT, n_answer + 5)  # room for the answer, not for <think></think>
    assert decode(policy, ids) == ANSWER


def test_answer_longer_than_budget_is_cut_with_a_warning(policy, caplog):
    ids = text_to_completion(policy, TEXT, 10)
    assert len(ids) == 10
    assert "loses its answer" in caplog.text
