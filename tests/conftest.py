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


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """Torch in the test process runs on one thread, as in the serving replicas
    (``deployments.loaders``) and Ray's workers (``OMP_NUM_THREADS=1``). With its default (one
    per core) the toy models of the tests spent most of their CPU in OpenMP workers waiting for
    each other on a shared 2-core machine: ``test_two_tower_learns_a_simple_preference`` took
    21.5 s of CPU instead of 2.4 s. Processes the tests start (Ray, jobs) are not affected."""
    import torch

    torch.set_num_threads(1)

