"""Moved to :mod:`mmrbench.vision.thresholds` (vision parts shared by data, baselines and adapters); this name
stays for code written against the old path."""
from mmrbench.vision.thresholds import (  # noqa: F401
    GRID,
    auroc,
    fair_threshold,
    minmax,
    oracle_threshold,
)
