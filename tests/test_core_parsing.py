"""The answer parser on the forms real models write (protocol mmr-ad-v1)."""
import pytest

from mmrbench.parsing import parse_answer


def coords(parsed):
    return [b.coords for b in parsed.boxes]


def test_tagged_answer_with_think():
    p = parse_answer("<think>The cable has a cut at [1, 2, 3, 4].</think>"
                     "<answer>Yes. {'bbox_2d': [10, 20, 30, 40], 'label': 'cut'}</answer>")
    assert p.decision is True
    assert coords(p) == [(10, 20, 30, 40)]
    assert p.boxes[0].label == "cut"
    assert p.had_answer_tag


def test_think_coordinates_never_count():
    p = parse_answer("<think>maybe [5, 5, 50, 50] is odd</think><answer>Yes.</answer>")
    assert p.decision is True and p.boxes == []


def test_yes_brace_without_space():
    p = parse_answer("Yes{'bbox_2d': [170, 330, 210, 360], 'label': 'foreign object/broken fragment'}")
    assert p.decision is True
    assert coords(p) == [(170, 330, 210, 360)]
    assert p.boxes[0].label == "foreign object/broken fragment"


def test_yes_comma_list_of_dicts():
    p = parse_answer("Yes, [{'bbox_2d': [200, 190, 240, 230], 'label': 'copper protrusion defect'}]")
    assert coords(p) == [(200, 190, 240, 230)]
    assert p.boxes[0].label == "copper protrusion defect"


def test_curly_quote_closing_label():
    p = parse_answer("<answer>Yes. {'bbox_2d': [1, 2, 3, 4], 'label': 'scratch\u2019}</answer>")
    assert p.boxes[0].label == "scratch"


def test_json_in_markdown_fence_with_box_2d():
    p = parse_answer('<answer>```json\n[{"box_2d": [100, 200, 300, 400], "label": "crack"},'
                     ' {"box_2d": [1, 2, 3, 4], "label": "hole"}]\n```</answer>')
    assert p.decision is True  # no Yes/No word but boxes -> Yes
    assert coords(p) == [(100, 200, 300, 400), (1, 2, 3, 4)]
    assert [b.key for b in p.boxes] == ["box_2d", "box_2d"]
    assert [b.label for b in p.boxes] == ["crack", "hole"]


def test_no_with_trailing_text_has_no_boxes():
    p = parse_answer("No. The surface looks uniform, unlike [1, 2, 3, 4] in other samples.")
    assert p.decision is False and p.boxes == []


def test_no_inside_answer_tag():
    assert parse_answer("<think>fine</think><answer>No.</answer>").decision is False


def test_first_standalone_word_wins():
    assert parse_answer("<answer>Yes, no doubt. {'bbox_2d': [1,1,5,5]}</answer>").decision is True
    assert parse_answer("<answer>No, yes would be wrong.</answer>").decision is False


def test_words_inside_other_words_are_not_decisions():
    assert parse_answer("<answer>Nothing notable, yesterday's sample.</answer>").decision is None


def test_label_containing_no_is_not_a_decision():
    p = parse_answer("<answer>{'label': 'no solder', 'bbox_2d': [5, 5, 9, 9]}</answer>")
    assert p.decision is True
    assert p.boxes[0].label == "no solder"


def test_bare_number_lists():
    p = parse_answer("Yes [[1, 2, 3, 4], [5.5, 6, 7, 8.25]]")
    assert coords(p) == [(1, 2, 3, 4), (5.5, 6, 7, 8.25)]


def test_lists_under_other_keys_are_not_boxes():
    p = parse_answer("Yes {'point': [1, 2, 3, 4], 'bbox_2d': [10, 10, 20, 20]}")
    assert coords(p) == [(10, 10, 20, 20)]


def test_invalid_answers():
    for text in [None, "", "   ", "\x00\xff\xfe garbage \x07", "<think>unfinished reasoning with [1,2,3,4]",
                 "I cannot tell."]:
        p = parse_answer(text)
        assert p.decision is None and not p.valid and p.boxes == []


def test_unclosed_answer_tag_still_read():
    p = parse_answer("<answer>Yes. {'bbox_2d': [1, 2, 3, 4], 'label': 'dent'")
    assert p.decision is True and coords(p) == [(1, 2, 3, 4)]


