"""`recsys up` turns Ray token authentication on by default (issue 15): the token a cluster gets,
what its clients are told, and how the CLI reaches a token cluster (no Ray started here; the
real cluster is in tests/integration/test_cluster_auth.py)."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict
from pathlib import Path

import pytest

from cluster import cli, local

_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for k in _AUTH_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RECSYS_RAY_TEMP_DIR", str(tmp_path))
    return tmp_path


def _recorded(tmp_path: Path, auth_mode: str = "token") -> local.LocalCluster:
    token = local._token_path(str(tmp_path)) if auth_mode == "token" else None
    cluster = local.LocalCluster(address="127.0.0.1:6399", dashboard_url="http://127.0.0.1:8299",
                                 temp_dir=str(tmp_path), pgid=0, num_cpus=1, auth_mode=auth_mode,
                                 auth_token_path=token)  # fmt: skip
    (tmp_path / local.STATE_FILE).write_text(json.dumps(asdict(cluster)))
    return cluster


def test_a_new_token_per_cluster_readable_by_its_owner_only(clean_env):
    first = Path(local._token_path(str(clean_env)))
    mode = stat.S_IMODE(first.stat().st_mode)
    assert mode == 0o600 and len(first.read_text()) == 64
    old = first.read_text()
    again = Path(local._token_path(str(clean_env)))
    assert again == first and again.read_text() != old


def test_a_token_the_caller_gives_is_used_as_is(clean_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/somewhere/token")
    assert local._token_path(str(clean_env)) == "/somewhere/token"
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "abc")
    assert local._token_path(str(clean_env)) is None
    assert not (clean_env / local.TOKEN_FILE).exists()


def test_clients_are_told_the_addresses_the_mode_and_the_token(clean_env):
    cluster = _recorded(clean_env)
    env = local.client_env(cluster)
    assert env == {"RAY_ADDRESS": "127.0.0.1:6399", "RAY_API_SERVER_ADDRESS": "http://127.0.0.1:8299",
                   "RAY_DASHBOARD_ADDRESS": "http://127.0.0.1:8299", "RAY_AUTH_MODE": "token",
                   "RAY_AUTH_TOKEN_PATH": cluster.auth_token_path}  # fmt: skip
    token = Path(cluster.auth_token_path).read_text()
    assert local.auth_headers(cluster) == {"Authorization": f"Bearer {token}"}
    off = _recorded(clean_env, auth_mode="disabled")
    assert local.client_env(off)["RAY_AUTH_MODE"] == "disabled"
    assert "RAY_AUTH_TOKEN_PATH" not in local.client_env(off) and local.auth_headers(off) == {}


def test_the_cli_adopts_the_recorded_clusters_token_unless_told_otherwise(clean_env, monkeypatch):
    cluster = _recorded(clean_env)
    cli.adopt_local_auth()
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == cluster.auth_token_path
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the caller's choice wins
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    cli.adopt_local_auth()
    assert os.environ["RAY_AUTH_MODE"] == "disabled" and "RAY_AUTH_TOKEN_PATH" not in os.environ


def test_up_starts_ray_with_token_auth_unless_told_otherwise(clean_env, monkeypatch):
    """The environment ``ray start`` gets (the process itself is not run here: it fails at
    once, which ``start`` reports)."""
    seen: list[dict] = []

    class _RayStart:
        pid = 2**22 + 12345  # no such process group

        def __init__(self, cmd, env, **kwargs):
            seen.append(env)

        def wait(self, timeout=None):
            return 1

    monkeypatch.setattr(local.subprocess, "Popen", _RayStart)
    for auth_mode in (None, "disabled"):
        with pytest.raises(RuntimeError, match="ray start"):
            local.start(dashboard_port=local.free_port(), temp_dir=str(clean_env), auth_mode=auth_mode)
    token, off = seen
    assert token["RAY_AUTH_MODE"] == "token"
    assert Path(token["RAY_AUTH_TOKEN_PATH"]).read_text()
    assert off["RAY_AUTH_MODE"] == "disabled" and "RAY_AUTH_TOKEN_PATH" not in off
    assert cli.build_parser().parse_args(["up"]).auth is None  # None: $RAY_AUTH_MODE, else token


def test_recsys_env_without_a_cluster_is_a_one_line_error(clean_env, capsys):
    assert cli.main(["env"]) == 2
    assert "no local Ray cluster" in capsys.readouterr().err


def test_a_worker_node_joins_with_the_heads_auth_and_ports_of_its_own(clean_env, monkeypatch):
    seen: list[tuple[list[str], dict]] = []

    class _RayStart:
        pid = 2**22 + 54321
        returncode = 0

        def __init__(self, cmd, env, **kwargs):
            seen.append((cmd, env))

        def communicate(self, timeout=None):
            return b"", b""

    monkeypatch.setattr(local.subprocess, "Popen", _RayStart)
    head = _recorded(clean_env)
    assert local.start_worker(head, num_cpus=1, resources={"recsys_worker": 1}) == _RayStart.pid
    ((cmd, env),) = seen
    assert "--address=127.0.0.1:6399" in cmd and '--resources={"recsys_worker": 1}' in cmd
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == head.auth_token_path
    ports = [a for a in cmd if a.endswith("-port") is False and "-port=" in a]
    assert len(ports) == 3 and len({a.split("=")[1] for a in ports}) == 3  # free, distinct
