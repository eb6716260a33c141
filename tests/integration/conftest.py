"""A real local Ray cluster for integration tests, one per test session.

The head node gets its own temp dir and free ports (GCS, dashboard, client server, dashboard
agent), so sessions of other engineers can run at the same time; teardown stops exactly the
processes this fixture started (see :mod:`cluster.local`), never every Ray process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

# schemathesis loads its OpenAPI schema classes on first use. pytest rewrites those modules
# (schemathesis is a pytest plugin), which parses them with `ast.parse`. Inside the fuzz test,
# after Hypothesis has run, that parse once failed on CPython 3.11.7 with "SystemError: AST
# constructor recursion depth mismatch". Loading them here, at collection, keeps the parse
# out of the test.
import schemathesis.specs.openapi.schemas  # noqa: F401

from cluster import local


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[local.LocalCluster]:
    """A running head node (2 CPUs). ``.address`` is the GCS address, ``.dashboard_url`` the
    dashboard; ``RAY_ADDRESS`` points at it for the session."""
    # Unix socket paths under the temp dir must stay short (about 100 bytes): use /tmp/rt-*.
    temp_dir = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
    cluster, _ = local.start(
        num_cpus=2,
        dashboard_port=local.free_port(),
        port=local.free_port(),
        temp_dir=temp_dir,
        object_store_memory=500 * 1024 * 1024,
        auth_mode="disabled",  # drivers in this process connect without a token
    )
    previous = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        yield cluster
    finally:
        import ray

        ray.shutdown()
        if previous is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = previous
        local.stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_connected(ray_cluster: local.LocalCluster) -> local.LocalCluster:
    """The session cluster with this process connected as a driver."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_cluster.address, log_to_driver=False)
    return ray_cluster
