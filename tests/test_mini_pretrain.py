"""Grounding pretraining of the mini base model (mmrbench.testing.mini_pretrain): data, text, training."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mmrbench.testing.mini_pretrain import draw_background, draw_mark, grounding_example, grounding_text


def test_a_mark_box_is_the_tight_box_of_the_pixels_it_changed():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        img = draw_background(rng, 64)
        before = img.copy()
        occupied = np.zeros((64, 64), bool)
        box = draw_mark(img, rng, occupied)
        assert box is not None
        ys, xs = np.nonzero((img != before).any(axis=2))
        # exclusive ends, as pixel boxes are written: a 1-pixel mark at x=5 is [5, ..., 6, ...]
        assert box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert occupied[ys, xs].all()  # the next mark cannot land on it


def test_examples_are_deterministic_with_zero_one_or_two_marks():
    (img_a, boxes_a), (img_b, boxes_b) = (grounding_example(np.random.default_rng(3), 64) for _ in range(2))
    assert np.array_equal(img_a, img_b) and boxes_a == boxes_b
    rng = np.random.default_rng(0)
    counts = [0, 0, 0]
    for _ in range(400):
        img, boxes = grounding_example(rng, 64)
        assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
        counts[len(boxes)] += 1
    # drawn 40 / 45 / 15 % (160 / 180 / 60 of 400; a second mark that finds no room is left out)
    assert abs(counts[0] - 160) < 35 and abs(counts[1] - 180) < 40 and 25 < counts[2] < 85


def test_grounding_text_is_read_back_by_the_scorers_parser():
    from mmrbench.parsing import find_boxes

    assert grounding_text([]) == "None."
    assert find_boxes("None.") == []
    boxes = [(3, 4, 10, 12), (40, 0, 64, 9)]
    text = grounding_text(boxes)
    assert text == ("{'bbox_2d': [3, 4, 10, 12], 'label': 'mark'}, {'bbox_2d': [40, 0, 64, 9], 'label': 'mark'}")
    read = find_boxes(text)
    assert [b.coords for b in read] == [tuple(float(v) for v in b) for b in boxes]
    assert [b.label for b in read] == ["mark", "mark"] and {b.key for b in read} == {"bbox_2d"}


def test_grounding_scores_by_hand():
    from mmrbench.testing.mini_pretrain import score_grounding

    truths = [[], [(0, 0, 10, 10)], [(0, 0, 10, 10), (20, 20, 30, 30)], [(0, 0, 10, 10)]]
    answers = [
        "None.",                                                    # right: nothing there, nothing written
        "{'bbox_2d': [0, 0, 10, 20], 'label': 'mark'}",             # IoU 100/200 = 0.5: found at 0.1 and 0.5
        "{'bbox_2d': [20, 20, 30, 60], 'label': 'mark'}",           # IoU 100/400 = 0.25: one of two, at 0.1 only
        "None.",                                                    # a mark missed
    ]
    got = score_grounding(answers, truths)
    assert got["n"] == 4 and got["presence"] == 3 / 4
    assert got["recall_iou01"] == 2 / 4 and got["recall_iou05"] == 1 / 4
    assert got["samples"] == answers[:3]
    assert score_grounding(["{'bbox_2d': [1, 1, 2, 2], 'label': 'mark'}"], [[]])["presence"] == 0.0  # a box on nothing


def test_pretraining_trains_the_language_model_only_and_lowers_the_loss(tiny_qwen_dir, one_torch_thread):
    torch = pytest.importorskip("torch")
    from mmrbench.testing.mini_pretrain import PretrainConfig, grounding_eval, run_pretraining
    from mmrbench.testing.tiny_qwen import load_tiny

    model, proc = load_tiny(tiny_qwen_dir)
    vis = {n: p.detach().clone() for n, p in model.named_parameters() if "visual" in n}
    lm = {n: p.detach().clone() for n, p in model.named_parameters() if "visual" not in n}
    model.lm_head.weight.requires_grad_(False)  # a flag it finds is the flag it hands back
    plain = PretrainConfig(steps=24, batch=4, lr=3e-3, curriculum=0.0, token_aux=0.0)
    losses = run_pretraining(model, proc, plain, side=32, seed=0)
    assert len(losses) == 24 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.5  # the template alone is learnt in a few steps
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in vis.items())  # the vision tower stays as drawn
    assert sum(not torch.equal(after[n], v) for n, v in lm.items()) > len(lm) // 2
    assert not model.lm_head.weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "lm_head.weight")
    check = grounding_eval(model, proc, side=32, n=6, batch=3, max_new_tokens=12)
    assert check["n"] == 6 and len(check["samples"]) == 3
    assert all(0.0 <= check[k] <= 1.0 for k in ("presence", "recall_iou01", "recall_iou05"))


def test_pretraining_adds_its_auxiliary_losses_to_the_first_step(tiny_qwen_dir, one_torch_thread):
    import copy

    from mmrbench.testing.mini_pretrain import PretrainConfig, run_pretraining
    from mmrbench.testing.tiny_qwen import load_tiny

    model, proc = load_tiny(tiny_qwen_dir)

    def first_loss(**kw):  # one step from the same weights and the same drawn batch
        cfg = PretrainConfig(steps=1, batch=4, curriculum=0.0, **{"token_aux": 0.0, **kw})
        return run_pretraining(copy.deepcopy(model), proc, cfg, side=32, seed=3)[0]

    plain = first_loss()
    with_coord = first_loss(coord_aux=1.0)  # coordinate targets from the batch's own answer tokens
    with_tokens = first_loss(token_aux=1.0, token_layer=1)
    with_attention = first_loss(attn_aux=1.0, attn_layer=1)  # the eager attention's weights, of layer 1
    coord_below = first_loss(coord_aux=1.0, coord_layer=1)  # layer 1's states through the final norm
    with_value = first_loss(attn_aux=1.0, attn_layer=1, value_aux=1.0)  # head 0's output, read by a hook
    assert np.isfinite([plain, with_coord, with_tokens, with_attention, coord_below, with_value]).all()
    assert coord_below > plain and coord_below != with_coord and with_value > with_attention
    # squared errors, BCE and -log of an attention mass below 1, of a random model, are > 0
    assert with_coord > plain and with_tokens > plain and with_attention > plain
    # the run switches to eager attention and hooks head 0's output, then hands the model back as it was
    trained = copy.deepcopy(model)
    run_pretraining(trained, proc, PretrainConfig(steps=1, batch=2, curriculum=0.0, attn_aux=1.0, attn_layer=1,
                                                  value_aux=1.0), side=32, seed=3)
    assert trained.config._attn_implementation == model.config._attn_implementation == "sdpa"
    assert not any(layer.self_attn.o_proj._forward_pre_hooks for layer in trained.get_decoder().layers)
    with pytest.raises(ValueError, match="attn_layer=5"):
        first_loss(attn_aux=1.0, attn_layer=5)
    with pytest.raises(ValueError, match="coord_layer=-1"):
        first_loss(coord_aux=1.0, coord_layer=-1)


def test_build_model_pretrains_into_its_own_folder(synth_small, tmp_path, one_torch_thread):
    pytest.importorskip("transformers")
    from mmrbench.data.manifest import read_manifest, write_manifest
    from mmrbench.testing.mini_pretrain import PretrainConfig
    from mmrbench.testing.mini_qwen import build_model

    samples = [s for s in read_manifest(synth_small).samples if s.split == "test"][:8]
    train = tmp_path / "data" / "train.jsonl"
    train.parent.mkdir()
    for sub in ("images", "masks"):  # the manifest's relative paths
        (train.parent / sub).symlink_to(synth_small.parent / sub)
    write_manifest(train, samples)
    plain = build_model(tmp_path, 0, 32, 32, 1, train)
    pre = build_model(tmp_path, 0, 32, 32, 1, train, pretrain=PretrainConfig(steps=2, batch=2))
    assert plain != pre and pre.name.endswith("-" + PretrainConfig(steps=2, batch=2).tag()) and not (plain / "pretrain.json").exists()
    report = json.loads((pre / "pretrain.json").read_text())
    assert report["steps"] == 2 and len(report["loss"]) == 2
    assert set(report["grounding_eval"]) >= {"presence", "recall_iou01", "recall_iou05"}
    assert build_model(tmp_path, 0, 32, 32, 1, train, pretrain=PretrainConfig(steps=2, batch=2)) == pre  # cached
    # every setting is part of the folder's name; the defaults keep the names of earlier bases
    assert PretrainConfig(2, batch=2, token_layer=1).tag() == PretrainConfig(2, batch=2).tag() + "L1"
    assert PretrainConfig(2, batch=2, coord_aux=0.5).tag() == PretrainConfig(2, batch=2).tag() + "x0.5"
    assert PretrainConfig(2, batch=2, attn_aux=1.0, attn_layer=3).tag() == PretrainConfig(2, batch=2).tag() + "t1@3"
    assert PretrainConfig(2, batch=2, coord_aux=1.0, coord_layer=3).tag() == PretrainConfig(2, batch=2).tag() + "x1@3"
    assert PretrainConfig(2, batch=2, value_aux=0.5).tag() == PretrainConfig(2, batch=2).tag() + "v0.5"
    # the rotary base is part of the model: its own folder, and the language model rotates with it
    import torch
    import transformers

    fast = build_model(tmp_path, 0, 32, 32, 1, train, rope_theta=20.0)
    assert fast == plain.with_name(plain.name + "-rt20")
    lm = transformers.AutoModelForImageTextToText.from_pretrained(str(fast)).model.language_model
    head_dim = lm.config.hidden_size // lm.config.num_attention_heads
    want = 20.0 ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    assert torch.allclose(lm.rotary_emb.inv_freq, want)



def test_staged_pretraining_equals_continuing_a_saved_base(synth_small, tmp_path, one_torch_thread):
    """Two stages in one build_model call give the weights of the two-command path the measurements used
    (pretrain and save, then load and pretrain again with a fresh optimizer: mini_pretrain_check --init),
    in a folder that names both stages."""
    pytest.importorskip("transformers")
    import torch
    import transformers

    from mmrbench.adapters.hf_inputs import load_processor
    from mmrbench.data.manifest import read_manifest, write_manifest
    from mmrbench.testing.mini_pretrain import PretrainConfig, run_pretraining
    from mmrbench.testing.mini_qwen import build_model

    train = tmp_path / "data" / "train.jsonl"
    train.parent.mkdir()
    for sub in ("images", "masks"):
        (train.parent / sub).symlink_to(synth_small.parent / sub)
    write_manifest(train, [s for s in read_manifest(synth_small).samples if s.split == "test"][:8])
    first, second = PretrainConfig(steps=2, batch=2), PretrainConfig(steps=3, batch=2, curriculum=0.0)
    staged = build_model(tmp_path, 0, 32, 32, 1, train, pretrain=[first, second], rope_theta=20.0)
    assert staged.name.endswith(f"-rt20-{first.tag()}+{second.tag()}")
    report = json.loads((staged / "pretrain.json").read_text())
    assert report["stages"] == [first.tag(), second.tag()] and len(report["loss"]) == report["steps"] == 5

    one = build_model(tmp_path, 0, 32, 32, 1, train, pretrain=first, rope_theta=20.0)
    model = transformers.AutoModelForImageTextToText.from_pretrained(str(one))
    run_pretraining(model, load_processor(one), second, side=32, seed=0)
    want = model.state_dict()
    got = transformers.AutoModelForImageTextToText.from_pretrained(str(staged)).state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def _aux_case(states_for, layer=0):
    """A batch of one image, 2 x 2 merged tokens at 8 x 8 px, the mark in the top-left cell; the states
    sit at ``layer`` of two decoder layers (0 = the last), every other layer's are NaN."""
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from mmrbench.testing.mini_pretrain_losses import token_aux_loss

    model = SimpleNamespace(config=SimpleNamespace(image_token_id=9, vision_config=SimpleNamespace(spatial_merge_size=2)),
                            get_decoder=lambda: SimpleNamespace(norm=lambda h: h))  # an identity final norm
    ids = torch.tensor([[1, 9, 9, 9, 9, 2]])
    enc = {"input_ids": ids, "image_grid_thw": torch.tensor([[1, 4, 4]])}
    read = torch.zeros(1, 6, 128)
    read[0, 1:5] = states_for(torch)
    hidden_states = [torch.full((1, 6, 128), float("nan")) for _ in range(3)]  # embeddings, layer 1, layer 2
    hidden_states[layer or 2] = read
    return float(token_aux_loss(model, tuple(hidden_states), enc, [[(0, 0, 4, 4)]], side=8, layer=layer))


