"""Image loading and the small tensor operations both detectors share.

Images are resized (bilinear) to ``image_size`` x ``image_size`` with no centre crop: a crop would hide
defects near the border, and every score map must cover the whole original image so its boxes can be
mapped back to original pixels by a plain rescale.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmrbench.vision.images import load_rgb


def load_image_tensor(path: str | Path, image_size: int, *, sample_id: str | None = None) -> torch.Tensor:
    """(3, S, S) float32 in [0, 1]; unreadable files raise an error naming the file and the sample."""
    from PIL import Image

    im = load_rgb(path, sample_id=sample_id)
    if im.size != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def iter_batches(items: Sequence[tuple[str | Path, str]], image_size: int, batch_size: int
                 ) -> Iterator[torch.Tensor]:
    """Batches (B, 3, S, S) from (path, sample_id) pairs, in order."""
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        yield torch.stack([load_image_tensor(p, image_size, sample_id=sid) for p, sid in chunk])


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, int(4.0 * sigma + 0.5))  # the truncation scipy.ndimage uses by default
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, H, W) maps with reflect padding; sigma <= 0 is a no-op."""
    if sigma <= 0:
        return maps
    k = gaussian_kernel1d(sigma).to(maps.dtype)
    r = (k.numel() - 1) // 2
    x = maps.unsqueeze(1)
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    x = F.pad(x, (r, r, 0, 0), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, r, r), mode=mode)
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x.squeeze(1)


def upsample_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(N, h, w) -> (N, size, size), bilinear."""
    return F.interpolate(maps.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False).squeeze(1)


def seeded_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def ceil_div(a: int, b: int) -> int:
    return int(math.ceil(a / b))


def chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    for i in range(0, n, size):
        yield i, min(n, i + size)
