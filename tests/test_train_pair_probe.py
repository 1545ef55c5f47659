"""benchmarks/mini_pair_probe.py: the AUROC it prints, and both checks on the tiny Qwen2.5-VL."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("mini_pair_probe", ROOT / "benchmarks" / "mini_pair_probe.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mini_pair_probe"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_auroc_hand_computed():
    p = load_script()
    assert p.auroc([3, 4], [1, 2]) == 1.0
    assert p.auroc([1], [2]) == 0.0
    # pos 2, 3 vs neg 1, 2: pairs (2>1) 1, (2=2) 0.5, (3>1) 1, (3>2) 1 -> 3.5 / 4
    assert p.auroc([2, 3], [1, 2]) == pytest.approx(0.875)


def test_ridge_r2_hand_computed():
    torch = pytest.importorskip("torch")
    p = load_script()
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    # target 0: exactly 2x + 1 (R^2 = 1 at a negligible ridge); target 1: constant 5 on the fit set,
    # so the fit predicts 5 everywhere and R^2 on the test targets 4, 6 is 1 - SSE/SST = 1 - 2/2 = 0
    y = torch.cat([2 * x + 1, torch.full_like(x, 5.0)], 1)
    xt = torch.tensor([[4.0], [5.0]])
    yt = torch.cat([2 * xt + 1, torch.tensor([[4.0], [6.0]])], 1)
    r2 = p.ridge_r2((x, y), (xt, yt), lam=1e-9)
    assert r2[0] == pytest.approx(1.0, abs=1e-6)
    assert r2[1] == pytest.approx(1 - ((5 - 4) ** 2 + (5 - 6) ** 2) / ((4 - 5) ** 2 + (6 - 5) ** 2), abs=1e-6)
    # features unrelated to the target: a ridge fit predicts no better than the fit set's mean
    g = torch.Generator().manual_seed(0)
    noise, tnoise = torch.randn(200, 3, generator=g), torch.randn(200, 3, generator=g)
    target, ttarget = torch.rand(200, 1, generator=g), torch.rand(200, 1, generator=g)
    assert p.ridge_r2((noise, target), (tnoise, ttarget))[0] < 0.05


@pytest.mark.slow
def test_probe_on_tiny_model(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    sys.path.insert(0, str(ROOT / "tests"))
    from train_toydata import write_toy_manifest

    from mmrbench.testing.tiny_qwen import tiny_qwen25vl_dir

    p = load_script()
    tiny = tiny_qwen25vl_dir(tmp_path / "cache")
    man = write_toy_manifest(tmp_path / "toy", n=4)
    r = p.probe(tiny, man, None, 4)
    assert r["samples"] == 4
    rope = r["rope"]
    # reference and query are two images with distinct positions, corresponding patches one offset apart
    assert rope["images"] == 2 and rope["constant_offset"] is True
    assert rope["ranges_thw"][1][0][0] > rope["ranges_thw"][0][0][1]
    assert 0.0 <= r["token_auroc_pair"] <= 1.0 and 0.0 <= r["image_auroc_query_only"] <= 1.0
    # one (row, column) R^2 pair per hidden state: the vision features, then each decoder layer
    n_layers = r["position_r2_row_col_by_layer"]
    assert len(n_layers) == 1 + p_layers(tiny) and all(len(v) == 2 and v[0] <= 1.0 for v in n_layers)


def p_layers(model_dir) -> int:
    import json
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return int(cfg.get("text_config", cfg)["num_hidden_layers"])


def test_refuses_the_held_out_split(tmp_path, capsys):
    p = load_script()
    (tmp_path / "mini_eval.jsonl").write_text("")
    assert p.main(["--model", str(tmp_path), "--manifest", str(tmp_path / "mini_eval.jsonl")]) == 2
    assert "held-out" in capsys.readouterr().err
