"""Hand-computed rewards: accuracy + -0.2 per ground-truth box unmatched at IoU > 0.5."""
import pytest

from mmrbench.train.rewards import accuracy_reward, anomaly_reward, consistency_reward, missed_boxes

GT = [[10, 10, 50, 50], [60, 60, 100, 100]]


def cols(n, label="anomalous", boxes=GT, size=(200, 100), sent=None, conv="pixel"):
    return dict(label=[label] * n, gt_boxes=[boxes] * n, image_size=[size] * n, sent_size=[sent] * n,
                convention=[conv] * n)


def test_accuracy_and_penalty_hand_computed():
    comps = [
        "<think>x</think><answer>Yes. {'bbox_2d': [10, 10, 50, 50], 'label': 'a'}, {'bbox_2d': [60, 60, 100, 100], 'label': 'b'}</answer>",
        "<think>x</think><answer>Yes. {'bbox_2d': [10, 10, 50, 50], 'label': 'a'}</answer>",
        "<answer>No.</answer>",
        "<answer>Yes.</answer>",
        "garbage",
        # IoU of [10,10,50,40] with [10,10,50,50] = 1200/1600 = 0.75 (> 0.5); [60,60,80,100] vs gt2 = 0.5 (not > 0.5)
        "<answer>Yes. {'bbox_2d': [10, 10, 50, 40]}, {'bbox_2d': [60, 60, 80, 100]}</answer>",
    ]
    kw = cols(len(comps))
    assert accuracy_reward(None, comps, **kw) == [1, 1, 0, 1, 0, 1]
    assert consistency_reward(None, comps, **kw) == pytest.approx([0, -0.2, -0.4, -0.4, -0.4, -0.2])
    assert anomaly_reward(None, comps, **kw) == pytest.approx([1, 0.8, -0.4, 0.6, -0.4, 0.8])


def test_normal_sample_no_penalty():
    comps = ["<answer>No.</answer>", "<answer>Yes. {'bbox_2d': [1, 1, 5, 5]}</answer>"]
    assert anomaly_reward(None, comps, **cols(2, label="normal", boxes=[])) == [1.0, 0.0]


def test_boxes_mapped_from_resized_frame_and_conventions():
    # the policy saw the 200x100 image at 100x50: its box [5,5,25,25] is [10,10,50,50] in original pixels
    comp = ["<answer>Yes. {'bbox_2d': [5, 5, 25, 25]}, {'bbox_2d': [30, 30, 50, 50]}</answer>"]
    assert anomaly_reward(None, comp, **cols(1, sent=(100, 50))) == pytest.approx([1.0])
    # without the sent size the same box is read in original pixels and misses both
    assert anomaly_reward(None, comp, **cols(1)) == pytest.approx([0.6])
    # norm1000: [50,100,250,500] of 200x100 -> [10,10,50,50]
    assert missed_boxes("<answer>Yes. [50, 100, 250, 500]</answer>", GT, "norm1000", None, (200, 100)) == 1


def test_one_to_one_matching():
    # two predictions on the same gt box match it only once
    comp = ["<answer>Yes. [10, 10, 50, 50], [11, 11, 50, 50]</answer>"]
    assert consistency_reward(None, comp, **cols(1)) == pytest.approx([-0.2])


def test_trl_conversational_completions_and_bool_labels():
    comps = [[{"role": "assistant", "content": "<answer>No.</answer>"}]]
    assert accuracy_reward(["p"], comps, label=[False]) == [1.0]


def test_column_length_mismatch():
    with pytest.raises(ValueError, match="label"):
        accuracy_reward(None, ["a", "b"], label=["normal"])


def test_boxes_without_the_image_size_are_an_error_not_a_guess():
    from mmrbench.train.rewards import graded_consistency_reward

    kw = cols(1, size=None)
    for fn in (consistency_reward, graded_consistency_reward):
        with pytest.raises(ValueError, match=f"{fn.__name__} needs the 'image_size' column"):
            fn(None, ["<answer>Yes. [1, 1, 5, 5]</answer>"], **kw)


# -- the graded variant (grpo.box_reward = "giou"): hand-computed ------------------------------------------------

def test_giou_by_hand():
    from mmrbench.geometry import giou

    assert giou([0, 0, 10, 10], [0, 0, 10, 10]) == pytest.approx(1.0)
    # side by side, 10 px apart: IoU 0, hull 30x10 = 300, union 200 -> -100/300
    assert giou([0, 0, 10, 10], [20, 0, 30, 10]) == pytest.approx(-1 / 3)
    # half overlap: inter 50, union 150 = hull -> IoU = GIoU = 1/3
    assert giou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3)
    # nested: IoU 100/400, hull is the union -> 0.25
    assert giou([0, 0, 10, 10], [0, 0, 20, 20]) == pytest.approx(0.25)
    # far corners: hull 10,000, union 2 -> -(9998/10000)
    assert giou([0, 0, 1, 1], [99, 99, 100, 100]) == pytest.approx(-0.9998)
    # a nearer box ranks higher although both have IoU 0 (why the graded reward uses GIoU)
    assert giou([0, 0, 10, 10], [12, 0, 22, 10]) > giou([0, 0, 10, 10], [40, 0, 50, 10])
    assert giou([5, 5, 5, 5], [5, 5, 5, 5]) == -1.0  # empty hull


