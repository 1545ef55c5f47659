"""Moved to :mod:`mmrbench.vision.features` (vision parts shared by data, baselines and adapters); this name
stays for code written against the old path."""
from mmrbench.vision.features import (  # noqa: F401
    ceil_div,
    chunks,
    gaussian_blur,
    gaussian_kernel1d,
    iter_batches,
    load_image_tensor,
    seeded_generator,
    upsample_maps,
)
