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
