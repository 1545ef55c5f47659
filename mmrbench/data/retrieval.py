"""Spatially-aligned reference retrieval (MMR-AD App. B).

For each query image we want the normal training image that looks most like it *place by place*,
so that a model comparing reference and query sees the same layout. The paper's recipe:

1. first-layer features of a light backbone on every image (local colour/edge responses);
2. a k-means codebook (``n_words`` = Nc = 12) fitted on patches of the normal images;
3. each image -> its word map -> an S x S grid (S = 5) of bag-of-words histograms;
4. distance(query, normal) = mean over blocks of KL(query block || normal block), after dropping the
   ``tau`` = 5 largest block divergences (a defect or an occluded block must not dominate);
5. the ``top_k`` = 10 smallest distances are the neighbours, the nearest one is the reference.

Everything after feature extraction is vectorised numpy: one einsum gives all block KLs of a
chunk of queries against all normals, so thousands of images take seconds. The feature function is
pluggable (``feature_fn``): the default is a fixed, seeded bank of 3x3 and 7x7 filters (no weights
to download); :func:`resnet_stem_features` uses the stem of the project's ResNet-18 when present.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import cv2
import numpy as np

from mmrbench.errors import MMRBenchError

#: image (H, W, 3) uint8 RGB -> feature map (h, w, C) float32
FeatureFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RetrievalConfig:
    n_words: int = 12  # Nc
    grid: int = 5  # S
    tau: int = 5  # largest block divergences dropped
    top_k: int = 10  # K neighbours kept
    eps: float = 1e-3  # histogram smoothing (KL of an empty bin would be infinite)
    max_patches: int = 8192  # patches sampled for k-means (12 coarse words need few)
    kmeans_iters: int = 20
    seed: int = 0


# ----------------------------------------------------------------------------- features

def _filter_bank(seed: int = 0) -> list[np.ndarray]:
    """Seeded zero-mean unit-norm filters: 6 of 3x3 and 6 of 7x7 (edge/blob detectors at two scales)."""
    rng = np.random.default_rng(seed + 7919)
    bank = []
    for k, n in ((3, 6), (7, 6)):
        for _ in range(n):
            f: np.ndarray = rng.standard_normal((k, k)).astype(np.float32)
            if k == 7:  # smooth the large filters so they respond to structure, not pixel noise
                f = cv2.GaussianBlur(f, (3, 3), 0.8)
            f -= f.mean()
            f /= max(float(np.linalg.norm(f)), 1e-6)
            bank.append(f)
    return bank


_BANK = _filter_bank()


def filter_bank_features(img: np.ndarray, size: int = 96, pool: int = 4) -> np.ndarray:
    """Colour plus |filter responses| at ``size`` px, average-pooled to (size/pool)^2 patches."""
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    x = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    grey = x @ np.asarray([0.299, 0.587, 0.114], np.float32)
    resp = [np.abs(cv2.filter2D(grey, cv2.CV_32F, f, borderType=cv2.BORDER_REFLECT)) for f in _BANK]
    feats = np.concatenate([x, np.stack(resp, axis=2)], axis=2)
    g = size // pool
    return feats.reshape(g, pool, g, pool, -1).mean(axis=(1, 3))


def resnet_stem_feature_fn(weights=None, seed: int = 0, size: int = 128) -> FeatureFn:
    """Features from conv1-bn1-relu of the project's ResNet-18 (:mod:`mmrbench.vision.backbones`),
    average-pooled 2x2. ``weights``: a torchvision ``resnet18`` state-dict file (ImageNet weights, as
    the paper's "light backbone"); without one the stem is seeded-random, which still gives a
    fixed bank of 64 colour/edge filters."""
    import torch

    from mmrbench.vision.backbones import load_backbone

    bb = load_backbone("resnet18", weights, seed=seed, depth=1)
    model = bb.model.eval()

    def fn(img: np.ndarray) -> np.ndarray:
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        x = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        t = bb.normalize(torch.from_numpy(x).permute(2, 0, 1)[None])
        with torch.no_grad():
            y = torch.nn.functional.avg_pool2d(model.stem(t), 2)
        return y[0].permute(1, 2, 0).numpy()

    return fn


def resnet_stem_features(img: np.ndarray) -> np.ndarray:
    """:func:`resnet_stem_feature_fn` with seeded random weights (built once)."""
    if "fn" not in _STEM:
        _STEM["fn"] = resnet_stem_feature_fn()
    return _STEM["fn"](img)


_STEM: dict = {}

FEATURES: dict[str, FeatureFn] = {"filters": filter_bank_features, "resnet18-stem": resnet_stem_features}


# ----------------------------------------------------------------------------- pure pieces

def _dot(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """x @ c.T for tall-thin x and a handful of centres. einsum stays single-threaded: a BLAS
    matmul of this shape spends most of its time waking threads, 10x slower on a busy machine."""
    return np.einsum("nd,kd->nk", x, c)


def kmeans(x: np.ndarray, k: int, iters: int = 30, seed: int = 0) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; returns (k, D) centres. Empty clusters are re-seeded
    with the point farthest from its centre so exactly ``k`` words always exist."""
    x = np.asarray(x, np.float32)
    n = len(x)
    if n == 0:
        raise ValueError("k-means needs at least one point")
    rng = np.random.default_rng(seed)
    centres = [x[int(rng.integers(0, n))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        tot = float(d2.sum())
        i = int(rng.choice(n, p=d2 / tot)) if tot > 0 else int(rng.integers(0, n))
        centres.append(x[i])
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(1))
    c = np.stack(centres)
    xx = (x * x).sum(1)
    prev = None
    for _ in range(iters):
        dist = xx[:, None] - 2 * _dot(x, c) + (c * c).sum(1)[None, :]
        a = dist.argmin(1)
        if prev is not None and np.array_equal(a, prev):
            break  # assignments stable: centres are final
        prev = a
        new = np.stack([np.bincount(a, weights=x[:, j], minlength=k) for j in range(x.shape[1])], 1).astype(np.float32)
        cnt = np.bincount(a, minlength=k).astype(np.float32)
        empty = cnt == 0
        new[~empty] /= cnt[~empty, None]
        if empty.any():
            far = np.argsort(-dist[np.arange(n), a])[: int(empty.sum())]
            new[empty] = x[far]
        c = new
    return c


def assign_words(feats: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(h, w, D) features -> (h, w) index of the nearest codeword."""
    h, w, dim = feats.shape
    f = feats.reshape(-1, dim)
    dist = (f * f).sum(1)[:, None] - 2 * _dot(f, centres) + (centres * centres).sum(1)[None, :]
    return dist.argmin(1).reshape(h, w)


def block_histograms(words: np.ndarray, n_words: int, grid: int, eps: float = 1e-3) -> np.ndarray:
    """(h, w) word map -> (grid*grid, n_words) normalised histograms, blocks in raster order.

    Blocks follow ``np.array_split`` boundaries so any map size works; ``eps`` is added to every bin
    before normalising so that KL divergences stay finite.
    """
    h, w = words.shape
    ys = np.array_split(np.arange(h), grid)
    xs = np.array_split(np.arange(w), grid)
    out = np.empty((grid * grid, n_words), np.float64)
    for i, yi in enumerate(ys):
        for j, xj in enumerate(xs):
            block = words[yi[0]:yi[-1] + 1, xj[0]:xj[-1] + 1]
            out[i * grid + j] = np.bincount(block.ravel(), minlength=n_words)[:n_words]
    out += eps
    return out / out.sum(1, keepdims=True)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) along the last axis (p, q strictly positive, normalised)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return (p * (np.log(p) - np.log(q))).sum(-1)


def trimmed_mean(values: np.ndarray, tau: int) -> np.ndarray:
    """Mean over the last axis after dropping its ``tau`` largest entries."""
    n = values.shape[-1]
    keep = n - tau
    if keep <= 0:
        raise ValueError(f"cannot drop {tau} of {n} blocks")
    if tau == 0:
        return values.mean(-1)
    part = np.partition(values, keep - 1, axis=-1)[..., :keep]
    return part.mean(-1)


def alignment_distances(hq: np.ndarray, hn: np.ndarray, tau: int, chunk: int = 256) -> np.ndarray:
    """All-pairs alignment distance: (Nq, B, C) query and (Nn, B, C) normal histograms -> (Nq, Nn).

    KL(q||n) per block = sum q log q - sum q log n; the second term for all pairs is one einsum.
    Queries are processed in chunks so memory stays at chunk * Nn * B floats.
    """
    hq, hn = np.asarray(hq, np.float64), np.asarray(hn, np.float64)
    ent = (hq * np.log(hq)).sum(-1)  # (Nq, B)
    log_n = np.log(hn)
    out = np.empty((len(hq), len(hn)), np.float64)
    for s in range(0, len(hq), chunk):
        cross = np.einsum("ibc,jbc->ijb", hq[s:s + chunk], log_n)
        kl = ent[s:s + chunk, None, :] - cross
        out[s:s + chunk] = trimmed_mean(kl, tau)
    return out


# ----------------------------------------------------------------------------- retriever

@dataclass
class Neighbours:
    indices: np.ndarray  # into the normal set, nearest first
    distances: np.ndarray


@dataclass
class ReferenceRetriever:
    """Codebook + histograms of a set of normal images; answers nearest-normal queries."""

    config: RetrievalConfig
    feature_fn: FeatureFn
    mean: np.ndarray
    std: np.ndarray
    centres: np.ndarray
    normal_hist: np.ndarray  # (Nn, B, C)
    extra: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, normals: Sequence[np.ndarray], *, config: RetrievalConfig | None = None,
            feature_fn: FeatureFn | str = "filters", seed: int | None = None) -> "ReferenceRetriever":
        cfg = config or RetrievalConfig()
        if seed is not None:
            cfg = RetrievalConfig(**{**cfg.__dict__, "seed": seed})
        fn = FEATURES[feature_fn] if isinstance(feature_fn, str) else feature_fn
        if len(normals) == 0:
            raise MMRBenchError("reference retrieval needs at least one normal image")
        feats = [fn(im) for im in normals]
        flat = np.concatenate([f.reshape(-1, f.shape[-1]) for f in feats])
        mean, std = flat.mean(0), flat.std(0) + 1e-6
        rng = np.random.default_rng(cfg.seed)
        sample = flat if len(flat) <= cfg.max_patches else flat[rng.choice(len(flat), cfg.max_patches, replace=False)]
        k = min(cfg.n_words, len(sample))
        centres = kmeans((sample - mean) / std, k, cfg.kmeans_iters, cfg.seed)
        r = cls(cfg, fn, mean, std, centres, np.empty((0,)))
        r.normal_hist = np.stack([r._hist_from_feats(f) for f in feats])
        return r

    def _hist_from_feats(self, f: np.ndarray) -> np.ndarray:
        words = assign_words((f - self.mean) / self.std, self.centres)
        return block_histograms(words, self.config.n_words, self.config.grid, self.config.eps)

    def histograms(self, img: np.ndarray) -> np.ndarray:
        return self._hist_from_feats(self.feature_fn(img))

    def query_many(self, images: Sequence[np.ndarray], *, exclude: Sequence[int | None] | None = None) -> list[Neighbours]:
        """Neighbours of every query; ``exclude[i]`` removes normal i from query i's candidates
        (a normal image must not be its own reference)."""
        if len(images) == 0:
            return []
        hq = np.stack([self.histograms(im) for im in images])
        return self.neighbours_from_hist(hq, exclude=exclude)

    def neighbours_from_hist(self, hq: np.ndarray, *, exclude=None) -> list[Neighbours]:
        tau = min(self.config.tau, hq.shape[1] - 1)
        dist = alignment_distances(hq, self.normal_hist, tau)
        if exclude is not None:
            for i, j in enumerate(exclude):
                if j is not None:
                    dist[i, j] = np.inf
        k = min(self.config.top_k, dist.shape[1])
        out = []
        for row in dist:
            idx = np.argsort(row, kind="stable")[:k]
            idx = idx[np.isfinite(row[idx])]
            out.append(Neighbours(indices=idx, distances=row[idx]))
        return out

    def query(self, img: np.ndarray) -> Neighbours:
        return self.query_many([img])[0]


def retrieve_references(queries: Sequence[np.ndarray], normals: Sequence[np.ndarray], *,
                        config: RetrievalConfig | None = None, feature_fn: FeatureFn | str = "filters") -> list[Neighbours]:
    """One-shot helper: fit on ``normals`` and return the neighbours of every query."""
    return ReferenceRetriever.fit(normals, config=config, feature_fn=feature_fn).query_many(queries)
