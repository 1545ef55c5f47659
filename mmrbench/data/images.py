"""Moved to :mod:`mmrbench.vision.images` (vision parts shared by data, baselines and adapters); this name
stays for code written against the old path."""
from mmrbench.vision.images import (  # noqa: F401
    ImageLoadError,
    MAX_IMAGE_PIXELS,
    decode,
    load_mask,
    load_rgb,
)
