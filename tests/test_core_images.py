"""Image loading errors name the file and the sample."""
import pytest
from PIL import Image

from mmrbench.vision.images import ImageLoadError, load_mask, load_rgb


def test_load_rgb_and_mask(tmp_path):
    Image.new("L", (8, 6), 255).save(tmp_path / "m.png")
    assert load_rgb(tmp_path / "m.png").mode == "RGB"
    assert load_mask(tmp_path / "m.png").size == (8, 6)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(ImageLoadError, match=r"image not found: .*nope.png \(sample 's1'\)"):
        load_rgb(tmp_path / "nope.png", sample_id="s1")
    Image.new("RGB", (64, 64)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ImageLoadError, match=r"cannot read mask .*t.png"):
        load_mask(tmp_path / "t.png")
    (tmp_path / "g.png").write_bytes(b"\x00garbage")
    with pytest.raises(ImageLoadError, match=r"cannot read image .*g.png"):
        load_rgb(tmp_path / "g.png")