def test_huge_garbage_is_fast_and_invalid():
    import time
    t = time.perf_counter()
    p = parse_answer("[" * 200_000 + "1," * 100_000)
    assert time.perf_counter() - t < 1.0
    assert p.decision is None


def test_fullwidth_punctuation():
    p = parse_answer("Yes\uff0c{'bbox_2d'\uff1a\uff3b1, 2, 3, 4\uff3d}")
    assert coords(p) == [(1, 2, 3, 4)]


def test_never_evaluates_code(tmp_path):
    marker = tmp_path / "pwned"
    text = f"Yes __import__('os').system('touch {marker}') {{'bbox_2d': [1, 2, 3, 4]}}"
    parse_answer(text)
    assert not marker.exists()


@pytest.mark.parametrize("word", ["YES", "yes", "Yes.", "yes!"])
def test_case_insensitive(word):
    assert parse_answer(f"<answer>{word}</answer>").decision is True


# --- cost and robustness on hostile answers (issue 11 item 15) ---------------------------------------

def _worst_cases():
    """The families of benchmarks/parsing_worst_case.py, so the benchmark and the tests stay one list."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "parsing_worst_case.py"
    spec = importlib.util.spec_from_file_location("parsing_worst_case", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


WORST = _worst_cases()


def _cpu(fn, *args):
    import time

    t = time.process_time()
    out = fn(*args)
    return time.process_time() - t, out


def test_unclosed_think_tags_are_linear():
    # was 8.6 s: '<think>.*?</think>' rescanned the rest of the reply from every unclosed tag
    spent, p = _cpu(parse_answer, "<think>" * 18724)
    assert spent < 0.5, f"{spent:.2f} s"
    assert p.decision is None and p.answer_text == " "


@pytest.mark.parametrize("case", sorted(WORST.CASES))
def test_worst_cases_at_one_megabyte(case):
    """Every worst case: the scorer's call on 1 MB is bounded by the protocol's read limit, and the parse
    itself, caps lifted, stays linear (300K characters well under a second; the slowest takes ~0.2 s)."""
    text = WORST.CASES[case](1_000_000)
    assert len(text) >= 999_000
    spent, p = _cpu(parse_answer, text)
    assert spent < 0.5, f"{case}: {spent:.2f} s"
    spent, _ = _cpu(WORST.uncapped(__import__("mmrbench.parsing", fromlist=["x"])), text[:300_000])
    assert spent < 1.5, f"{case} uncapped: {spent:.2f} s"


def test_only_the_protocol_prefix_is_read():
    from mmrbench.parsing import MAX_ANSWER_CHARS, MAX_RESPONSE_CHARS

    assert MAX_RESPONSE_CHARS == 2 * MAX_ANSWER_CHARS == 131072
    assert parse_answer("x" * MAX_RESPONSE_CHARS + "Yes").decision is None
    assert parse_answer("x" * MAX_ANSWER_CHARS + " Yes").decision is None  # the answer part is capped too
    assert parse_answer("x" * (MAX_ANSWER_CHARS - 4) + " Yes").decision is True
    assert parse_answer("<think>" + "x" * (MAX_RESPONSE_CHARS - 30) + "</think> Yes").decision is True
    assert parse_answer("<answer>" + "x" * MAX_ANSWER_CHARS + " Yes</answer>").decision is None
    assert parse_answer("<think>" + "x" * MAX_RESPONSE_CHARS + "</think>No").decision is None  # close tag unread


@pytest.mark.parametrize("text", [
    "[" * 1_000_000, "{" * 1_000_000, "(" * 1_000_000, "[" * 500_000 + "]" * 500_000,
    '{"a": ' * 200_000 + "1" + "}" * 200_000, "[{'bbox_2d': " * 50_000 + "[1, 2, 3, 4]" + "}]" * 50_000,
])
def test_deep_nesting_never_recurses(text):
    # the parser reads with flat patterns, never a recursive JSON/literal reader: no RecursionError
    p = parse_answer(text)
    assert p.boxes == [] or coords(p) == [(1, 2, 3, 4)]


def test_box_inside_deep_nesting_is_read():
    p = parse_answer("Yes " + "[" * 30_000 + "1, 2, 3, 4" + "]" * 30_000)
    assert p.decision is True and coords(p) == [(1, 2, 3, 4)]