def test_token_aux_loss_by_hand():
    import math

    # all-zero states: every mark logit 0 (BCE log 2 for both classes) and every place read as 0 against
    # rows (-1, -1, 1, 1) and columns (-1, 1, -1, 1): squared error 1 each
    assert _aux_case(lambda torch: torch.zeros(4, 128)) == pytest.approx(math.log(2) + 1.0, abs=1e-6)

    def exact(torch):
        from mmrbench.train.token_loss import place_directions

        mark_dir = place_directions(128, seed=1)[:, 0]
        places = place_directions(128)
        target = torch.tensor([1.0, 0.0, 0.0, 0.0])
        where = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
        # solve for states whose three readings are exactly (±30, row, column)
        dirs = torch.stack([mark_dir, places[:, 0], places[:, 1]], 1)  # (128, 3)
        want = torch.cat([(30 * (2 * target - 1))[:, None], where], 1)  # (4, 3)
        return want @ torch.linalg.pinv(dirs)

    assert _aux_case(exact) < 1e-6
    # read at a middle layer (PretrainConfig.token_layer): the same values, and no other layer is read
    assert _aux_case(lambda torch: torch.zeros(4, 128), layer=1) == pytest.approx(math.log(2) + 1.0, abs=1e-6)
    assert _aux_case(exact, layer=1) < 1e-6


