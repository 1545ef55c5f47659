"""Reference retrieval (App. B): hand-checked pieces and end-to-end behaviour."""
from __future__ import annotations

import numpy as np
import pytest

from mmrbench.data.retrieval import (
    RetrievalConfig, ReferenceRetriever, alignment_distances, assign_words, block_histograms,
    filter_bank_features, kl_divergence, kmeans, retrieve_references, trimmed_mean,
)


def test_kl_of_identical_histograms_is_zero_and_hand_value():
    p = np.array([0.5, 0.25, 0.25])
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    q = np.array([0.25, 0.5, 0.25])
    # 0.5*ln(2) + 0.25*ln(0.5) + 0 = 0.25*ln 2
    assert kl_divergence(p, q) == pytest.approx(0.25 * np.log(2))
    # 0.25*ln(0.5) + 0.5*ln(2) + 0 = 0.25*ln 2 as well (this pair is symmetric by construction)
    assert kl_divergence(q, p) == pytest.approx(0.25 * np.log(2))
    r = np.array([0.8, 0.1, 0.1])
    assert kl_divergence(r, p) == pytest.approx(0.8 * np.log(1.6) + 0.1 * np.log(0.4) * 2)


def test_trimmed_mean_drops_the_tau_largest():
    v = np.array([1.0, 9.0, 2.0, 8.0, 3.0, 7.0])
    assert trimmed_mean(v, 2) == pytest.approx((1 + 2 + 3 + 7) / 4)
    assert trimmed_mean(v, 0) == pytest.approx(v.mean())
    assert trimmed_mean(np.stack([v, v[::-1]]), 5).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError):
        trimmed_mean(v, 6)


def test_block_histograms_hand_case():
    words = np.array([[0, 0, 1, 1],
                      [0, 0, 1, 1],
                      [2, 2, 2, 0],
                      [2, 2, 0, 0]])
    h = block_histograms(words, 3, 2, eps=0.0)
    assert h.shape == (4, 3)
    np.testing.assert_allclose(h, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.75, 0, 0.25]])
    # smoothing keeps every bin positive and rows normalised
    hs = block_histograms(words, 3, 2, eps=1e-3)
    assert (hs > 0).all() and np.allclose(hs.sum(1), 1)


def test_alignment_distance_matches_loop_and_ignores_one_corrupted_block():
    rng = np.random.default_rng(0)
    hn = rng.random((4, 25, 12)) + 0.05
    hn /= hn.sum(-1, keepdims=True)
    hq = hn[[2, 0]].copy()
    hq[0, 7] = np.roll(hq[0, 7], 5)  # a "defect" in one block of the copy of normal 2
    d = alignment_distances(hq, hn, tau=5)
    for i in range(2):
        for j in range(4):
            kls = sorted(kl_divergence(hq[i, b], hn[j, b]) for b in range(25))
            assert d[i, j] == pytest.approx(np.mean(kls[:20]))
    assert d[0, 2] == pytest.approx(0.0, abs=1e-12)  # the changed block is among the dropped ones
    assert d[1, 0] == pytest.approx(0.0, abs=1e-12)
    assert d[0].argmin() == 2 and d[1].argmin() == 0
    # chunking does not change results
    np.testing.assert_allclose(alignment_distances(hq, hn, tau=5, chunk=1), d)


def test_kmeans_separates_clusters_and_assigns_words():
    rng = np.random.default_rng(1)
    pts = np.concatenate([rng.normal(c, 0.05, (50, 2)) for c in ((0, 0), (5, 5), (0, 5))]).astype(np.float32)
    c = kmeans(pts, 3, seed=0)
    assert sorted(map(tuple, np.round(c).astype(int).tolist())) == [(0, 0), (0, 5), (5, 5)]
    w = assign_words(pts.reshape(15, 10, 2), c).ravel()
    assert len(set(w[:50])) == len(set(w[50:100])) == len(set(w[100:])) == 1 and len(set(w)) == 3
    # more clusters than distinct points: still exactly k centres, no NaN
    c4 = kmeans(np.zeros((5, 2), np.float32), 4)
    assert c4.shape == (4, 2) and np.isfinite(c4).all()


def _scene(rng, n_obj=6):
    import cv2

    img = np.full((128, 128, 3), 200, np.uint8)
    for _ in range(n_obj):
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        x, y = (int(v) for v in rng.integers(10, 118, 2))
        cv2.circle(img, (x, y), int(rng.integers(6, 20)), c, -1)
        cv2.rectangle(img, (x - 5, y + 8), (x + 15, y + 20), tuple(255 - v for v in c), -1)
    return img


def test_shifted_copy_retrieves_itself_among_distractors():
    rng = np.random.default_rng(5)
    normals = [_scene(rng) for _ in range(12)]
    for target in (0, 5, 11):
        q = np.roll(normals[target], (3, -4), axis=(0, 1))
        nb = retrieve_references([q], normals)[0]
        assert nb.indices[0] == target
        assert len(nb.indices) == 10 and np.all(np.diff(nb.distances) >= 0)


def test_exclude_and_top_k_and_feature_plugin():
    rng = np.random.default_rng(2)
    normals = [_scene(rng) for _ in range(5)]
    calls = []

    def feats(img):
        calls.append(1)
        return filter_bank_features(img, size=64)

    r = ReferenceRetriever.fit(normals, config=RetrievalConfig(top_k=3), feature_fn=feats)
    nb = r.query_many(normals[:2], exclude=[0, None])
    assert len(calls) == 7
    assert 0 not in nb[0].indices.tolist() and len(nb[0].indices) == 3
    assert nb[1].indices[0] == 1 and nb[1].distances[0] == pytest.approx(0.0, abs=1e-9)


def test_resnet_stem_features_plug_in():
    pytest.importorskip("torch")
    from mmrbench.data.retrieval import resnet_stem_features

    rng = np.random.default_rng(7)
    normals = [_scene(rng) for _ in range(8)]
    f = resnet_stem_features(normals[0])
    assert f.shape == (32, 32, 64) and np.isfinite(f).all()
    q = np.roll(normals[3], (2, 3), axis=(0, 1))
    nb = retrieve_references([q], normals, feature_fn="resnet18-stem")[0]
    assert nb.indices[0] == 3


def test_retrieval_picks_aligned_synthetic_references(synth_small):
    """On the generated benchmark the retrieved reference is better aligned with its query than an
    average normal of the category, measured by an independent feature (thumbnail correlation)."""
    from PIL import Image

    from mmrbench.data.manifest import read_manifest
    from mmrbench.data.synth import thumb_feature

    m = read_manifest(synth_small)
    load = lambda rel: np.asarray(Image.open(m.resolve(rel)).convert("RGB"))  # noqa: E731
    gains = []
    for cat in ("screw", "capsule", "bracket", "pcb"):
        train = m.select(split="train", categories=[cat])
        feats = {s.image: thumb_feature(load(s.image)) for s in train}
        for s in m.select(split="test", categories=[cat]):
            q = thumb_feature(load(s.image))
            sims = {k: float(v @ q) for k, v in feats.items()}
            gains.append(sims[s.reference] - np.mean(list(sims.values())))
    assert np.mean(gains) > 0
