"""--shard I/N and mmrbench merge: two shards merged give exactly the unsharded result."""
from __future__ import annotations

import json

import pytest

from runner_data import make_tiny_manifest, write_scripted_answers

from mmrbench.cli import main
from mmrbench.errors import ConfigError
from mmrbench.predictions import read_predictions
from mmrbench.results import read_result
from mmrbench.merge import merge_runs
from mmrbench.selection import parse_shard, shard_of


@pytest.fixture()
def setup(tmp_path):
    manifest = make_tiny_manifest(tmp_path / "data")
    answers = write_scripted_answers(manifest, tmp_path / "answers.jsonl")
    return manifest, answers


def _eval(manifest, answers, out, *extra):
    rc = main(["eval", "--model", f"scripted:{answers}", "--data", str(manifest), "--out", str(out),
               "--no-progress", *extra])
    assert rc == 0


def test_two_shards_merged_equal_unsharded(setup, tmp_path):
    manifest, answers = setup
    _eval(manifest, answers, tmp_path / "full")
    _eval(manifest, answers, tmp_path / "s0", "--shard", "0/2")
    _eval(manifest, answers, tmp_path / "s1", "--shard", "1/2")
    ids0 = {p.id for p in read_predictions(tmp_path / "s0" / "predictions.jsonl")}
    ids1 = {p.id for p in read_predictions(tmp_path / "s1" / "predictions.jsonl")}
    assert ids0 and ids1 and not ids0 & ids1
    assert read_result(tmp_path / "s0").dataset["shard"] == "0/2"
    rc = main(["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "merged")])
    assert rc == 0
    full, merged = read_result(tmp_path / "full"), read_result(tmp_path / "merged")
    assert merged.metrics == full.metrics
    assert merged.model == full.model and merged.dataset == full.dataset and merged.protocol == full.protocol
    # same lines in the same (manifest) order: the predictions files hash the same
    assert merged.predictions_sha256 == full.predictions_sha256
    run = json.loads((tmp_path / "merged" / "run.json").read_text())
    assert run["n_missing"] == 0 and len(run["merged_from"]) == 2


def test_merge_refuses_overlap_and_mismatch(setup, tmp_path):
    manifest, answers = setup
    _eval(manifest, answers, tmp_path / "s0", "--shard", "0/2")
    _eval(manifest, answers, tmp_path / "full")
    with pytest.raises(ConfigError, match="answered in both"):
        merge_runs([tmp_path / "s0", tmp_path / "full"], tmp_path / "m1", quiet=True)
    _eval(manifest, answers, tmp_path / "s1dk", "--shard", "1/2", "--domain-knowledge")
    with pytest.raises(ConfigError, match="prompt_variant"):
        merge_runs([tmp_path / "s0", tmp_path / "s1dk"], tmp_path / "m2", quiet=True)
    with pytest.raises(ConfigError, match="same shard"):
        merge_runs([tmp_path / "s0", tmp_path / "s0"], tmp_path / "m3", quiet=True)


def test_missing_shard_is_scored_as_missing(setup, tmp_path, capsys):
    manifest, answers = setup
    _eval(manifest, answers, tmp_path / "s0", "--shard", "0/2")
    res = merge_runs([tmp_path / "s0"], tmp_path / "m", quiet=False)
    n0 = len(read_predictions(tmp_path / "s0" / "predictions.jsonl"))
    missing = sum(v["missing"] for v in res.metrics["subdatasets"].values())
    assert missing == 16 - n0 > 0
    assert "no prediction" in capsys.readouterr().err


def test_shard_assignment_is_stable_and_complete():
    ids = [f"S/c/{i}" for i in range(200)]
    parts = [{i for i in ids if shard_of(i, 3) == k} for k in range(3)]
    assert set().union(*parts) == set(ids) and sum(map(len, parts)) == len(ids)
    assert all(len(p) > 40 for p in parts)  # roughly balanced
    assert shard_of("MVTecAD/bottle/000", 4) == shard_of("MVTecAD/bottle/000", 4)
    # pinned: the split must never change between versions, or shards of one run would overlap
    assert [shard_of(f"x{i}", 2) for i in range(8)] == [0, 1, 1, 0, 1, 1, 0, 1]
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "a/b", "1", "-1/2"):
        with pytest.raises(ConfigError):
            parse_shard(bad)
