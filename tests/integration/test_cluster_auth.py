"""`recsys up` starts Ray with token authentication by default (issue 15): the dashboard and the
job API refuse a client without the token; `recsys status`, and `ray job submit` after
`eval "$(recsys env)"`, work. A head node of its own (1 CPU, its own temp dir and ports),
started and stopped through the CLI, as a user would.

The same cluster shows the CLI's lifecycle: a second `recsys up` finds it running, `status`
lists its live node, `down` stops it, and then `status` fails and `down` has nothing to stop
(once a test of its own, with a cluster of its own: one Ray start and stop fewer)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests

from cluster.cli import main
from cluster.local import free_port

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _env(temp_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_AUTH_", "RAY_ADDRESS", "RAY_API_SERVER", "RAY_DASHBOARD"))}  # fmt: skip
    env["RECSYS_RAY_TEMP_DIR"] = temp_dir
    return env


def _run(command: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_recsys_up_turns_token_auth_on_and_its_clients_get_through(capsys):
    temp_dir = tempfile.mkdtemp(prefix="rta-", dir="/tmp")  # socket paths must stay short
    env = _env(temp_dir)
    dashboard = free_port()
    up = _run(f"{BIN}/recsys up --num-cpus 1 --dashboard-port {dashboard}", env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "token auth:    token" in up.stdout
        assert "started" in up.stdout and f"http://127.0.0.1:{dashboard}" in up.stdout and "RAY_ADDRESS=" in up.stdout
        # Again (in this process, the temp dir as a flag): the running cluster is found, not restarted.
        assert main(["up", "--num-cpus", "1", "--dashboard-port", str(dashboard), "--temp-dir", temp_dir]) == 0
        assert "already running" in capsys.readouterr().out
        url = f"http://127.0.0.1:{dashboard}"
        # Without the token: refused by the dashboard and its job API.
        assert requests.get(f"{url}/api/jobs/", timeout=30).status_code in (401, 403)
        denied = _run(f"RAY_AUTH_MODE=disabled {BIN}/ray job submit --address {url} -- "
                      "python -c 'print(4242)'", env, timeout=120)  # fmt: skip
        assert denied.returncode != 0 and "4242" not in denied.stdout
        # The CLI finds the token of the cluster it started; a shell gets it from `recsys env`.
        status = _run(f"{BIN}/recsys status", env)
        assert status.returncode == 0 and "CPUs: 1" in status.stdout, status.stdout + status.stderr
        assert "ALIVE" in status.stdout and "Serve apps: none" in status.stdout, status.stdout
        job = _run(f'eval "$({BIN}/recsys env)" && {BIN}/ray job submit -- '
                   "python -c 'import ray; ray.init(); print(4242, ray.cluster_resources()[\"CPU\"])'",
                   env)  # fmt: skip
        assert job.returncode == 0 and "4242 1.0" in job.stdout, job.stdout[-2000:] + job.stderr[-2000:]
    finally:
        down = _run(f"{BIN}/recsys down", env)
        assert down.returncode == 0, down.stderr
    assert "Stopped" in down.stdout, down.stdout
    assert not (Path(temp_dir) / "recsys-auth-token").exists()
    # Stopped: no status to give, nothing left to stop.
    assert main(["status", "--temp-dir", temp_dir]) == 2
    assert main(["down", "--temp-dir", temp_dir]) == 0
    assert "nothing to stop" in capsys.readouterr().out