def test_graded_reward_hand_computed():
    from mmrbench.train.rewards import graded_anomaly_reward, graded_consistency_reward

    comps = [
        "<answer>Yes. [10, 10, 50, 50], [60, 60, 100, 100]</answer>",      # both exact: no penalty
        "<answer>Yes. [10, 10, 50, 50]</answer>",                           # gt 2 unpaired: 0.2
        "<answer>No.</answer>",                                             # nothing paired: 0.4
        # [60,10,100,50] misses both: GIoU -400/3600 = -1/9 with each (a tie, gt 1 first):
        # q = (8/9)/1.5 = 16/27 -> 0.2 * 11/27; gt 2 unpaired: 0.2
        "<answer>Yes. [60, 10, 100, 50]</answer>",
        # [30,10,70,50] half over gt 1: IoU = GIoU = 1/3, q = 8/9 -> 0.2/9; gt 2 unpaired: 0.2
        "<answer>Yes. [30, 10, 70, 50]</answer>",
        # IoU 0.75 with gt 1 (a match, 0); [60,60,80,100] inside gt 2: IoU 0.5 (no match), GIoU 0.5 -> q = 1
        "<answer>Yes. [10, 10, 50, 40], [60, 60, 80, 100]</answer>",
    ]
    kw = cols(len(comps))
    pen = [0, -0.2, -0.4, -(0.2 * 11 / 27 + 0.2), -(0.2 / 9 + 0.2), 0]
    assert graded_consistency_reward(None, comps, **kw) == pytest.approx(pen)
    assert graded_anomaly_reward(None, comps, **kw) == pytest.approx([1 + p if i != 2 else p for i, p in enumerate(pen)])
    # the paper's penalty cannot tell responses 2-5 apart beyond "boxed at IoU > 0.5 or not"
    assert consistency_reward(None, comps, **kw) == pytest.approx([0, -0.2, -0.4, -0.4, -0.4, -0.2])
    # a normal image has nothing to box: the graded reward is the accuracy, as the paper's
    normal = ["<answer>No.</answer>", "<answer>Yes. [1, 1, 5, 5]</answer>"]
    assert graded_anomaly_reward(None, normal, **cols(2, label="normal", boxes=[])) == [1.0, 0.0]


def test_graded_reward_pairs_one_to_one_and_maps_the_frame():
    from mmrbench.train.rewards import graded_consistency_reward

    # two predictions on gt 1: the exact one is paired with it; the other is left for gt 2, far away:
    # IoU 0, hull 89 x 89 = 7921, union 39 x 39 + 1600 = 3121 -> GIoU -4800/7921, q = (3121/7921)/1.5
    comp = ["<answer>Yes. [10, 10, 50, 50], [11, 11, 50, 50]</answer>"]
    assert graded_consistency_reward(None, comp, **cols(1)) == pytest.approx([-0.2 * (1 - 3121 / 7921 / 1.5)])
    # with the paper's penalty the second box counts for nothing: gt 2 is simply missed
    assert consistency_reward(None, comp, **cols(1)) == pytest.approx([-0.2])
    # seen at half size: [5,5,25,25] and [30,30,50,50] are both ground-truth boxes in original pixels
    comp = ["<answer>Yes. [5, 5, 25, 25], [30, 30, 50, 50]</answer>"]
    assert graded_consistency_reward(None, comp, **cols(1, sent=(100, 50))) == pytest.approx([0.0])


def test_box_reward_recipe_key_chooses_the_reward():
    from types import SimpleNamespace

    from mmrbench.errors import ConfigError
    from mmrbench.train.grpo import GRPOTrainer
    from mmrbench.train.recipe import load_recipe

    assert load_recipe(None, "grpo").train.box_reward == "paper"
    with pytest.raises(ConfigError, match="grpo.box_reward 'iou' unknown"):
        load_recipe(None, "grpo", {"grpo.box_reward": "iou"})
    text = "<answer>Yes. [30, 10, 70, 50]</answer>"
    example = SimpleNamespace(reward_columns=lambda: {k: v[0] for k, v in cols(1).items()})
    for name, want in (("paper", 0.6), ("giou", 1 - 0.2 / 9 - 0.2)):
        cfg = load_recipe(None, "grpo", {"grpo.box_reward": name}).train
        trainer = SimpleNamespace(cfg=cfg, policy=SimpleNamespace(tokenizer=SimpleNamespace(decode=lambda c, **k: text)))
        group = SimpleNamespace(example=example, completions=[[1]])
        GRPOTrainer.score(trainer, group)  # type: ignore[arg-type]
        assert group.rewards == pytest.approx([want]) and group.accuracy == [1.0]
