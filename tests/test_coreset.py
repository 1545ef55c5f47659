"""Greedy k-center coreset: hand case, farthest-point property, projection, sizes."""
import numpy as np
import pytest
import torch

from mmrbench.baselines.coreset import greedy_coreset, random_projection


def test_hand_case_picks_far_points_first():
    # clusters at 0, 10 and 100 on a line; whatever the random start, the three clusters are covered by 3 centres
    x = np.array([[0.0], [0.1], [10.0], [10.1], [100.0], [100.1]], dtype=np.float32)
    for seed in range(5):
        sel = greedy_coreset(x, ratio=0.5, proj_dim=0, seed=seed, precision="single")
        assert len(sel) == 3 and len(set(sel.tolist())) == 3
        clusters = {int(x[i, 0] // 5) for i in sel}
        assert clusters == {0, 2, 20}


def test_matches_bruteforce_farthest_point_order():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    sel = greedy_coreset(x, ratio=0.1, proj_dim=0, seed=3, precision="single")
    assert len(sel) == 30
    # brute force with the same start
    chosen = [int(sel[0])]
    dmin = np.linalg.norm(x - x[chosen[0]], axis=1)
    for _ in range(29):
        nxt = int(np.argmax(dmin))
        chosen.append(nxt)
        dmin = np.minimum(dmin, np.linalg.norm(x - x[nxt], axis=1))
    assert sel.tolist() == chosen


def test_coverage_better_than_random_and_projection_keeps_it():
    rng = np.random.default_rng(1)
    # low intrinsic dimension embedded in 256 dims, like real patch features
    x = torch.from_numpy((rng.normal(size=(2000, 4)) @ rng.normal(size=(4, 256))).astype(np.float32))
    sel = greedy_coreset(x, ratio=0.05, proj_dim=64, seed=0)
    rnd = rng.choice(2000, size=len(sel), replace=False)

    def radius(idx):
        return torch.cdist(x, x[idx]).min(1).values.max().item()

    assert radius(sel) < 0.8 * radius(rnd)


def test_projection_shape_seed_and_distances():
    x = torch.randn(500, 512, generator=torch.Generator().manual_seed(0))
    a = random_projection(x, 128, seed=7)
    b = random_projection(x, 128, seed=7, chunk=33)
    assert a.shape == (500, 128) and torch.allclose(a, b, atol=1e-5)
    d_full = torch.pdist(x[:50])
    d_proj = torch.pdist(a[:50])
    ratio = (d_proj / d_full)
    assert 0.7 < ratio.mean().item() < 1.3
    assert random_projection(x, 1024) is x  # no projection up


def test_sizes_and_errors():
    x = np.zeros((10, 4), np.float32)
    assert greedy_coreset(x, ratio=1.0).tolist() == list(range(10))
    assert len(greedy_coreset(np.random.rand(100, 4).astype(np.float32), ratio=0.1, max_size=5)) == 5
    with pytest.raises(ValueError, match="precision"):
        greedy_coreset(x, ratio=0.5, precision="double")
    with pytest.raises(ValueError, match="ratio"):
        greedy_coreset(x, ratio=0.0)


def _radius(x: torch.Tensor, idx) -> float:
    return torch.cdist(x, x[torch.as_tensor(idx)]).min(1).values.max().item()


def test_half_precision_covers_as_well_as_single():
    # clustered points, like patch features; half precision may pick other near-equally far points,
    # but the cover it builds must be as good
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(60, 32, generator=g) * 3
    x = centres[torch.randint(60, (4000,), generator=g)] + torch.randn(4000, 32, generator=g)
    single = greedy_coreset(x, ratio=0.05, proj_dim=0, seed=0, precision="single")
    half = greedy_coreset(x, ratio=0.05, proj_dim=0, seed=0, precision="half")
    assert len(half) == len(single) == 200 and len(set(half.tolist())) == 200
    assert half[0] == single[0]  # same seeded start
    assert _radius(x, half) <= 1.01 * _radius(x, single)


def test_half_precision_survives_huge_feature_values():
    # float16 overflows at 65504: the selection scales the projection first, so large activations
    # (random-weight backbones produce them) still give the exact cover of the hand case
    x = np.array([[0.0], [0.1], [10.0], [10.1], [100.0], [100.1]], dtype=np.float32) * 1e4
    sel = greedy_coreset(x, ratio=0.5, proj_dim=0, seed=0, precision="half")
    assert {int(x[i, 0] // 5e4) for i in sel} == {0, 2, 20}
