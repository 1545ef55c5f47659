"""``mmrbench validate`` and the strict result schema: one-line errors naming the JSON path."""
import json

import pytest

from lb_fixtures import edit_json, make_benchmark, make_run
from mmrbench.cli import main
from mmrbench.leaderboard.schema import ResultValidationError, check_result, validate_result


@pytest.fixture()
def run(tmp_path):
    man, samples = make_benchmark(tmp_path / "bench")
    return make_run(tmp_path / "run", man, samples), man


def errors(d):
    return [(i.path, i.message) for i in validate_result(d) if not i.warning]


def test_harness_result_is_valid(run):
    d = json.loads((run[0] / "result.json").read_text())
    assert errors(d) == []


@pytest.mark.parametrize("edit, path, words", [
    (lambda d: d["metrics"]["subdatasets"]["VisA"]["det"].update(recall=1.3), "$.metrics.subdatasets.VisA.det.recall", "[0, 1]"),
    (lambda d: d["metrics"]["subdatasets"]["VisA"]["loc"].update(accuracy="0.5"), "$.metrics.subdatasets.VisA.loc.accuracy", "got string"),
    (lambda d: d["metrics"]["subdatasets"]["MVTecAD"]["loc"].pop("precision"), "$.metrics.subdatasets.MVTecAD.loc.precision", "required"),
    (lambda d: d.update(schema_version=2), "$.schema_version", "unsupported"),
    (lambda d: d.update(schema_version=True), "$.schema_version", "integer"),
    (lambda d: d.update(provenance="trust-me"), "$.provenance", "run, reported"),
    (lambda d: d.update(predictions_sha256="ABC"), "$.predictions_sha256", "64 lowercase hex"),
    (lambda d: d.update(predictions_sha256=None), "$.predictions_sha256", "sha256"),
    (lambda d: d["dataset"].update(manifest_sha256="f" * 63), "$.dataset.manifest_sha256", "64 lowercase hex"),
    (lambda d: d.pop("model"), "$.model", "required"),
    (lambda d: d["model"].update(name=""), "$.model.name", "empty"),
    (lambda d: d["model"].update(name="x" * 500), "$.model.name", "longer than"),
    (lambda d: d["metrics"]["subdatasets"]["VisA"]["categories"][0]["det"].update(accuracy=-0.1),
     "$.metrics.subdatasets.VisA.categories[0].det.accuracy", "[0, 1]"),
    (lambda d: d.update(detector={"threshold_oracle": 2}), "$.detector.threshold_oracle", "[0, 1]"),
    (lambda d: d.update(metrics={"subdatasets": {}}), "$.metrics.subdatasets", "non-empty"),
    (lambda d: d["metrics"]["subdatasets"].update({"</script>": d["metrics"]["subdatasets"]["VisA"]}),
     '$.metrics.subdatasets["</script>"]', "subdataset names are letters"),
])
def test_bad_fields_are_named_by_json_path(run, edit, path, words):
    d = json.loads((run[0] / "result.json").read_text())
    edit(d)
    errs = errors(d)
    assert errs and errs[0][0] == path and words in errs[0][1], errs
    with pytest.raises(ResultValidationError, match=path.replace("[", r"\[").replace("$", r"\$")):
        check_result(d, "result.json")


def test_reported_entries_may_leave_cells_empty_but_runs_may_not(run):
    d = json.loads((run[0] / "result.json").read_text())
    d["metrics"]["subdatasets"]["VisA"]["loc"]["recall"] = None
    assert errors(d)[0][0] == "$.metrics.subdatasets.VisA.loc.recall"
    d["provenance"] = "reported"
    d["predictions_sha256"] = None
    assert errors(d) == []


def test_unknown_keys_warn_but_pass(run):
    d = json.loads((run[0] / "result.json").read_text())
    d["my_extension"] = {"a": 1}
    issues = check_result(d)
    assert [str(i) for i in issues] == ["warning: $.my_extension: unknown key (kept, not checked)"]


def test_cli_ok_and_errors_are_one_line(run, capsys):
    rd, man = run
    assert main(["validate", str(rd / "result.json")]) == 0
    out = capsys.readouterr().out
    assert "valid result" in out and "predictions read" in out
    edit_json(rd / "result.json", lambda d: d["metrics"]["subdatasets"]["MVTecAD"]["det"].update(accuracy=7))
    assert main(["validate", str(rd)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "$.metrics.subdatasets.MVTecAD.det.accuracy" in err and "[0, 1]" in err


def test_cli_rejects_nan_and_non_json(tmp_path, run, capsys):
    text = (run[0] / "result.json").read_text().replace('"recall": 0.', '"recall": NaN, "x": 0.', 1)
    p = tmp_path / "nan.json"
    p.write_text(text)
    assert main(["validate", str(p)]) == 2
    assert "NaN is not valid JSON" in capsys.readouterr().err
    p.write_text("{not json")
    assert main(["validate", str(p)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_cli_verification_mode(run, capsys):
    rd, man = run
    assert main(["validate", str(rd), "--manifest", str(man)]) == 0
    assert "verified" in capsys.readouterr().out
    edit_json(rd / "result.json", lambda d: d["metrics"]["subdatasets"]["VisA"]["det"].update(accuracy=0.99))
    assert main(["validate", str(rd), "--manifest", str(man)]) == 1
    out = capsys.readouterr().out
    assert "unverified" in out and "metrics edited" in out and "VisA det.accuracy claimed 0.990000" in out