class _CharTokenizer:
    """One token per character (its code point): digits are single tokens, as in Qwen2.5's tokenizer."""

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def _ids(text):
    return [ord(c) for c in text]


def test_coordinate_targets_by_hand():
    from mmrbench.testing.mini_pretrain import grounding_text
    from mmrbench.testing.mini_pretrain_losses import coordinate_targets

    answer = grounding_text([(8, 24, 15, 31)])  # "{'bbox_2d': [8, 24, 15, 31], 'label': 'mark'}"
    t = coordinate_targets(_CharTokenizer(), _ids(answer), side=32, cells=4)  # cells of 8 px, centres at 4, 12, 20, 28
    first = answer.index("[") + 1
    assert t["index"] == [first, first + 3, first + 4, first + 7, first + 8, first + 11, first + 12]  # the 2 of bbox_2d is not read
    assert t["axis"] == [1, 0, 0, 1, 1, 0, 0]  # x1, y1 (2 digits), x2 (2), y2 (2)
    # pixel v -> (v / 8 - 0.5) / 3 * 2 - 1: 8 -> -2/3, 24 -> 2/3, 15 -> -1/12, 31 -> 5/4
    assert t["value"] == pytest.approx([-2 / 3, 2 / 3, 2 / 3, -1 / 12, -1 / 12, 5 / 4, 5 / 4])
    assert coordinate_targets(_CharTokenizer(), _ids("None."), side=32, cells=4)["index"] == []
    two = coordinate_targets(_CharTokenizer(), _ids(grounding_text([(0, 0, 4, 4), (9, 9, 12, 12)])), side=32, cells=4)
    assert two["axis"] == [1, 0, 1, 0, 1, 0, 1, 1, 0, 0]  # the second box starts again at x1: 9, 9, 12, 12
    assert two["box"] == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1] and t["box"] == [0] * 7


