"""PatchCore on tiny tensors: nearest-neighbour distances, eq. 7 re-weighting by hand, defect found."""
import math

import numpy as np
import pytest
import torch

from mmrbench.vision.backbones import load_backbone
from mmrbench.baselines.patchcore import PatchCore, PatchCoreConfig, nearest, reweight


def _textures(n, seed, size=64):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, size // 8, size // 8, generator=g)
    x = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    return 0.5 * x + 0.25


def test_nearest_matches_cdist_across_chunks():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(50, 16, generator=g)
    bank = torch.randn(300, 16, generator=g)
    d, a = nearest(q, bank, (bank * bank).sum(1), chunk=64)
    ref = torch.cdist(q, bank)
    assert torch.allclose(d, ref.min(1).values, atol=1e-4)
    assert torch.equal(a, ref.argmin(1))


def test_nearest_distance_is_exact_for_a_bank_row():
    # Features like a backbone's (norm ~100): |q|^2 + |b|^2 - 2 q.b cancels to float32 noise of about
    # sqrt(1e-7 * 1e4) = 0.03 for a query equal to a bank row; the distance returned must be 0, as PatchCore
    # scores a normal patch it has stored.
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(200, 384, generator=g) * 3 + 5
    queries = torch.cat([bank[[3, 17, 150]], bank[[3]] + torch.tensor([3.0, 4.0] + [0.0] * 382)])
    d, idx = nearest(queries, bank, (bank * bank).sum(1), chunk=64)
    assert idx[:3].tolist() == [3, 17, 150]
    assert d[:3].tolist() == [0.0, 0.0, 0.0]
    assert float(d[3]) == pytest.approx(5.0, abs=1e-5) and int(idx[3]) == 3


def test_reweight_hand_case():
    # bank on a line: 0, 1, 2, 10 ; test patch at 0.5 -> nearest m* = bank[0] (tie with 1 resolved by caller)
    bank = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    bsq = (bank * bank).sum(1)
    t = torch.tensor([0.5])
    s_star = 0.5
    # N_3(m*=0) = {0, 1, 2}; distances of the test patch to them: 0.5, 0.5, 1.5
    expect = (1 - math.exp(0.5) / (math.exp(0.5) + math.exp(0.5) + math.exp(1.5))) * s_star
    assert reweight(s_star, t, 0, bank, bsq, b=3) == pytest_approx(expect)
    # b = 1: no re-weighting
    assert reweight(s_star, t, 0, bank, bsq, b=1) == s_star
    # huge distances do not overflow (logsumexp)
    far = torch.tensor([1e4])
    v = reweight(1e4, far, 3, bank, bsq, b=3)
    assert math.isfinite(v) and 0 < v <= 1e4


def pytest_approx(v):
    import pytest
    return pytest.approx(v, rel=1e-6)


def test_embedding_shape_and_target_dim():
    bb = load_backbone("resnet18", None, seed=0)
    pc = PatchCore(bb, PatchCoreConfig(image_size=64))
    e = pc.embed(_textures(2, 0))
    assert e.shape == (2, 64, 384)  # layer2 grid 8x8; 128 + 256 channels
    pc2 = PatchCore(bb, PatchCoreConfig(image_size=64, target_dim=100))
    assert pc2.embed(_textures(2, 0)).shape == (2, 64, 100)


def test_defect_scores_higher_and_is_localised_and_bank_is_coreset():
    bb = load_backbone("resnet18", None, seed=0)
    pc = PatchCore(bb, PatchCoreConfig(image_size=64, blur_sigma=1.0, coreset_ratio=0.25))
    pc.fit([_textures(8, 1), _textures(8, 11)])
    assert pc.n_patches == 16 * 64
    assert pc.bank.shape == (256, 384)
    normal = _textures(4, 2)
    bad = normal.clone()
    bad[:, :, 40:56, 8:24] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    maps, scores = pc.score(torch.cat([normal, bad]))
    assert maps.shape == (8, 64, 64)
    assert scores[4:].min() > scores[:4].max()
    for m in maps[4:]:
        y, x = np.unravel_index(np.argmax(m), m.shape)
        assert 32 <= y < 64 and 0 <= x < 32
    # a training image is (near) perfectly explained by the full bank
    full = PatchCore(bb, PatchCoreConfig(image_size=64, coreset_ratio=1.0, blur_sigma=0))
    tr = _textures(3, 7)
    full.fit([tr])
    m, _ = full.score(tr)
    assert float(np.abs(m).max()) < 1e-2


def test_state_round_trip():
    bb = load_backbone("resnet18", None, seed=0)
    pc = PatchCore(bb, PatchCoreConfig(image_size=64))
    pc.fit([_textures(4, 3)])
    x = _textures(2, 4)
    ref = pc.score(x)
    st = {k: np.array(v) for k, v in pc.state().items()}
    got = PatchCore(bb, PatchCoreConfig(image_size=64)).load_state(st).score(x)
    assert np.allclose(ref[0], got[0]) and np.allclose(ref[1], got[1])
