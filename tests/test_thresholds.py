"""Hand cases for AUROC, min-max normalisation and the threshold rules."""
import numpy as np
import pytest

from mmrbench.vision.thresholds import GRID, auroc, fair_threshold, minmax, oracle_threshold


def test_grid():
    assert GRID == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def test_auroc_hand_cases():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    # pairs (pos, neg): (0.5, 0.3) win, (0.5, 0.7) lose, (0.9, 0.3) win, (0.9, 0.7) win -> 3/4
    assert auroc([0.3, 0.7, 0.5, 0.9], [0, 0, 1, 1]) == 0.75
    # a tie between a positive and a negative counts half: pairs win, tie -> 1.5/2
    assert auroc([0.2, 0.5, 0.5], [0, 0, 1]) == 0.75
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5
    assert auroc([0.1, 0.2], [0, 0]) is None
    assert auroc([0.1, 0.2], [1, 1]) is None


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 5, 200).astype(float)  # many ties
    y = rng.integers(0, 2, 200)
    pos, neg = s[y == 1], s[y == 0]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
    assert auroc(s, y) == pytest.approx(brute, abs=1e-12)


def test_minmax():
    assert minmax(np.array([2.0, 4.0, 6.0]), 2.0, 6.0).tolist() == [0.0, 0.5, 1.0]
    assert minmax(np.array([7.0]), 2.0, 6.0).tolist() == [1.25]  # unclipped on purpose
    assert minmax(np.array([3.0, 3.0]), 3.0, 3.0).tolist() == [0.0, 0.0]


def test_oracle_threshold_picks_best_mean_and_lowest_on_tie():
    per_t = {0.3: {"A": (0.8, 0.2), "B": (0.6, 0.2)},   # mean 0.9
             0.5: {"A": (0.9, 0.3), "B": (0.7, 0.3)},   # mean 1.1
             0.7: {"A": (1.0, 0.2), "B": (0.8, 0.2)}}   # mean 1.1 (tie -> 0.5)
    assert oracle_threshold(per_t) == 0.5


def test_fair_threshold():
    assert fair_threshold([0.1, 0.25, 0.42]) == 0.5        # strictly above the max
    assert fair_threshold([0.1, 0.2, 0.3]) == 0.4          # 0.3 itself would flag that normal
    assert fair_threshold([0.1, 0.2, 0.9, 1.3]) == 1.0     # clipped to the grid
    assert fair_threshold([0.0, 0.1, 0.2, 0.3, 0.95], quantile=0.5) == 0.3
    assert fair_threshold([]) == 0.5
    # per category: max of each (0.2, 0.35, 1.4), median 0.35 -> 0.4; the outlier category does not win
    assert fair_threshold({"a": [0.1, 0.2], "b": [0.35, 0.3], "c": [1.4]}) == 0.4
    assert fair_threshold({"a": [], "b": [0.05]}) == 0.1
