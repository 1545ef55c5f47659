"""Moved to :mod:`mmrbench.vision.backbones` (vision parts shared by data, baselines and adapters); this name
stays for code written against the old path."""
from mmrbench.vision.backbones import (  # noqa: F401
    ALIASES,
    ARCHS,
    Backbone,
    BackboneError,
    BasicBlock,
    Bottleneck,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResNet,
    build_resnet,
    canonical_name,
    load_backbone,
    load_state_dict_checked,
)
