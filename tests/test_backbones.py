"""Backbones: torchvision naming, state-dict loading from a file the test writes, clear errors."""
import pytest
import torch

from mmrbench.vision.backbones import BackboneError, build_resnet, load_backbone
from mmrbench.errors import ConfigError

# torchvision resnet18 state dict: 122 entries (62 params + 60 BN buffers); spot-check names
TV_R18_KEYS = ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
               "bn1.num_batches_tracked", "layer1.0.conv1.weight", "layer1.1.bn2.running_var",
               "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean",
               "layer4.1.conv2.weight", "fc.weight", "fc.bias"]


def test_full_resnet18_has_torchvision_keys_and_count():
    sd = build_resnet("resnet18", depth=4).state_dict()
    assert len(sd) == 122
    for k in TV_R18_KEYS:
        assert k in sd
    assert sd["fc.weight"].shape == (1000, 512)
    assert sum(v.numel() for k, v in sd.items() if not k.endswith(("running_mean", "running_var",
                                                                   "num_batches_tracked"))) == 11689512


def test_wrn50_shapes_match_torchvision():
    m = build_resnet("wide_resnet50_2", depth=4)
    sd = m.state_dict()
    assert len(sd) == 320
    # wide bottleneck: layer1 width 128, output 256; layer3 output 1024
    assert sd["layer1.0.conv1.weight"].shape == (128, 64, 1, 1)
    assert sd["layer1.0.conv3.weight"].shape == (256, 128, 1, 1)
    assert sd["layer3.5.conv2.weight"].shape == (512, 512, 3, 3)
    assert sum(p.numel() for p in m.parameters()) == 68883240  # torchvision wide_resnet50_2


def test_feature_shapes_and_seeded_init():
    bb = load_backbone("resnet18", None, seed=3)
    x = torch.rand(2, 3, 64, 64)
    f = bb.features(x, ("layer1", "layer2", "layer3"))
    assert f["layer1"].shape == (2, 64, 16, 16)
    assert f["layer2"].shape == (2, 128, 8, 8)
    assert f["layer3"].shape == (2, 256, 4, 4)
    assert bb.info == {"name": "resnet18", "pretrained": False, "seed": 3, "weights_sha256": None}
    same = load_backbone("resnet18", None, seed=3).features(x, ("layer2",))["layer2"]
    other = load_backbone("resnet18", None, seed=4).features(x, ("layer2",))["layer2"]
    assert torch.equal(same, f["layer2"])
    assert not torch.allclose(other, f["layer2"])


def test_load_torchvision_format_file_changes_outputs(tmp_path):
    # a "torchvision" file: full classifier incl. layer4 and fc, different init, BN stats set
    full = build_resnet("resnet18", depth=4, seed=123)
    sd = full.state_dict()
    sd["bn1.running_mean"] += 0.5
    path = tmp_path / "resnet18-test.pth"
    torch.save(sd, path)
    x = torch.rand(1, 3, 64, 64)
    rnd = load_backbone("resnet18", None, seed=0)
    bb = load_backbone("resnet18", path)
    assert bb.info["pretrained"] is True and bb.info["seed"] is None
    assert len(bb.info["weights_sha256"]) == 64
    assert torch.equal(bb.model.conv1.weight, sd["conv1.weight"])
    assert torch.equal(bb.model.layer3[1].bn2.running_var, sd["layer3.1.bn2.running_var"])
    a = rnd.features(x, ("layer3",))["layer3"]
    b = bb.features(x, ("layer3",))["layer3"]
    assert not torch.allclose(a, b)
    # wrapped in {"state_dict": ...} with DataParallel prefixes also loads
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "wrapped.pth")
    bb2 = load_backbone("resnet18", tmp_path / "wrapped.pth")
    assert torch.equal(bb2.features(x, ("layer3",))["layer3"], b)


def test_missing_and_mismatched_keys_are_named(tmp_path):
    sd = build_resnet("resnet18", depth=4).state_dict()
    del sd["layer2.0.downsample.1.running_mean"]
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(BackboneError, match=r"missing keys: layer2\.0\.downsample\.1\.running_mean"):
        load_backbone("resnet18", tmp_path / "missing.pth")
    # a resnet18 file loaded as wide_resnet50_2: shapes and keys do not fit
    torch.save(build_resnet("resnet18", depth=4).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(BackboneError, match="does not fit"):
        load_backbone("wide_resnet50_2", tmp_path / "r18.pth")
    sd = build_resnet("resnet18", depth=4).state_dict()
    sd["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(BackboneError, match=r"shape mismatch: conv1\.weight \(file \(64, 3, 3, 3\), model \(64, 3, 7, 7\)\)"):
        load_backbone("resnet18", tmp_path / "shape.pth")


def test_unreadable_or_unknown(tmp_path):
    with pytest.raises(BackboneError, match="not found"):
        load_backbone("resnet18", tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(BackboneError, match="cannot read backbone weights"):
        load_backbone("resnet18", tmp_path / "junk.pth")
    with pytest.raises(ConfigError, match="unknown backbone 'vgg'"):
        load_backbone("vgg")
