"""PaDiM (Defard et al., 2021): a Gaussian per feature-map position, Mahalanobis distance at test time.

Embedding: layer1..layer3 of the backbone, the deeper maps upsampled (nearest) to layer1's grid and
concatenated; a seeded random subset of ``d`` channels is kept (100 for ResNet-18, 550 for WRN-50-2,
the paper's numbers). Fit: per position mean and covariance + eps * I, accumulated in float64 over
batches (never holding all training embeddings), shifted by the first batch's mean so the
sum-of-outer-products form does not lose precision. The inverse covariances are precomputed once,
so scoring is one batched matrix product per image. Map: sqrt of the Mahalanobis distance,
bilinear upsampling to the input size, Gaussian blur (sigma 4); image score = the map's max.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, cast

import numpy as np
import torch
import torch.nn.functional as F

from mmrbench.vision.backbones import Backbone
from mmrbench.vision.features import gaussian_blur, seeded_generator, upsample_maps

DEFAULT_D = {"resnet18": 100, "wide_resnet50_2": 550, "resnet50": 550}


@dataclass
class PadimConfig:
    layers: tuple[str, ...] = ("layer1", "layer2", "layer3")
    d: int | None = None  # None: the paper's number for the backbone
    eps: float = 0.01
    image_size: int = 256
    blur_sigma: float = 4.0
    seed: int = 0
    position_chunk: int = 1024  # positions per batched Mahalanobis product

    def to_json(self) -> dict:
        out = asdict(self)
        out["layers"] = list(self.layers)
        return out


def batched_spd_inverse(cov: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Inverse of a batch of symmetric positive definite matrices via Cholesky.

    Runs single-threaded on purpose: torch parallelises batched small LAPACK calls over the batch
    with OpenMP, which measured ~30x *slower* than one thread for 1024 matrices of 100 x 100 on a
    2-core machine (8.4 s vs 0.28 s).
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = torch.empty_like(cov)
        for i in range(0, cov.shape[0], chunk):
            out[i:i + chunk] = torch.cholesky_inverse(torch.linalg.cholesky(cov[i:i + chunk]))
        return out
    finally:
        torch.set_num_threads(old)


class Padim:
    method = "padim"

    def __init__(self, backbone: Backbone, config: PadimConfig | None = None):
        self.backbone = backbone
        self.cfg = config or PadimConfig()
        total = sum(backbone.channels(self.cfg.layers))
        d = self.cfg.d or DEFAULT_D.get(backbone.name, min(total, 100))
        self.d = min(int(d), total)
        self.channel_idx = torch.sort(torch.randperm(total, generator=seeded_generator(self.cfg.seed))[:self.d]).values
        self.mean: torch.Tensor | None = None      # (P, d) float32
        self.cov_inv: torch.Tensor | None = None   # (P, d, d) float32
        self.grid: tuple[int, int] | None = None
        self.n_train = 0

    # -- embedding -------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) images in [0, 1] -> (N, P, d) embeddings on layer1's grid."""
        feats = self.backbone.features(x, self.cfg.layers)
        h, w = feats[self.cfg.layers[0]].shape[-2:]
        # select each layer's share of the channel subset *before* upsampling: same embedding as
        # concatenate-then-select (indices are sorted, layers in order), far less memory traffic
        maps, start = [], 0
        for n in self.cfg.layers:
            f = feats[n]
            c = f.shape[1]
            idx = self.channel_idx[(self.channel_idx >= start) & (self.channel_idx < start + c)] - start
            f = f.index_select(1, idx.to(f.device))
            if f.shape[-2:] != (h, w):
                f = F.interpolate(f, size=(h, w), mode="nearest")
            maps.append(f)
            start += c
        emb = torch.cat(maps, 1)
        self.grid = (h, w)
        return emb.flatten(2).transpose(1, 2).contiguous()  # (N, P, d)

    # -- fit ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor], progress: bool = False) -> "Padim":
        shift: torch.Tensor | None = None
        s1: torch.Tensor | None = None
        s2: torch.Tensor | None = None
        n = 0
        for x in batches:
            e = self.embed(x).double()  # (B, P, d)
            if shift is None:
                shift = e.mean(0)
                s1 = torch.zeros_like(shift)
                s2 = torch.zeros(shift.shape[0], self.d, self.d, dtype=torch.float64)
            assert s1 is not None and s2 is not None  # set together with shift on the first batch
            c = (e - shift).transpose(0, 1)  # (P, B, d)
            s1 += c.sum(1)
            s2 += torch.bmm(c.transpose(1, 2), c)
            n += e.shape[0]
        if n == 0:
            raise ValueError("PaDiM needs at least one training image")
        assert shift is not None and s1 is not None and s2 is not None  # n > 0: the loop ran
        mc = s1 / n
        cov = (s2 - n * mc.unsqueeze(2) * mc.unsqueeze(1)) / max(n - 1, 1)
        cov += self.cfg.eps * torch.eye(self.d, dtype=torch.float64)
        self.cov_inv = batched_spd_inverse(cov).float()
        self.mean = (shift + mc).float()
        self.n_train = n
        return self

    # -- score -------------------------------------------------------------------------------------
    @torch.no_grad()
    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """(N, P) Mahalanobis distances on layer1's grid, positions processed in chunks."""
        if self.mean is None:
            raise RuntimeError("PaDiM is not fitted")
        assert self.cov_inv is not None  # fit() and load_state() set it together with mean
        e = self.embed(x)  # (N, P, d)
        n, p, _ = e.shape
        dist = torch.empty(n, p)
        step = max(1, self.cfg.position_chunk)
        for i in range(0, p, step):
            j = min(p, i + step)
            delta = (e[:, i:j] - self.mean[i:j]).transpose(0, 1)  # (p', N, d)
            m = torch.bmm(delta, self.cov_inv[i:j])                 # (p', N, d)
            dist[:, i:j] = (m * delta).sum(-1).clamp_min_(0).sqrt_().transpose(0, 1)
        return dist

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Maps (N, S, S) and image scores (N,) (the maps' max), both raw (unnormalised)."""
        dist = self.distances(x)
        assert self.grid is not None  # distances() embedded x, which sets the grid
        h, w = self.grid
        maps = upsample_maps(dist.view(dist.shape[0], h, w), self.cfg.image_size)
        maps = gaussian_blur(maps, self.cfg.blur_sigma)
        return maps.numpy(), maps.flatten(1).max(1).values.numpy()

    # -- state (cache) ---------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        assert self.mean is not None and self.cov_inv is not None, "PaDiM is not fitted"
        return {"mean": self.mean.numpy(), "cov_inv": self.cov_inv.numpy(),
                "channel_idx": self.channel_idx.numpy(), "grid": np.asarray(self.grid, np.int64),
                "n_train": np.asarray(self.n_train, np.int64)}

    def load_state(self, st: dict[str, np.ndarray]) -> "Padim":
        if not np.array_equal(st["channel_idx"], self.channel_idx.numpy()):
            raise ValueError("cached PaDiM state was fitted with another channel subset")
        self.mean = torch.from_numpy(np.ascontiguousarray(st["mean"]))
        self.cov_inv = torch.from_numpy(np.ascontiguousarray(st["cov_inv"]))
        self.grid = cast("tuple[int, int]", tuple(int(v) for v in st["grid"]))  # state() writes (h, w)
        self.n_train = int(st["n_train"])
        return self
