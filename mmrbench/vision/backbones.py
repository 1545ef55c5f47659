"""ResNet-18 and Wide-ResNet-50-2 in plain torch, named like torchvision's state dicts.

Why not torchvision/timm: the CPU torch build used here cannot import torchvision (and timm imports
it), yet the PaDiM and PatchCore papers used torchvision's ImageNet weights. Matching torchvision's
parameter names (``conv1``, ``bn1``, ``layer1..4`` of ``BasicBlock``/``Bottleneck`` with
``downsample.0/1``, ``fc``) lets a user load those exact ``.pth`` files from disk with
``torch.load(weights_only=True)`` -- no code from the file is ever run.

Without a weights file the network is initialised from a seed (torchvision's own scheme: Kaiming
normal convs, BN weight 1 / bias 0). Such runs are recorded as ``pretrained: false`` with the seed, so
nobody mistakes them for the papers' pretrained baselines.

Only the stem and ``layer1..layer3`` are built by default (the detectors never use ``layer4``); a
torchvision file's ``layer4.*`` and ``fc.*`` entries are then ignored. ``build_resnet(..., depth=4)``
builds the whole classifier, whose state dict has exactly torchvision's keys.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmrbench.errors import ConfigError, MMRBenchError
from mmrbench.hashing import file_sha256

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneError(MMRBenchError):
    pass


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride sits on the 3x3 conv."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


_Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    """torchvision-named ResNet truncated after ``layer{depth}``; ``forward`` returns the layer maps."""

    def __init__(self, block: _Block, blocks: list[int], *, width_per_group: int = 64, depth: int = 3,
                 num_classes: int = 1000):
        super().__init__()
        if not 1 <= depth <= 4:
            raise ValueError("depth must be 1..4")
        self.depth = depth
        self.groups, self.base_width = 1, width_per_group
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        planes = [64, 128, 256, 512]
        self.channels: dict[str, int] = {}
        for i in range(depth):
            layer = self._make_layer(block, planes[i], blocks[i], stride=1 if i == 0 else 2)
            setattr(self, f"layer{i + 1}", layer)
            self.channels[f"layer{i + 1}"] = planes[i] * block.expansion
        if depth == 4:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * block.expansion, num_classes)
        self._init_weights()

    def _make_layer(self, block: _Block, planes: int, n: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            down = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                 nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, down, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, groups=self.groups, base_width=self.base_width)
                   for _ in range(1, n)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1-bn1-relu (stride 2): the 'first-layer features' used e.g. for reference retrieval."""
        return self.relu(self.bn1(self.conv1(x)))

    def forward(self, x: torch.Tensor, layers: tuple[str, ...] = ("layer1", "layer2", "layer3")
                ) -> dict[str, torch.Tensor]:
        """Feature maps of the named layers; stops after the deepest one asked for."""
        want = set(layers)
        last = max(int(n[-1]) for n in want)
        if last > self.depth:
            raise ValueError(f"layer{last} not built (depth {self.depth})")
        out: dict[str, torch.Tensor] = {}
        x = self.maxpool(self.stem(x))
        for i in range(1, last + 1):
            x = getattr(self, f"layer{i}")(x)
            if f"layer{i}" in want:
                out[f"layer{i}"] = x
        return out


ARCHS: dict[str, dict[str, Any]] = {
    "resnet18": {"block": BasicBlock, "blocks": [2, 2, 2, 2], "width_per_group": 64},
    "wide_resnet50_2": {"block": Bottleneck, "blocks": [3, 4, 6, 3], "width_per_group": 128},
    # same layout with narrower bottlenecks; loads torchvision's resnet50 weights
    "resnet50": {"block": Bottleneck, "blocks": [3, 4, 6, 3], "width_per_group": 64},
}
ALIASES = {"wrn50": "wide_resnet50_2", "wide_resnet50": "wide_resnet50_2", "wrn50_2": "wide_resnet50_2",
           "r18": "resnet18", "resnet-18": "resnet18"}


