"""Coordinate conventions mapped back to original pixels, by hand."""
import pytest

from mmrbench.coords import CONVENTIONS, from_original, to_original
from mmrbench.errors import ConfigError


def test_pixel_in_resized_frame():
    # sent at 200x100 from an original of 400x300: x scales by 2, y by 3
    assert to_original((10, 10, 50, 20), "pixel", (200, 100), (400, 300)) == (20, 30, 100, 60)


def test_pixel_without_sent_size_is_original():
    assert to_original((10, 10, 50, 20), "pixel", None, (400, 300)) == (10, 10, 50, 20)


def test_norm1000():
    assert to_original((100, 500, 250, 1000), "norm1000", (999, 999), (400, 300)) == (40, 150, 100, 300)


def test_gemini_is_yx_order():
    # box_2d = [ymin, xmin, ymax, xmax] in 0-1000
    assert to_original((500, 100, 1000, 250), "gemini", None, (400, 300)) == (40, 150, 100, 300)


def test_norm1():
    assert to_original((0.1, 0.5, 0.25, 1.0), "norm1", None, (400, 300)) == pytest.approx((40, 150, 100, 300))


def test_swapped_corners_are_ordered_and_clipped():
    assert to_original((50, 20, 10, -5), "pixel", None, (40, 30)) == (10, 0, 40, 20)


@pytest.mark.parametrize("conv", sorted(CONVENTIONS))
def test_round_trip(conv):
    box = (12, 34, 156, 178)
    there = from_original(box, conv, (300, 200), (640, 480))
    assert to_original(there, conv, (300, 200), (640, 480)) == pytest.approx(box)


def test_unknown_convention():
    with pytest.raises(ConfigError, match="unknown coordinate convention"):
        to_original((1, 2, 3, 4), "polar", None, (10, 10))
