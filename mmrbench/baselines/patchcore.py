"""PatchCore (Roth et al., 2022): a coreset memory bank of locally aware patch features.

Features: layer2 and layer3, each averaged over its 3x3 neighbourhood (local aggregation), layer3
upsampled (bilinear) to layer2's grid, concatenated; optionally averaged down to ``target_dim``
channels (the paper's adaptive average pooling). Memory bank: greedy k-center coreset of all training
patches (:mod:`mmrbench.baselines.coreset`, default ratio 0.1). Scoring: each test patch's distance to
its nearest bank entry, computed in chunks with the ``|a|^2 - 2ab + |b|^2`` form against precomputed
bank norms; map = patch scores upsampled + Gaussian blur (sigma 4).

Image score (paper eq. 7): with ``m_test*`` the patch with the largest score ``s*``, ``m*`` its nearest
bank entry and ``N_b(m*)`` the ``b`` nearest bank entries of ``m*`` (``m*`` itself included, as its own
nearest neighbour), ``s = (1 - exp|m_test* - m*| / sum_{m in N_b(m*)} exp|m_test* - m|) * s*``. The
fraction is a softmax, computed with logsumexp so large distances cannot overflow.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, cast

import numpy as np
import torch
import torch.nn.functional as F

from mmrbench.vision.backbones import Backbone
from mmrbench.baselines.coreset import greedy_coreset
from mmrbench.vision.features import gaussian_blur, upsample_maps


@dataclass
class PatchCoreConfig:
    layers: tuple[str, ...] = ("layer2", "layer3")
    target_dim: int | None = None  # None keeps the concatenated channels
    coreset_ratio: float = 0.1
    coreset_max: int | None = None
    proj_dim: int = 128
    coreset_precision: str = "half"  # "single": exact farthest-point order, ~3x slower on CPU
    num_neighbors: int = 9  # b in eq. 7
    image_size: int = 256
    blur_sigma: float = 4.0
    seed: int = 0
    bank_chunk: int = 16384  # bank rows per distance product

    def to_json(self) -> dict:
        out = asdict(self)
        out["layers"] = list(self.layers)
        return out


def nearest(queries: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor, chunk: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distance and index of each query's nearest bank row, bank processed in chunks.

    The expansion |q|^2 + |b|^2 - 2 q.b finds the neighbour fast, but in float32 it cancels to noise of
    order sqrt(eps) * |q| for near matches (0.01-0.05 for backbone-sized features, enough to score a stored
    normal patch above zero and to differ between machines' BLAS kernels); the distance to the chosen
    neighbour is therefore computed again directly."""
    q_sq = (queries * queries).sum(1, keepdim=True)
    best = torch.full((queries.shape[0],), float("inf"))
    arg = torch.zeros(queries.shape[0], dtype=torch.long)
    for i in range(0, bank.shape[0], chunk):
        b = bank[i:i + chunk]
        d2 = torch.addmm(q_sq + bank_sq[i:i + chunk].unsqueeze(0), queries, b.t(), alpha=-2.0)
        v, a = d2.min(1)
        better = v < best
        best = torch.where(better, v, best)
        arg = torch.where(better, a + i, arg)
    return (queries - bank[arg]).norm(dim=1), arg


def reweight(s_star: float, test_patch: torch.Tensor, nn_idx: int, bank: torch.Tensor, bank_sq: torch.Tensor,
             b: int) -> float:
    """Eq. 7 weighting of the image score (see module docstring)."""
    if b <= 1 or bank.shape[0] <= 1:
        return float(s_star)
    m_star = bank[nn_idx:nn_idx + 1]
    k = min(b, bank.shape[0])
    d_bank = torch.addmm(bank_sq.unsqueeze(0) + (m_star * m_star).sum(1, keepdim=True), m_star, bank.t(), alpha=-2.0)[0]
    d_bank[nn_idx] = -1.0  # m* is its own nearest neighbour, first
    neigh = torch.topk(d_bank, k, largest=False).indices
    d = torch.cdist(test_patch.unsqueeze(0), bank[neigh])[0]  # distances of m_test* to N_b(m*)
    pos = int((neigh == nn_idx).nonzero()[0, 0])
    frac = torch.exp(d[pos] - torch.logsumexp(d, 0))
    return float((1.0 - frac) * s_star)


