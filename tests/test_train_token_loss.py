"""The auxiliary per-token defect loss (``sft.token_loss_weight``): targets by hand, the query's tokens
found in a real processor batch, and an SFT run that logs it and moves it."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from mmrbench.data.schema import Box  # noqa: E402
from mmrbench.errors import ConfigError  # noqa: E402
from mmrbench.train.recipe import load_recipe  # noqa: E402
from mmrbench.train.token_loss import (QueryTokens, cell_targets, image_runs, place_directions,  # noqa: E402
                                       place_targets, position_loss, query_tokens)


def test_cell_targets_by_hand():
    # a 4x4 grid of 8-px cells over a 32-px image
    t = cell_targets((4, 4), (32, 32), [(8, 8, 16, 16)]).view(4, 4)
    assert t.sum() == 1 and t[1, 1] == 1  # [8, 16) is exactly cell 1: the right/bottom edge is exclusive
    t = cell_targets((4, 4), (32, 32), [(7, 7, 9, 9)]).view(4, 4)
    assert t.sum() == 4 and t[:2, :2].sum() == 4  # straddles the corner of four cells
    assert cell_targets((4, 4), (32, 32), [(0, 0, 32, 32)]).sum() == 16
    assert cell_targets((4, 4), (32, 32), []).sum() == 0
    # a non-square grid: 2 rows x 4 columns over 64 x 16 px; a box in the last column, bottom row
    t = cell_targets((2, 4), (64, 16), [(50, 9, 60, 15)]).view(2, 4)
    assert t.sum() == 1 and t[1, 3] == 1


def test_image_runs_and_query_tokens():
    img = 9
    ids = torch.tensor([[1, img, img, img, img, 2, img, img, img, img, 3],
                        [1, 5, img, img, img, img, 2, 0, 0, 0, 0]])
    runs = image_runs(ids[0], img)
    assert [r.tolist() for r in runs] == [[1, 2, 3, 4], [6, 7, 8, 9]]
    grid = torch.tensor([[1, 4, 4], [1, 4, 4], [1, 4, 4]])  # three images of 2x2 merged tokens (merge 2)

    def ex(boxes):
        return SimpleNamespace(image_size=(64, 64), sent_size=(32, 32), sample=SimpleNamespace(boxes=boxes))

    # row 0: reference then query (box in the query's top-right quarter, original frame); row 1: one image
    q = query_tokens(ids, grid, [ex([Box(40, 0, 64, 30, "hole")]), ex([])], img, merge=2)
    assert [x.row for x in q] == [0, 1]
    assert q[0].positions.tolist() == [6, 7, 8, 9] and q[0].targets.tolist() == [0, 1, 0, 0]
    assert q[1].positions.tolist() == [2, 3, 4, 5] and q[1].targets.tolist() == [0, 0, 0, 0]
    assert q[0].places.tolist() == [[-1, -1], [-1, 1], [1, -1], [1, 1]]  # (row, column) of a 2x2 grid
    with pytest.raises(ConfigError, match="query image of row 0"):
        query_tokens(ids, torch.tensor([[1, 4, 6], [1, 4, 4], [1, 4, 4]]), [ex([]), ex([])], img, merge=1)


def _tiny_sft_log(tmp_path, **weights) -> list[dict]:
    """Twelve SFT steps of the tiny Qwen2.5-VL on four toy images (the same batch every step), with the
    given auxiliary-loss weights; returns the run's log."""
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from mmrbench.testing.tiny_qwen import tiny_qwen25vl_dir
    from mmrbench.train.sft import run_sft
    from train_toydata import write_toy_manifest

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tiny = tiny_qwen25vl_dir(tmp_path / "cache")
        toy = write_toy_manifest(tmp_path / "toy", n=4)
        r = load_recipe(None, "sft", {"model.base": str(tiny), "data.manifest": str(toy), "sft.max_steps": 12,
                                      "sft.batch_size": 4, "sft.lr": 2e-2, "sft.warmup_ratio": 0.0,
                                      **{f"sft.{k}": v for k, v in weights.items()}})
        run_sft(r, tmp_path / "out", progress=False)
    finally:
        torch.set_num_threads(n)
    return [json.loads(line) for line in (tmp_path / "out" / "sft_log.jsonl").read_text().splitlines()]


def test_sft_with_token_loss_logs_and_lowers_it(tmp_path):
    log = _tiny_sft_log(tmp_path, token_loss_weight=5.0)
    losses = [rec["token_loss"] for rec in log]
    assert len(losses) == 12 and all(v > 0 for v in losses)
    assert all("position_loss" not in rec for rec in log)  # off: neither computed nor logged
    # the same four images every step: the balanced loss must come down from chance (ln 2 = 0.69)
    assert min(losses[-3:]) < 0.9 * losses[0]
    with pytest.raises(ConfigError, match="token_loss_weight"):
        load_recipe(None, "sft", {"sft.token_loss_weight": -1.0})


def test_place_targets_and_directions_by_hand():
    # 3 rows x 5 columns: rows -1, 0, 1; columns -1, -0.5, 0, 0.5, 1 (row-major)
    p = place_targets((3, 5))
    assert p[:5].tolist() == [[-1, -1], [-1, -0.5], [-1, 0], [-1, 0.5], [-1, 1]]
    assert p[7].tolist() == [0, 0] and p[14].tolist() == [1, 1]
    assert place_targets((1, 2)).tolist() == [[0, -1], [0, 1]]  # a single row sits at 0
    d = place_directions(16)
    assert d.shape == (16, 2) and torch.allclose(d.T @ d, torch.eye(2), atol=1e-6)
    assert torch.equal(d, place_directions(16))  # fixed: the same on every run and rank


