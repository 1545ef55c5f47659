"""Model text -> letters: explicit 'Answer: X' first, then a standalone letter; lists; linear time."""
from __future__ import annotations

import time

import pytest

from mmrbench.mmad.answers import parse_letter, parse_letters

AB = ("A", "B")
ABCD = ("A", "B", "C", "D")


@pytest.mark.parametrize("text, allowed, want", [
    ("Answer: B.", AB, "B"),
    ("B", AB, "B"),
    ("(A) Yes.", AB, "A"),
    ("**Answer:** A", AB, "A"),
    ("answer：C", ABCD, "C"),
    ("The answer is D", ABCD, "D"),
    # the explicit form wins over standalone letters elsewhere in the text
    ("A scratch is visible near the cap. Answer: B.", AB, "B"),
    # several explicit answers: the last one (a model that restates before concluding)
    ("Answer: A. On reflection, Answer: B.", AB, "B"),
    # no explicit form: the last standalone option letter
    ("Options A and B were considered; I pick B", AB, "B"),
    # letters that are not options of this question do not count
    ("Answer: E", AB, None),
    ("C", AB, None),
    # letters inside words or lowercase are not letters
    ("Both candidates are acceptable", AB, None),
    ("yes", AB, None),
    ("", AB, None),
    (None, AB, None),
    ("I can't tell.", ABCD, None),
])
def test_single(text, allowed, want):
    assert parse_letter(text, allowed) == want


def test_any_letter_when_options_unknown():
    assert parse_letter("E.", None) == "E"


def test_list_numbered_lines_map_by_number():
    text = "1. Answer: C.\n3. Answer: A.\n2. Answer: B."
    assert parse_letters(text, [ABCD, ABCD, AB]) == ["C", "B", "A"]
    # a number out of range or a letter not among the options leaves that question unparsed
    assert parse_letters("1. Answer: D.\n2. Answer: C.\n7. Answer: A.", [ABCD, AB, AB]) == ["D", None, None]


def test_list_in_order_only_when_count_matches():
    assert parse_letters("Answer: B. Answer: A. Answer: C.", [ABCD, AB, ABCD]) == ["B", "A", "C"]
    assert parse_letters("B, A, C", [ABCD, AB, ABCD]) == ["B", "A", "C"]
    # two letters for three questions: no guessing which one is missing
    assert parse_letters("B, C", [ABCD, AB, ABCD]) == [None, None, None]
    # a letter outside one question's options drops that question only
    assert parse_letters("B C C", [ABCD, AB, ABCD]) == ["B", None, "C"]
    assert parse_letters(None, [AB, AB]) == [None, None]
    assert parse_letters("Answer: B", [AB]) == ["B"]


def test_linear_time_on_hostile_text():
    for text in ("Answer" * 40000, "Answer:" + " " * 200000, "A" * 200000, "1. " * 60000 + "x"):
        t0 = time.perf_counter()
        parse_letter(text, AB)
        parse_letters(text, [AB, AB, AB])
        assert time.perf_counter() - t0 < 1.0