class PatchCore:
    method = "patchcore"

    def __init__(self, backbone: Backbone, config: PatchCoreConfig | None = None):
        self.backbone = backbone
        self.cfg = config or PatchCoreConfig()
        self.bank: torch.Tensor | None = None
        self.bank_sq: torch.Tensor | None = None
        self.grid: tuple[int, int] | None = None
        self.n_patches = 0

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, P, D) locally aggregated patch features on the first layer's grid."""
        feats = self.backbone.features(x, self.cfg.layers)
        maps = [F.avg_pool2d(feats[n], 3, stride=1, padding=1, count_include_pad=False) for n in self.cfg.layers]
        h, w = maps[0].shape[-2:]
        maps = [maps[0]] + [F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False) for m in maps[1:]]
        emb = torch.cat(maps, 1)  # (N, C, h, w)
        n, c = emb.shape[:2]
        emb = emb.flatten(2).transpose(1, 2)  # (N, P, C)
        if self.cfg.target_dim and self.cfg.target_dim < c:
            emb = F.adaptive_avg_pool1d(emb.reshape(-1, 1, c), self.cfg.target_dim).view(n, -1, self.cfg.target_dim)
        self.grid = (h, w)
        return emb.contiguous()

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor], progress: bool = False) -> "PatchCore":
        parts = []
        for x in batches:
            e = self.embed(x)
            parts.append(e.reshape(-1, e.shape[-1]))
        if not parts:
            raise ValueError("PatchCore needs at least one training image")
        feats = torch.cat(parts)
        del parts
        self.n_patches = feats.shape[0]
        idx = greedy_coreset(feats, self.cfg.coreset_ratio, proj_dim=self.cfg.proj_dim, seed=self.cfg.seed,
                             progress=progress, max_size=self.cfg.coreset_max,
                             precision=self.cfg.coreset_precision)
        self.bank = feats[torch.from_numpy(idx)].contiguous()
        self.bank_sq = (self.bank * self.bank).sum(1)
        return self

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Maps (N, S, S) and re-weighted image scores (N,), raw."""
        if self.bank is None:
            raise RuntimeError("PatchCore is not fitted")
        assert self.bank_sq is not None  # fit() and load_state() set it together with bank
        e = self.embed(x)
        n, p, dim = e.shape
        dist, arg = nearest(e.reshape(-1, dim), self.bank, self.bank_sq, self.cfg.bank_chunk)
        dist, arg = dist.view(n, p), arg.view(n, p)
        scores = np.empty(n, dtype=np.float64)
        for i in range(n):
            j = int(torch.argmax(dist[i]))
            scores[i] = reweight(float(dist[i, j]), e[i, j], int(arg[i, j]), self.bank, self.bank_sq,
                                 self.cfg.num_neighbors)
        assert self.grid is not None  # embed() sets the grid
        h, w = self.grid
        maps = gaussian_blur(upsample_maps(dist.view(n, h, w), self.cfg.image_size), self.cfg.blur_sigma)
        return maps.numpy(), scores

    def state(self) -> dict[str, np.ndarray]:
        assert self.bank is not None, "PatchCore is not fitted"
        return {"bank": self.bank.numpy(), "grid": np.asarray(self.grid, np.int64),
                "n_patches": np.asarray(self.n_patches, np.int64)}

    def load_state(self, st: dict[str, np.ndarray]) -> "PatchCore":
        self.bank = torch.from_numpy(np.ascontiguousarray(st["bank"]))
        self.bank_sq = (self.bank * self.bank).sum(1)
        self.grid = cast("tuple[int, int]", tuple(int(v) for v in st["grid"]))  # state() writes (h, w)
        self.n_patches = int(st["n_patches"])
        return self
