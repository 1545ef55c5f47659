"""The linear-time parser reads every answer exactly as the old one did (protocol mmr-ad-v1 unchanged).

``parsing_reference_v1`` is the parser as it was before the rewrite (frozen, test-only). Every result
field (decision, boxes with coordinates, label and key, the answer text, the tag flag) must be equal,
on hand-written answers and on generated ones built from the pieces the parser reacts to.
"""
from __future__ import annotations

import random

import parsing_reference_v1 as ref
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmrbench import parsing


def fields(p) -> tuple:
    return (p.decision, [(b.coords, b.label, b.key) for b in p.boxes], p.answer_text, p.had_answer_tag)


def same(text) -> None:
    assert fields(parsing.parse_answer(text)) == fields(ref.parse_answer(text)), repr(text)[:300]
    if isinstance(text, str):
        assert parsing.extract_answer(text) == ref.extract_answer(text), repr(text)[:300]


# The pieces the parser reacts to, with the characters Python's case-insensitive matching folds onto
# ASCII letters (Kelvin sign, dotted/dotless i, long s) and the full-width punctuation it normalises.
PIECES = [
    "<think>", "</think>", "<THINK>", "</Think>", "<thin", "k>", "<answer>", "</answer>", "<Answer>", "</ANSWER>",
    "<answer", "</", "<", ">", "/", "\u212a", "\u0130", "\u0131", "\u017f", "<th\u0131nk>", "<thin\u212a>",
    "Yes", "yes", "YES", "No", "no", "nO", "yes.", "No,", "Nothing", "yesterday", "no_", "_yes", "Yes{", "Yes,",
    "[", "]", "[[", "]]", "{", "}", "(", ")", "'", '"', "`", "```", "```json", "```python", "\u2018", "\u2019",
    "\u201c", "\u201d", "\uff0c", "\uff1a", "\uff3b", "\uff3d", ",", ":", "=", ".", "-", "+", "e", "E", " ", "  ",
    "\n", "\t", "0", "1", "7", "42", "1.5", ".5", "3.", "1e3", "2E-2", "-4", "+9", "99999999", "1e12",
    "[1, 2, 3, 4]", "[10,20,30,40]", "[1.5, 2, 3e1, .4]", "[1, 2, 3]", "[1, 2, 3, 4, 5]",
    "'bbox_2d': ", '"box_2d": ', "bbox: ", "box=", "'boxes': [", "coordinates:", "'point': ", "size: ",
    "my_box: ", "the_bbox=", "'label': ", "label:", "'label': 'no solder'", "'label': 'scratch'",
    "'anomaly_type': 'yes'", "type: 'x'", "category: \u2018dent\u2019", "'description': 'no defect'",
    "label: 'unterminated", "x", "abc", "_", "hole", "\x00", "\u00e9",
]


def build(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(PIECES) for _ in range(n))


HAND = [
    None, "", "   ", 3, b"Yes", "Yes", "No", "yes", "no.", "Yes.", "I cannot tell.", "Nothing notable.",
    "<think>The cable has a cut at [1, 2, 3, 4].</think><answer>Yes. {'bbox_2d': [10, 20, 30, 40], 'label': 'cut'}</answer>",
    "<think>maybe [5, 5, 50, 50] is odd</think><answer>Yes.</answer>",
    "<think>a</think>Yes [1,2,3,4]<think>b</think> No", "<think>a</think><think>b</think>No", "<think><think></think>Yes",
    "<think>x</think></think>Yes", "Yes <think>unclosed [1,2,3,4]", "<think>" * 50, "<think>" * 50 + "</think>No",
    "</think>Yes", "Yes </think> [1,2,3,4]", "<THINK>x</think>yes [1,2,3,4]", "<think>x</THINK>no",
    "<th\u0131nk>x</think>Yes", "<thin\u212a>hidden</thin\u212a>No", "<think\n>x</think>Yes",
    "<answer>Yes</answer><answer>No</answer>", "<answer>No", "<answer>\nYes\n", "<answer>Yes\n", "<answer></answer>Yes",
    "<think><answer>Yes</answer></think>No", "<answer><think>No</think>Yes</answer>",
    "Yes{'bbox_2d': [170, 330, 210, 360], 'label': 'foreign object/broken fragment'}",
    "Yes, [{'bbox_2d': [200, 190, 240, 230], 'label': 'copper protrusion defect'}]",
    "<answer>Yes. {'bbox_2d': [1, 2, 3, 4], 'label': 'scratch\u2019}</answer>",
    '<answer>```json\n[{"box_2d": [100, 200, 300, 400], "label": "crack"}, {"box_2d": [1, 2, 3, 4], "label": "hole"}]\n```</answer>',
    "No. The surface looks uniform, unlike [1, 2, 3, 4] in other samples.",
    "<answer>Yes, no doubt. {'bbox_2d': [1,1,5,5]}</answer>", "<answer>No, yes would be wrong.</answer>",
    "<answer>{'label': 'no solder', 'bbox_2d': [5, 5, 9, 9]}</answer>", "Yes [[1, 2, 3, 4], [5.5, 6, 7, 8.25]]",
    "Yes {'point': [1, 2, 3, 4], 'bbox_2d': [10, 10, 20, 20]}", "Yes\uff0c{'bbox_2d'\uff1a\uff3b1, 2, 3, 4\uff3d}",
    "Yes [1e8, 2, 3, 4] [1, 2, 3, 4]", "Yes [-1, -2, +3, 4.]", "Yes my_box: [1,2,3,4] the_bbox=[5,6,7,8] size: [1,1,1,1]",
    "Yes [1,2,3,4] " + "x" * 400 + "'label': 'far'", "'label': 'before' " + "y" * 400 + " Yes [1,2,3,4]",
    "Yes [1,2,3,4] 'label': 'a' [5,6,7,8] 'label': 'b'", "Yes {'label': 'a', 'bbox_2d': [1,2,3,4]}, {'label': 'b', 'bbox_2d': [5,6,7,8]}",
    "{'description': 'no defect'} Yes", "'label': 'no' no", "'anomaly_type': 'no', 'bbox_2d': [1,2,3,4]",
    "[" * 5000 + "1, 2, 3, 4" + "]" * 5000, "{" * 5000, "Yes " + "[" * 5000 + "1,2,3,4]",
    # the length caps: a close tag or an answer beyond them is never seen
    "<think>" + "x" * (2 * 65536) + "</think>Yes", "<answer>Yes " + "x" * 65536 + " [1,2,3,4]</answer>",
    "Yes " + "[1,2,3,4]" * 8000, "<think>" + "a" * 131060 + "</think>No",
]


@pytest.mark.parametrize("i", range(len(HAND)))
def test_hand_written_answers_unchanged(i):
    same(HAND[i])


def test_thousands_of_generated_answers_unchanged():
    rng = random.Random(11)
    for n in list(range(1, 80)) * 100:
        same(build(rng, n))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=6)), max_size=40))
def test_generated_answers_unchanged(parts):
    same("".join(parts))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12), st.integers(1, 400), st.lists(st.sampled_from(PIECES), max_size=6))
def test_repeated_patterns_unchanged(unit, times, tail):
    # the shape of hostile answers: one pattern many times, then something that might close it
    same("".join(unit) * times + "".join(tail))
