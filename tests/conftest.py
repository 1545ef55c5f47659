"""Shared fixtures.

``synth_small``: the bundled synthetic benchmark at ``--scale small``, generated once per test session
into a temporary folder; returns the manifest path. Tests must treat it as read-only (copy it when
they need to modify files).
"""
from __future__ import annotations

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
