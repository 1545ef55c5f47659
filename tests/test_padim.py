"""PaDiM on tiny tensors: Gaussian fit against numpy, defect localised, state round trip."""
import numpy as np
import pytest
import torch

from mmrbench.vision.backbones import load_backbone
from mmrbench.baselines.padim import Padim, PadimConfig, batched_spd_inverse


def _textures(n, seed, size=64):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, size // 8, size // 8, generator=g)
    x = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    return 0.5 * x + 0.25


def test_fit_matches_numpy_mean_and_covariance():
    bb = load_backbone("resnet18", None, seed=0)
    pd = Padim(bb, PadimConfig(image_size=64, d=20, eps=0.01, blur_sigma=0))
    x = _textures(10, 0)
    pd.fit([x[:3], x[3:7], x[7:]])  # uneven batches exercise the streaming sums
    e = pd.embed(x).double().numpy()  # (N, P, d)
    mu = e.mean(0)
    assert np.allclose(pd.mean.numpy(), mu, atol=1e-4)
    p = 5
    cov = np.cov(e[:, p, :], rowvar=False) + 0.01 * np.eye(20)
    inv = np.linalg.inv(cov)
    assert np.allclose(pd.cov_inv[p].numpy(), inv, rtol=1e-3, atol=1e-3 * np.abs(inv).max())
    # Mahalanobis of one test vector, by hand
    xt = _textures(1, 5)
    et = pd.embed(xt).double().numpy()[0, p]
    md = np.sqrt((et - mu[p]) @ inv @ (et - mu[p]))
    assert float(pd.distances(xt)[0, p]) == pytest.approx(md, rel=1e-3)
    assert pd.score(xt)[0].shape == (1, 64, 64)
    assert pd.channel_idx.tolist() == sorted(pd.channel_idx.tolist())


def test_spd_inverse():
    a = torch.randn(7, 5, 5, dtype=torch.float64)
    cov = a @ a.transpose(1, 2) + 0.1 * torch.eye(5, dtype=torch.float64)
    inv = batched_spd_inverse(cov, chunk=3)
    assert torch.allclose(inv @ cov, torch.eye(5, dtype=torch.float64).expand(7, 5, 5), atol=1e-8)


def test_defect_scores_higher_and_is_localised():
    bb = load_backbone("resnet18", None, seed=0)
    pd = Padim(bb, PadimConfig(image_size=64, blur_sigma=1.0))
    pd.fit([_textures(10, 1)])
    normal = _textures(4, 2)
    bad = normal.clone()
    bad[:, :, 40:52, 8:20] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)  # a red square
    maps, scores = pd.score(torch.cat([normal, bad]))
    assert scores.shape == (8,) and maps.shape == (8, 64, 64)
    assert scores[4:].min() > scores[:4].max()
    for m in maps[4:]:
        y, x = np.unravel_index(np.argmax(m), m.shape)
        assert 32 <= y < 60 and 0 <= x < 28
    assert np.allclose(scores, maps.reshape(8, -1).max(1))


def test_state_round_trip():
    bb = load_backbone("resnet18", None, seed=0)
    pd = Padim(bb, PadimConfig(image_size=64, d=30))
    pd.fit([_textures(6, 3)])
    x = _textures(2, 4)
    ref = pd.score(x)
    st = {k: np.array(v) for k, v in pd.state().items()}
    pd2 = Padim(bb, PadimConfig(image_size=64, d=30)).load_state(st)
    got = pd2.score(x)
    assert np.allclose(ref[0], got[0]) and np.allclose(ref[1], got[1])


def test_embedding_equals_concat_then_select():
    bb = load_backbone("resnet18", None, seed=0)
    pd = Padim(bb, PadimConfig(image_size=64, d=50, seed=3))
    x = _textures(2, 9)
    f = bb.features(x, ("layer1", "layer2", "layer3"))
    full = torch.cat([f["layer1"]] + [torch.nn.functional.interpolate(f[n], size=(16, 16), mode="nearest")
                                      for n in ("layer2", "layer3")], 1)
    ref = full.index_select(1, pd.channel_idx).flatten(2).transpose(1, 2)
    assert torch.equal(pd.embed(x), ref)
