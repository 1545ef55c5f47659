"""Shared fixtures.

``synth_small``: the bundled synthetic benchmark at ``--scale small``, generated once per test session
into a temporary folder; returns the manifest path. Tests must treat it as read-only (copy it when
they need to modify files).

``no_leaked_module_state`` (autouse): a test that leaves a global of an ``mmrbench`` module changed fails.
"""
from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory):
    from mmrbench.data.synth import generate

    out = tmp_path_factory.mktemp("synth_small")
    return generate(out, seed=0, scale="small")


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory):
    """A tiny random Qwen2.5-VL (seed 0) saved once per session; read-only for tests."""
    pytest.importorskip("transformers")
    from mmrbench.testing.tiny_qwen import build_tiny_qwen25vl

    return build_tiny_qwen25vl(tmp_path_factory.mktemp("tiny_qwen") / "model", seed=0)


@pytest.fixture
def one_torch_thread():
    """Two oversubscribed cores make many tiny matmuls slow; one thread is fastest for tiny models."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# --- no test may leave mmrbench's module state changed (issue 11 item 17) -----------------------------
#
# A test that assigns ``some_module.function = fake`` without restoring it silently changes every later
# test in the run (test_train_distributed once left GRPO training on canned completions for the rest of
# the suite). Before each test we record every global of every loaded ``mmrbench`` module, and the
# attributes of the classes they define; afterwards any name rebound or deleted, any global added that is
# not a submodule, any ``sys.modules`` entry swapped, and any object a test file defined left inside an
# mmrbench module (also in modules first imported during the test) fails the test, naming what changed.
# The recorded values are put back, so one leak does not spread to later tests. Use ``monkeypatch``.

_TESTS_DIR = Path(__file__).resolve().parent


def _watched_modules() -> dict[str, ModuleType]:
    return {name: mod for name, mod in list(sys.modules.items())
            if isinstance(mod, ModuleType) and (name == "mmrbench" or name.startswith("mmrbench."))}


def _module_state() -> dict[str, tuple[object, dict]]:
    """'module' and 'module.Class' -> (the object, a copy of its namespace)."""
    state: dict[str, tuple[object, dict]] = {}
    for name, mod in _watched_modules().items():
        space = dict(vars(mod))
        state[name] = (mod, space)
        for attr, value in space.items():
            if isinstance(value, type) and value.__module__ == name:
                state[f"{name}.{attr}"] = (value, dict(vars(value)))
    return state


def _from_a_test_file(value: object) -> bool:
    """An object whose code lives in a test file (a lambda, a fake class or its instance) or a mock."""
    from unittest import mock

    if isinstance(value, (mock.Base, mock.NonCallableMock)):
        return True
    try:
        owner = sys.modules.get(getattr(value, "__module__", None) or "")
        path = getattr(owner, "__file__", None)
    except Exception:  # a proxy object whose attribute lookup misbehaves
        return False
    return bool(path) and Path(path).resolve().is_relative_to(_TESTS_DIR)


def _changes_and_restore(before: dict[str, tuple[object, dict]]) -> list[str]:
    changes: list[str] = []
    modules = _watched_modules()
    for key, (obj, saved) in before.items():
        if isinstance(obj, ModuleType) and modules.get(key) is not obj:
            changes.append(f"sys.modules[{key!r}] replaced or removed")
            sys.modules[key] = obj
        now = vars(obj)
        for attr, value in saved.items():
            if attr not in now:
                changes.append(f"{key}.{attr} deleted")
            elif now[attr] is not value:
                changes.append(f"{key}.{attr} rebound")
            else:
                continue
            setattr(obj, attr, value)
        for attr in [a for a in now if a not in saved]:
            value = now[attr]
            if (attr.startswith("__") and attr.endswith("__")) or isinstance(value, ModuleType):
                continue  # __warningregistry__ and the like; a submodule imported during the test
            changes.append(f"{key}.{attr} added")
            delattr(obj, attr)
    for name, mod in modules.items():
        if name in before:
            continue
        for attr, value in list(vars(mod).items()):  # first imported during this test: nothing to compare
            if _from_a_test_file(value):
                changes.append(f"{name}.{attr} set to {value!r} from a test file")
        if any(c.startswith(f"{name}.") for c in changes):
            sys.modules.pop(name, None)  # the next import runs the module afresh
    return changes


@pytest.fixture(autouse=True)
def no_leaked_module_state():
    """Autouse, so it is set up before (and torn down after) ``monkeypatch`` and every test fixture."""
    before = _module_state()
    yield
    changes = _changes_and_restore(before)
    if changes:
        pytest.fail("test left mmrbench module state changed (use monkeypatch): " + "; ".join(changes),
                    pytrace=False)


@pytest.fixture(scope="module", autouse=True)
def no_leaked_module_state_per_file():
    """The same check around a whole test file, for module-scoped fixtures that patch and never undo."""
    before = _module_state()
    yield
    changes = _changes_and_restore(before)
    if changes:
        pytest.fail("a module-scoped fixture left mmrbench module state changed (use "
                    "pytest.MonkeyPatch.context()): " + "; ".join(changes), pytrace=False)


def pytest_collection_finish(session):
    """A test file that patches mmrbench when it is imported changes every test of the run."""
    found = [f"{name}.{attr}" for name, mod in _watched_modules().items()
             for attr, value in list(vars(mod).items()) if _from_a_test_file(value)]
    if found:
        raise pytest.UsageError("importing the test files changed mmrbench module state (patch inside a "
                                "test, with monkeypatch): " + ", ".join(found))