def test_coordinate_targets_follow_tokens_that_spell_several_characters():
    from mmrbench.testing.mini_pretrain_losses import coordinate_targets

    pieces = ["{'bbox_2d': [", "10", "7, ", "4", "5, 2", "3, 61", "], 'label': 'mark'}"]

    class Pieces:
        def decode(self, ids):
            return "".join(pieces[i] for i in ids)

    t = coordinate_targets(Pieces(), list(range(len(pieces))), side=128, cells=16)
    # 107 is spelt by tokens 1-2, 45 by 3-4, 23 by 4-5, 61 by 5: a token shared by two numbers counts for each
    assert t["index"] == [1, 2, 3, 4, 4, 5, 5]
    assert t["axis"] == [1, 1, 0, 0, 1, 1, 0]
    # (v / 8 - 0.5) / 15 * 2 - 1: 107 -> 0.71667, 45 -> -0.31667, 23 -> -0.68333, 61 -> -0.05
    assert t["value"] == pytest.approx([0.7166667, 0.7166667, -0.3166667, -0.3166667, -0.6833333, -0.6833333, -0.05], abs=1e-6)


def test_coordinate_loss_by_hand():
    torch = pytest.importorskip("torch")
    from mmrbench.testing.mini_pretrain import grounding_text
    from mmrbench.testing.mini_pretrain_losses import coordinate_loss, coordinate_targets
    from mmrbench.train.token_loss import place_directions

    answer = grounding_text([(8, 24, 15, 31)])
    t = coordinate_targets(_CharTokenizer(), _ids(answer), side=32, cells=4)
    n_prompt = 5
    zeros = torch.zeros(1, n_prompt + len(answer), 16)
    expected = sum(v * v for v in t["value"]) / len(t["value"])  # every reading 0
    assert float(coordinate_loss(zeros, n_prompt, [t])) == pytest.approx(expected, rel=1e-6)
    exact = zeros.clone()
    dirs = place_directions(16)
    for i, a, v in zip(t["index"], t["axis"], t["value"], strict=True):
        exact[0, n_prompt + i - 1] += v * dirs[:, a]  # the state *before* the digit holds its number
    assert float(coordinate_loss(exact, n_prompt, [t])) < 1e-10
    shifted = zeros.clone()
    shifted[0, n_prompt + t["index"][0]] += 5 * dirs[:, 1]  # the digit's own state is not read
    assert float(coordinate_loss(shifted, n_prompt, [t])) == pytest.approx(expected, rel=1e-6)
    assert float(coordinate_loss(zeros, n_prompt, [coordinate_targets(_CharTokenizer(), _ids("None."), 32, 4)])) == 0.0


