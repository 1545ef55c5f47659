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
