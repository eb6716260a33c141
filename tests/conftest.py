"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic ``tiny`` preset (tenants acme and globex, seed 0), generated once per
    session. Treat it as read-only: other tests share it."""
    from datagen.synth import generate

    out = tmp_path_factory.mktemp("tiny_data")
    generate("tiny", str(out), seed=0, progress=False)
    return out
