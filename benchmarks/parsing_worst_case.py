"""Worst-case answers for the parser: time per case, and how the time grows with the length.

Issue 11 item 15: ``'<think>' * 18724`` took 8.6 s, so one hostile submission of a thousand such lines cost
hours per leaderboard rebuild. Each case below is a family of answers built to make one path of
:mod:`mmrbench.parsing` work hard (unclosed tags, runs of ``[``/``{``/quotes, Yes/No words, label strings,
long digit runs, deep brackets, thousands of boxes). For every case it prints:

* ``capped``: :func:`parse_answer` as the scorer calls it, on the largest size (the protocol reads at most
  ``MAX_RESPONSE_CHARS`` characters, so this is the real per-answer cost of a hostile line);
* ``uncapped`` at each size: the same parse with the length caps lifted, so the growth of the code itself shows;
* ``ratio``: uncapped time(largest) / time(smallest); linear is the size ratio (10 for 100K -> 1M).

    python benchmarks/parsing_worst_case.py                 # 100K, 300K and 1M characters
    python benchmarks/parsing_worst_case.py --sizes 13107,131072 --impl tests/parsing_reference_v1.py
                                                            # the old parser (quadratic), up to its read limit
    python benchmarks/parsing_worst_case.py --only bare_boxes --search 400
                                                            # also hunt random repeated patterns

Sizes are characters; every case is ASCII except the curly-quote ones (3 bytes per character in UTF-8).
Times are the best of ``--repeat`` runs of process time (CPU), so a busy machine skews them less.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from types import ModuleType
from typing import Callable


def _fill(unit: str, n: int, head: str = "", tail: str = "") -> str:
    body = n - len(head) - len(tail)
    return head + (unit * (body // len(unit) + 1))[:max(body, 0)] + tail


# name -> builder(n) returning a text of about n characters
CASES: dict[str, Callable[[int], str]] = {
    "think_unclosed": lambda n: _fill("<think>", n),
    "think_unclosed_mixed_case": lambda n: _fill("<ThInK>", n),
    "think_close_only": lambda n: _fill("</think>", n),
    "think_pairs": lambda n: _fill("<think>x</think>", n, tail="Yes"),
    "think_opens_then_close": lambda n: _fill("<think>", n, tail="</think>Yes"),
    "answer_unclosed": lambda n: _fill("<answer>", n),
    "answer_close_only": lambda n: _fill("</answer>", n),
    "lbracket": lambda n: _fill("[", n),
    "lbrace": lambda n: _fill("{", n),
    "deep_brackets": lambda n: "[" * (n // 2) + "]" * (n - n // 2),
    "deep_box": lambda n: "Yes " + "[" * (n // 2 - 10) + "1, 2, 3, 4" + "]" * (n // 2 - 10),
    "deep_dicts": lambda n: "{'bbox_2d': " * (n // 13) + "[1, 2, 3, 4]" + "}" * (n // 13),
    "quotes": lambda n: _fill("'", n),
    "double_quotes": lambda n: _fill('"', n),
    "curly_quotes": lambda n: _fill("\u2019\u201c", n),
    "backticks_fences": lambda n: _fill("```", n),
    "fences_json": lambda n: _fill("```json", n),
    "no_words": lambda n: _fill("no ", n),
    "yes_no_glued": lambda n: _fill("yesno", n),
    "label_no_spans": lambda n: _fill("'label': 'no' ", n),
    "label_open_quote": lambda n: _fill("label:'", n),
    "label_long_strings": lambda n: _fill("'label': '" + "x" * 199 + " ", n),
    "label_spaces": lambda n: "label" + " " * (n - 5),
    "anomaly_type_runs": lambda n: _fill("anomaly_type", n),
    "digit_run": lambda n: "[" + "1" * (n - 1),
    "box_then_digit_run": lambda n: "[1, 2, 3, " + "1" * (n - 10),
    "space_run_in_box": lambda n: "Yes [1," + " " * (n - 7),
    "many_list_starts": lambda n: _fill("[1, ", n),
    "three_number_lists": lambda n: _fill("[1, 2, 3] ", n),
    "bare_boxes": lambda n: _fill("[1,2,3,4]", n, head="Yes "),
    "boxes_with_labels": lambda n: _fill("{'bbox_2d': [1, 2, 3, 4], 'label': 'scratch'}, ", n, head="Yes. "),
    "labels_before_boxes": lambda n: _fill("{'label': 'x', 'bbox_2d': [1, 2, 3, 4]} ", n, head="Yes "),
    "boxes_under_other_keys": lambda n: _fill("'point': [1, 2, 3, 4], ", n, head="Yes "),
    "exponent_boxes": lambda n: _fill("[1e5,2E-3,3.5e+2,.4]", n, head="Yes "),
    "fullwidth": lambda n: _fill("\uff3b1\uff0c2\uff0c3\uff0c4\uff3d\uff1a", n, head="Yes "),
}


def load_impl(path: str | None) -> ModuleType:
    """The parser to time: the package's, or another file (e.g. the frozen old one in tests/)."""
    if path is None:
        import mmrbench.parsing as mod

        return mod
    spec = importlib.util.spec_from_file_location("parsing_under_test", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    return mod


def best_time(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def uncapped(mod: ModuleType) -> Callable[[str], object]:
    """parse_answer with the length caps lifted (the caps are module globals read at call time)."""
    def run(text: str) -> object:
        saved = {k: getattr(mod, k) for k in ("MAX_ANSWER_CHARS", "MAX_RESPONSE_CHARS") if hasattr(mod, k)}
        try:
            for k in saved:
                setattr(mod, k, 10 ** 12)
            return mod.parse_answer(text)
        finally:
            for k, v in saved.items():
                setattr(mod, k, v)
    return run


# pieces for --search: tags, brackets, quotes, words and numbers the patterns react to
PIECES = ["<think>", "</think>", "<answer>", "</answer>", "[", "]", "{", "}", "'", '"', "\u2019", "\u201c", "`",
          "```json", " ", "\n", "1", "12", ".", ",", ":", "=", "-", "e", "yes", "no", "Yes", "label", "type",
          "anomaly_type", "description", "bbox_2d", "box", "x", "_", "\uff3b", "\uff0c", "<", ">", "/"]


def search(mod: ModuleType, tries: int, seed: int, small: int = 25_000, large: int = 100_000) -> None:
    """Random hunt for super-linear inputs: a random head and a random unit repeated to two lengths; the
    growth of the slowest is printed (linear: large/small = 4; small timings are noisy, so read the ms)."""
    import random

    rng = random.Random(seed)
    free = uncapped(mod)
    found = []
    for _ in range(tries):
        unit = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 8)))
        head = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 4)))
        a = best_time(lambda: free(head + unit * (small // len(unit))), 1)
        b = best_time(lambda: free(head + unit * (large // len(unit))), 1)
        found.append((b, b / max(a, 1e-4), head, unit))
    print(f"search: {tries} random patterns, {small // 1000}K -> {large // 1000}K characters (linear growth "
          f"{large / small:.0f}); the slowest:")
    for b, growth, head, unit in sorted(found, reverse=True)[:5]:
        print(f"  {b * 1e3:8.1f} ms at {large // 1000}K  growth {growth:5.1f}  head={head!r} unit={unit!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,300000,1000000", help="comma-separated lengths in characters")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--impl", default=None, help="a parsing.py file to time instead of mmrbench.parsing")
    ap.add_argument("--only", default=None, help="comma-separated case names")
    ap.add_argument("--search", type=int, default=0, metavar="N",
                    help="also try N random repeated patterns and print the slowest")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    mod = load_impl(args.impl)
    free = uncapped(mod)
    names = [c for c in CASES if not args.only or c in args.only.split(",")]
    cols = "".join(f"{f'{s // 1000}K ms':>12}" for s in sizes)
    print(f"parser: {mod.__file__}")
    print(f"{'case':28}{'capped ms':>12}{cols}{'ratio':>8}")
    worst = (0.0, "")
    for name in names:
        texts = [CASES[name](s) for s in sizes]
        capped = best_time(lambda: mod.parse_answer(texts[-1]), args.repeat)
        times = [best_time(lambda t=t: free(t), args.repeat) for t in texts]
        ratio = times[-1] / max(times[0], 1e-6)
        worst = max(worst, (times[-1], name))
        row = "".join(f"{t * 1e3:12.1f}" for t in times)
        print(f"{name:28}{capped * 1e3:12.2f}{row}{ratio:8.1f}", flush=True)
    print(f"slowest uncapped case at {sizes[-1]} characters: {worst[1]} {worst[0] * 1e3:.1f} ms "
          f"(size ratio {sizes[-1] / sizes[0]:.0f} = linear)")
    if args.search:
        search(mod, args.search, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