def test_attention_loss_by_hand():
    """One row: prompt of 6 tokens (image tokens at 1-4, a 2 x 2 grid of 8 px cells), then the answer."""
    import math

    torch = pytest.importorskip("torch")
    from mmrbench.testing.mini_pretrain import grounding_text
    from mmrbench.testing.mini_pretrain_losses import attention_loss, coordinate_targets

    boxes = [(9, 1, 15, 7), (1, 9, 3, 11)]  # the top-right cell (token 2), the bottom-left (token 3)
    answer = grounding_text(boxes)
    t = coordinate_targets(_CharTokenizer(), _ids(answer), side=16, cells=2)
    n_prompt = 6
    ids = torch.tensor([[1, 9, 9, 9, 9, 2] + _ids(answer)])
    enc = {"input_ids": ids}
    n = ids.shape[1]

    def loss(attention):
        return float(attention_loss(attention, enc, 9, (2, 2), 16, [boxes], n_prompt, [t]))

    uniform = torch.full((1, 2, n, n), 1.0 / n)
    assert loss(uniform) == pytest.approx(-math.log(1.0 / n + 1e-6), rel=1e-6)  # one token of n per mark
    exact = torch.zeros(1, 2, n, n)
    for i, k in zip(t["index"], t["box"], strict=True):
        exact[0, 0, n_prompt + i - 1, 2 + k] = 1.0  # the position *before* each digit looks at its mark
    assert loss(exact) < 1e-5
    second_head = exact.roll(1, dims=1)  # the same looks, in head 1 only: head 0 is the supervised one
    assert loss(second_head) == pytest.approx(-math.log(1e-6), rel=1e-6)
    swapped = torch.zeros(1, 2, n, n)
    for i, k in zip(t["index"], t["box"], strict=True):
        swapped[0, 0, n_prompt + i - 1, 3 - k] = 1.0  # each box's digits look at the other mark
    assert loss(swapped) == pytest.approx(-math.log(1e-6), rel=1e-6)
    none = coordinate_targets(_CharTokenizer(), _ids("None."), 16, 2)
    assert float(attention_loss(uniform, enc, 9, (2, 2), 16, [[]], n_prompt, [none])) == 0.0


def test_value_loss_by_hand():
    torch = pytest.importorskip("torch")
    from mmrbench.testing.mini_pretrain import grounding_text
    from mmrbench.testing.mini_pretrain_losses import coordinate_targets, value_loss
    from mmrbench.train.token_loss import place_directions

    boxes = [(8, 0, 16, 8)]  # 32 px, a 4 x 4 grid of 8 px cells: exactly cell (row 0, column 1)
    t = coordinate_targets(_CharTokenizer(), _ids(grounding_text(boxes)), side=32, cells=4)
    n_prompt, dim = 3, 8
    n = n_prompt + len(grounding_text(boxes))
    zeros = torch.zeros(1, n, dim)
    # centre (12, 4) px -> cell (0.5, 1.5) -> scale (row -1, column -1/3): reading 0 errs by 1 and 1/9
    assert float(value_loss(zeros, n_prompt, [t], [boxes], 32, (4, 4))) == pytest.approx((1 + 1 / 9) / 2, rel=1e-6)
    exact = zeros.clone()
    dirs = place_directions(dim)
    for i in t["index"]:
        exact[0, n_prompt + i - 1] = -1.0 * dirs[:, 0] - (1 / 3) * dirs[:, 1]  # before each digit: the centre
    assert float(value_loss(exact, n_prompt, [t], [boxes], 32, (4, 4))) < 1e-10
    none = coordinate_targets(_CharTokenizer(), _ids("None."), 32, 4)
    assert float(value_loss(zeros, n_prompt, [none], [[]], 32, (4, 4))) == 0.0
