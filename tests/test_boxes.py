"""Hand-computed cases for score map -> boxes (threshold, contours, bounding rects, NMS)."""
import numpy as np
import pytest

from mmrbench.vision.boxes import boxes_by_threshold, boxes_from_map, nms


def test_single_blob_box_is_exclusive():
    m = np.zeros((10, 12), np.float32)
    m[2:5, 3:7] = 0.8  # rows 2..4, cols 3..6
    assert boxes_from_map(m, 0.5) == [(3.0, 2.0, 7.0, 5.0)]


def test_threshold_is_inclusive_and_empty_map_gives_no_box():
    m = np.zeros((8, 8), np.float32)
    m[1, 1] = 0.5
    assert boxes_from_map(m, 0.5) == [(1.0, 1.0, 2.0, 2.0)]
    assert boxes_from_map(m, 0.51) == []
    # threshold 0 covers the whole map: one box of the whole image
    assert boxes_from_map(m, 0.0) == [(0.0, 0.0, 8.0, 8.0)]


def test_two_blobs_ranked_by_peak_value():
    m = np.zeros((20, 20), np.float32)
    m[1:4, 1:4] = 0.6           # 3x3 blob, peak 0.6
    m[10:12, 12:18] = 0.6
    m[11, 15] = 0.95            # second blob has the higher peak
    out = boxes_from_map(m, 0.5)
    assert out == [(12.0, 10.0, 18.0, 12.0), (1.0, 1.0, 4.0, 4.0)]


def test_min_area_drops_speckle():
    m = np.zeros((20, 20), np.float32)
    m[5, 5] = 1.0               # 1 px
    m[10:14, 10:14] = 0.9       # 16 px
    assert boxes_from_map(m, 0.5, min_area=2) == [(10.0, 10.0, 14.0, 14.0)]
    assert len(boxes_from_map(m, 0.5, min_area=0)) == 2


def test_rescale_to_original_size():
    m = np.zeros((10, 10), np.float32)
    m[2:6, 4:8] = 1.0
    # nearest-like block: upscale x4 bilinear; the >=0.5 region of a 0/1 step lies half a source pixel
    # inside the block edges -> cols 16..31 and rows 8..23 in a 40x40 image
    out = boxes_from_map(m, 0.5, out_size=(40, 40))
    assert len(out) == 1
    x1, y1, x2, y2 = out[0]
    assert (x1, y1, x2, y2) == pytest.approx((16, 8, 32, 24), abs=1)
    # non-square: W=20, H=40
    out = boxes_from_map(m, 0.5, out_size=(20, 40))
    x1, y1, x2, y2 = out[0]
    assert (x1, x2) == pytest.approx((8, 16), abs=1)
    assert (y1, y2) == pytest.approx((8, 24), abs=1)


def test_nms_hand_case():
    boxes = [(0, 0, 10, 10), (1, 1, 10, 10), (20, 20, 30, 30)]
    # IoU(0,1) = 81/100 = 0.81
    assert nms(boxes, [0.9, 0.8, 0.5], 0.5) == [0, 2]
    assert nms(boxes, [0.7, 0.8, 0.5], 0.5) == [1, 2]
    assert nms(boxes, [0.9, 0.8, 0.5], 0.85) == [0, 1, 2]


def test_nms_applies_to_overlapping_contour_rects():
    # an L-shaped blob whose bounding rect contains a separate small blob's rect
    m = np.zeros((20, 20), np.float32)
    m[2:18, 2] = 0.7
    m[17, 2:18] = 0.7
    m[8:12, 8:12] = 0.6   # inside the L's bounding rect, IoU 16/256 with it
    both = boxes_from_map(m, 0.5, nms_iou=0.5)
    assert both == [(2.0, 2.0, 18.0, 18.0), (8.0, 8.0, 12.0, 12.0)]
    # at a strict IoU limit below 16/256 the small box is suppressed by the higher-peaked L
    assert boxes_from_map(m, 0.5, nms_iou=0.05) == [(2.0, 2.0, 18.0, 18.0)]


def test_boxes_by_threshold_matches_single_calls():
    rng = np.random.default_rng(0)
    m = rng.random((16, 16)).astype(np.float32)
    ts = [0.0, 0.3, 0.7, 1.0]
    got = boxes_by_threshold(m, ts, out_size=(32, 24), min_area=3)
    for t in ts:
        assert got[t] == boxes_from_map(m, t, out_size=(32, 24), min_area=3)


def test_bad_map_shape():
    with pytest.raises(ValueError, match="2-D"):
        boxes_from_map(np.zeros((2, 3, 4)), 0.5)
