"""Moved to :mod:`mmrbench.vision.boxes` (vision parts shared by data, baselines and adapters); this name
stays for code written against the old path."""
from mmrbench.vision.boxes import (  # noqa: F401
    DEFAULT_MIN_AREA,
    DEFAULT_NMS_IOU,
    boxes_by_threshold,
    boxes_from_map,
    nms,
    resize_map,
)
