"""Unit tests never touch a Ray cluster: ``ray.init`` raises."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_ray_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray  # imported here so collecting unit tests stays cheap when Ray is not needed

    def _refuse(*args, **kwargs):
        raise RuntimeError("unit tests must not start or connect to Ray; use tests/integration")

    monkeypatch.setattr(ray, "init", _refuse)
