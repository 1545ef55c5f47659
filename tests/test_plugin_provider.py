"""A provider living in its own package reaches ``mmrbench eval`` through the ``mmrbench.providers``
entry-point group: the package is really built and installed by pip (into a folder of its own), and a
separate process evaluates with it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runner_data import make_tiny_manifest

from mmrbench.data.manifest import read_manifest
from mmrbench.predictions import read_predictions
from mmrbench.results import read_result

REPO = Path(__file__).resolve().parents[1]

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "mmrbench-echo-provider"
version = "0.1"

[project.entry-points."mmrbench.providers"]
echo = "mmrbench_echo:EchoModel"

[tool.setuptools]
py-modules = ["mmrbench_echo"]
"""

MODULE = '''
"""A third-party provider: answers "No." to every request and reports the sizes it was sent."""
from mmrbench.adapters.base import ModelAPI, Response


class EchoModel(ModelAPI):
    provider = "echo"
    convention = "pixel"

    def __init__(self, model, *, convention=None, greeting="No."):
        super().__init__(model)
        self.greeting = greeting

    def generate(self, requests):
        return [Response(f"<answer>{self.greeting}</answer>", image_sizes=[[im.width, im.height] for im in r.images])
                for r in requests]
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugin")
    pkg = root / "pkg"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (pkg / "mmrbench_echo.py").write_text(textwrap.dedent(MODULE))
    site = root / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(site), str(pkg)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"pip could not install the plug-in package: {done.stderr[-2000:]}")
    assert any(p.name.endswith(".dist-info") for p in site.iterdir())
    return site


def _run(site: Path, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "mmrbench", *argv], capture_output=True, text=True, env=env,
                          timeout=300)


def test_entry_point_provider_is_listed_and_evaluates(plugin_site, tmp_path):
    listed = _run(plugin_site, "models")
    assert listed.returncode == 0 and "echo" in listed.stdout
    manifest = make_tiny_manifest(tmp_path / "data")
    out = tmp_path / "run"
    done = _run(plugin_site, "eval", "--model", "echo:any", "--option", "greeting=No.", "--data", str(manifest),
                "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr
    tests = read_manifest(manifest).select(split="test")
    preds = read_predictions(out / "predictions.jsonl")
    assert len(preds) == len(tests) and {p.response for p in preds} == {"<answer>No.</answer>"}
    res = read_result(out)
    assert res.model["provider"] == "echo"
    # a No to everything: detection recall 0 on every subdataset
    assert all(sub["det"]["recall"] == 0 for sub in res.metrics["subdatasets"].values())
    run = json.loads((out / "run.json").read_text())
    assert run["state"] == "complete"


def test_entry_point_provider_options_are_checked_too(plugin_site, tmp_path):
    manifest = make_tiny_manifest(tmp_path / "data")
    done = _run(plugin_site, "eval", "--model", "echo:any", "--option", "greting=hi", "--data", str(manifest),
                "--out", str(tmp_path / "run"))
    assert done.returncode == 2
    assert "'greting'" in done.stderr and "greeting" in done.stderr


def test_without_the_package_the_provider_is_unknown(tmp_path):
    manifest = make_tiny_manifest(tmp_path / "data")
    done = subprocess.run([sys.executable, "-m", "mmrbench", "eval", "--model", "echo:any", "--data", str(manifest),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2 and "unknown model" in done.stderr