def canonical_name(name: str) -> str:
    n = ALIASES.get(name.lower(), name.lower())
    if n not in ARCHS:
        raise ConfigError(f"unknown backbone '{name}' (known: {', '.join(sorted(ARCHS))})")
    return n


def build_resnet(name: str, *, depth: int = 3, seed: int | None = 0) -> ResNet:
    """Build an architecture; with ``seed`` the random initialisation is reproducible."""
    spec = ARCHS[canonical_name(name)]
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ResNet(spec["block"], spec["blocks"], width_per_group=spec["width_per_group"], depth=depth)
    return ResNet(spec["block"], spec["blocks"], width_per_group=spec["width_per_group"], depth=depth)


@dataclass
class Backbone:
    """A feature extractor plus the record of where its weights came from."""

    name: str
    model: ResNet
    pretrained: bool
    seed: int | None
    weights_sha256: str | None
    weights_path: str | None = None
    info_extra: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> dict[str, Any]:
        """What the result file records: never lets a random-weight run pass as pretrained."""
        return {"name": self.name, "pretrained": self.pretrained, "seed": self.seed,
                "weights_sha256": self.weights_sha256, **self.info_extra}

    def channels(self, layers: tuple[str, ...]) -> list[int]:
        return [self.model.channels[n] for n in layers]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> ImageNet-normalised (what the torchvision weights expect)."""
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def features(self, x: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return self.model(self.normalize(x), layers)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        st = __import__("mmrbench.errors", fromlist=["require"]).require(
            "safetensors.torch", "hf", "reading .safetensors backbone weights")
        sd = st.load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle payloads with code, truncated files, non-torch files
            raise BackboneError(f"cannot read backbone weights {path}: {exc.__class__.__name__}: {exc}") from None
    # common wrappers: {"state_dict": ...} / {"model": ...}; DataParallel's "module." prefix
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BackboneError(f"{path}: not a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_state_dict_checked(model: ResNet, sd: dict[str, torch.Tensor], source: str) -> None:
    """Strict on the layers the model has; entries of unbuilt layers (layer4, fc) are ignored."""
    own = model.state_dict()
    skipped = tuple(f"layer{i}." for i in range(model.depth + 1, 5)) + (("fc.",) if model.depth < 4 else ())
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own and not k.startswith(skipped)]
    bad = [f"{k} (file {tuple(sd[k].shape)}, model {tuple(own[k].shape)})"
           for k in own if k in sd and sd[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} ({len(missing)})")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''} "
                        f"({len(unexpected)})")
    if bad:
        problems.append(f"shape mismatch: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")
    if problems:
        raise BackboneError(f"{source} does not fit the backbone: " + "; ".join(problems))
    model.load_state_dict({k: sd[k] for k in own}, strict=True)


def load_backbone(name: str, weights: str | os.PathLike | None = None, seed: int = 0,
                  *, depth: int = 3) -> Backbone:
    """A backbone in eval mode: torchvision weights from ``weights`` or seeded random init.

    ``weights`` is a torchvision state-dict file (``resnet18-f37072fd.pth``,
    ``wide_resnet50_2-95faca4d.pth``, or a ``.safetensors`` with the same names).
    """
    cname = canonical_name(name)
    model = build_resnet(cname, depth=depth, seed=seed)
    if weights is None:
        bb = Backbone(cname, model, pretrained=False, seed=seed, weights_sha256=None)
    else:
        p = Path(weights)
        if not p.is_file():
            raise BackboneError(f"backbone weights not found: {p}")
        load_state_dict_checked(model, _read_state_dict(p), str(p))
        bb = Backbone(cname, model, pretrained=True, seed=None, weights_sha256=file_sha256(p), weights_path=str(p))
    bb.model.eval()
    for prm in bb.model.parameters():
        prm.requires_grad_(False)
    return bb
