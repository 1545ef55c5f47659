"""The suite fails when a test leaves an mmrbench module changed (issue 11 item 17).

Small test files with leaking tests run under a copy of this suite's conftest.py in a real pytest
process; each kind of leak must fail its test (naming what changed), the state must be put back for the
next test, and monkeypatch (which undoes itself) must pass. A leak by a module-scoped fixture fails the
file's last test; a test file that patches mmrbench when imported stops the run before any test.
"""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LEAKY_TESTS = '''
import sys
import types

import mmrbench.parsing as parsing

ORIGINAL = parsing.parse_answer
VALID = parsing.ParsedAnswer.valid


def test_rebinds_a_function():
    parsing.parse_answer = lambda text: None


def test_next_test_sees_the_real_function():
    assert parsing.parse_answer is ORIGINAL


def test_monkeypatch_is_fine(monkeypatch):
    monkeypatch.setattr(parsing, "parse_answer", lambda text: None)
    monkeypatch.setattr(parsing.ParsedAnswer, "valid", True)
    monkeypatch.setitem(sys.modules, "mmrbench.parsing", types.ModuleType("stand_in"))


def test_restoring_by_hand_is_fine():
    old = parsing.MAX_ANSWER_CHARS
    parsing.MAX_ANSWER_CHARS = 3
    parsing.MAX_ANSWER_CHARS = old


def test_adds_a_global():
    parsing.EXTRA = 1


def test_deletes_a_global():
    del parsing.BOX_KEYS


def test_rebinds_a_class_attribute():
    parsing.ParsedAnswer.valid = True


def test_next_test_sees_the_real_class():
    assert parsing.ParsedAnswer.valid is VALID and not hasattr(parsing, "EXTRA") and parsing.BOX_KEYS


def test_swaps_a_module():
    sys.modules["mmrbench.parsing"] = types.ModuleType("stand_in")


def test_patches_a_module_it_imports_first():
    import mmrbench.geometry as geometry  # not loaded before this test: nothing recorded to compare with

    geometry.iou = lambda a, b: 1.0


def test_importing_a_module_is_fine():
    import mmrbench.coords  # noqa: F401  (adds the submodule to the package: not a leak)
'''

# a module-scoped fixture that patches and never undoes: the file's last test reports it at teardown
LEAKY_MODULE_FIXTURE = '''
import pytest

import mmrbench.parsing as parsing


@pytest.fixture(scope="module")
def patched():
    parsing.MAX_ANSWER_CHARS = 5


def test_uses_the_fixture(patched):
    assert parsing.MAX_ANSWER_CHARS == 5
'''

# a test file that patches mmrbench when it is imported
LEAKY_IMPORT = '''
import mmrbench.parsing as parsing

parsing.find_boxes = lambda answer: []


def test_anything():
    pass
'''

EXPECTED_FAILURES = {
    "test_rebinds_a_function": "mmrbench.parsing.parse_answer rebound",
    "test_adds_a_global": "mmrbench.parsing.EXTRA added",
    "test_deletes_a_global": "mmrbench.parsing.BOX_KEYS deleted",
    "test_rebinds_a_class_attribute": "mmrbench.parsing.ParsedAnswer.valid rebound",
    "test_swaps_a_module": "sys.modules['mmrbench.parsing'] replaced",
    "test_patches_a_module_it_imports_first": "mmrbench.geometry.iou set to <function",
}


def run_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """A real pytest process on ``folder`` under a copy of this suite's conftest.py."""
    (folder / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (folder / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def outcomes(report: Path) -> dict[str, str]:
    """Test name -> 'passed' or the text of its failure/error (a teardown error counts)."""
    out: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        bad = case.find("error")
        if bad is None:
            bad = case.find("failure")
        out[case.get("name")] = "passed" if bad is None else (bad.get("message", "") + (bad.text or ""))
    return out


def test_leaking_tests_fail_the_suite(tmp_path):
    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS)
    (tmp_path / "test_leaky_module_fixture.py").write_text(LEAKY_MODULE_FIXTURE)
    report = tmp_path / "report.xml"
    proc = run_pytest(tmp_path, f"--junitxml={report}", "test_leaky.py", "test_leaky_module_fixture.py")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    outcome = outcomes(report)
    assert "mmrbench.parsing.MAX_ANSWER_CHARS rebound" in outcome["test_uses_the_fixture"], outcome
    assert "module-scoped fixture" in outcome["test_uses_the_fixture"]
    del outcome["test_uses_the_fixture"]
    for name, why in EXPECTED_FAILURES.items():
        assert "left mmrbench module state changed" in outcome[name] and why in outcome[name], (name, outcome[name])
    passed = {n for n, o in outcome.items() if o == "passed"}
    assert passed == {"test_next_test_sees_the_real_function", "test_monkeypatch_is_fine",
                      "test_restoring_by_hand_is_fine", "test_next_test_sees_the_real_class",
                      "test_importing_a_module_is_fine"}, outcome


def test_patching_at_import_fails_the_run(tmp_path):
    (tmp_path / "test_leaky_import.py").write_text(LEAKY_IMPORT)
    proc = run_pytest(tmp_path, "test_leaky_import.py")
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage-error status: nothing ran
    assert "importing the test files changed mmrbench module state" in proc.stderr
    assert "mmrbench.parsing.find_boxes" in proc.stderr
