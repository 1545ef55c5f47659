"""Issue #15 item 1: Anomaly-R1-mini, the bundled board's reference entry.

The shipped checkpoint is loaded through its card from any working directory, and the tool that builds
it runs end to end (``--quick``: a few steps, the same commands) on data that never touches the
held-out subdatasets, exports one self-contained folder, evaluates it on a bundled folder and installs
model, logs, build record and evaluation.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = {"SynMVTecAD", "SynVisA", "SynMVTec3D", "SynMPDD"}


def _tool():
    spec = importlib.util.spec_from_file_location("build_anomaly_r1_mini", ROOT / "tools" / "build_anomaly_r1_mini.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_anomaly_r1_mini", mod)
    spec.loader.exec_module(mod)
    return mod


def test_build_tool_trains_exports_evaluates_and_installs(synth_small, tmp_path, one_torch_thread):
    bundled = tmp_path / "bundled"
    shutil.copytree(synth_small.parent, bundled / "data")
    work, inst = tmp_path / "work", tmp_path / "installed"
    assert _tool().main(["--work", str(work), "--quick", "--bundled", str(bundled), "--install",
                         "--install-dir", str(inst)]) == 0

    from mmrbench.data.manifest import read_manifest
    train = read_manifest(work / "data" / "train-names0.75.jsonl").samples
    assert train and {s.subdataset for s in train} == {"SynExtra"}  # never a held-out subdataset
    assert all(s.split == "train" and s.reference for s in train)
    assert {s.is_anomalous for s in train} == {True, False}
    # category-name augmentation: some images carry another name, never a held-out category's
    from mmrbench.data.synth_categories import CATEGORIES
    held_out_names = {c.name for c in CATEGORIES if c.subdataset in HELD_OUT}
    names = {s.category for s in train}
    assert names - {"fabric", "tile", "bottle"} and not names & held_out_names

    build = json.loads((inst / "build.json").read_text())
    assert build["quick"] and build["data"]["subdataset"] == "SynExtra" and build["data"]["images"] == len(train)
    assert build["data"]["renamed"] == sum(s.category not in ("fabric", "tile", "bottle") for s in train) > 0
    assert (inst / "model" / "model.safetensors").is_file() and not (inst / "model" / "adapter_config.json").exists()
    export = json.loads((inst / "model" / "export.json").read_text())
    assert export["adapter"] == "WORK/grpo" and str(tmp_path) not in json.dumps(export)
    assert [json.loads(x)["step"] for x in (inst / "sft_log.jsonl").read_text().splitlines()][-1] == 2
    assert len((inst / "grpo_log.jsonl").read_text().splitlines()) == 1

    result = json.loads((inst / "eval.json").read_text())
    assert set(result["metrics"]["subdatasets"]) == HELD_OUT
    n_test = sum(s.split == "test" and s.subdataset in HELD_OUT for s in read_manifest(synth_small).samples)
    assert sum(m["n"] for m in result["metrics"]["subdatasets"].values()) == n_test
    assert result["model"]["model_id"] == "WORK/model"


def test_build_tool_on_an_attention_supervised_base(tmp_path, one_torch_thread):
    """--pretrain-* pretrain the base on generated marks (head 0 of a layer supervised to look at the mark),
    --sft-attn-* add the SFT attention loss; build.json records the options, the base's pretraining check
    (without its per-step losses) and a command that rebuilds it."""
    work = tmp_path / "work"
    args = ["--work", str(work), "--quick", "--pretrain-steps", "1500", "--pretrain-layer", "2", "--pretrain-attn", "1",
            "--pretrain-attn-layer", "3", "--pretrain-more", "1000", "--rope-theta", "20",
            "--sft-attn-loss", "1", "--sft-attn-layer", "3"]
    assert _tool().main(args) == 0
    build = json.loads((work / "build.json").read_text())
    assert build["options"] == {"pretrain_steps": 1500, "pretrain_layer": 2, "pretrain_attn": 1.0,
                                "pretrain_attn_layer": 3, "pretrain_more": 1000, "sft_steps": 0, "sft_attn_loss": 1.0,
                                "sft_attn_layer": 3, "rope_theta": 20.0}
    assert build["pretrain"]["steps"] == 4  # --quick: two pretraining steps per stage
    # the second stage keeps the first's losses at the final mark sizes (curriculum 0)
    assert build["pretrain"]["stages"] == ["pt2b8lr0.001c0.7a1L2t1@3", "pt2b8lr0.001c0a1L2t1@3"]
    assert {"presence", "recall_iou01"} <= set(build["pretrain"]["grounding_eval"]) and "loss" not in build["pretrain"]
    assert build["commands"][0].endswith("--pretrain-steps 1500 --pretrain-layer 2 --pretrain-attn 1 "
                                         "--pretrain-attn-layer 3 --pretrain-more 1000 --sft-attn-loss 1 "
                                         "--sft-attn-layer 3 --rope-theta 20 --quick")
    base = next(work.glob("model-v3-*-rt20-*"))  # the rotary base is part of the base's folder name
    assert json.loads((base / "config.json").read_text())["text_config"]["rope_parameters"]["rope_theta"] == 20.0
    sft_log = [json.loads(x) for x in (work / "sft" / "sft_log.jsonl").read_text().splitlines()]
    assert len(sft_log) == 2 and all(x["attention_loss"] > 0 for x in sft_log)
    assert json.loads((work / "sft" / "sft_recipe.json").read_text())["sft"]["attention_loss_layer"] == 3
    assert any(p.name.endswith("t1@3") for p in work.glob("model-v3-*"))  # the base folder names its pretraining
    # a rerun on the finished folder (to evaluate or install) keeps every stage's recorded time
    assert _tool().main(args) == 0
    assert json.loads((work / "build.json").read_text())["times"] == build["times"]
    # a rerun with a changed training option does not reuse the finished stage: the trainer refuses to resume it
    with pytest.raises(SystemExit, match="mmrbench train failed"):
        _tool().main([*args[:-1], "2"])  # --sft-attn-layer 2; the finished SFT run was trained with 3



def test_build_tool_refuses_pretraining_options_without_pretraining(tmp_path, capsys):
    """--pretrain-more (or any --pretrain-* setting) without --pretrain-steps would build a random base and say
    nothing: refused before any work."""
    with pytest.raises(SystemExit):
        _tool().main(["--work", str(tmp_path / "w"), "--quick", "--pretrain-more", "1000", "--rope-theta", "20"])
    assert "--pretrain-more: pretraining options, which only take effect with --pretrain-steps" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()

def test_name_augmentation_is_deterministic_and_avoids_benchmark_categories():
    tool = _tool()
    from mmrbench.data.synth_categories import CATEGORIES
    real = {"bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw", "tile",
            "toothbrush", "transistor", "wood", "zipper", "candle", "cashew", "fryum", "macaroni1", "pcb1", "bagel",
            "cable_gland", "carrot", "cookie", "dowel", "foam", "peach", "potato", "rope", "tire", "connector",
            "metal_plate", "tubes", "bracket_black"}
    assert not (set(tool.NAME_POOL) & (real | {c.name for c in CATEGORIES}))
    names = [tool.augmented_name(f"S/c/{i}", 0, 0.75) for i in range(400)]
    assert names == [tool.augmented_name(f"S/c/{i}", 0, 0.75) for i in range(400)]
    kept = names.count(None) / len(names)
    assert 0.18 < kept < 0.32  # about 1 - p keep their own name
    assert all(tool.augmented_name(f"S/c/{i}", 0, 0.0) is None for i in range(50))


def test_shipped_checkpoint_loads_through_its_card_from_anywhere(synth_small, tmp_path, monkeypatch, one_torch_thread):
    from mmrbench.cards import parse_spec
    from mmrbench.runner import EvalOptions, run_eval

    card = parse_spec("anomaly-r1-mini")
    assert card.model_id.startswith("../")
    monkeypatch.chdir(tmp_path)  # the card's relative folder must not depend on the working directory
    run_eval(card, synth_small, tmp_path / "run", EvalOptions(limit=8, progress=False, quiet=True,
                                                            subdatasets=sorted(HELD_OUT)))
    run = json.loads((tmp_path / "run" / "result.json").read_text())
    assert run["model"]["model_id"] == "../baselines/anomaly-r1-mini/model"
    preds = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 8 and all(p["status"] in ("ok", "truncated") for p in preds)


def test_shipped_checkpoint_reproduces_its_recorded_evaluation(tmp_path, one_torch_thread):
    """`mmrbench bundled`'s default benchmark (seed 0, default scale) regenerated here, the shipped model
    evaluated through its card: the figures in eval.json come back. Exact on the machine that built it
    (measured); the tolerance (3 images of a subdataset) leaves room for another CPU's float rounding
    under greedy decoding, not for a changed prompt, processor or parser."""
    from mmrbench.cards import parse_spec
    from mmrbench.data.synth import generate
    from mmrbench.runner import EvalOptions, run_eval

    shipped = json.loads((ROOT / "baselines" / "anomaly-r1-mini" / "eval.json").read_text())
    manifest = generate(tmp_path / "data", seed=0, scale="default")
    from mmrbench.data.manifest import file_sha256
    assert file_sha256(manifest) == shipped["dataset"]["manifest_sha256"]  # the same benchmark, byte for byte
    run_eval(parse_spec("anomaly-r1-mini"), manifest, tmp_path / "run",
             EvalOptions(progress=False, quiet=True, subdatasets=sorted(HELD_OUT)))
    got = json.loads((tmp_path / "run" / "result.json").read_text())["metrics"]["subdatasets"]
    want = shipped["metrics"]["subdatasets"]
    assert set(got) == set(want) == HELD_OUT
    for sub in HELD_OUT:
        n = want[sub]["n"]
        assert got[sub]["n"] == n
        assert abs(got[sub]["det"]["accuracy"] - want[sub]["det"]["accuracy"]) * n <= 3, sub
        assert abs(got[sub]["invalid"] - want[sub]["invalid"]) <= 3, sub