def test_position_loss_by_hand():
    hidden, n = 8, 4
    d = place_directions(hidden)
    places = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    exact = places @ d.T  # states whose projections are exactly the places
    off = exact + 0.5 * d[:, 1]  # every column projection 0.5 too high: MSE = (0 + 0.25) / 2
    model = SimpleNamespace()  # the last layer is read as it is (already normed): no norm is applied

    def states(h):
        return [torch.zeros(1, n, hidden), h.unsqueeze(0)]  # embeddings, then one decoder layer

    q = [QueryTokens(0, torch.arange(n), torch.zeros(n), places)]
    assert position_loss(model, states(exact), 0, q).item() == pytest.approx(0.0, abs=1e-6)
    assert position_loss(model, states(off), 0, q).item() == pytest.approx(0.125, abs=1e-6)
    assert position_loss(model, states(off), 0, []).item() == 0.0
    with pytest.raises(ConfigError, match="outside 1..1"):
        position_loss(model, states(off), 2, q)


def test_sft_with_position_loss_logs_and_lowers_it(tmp_path):
    log = _tiny_sft_log(tmp_path, position_loss_weight=5.0, token_loss_weight=1.0)
    pos = [rec["position_loss"] for rec in log]
    assert len(pos) == 12 and all(rec["token_loss"] > 0 for rec in log)  # both logged, side by side
    assert min(pos[-3:]) < 0.8 * pos[0]
    with pytest.raises(ConfigError, match="position_loss_weight"):
        load_recipe(None, "sft", {"sft.position_loss_weight": -1.0})


class _Chars:
    """One token per character (its code point), as a byte-level tokenizer spells digits."""

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_box_digits_by_hand():
    from mmrbench.train.token_loss import box_digits

    text = "<think>about [3, 4]</think><answer>Yes. {'bbox_2d': [12, 5, 30, 9], 'label': 'cut'}</answer>"
    ids = [ord(c) for c in text]
    everything = box_digits(_Chars(), ids)
    assert [(o, k, v) for _, o, k, v in everything][:2] == [(0, 0, 3), (0, 1, 4)]  # the reasoning's list counts
    got = box_digits(_Chars(), ids, after="<answer>")  # only the answer's boxes
    first = text.index("[12") + 1
    assert [t for t, *_ in got] == [first, first + 1, first + 4, first + 7, first + 8, first + 11]
    assert [(o, k, v) for _, o, k, v in got] == [(0, 0, 12), (0, 0, 12), (0, 1, 5), (0, 2, 30), (0, 2, 30), (0, 3, 9)]
    assert box_digits(_Chars(), [ord(c) for c in "<answer>No.</answer>"], after="<answer>") == []
    assert box_digits(_Chars(), ids, after="<nothing>") == []


def test_answer_looks_and_look_loss_by_hand():
    import math

    from mmrbench.train.token_loss import answer_looks, look_loss

    img = 9
    answer = "<answer>Yes. {'bbox_2d': [0, 0, 5, 5], 'label': 'a'}, {'bbox_2d': [20, 20, 30, 30], 'label': 'b'}</answer>"
    prompt = [1, img, img, img, img, 2, img, img, img, img, 3]  # reference, then the query: 2 x 2 tokens
    ids = torch.tensor([prompt + [ord(c) for c in answer]])
    labels = ids.clone()
    labels[0, :len(prompt)] = -100
    ex = SimpleNamespace(image_size=(32, 32), sent_size=(32, 32),
                         sample=SimpleNamespace(boxes=[Box(0, 0, 5, 5, "a"), Box(20, 20, 30, 30, "b")]))
    q = query_tokens(ids, torch.tensor([[1, 4, 4], [1, 4, 4]]), [ex], img, merge=2)
    looks = answer_looks(ids, labels, _Chars(), q)
    first, second = answer.index("[0") + 1, answer.index("[20") + 1
    # the position *before* each digit (its logits predict it) looks at its own box's query token:
    # box a is the top-left cell (token 6), box b the bottom-right (token 9); the reference is never a target
    assert [(r, p, k.tolist()) for r, p, k in looks][:2] == [(0, len(prompt) + first - 1, [6]), (0, len(prompt) + first + 2, [6])]
    assert looks[4][1] == len(prompt) + second - 1 and looks[4][2].tolist() == [9]
    assert len(looks) == 4 + 8  # four one-digit numbers, four two-digit ones
    n = ids.shape[1]
    exact = torch.zeros(1, n, n)
    for r, p, k in looks:
        exact[r, p, k] = 1.0
    assert float(look_loss(exact, looks)) < 1e-5
    uniform = torch.full((1, n, n), 1.0 / n)
    assert float(look_loss(uniform, looks)) == pytest.approx(-math.log(1.0 / n + 1e-6), rel=1e-6)
    assert float(look_loss(uniform, [])) == 0.0
    normal = SimpleNamespace(image_size=(32, 32), sent_size=(32, 32), sample=SimpleNamespace(boxes=[]))
    assert answer_looks(ids, labels, _Chars(), query_tokens(ids, torch.tensor([[1, 4, 4]] * 2), [normal], img, 2)) == []


def test_sft_with_attention_loss_logs_and_lowers_it(tmp_path):
    log = _tiny_sft_log(tmp_path, attention_loss_weight=5.0, attention_loss_layer=1)
    att = [rec["attention_loss"] for rec in log]
    assert len(att) == 12 and all(v > 0 for v in att)
    assert min(att[-3:]) < 0.8 * att[0]  # the same batch every step: head 0 learns to look at the defects
    with pytest.raises(ConfigError, match="attention_loss_layer"):
        load_recipe(None, "sft", {"sft.attention_loss_layer": -1})

