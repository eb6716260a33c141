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
from pathlib import Path

import pytest

# schemathesis loads its OpenAPI schema classes on first use. pytest rewrites those modules
# (schemathesis is a pytest plugin), which parses them with `ast.parse`. Inside the fuzz test,
# after Hypothesis has run, that parse once failed on CPython 3.11.7 with "SystemError: AST
# constructor recursion depth mismatch". Loading them here, at collection, keeps the parse
# out of the test.
import schemathesis.specs.openapi.schemas  # noqa: F401

from cluster import local

TEST_CLUSTER_ENV = {"RAY_health_check_period_ms": "1000", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
"""The GCS checks each node every second instead of every 3 s (Ray's default), so a node the
multi-node tests kill is declared dead after 5 failed checks in about 5 s, not 15 s. The
per-check timeout (10 s) and the failure count (5) stay Ray's: a busy, live node is not lost.

An ingress replica serving HTTP itself (HAProxy in front, ``configs/serve.yaml``) stops 2 s
after it is told to, not 30 s: Serve's 30 s default gives an *external* load balancer time to
deregister it, and the test cluster has none (Ray's own HAProxy is updated by the
controller). Every test app's teardown waited those 30 s."""


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[local.LocalCluster]:
    """A running head node (2 CPUs). ``.address`` is the GCS address, ``.dashboard_url`` the
    dashboard; ``RAY_ADDRESS`` points at it for the session."""
    # Unix socket paths under the temp dir must stay short (about 100 bytes): use /tmp/rt-*.
    temp_dir = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
    with pytest.MonkeyPatch.context() as mp:  # the daemons' environment (see TEST_CLUSTER_ENV)
        for key, value in TEST_CLUSTER_ENV.items():
            mp.setenv(key, value)
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
        # SIGTERM, then SIGKILL after 2 s, not local.stop's 10 s: the session's cluster and
        # its temp dir are thrown away, and one of its processes always outlived the 10 s
        # (the session's last teardown took 10.9 s).
        local.stop(temp_dir, grace_s=2.0)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_connected(ray_cluster: local.LocalCluster) -> local.LocalCluster:
    """The session cluster with this process connected as a driver."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_cluster.address, log_to_driver=False)
    return ray_cluster


@pytest.fixture(scope="session")
def two_tower_seed(ray_connected, tiny_data, tmp_path_factory) -> Path:
    """A work dir holding the tiny data's acme two-tower examples and data-quality report,
    built once per session by the jobs' own functions; tests copy it into their work dirs
    (:func:`tests.integration.training_env.seed_work_dir`). Read-only: tests share it."""
    from tests.integration.training_env import build_seed

    return build_seed(tiny_data, tmp_path_factory.mktemp("two_tower_seed"))
