"""A real single-node Ray cluster on this machine, started with the venv's ``ray start --head``.

``start`` records what it started in ``<temp_dir>/recsys-cluster.json`` (GCS address, dashboard
URL, and the process group of the ``ray start`` call, which every Ray daemon of this cluster
shares). ``stop`` ends exactly those processes and their children, by pid: unlike ``ray stop``,
which ends every Ray process on the machine, it leaves other clusters (other users, other test
sessions) alone. :func:`stop_all` is the ``ray stop`` escape hatch.

Ports that Ray would otherwise fix (client server 10001, dashboard agent 52365) are picked free,
so several clusters can run side by side.

Token authentication (Ray's ``RAY_AUTH_MODE=token``) is on by default: without it, anyone who
can reach the dashboard port can submit a job, i.e. run any code. ``start`` writes a random
token to ``<temp_dir>/recsys-auth-token`` (mode 0600; or uses ``$RAY_AUTH_TOKEN`` /
``$RAY_AUTH_TOKEN_PATH`` when set) and starts Ray with it; the daemons, job drivers and Serve
replicas inherit it. Clients of the cluster need ``RAY_AUTH_MODE=token`` and the token:
:func:`client_env` (printed by ``recsys env``), :func:`use_auth` for this process.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cluster.serve_files import SERVE_CPU, env_vars

STATE_FILE = "recsys-cluster.json"
TOKEN_FILE = "recsys-auth-token"
SERVE_CONFIG = SERVE_CPU
"""Whose ``runtime_env.env_vars`` a started cluster gets; ``configs/serve.gpu.yaml`` carries
the same Serve settings (a unit test holds the two equal)."""


@dataclass
class LocalCluster:
    """A cluster ``start`` launched. ``address`` is the GCS address (``host:port``)."""

    address: str
    dashboard_url: str
    temp_dir: str
    pgid: int
    num_cpus: int | None
    auth_mode: str = "disabled"
    auth_token_path: str | None = None
    """Where the token is (``token`` mode; None: ``$RAY_AUTH_TOKEN`` was given)."""

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


def default_temp_dir() -> str:
    return os.environ.get("RECSYS_RAY_TEMP_DIR") or os.path.join(tempfile.gettempdir(), "ray")


def free_port() -> int:
    """A TCP port nothing listens on right now (bind to port 0 and ask the OS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ray_executable() -> str:
    """The ``ray`` script next to this interpreter (the venv's), else the one on PATH."""
    candidate = Path(sys.executable).parent / "ray"
    found = str(candidate) if candidate.exists() else shutil.which("ray")
    if not found:
        raise FileNotFoundError("no `ray` executable next to the Python interpreter or on PATH")
    return found


def serve_env(serve_config: str | Path = SERVE_CONFIG) -> dict[str, str]:
    """The Serve settings a cluster's processes need in their environment: every application's
    ``runtime_env.env_vars`` in ``configs/serve.yaml`` (replicas get them from there too), plus
    free ports for HAProxy's stats and metrics listeners where HAProxy is on.

    Several of Serve's fast paths are read once, when a process imports Serve: the controller
    decides whether ingress replicas serve HTTP themselves behind HAProxy
    (``RAY_SERVE_ENABLE_HA_PROXY``, ``RAY_SERVE_THROUGHPUT_OPTIMIZED``), the proxy and the
    controller pick the transport and logging. Those processes inherit the environment of
    ``ray start`` / ``ray.init``, not an application's ``runtime_env``, so whoever starts a
    cluster must set them (:func:`start`, ``benchmarks.bench_serving``; the KubeRay render puts
    them in every container). HAProxy's stats and metrics ports are fixed by default (8404,
    9101): two clusters on one machine would collide, so each gets free ones.
    """
    import yaml

    env = env_vars(yaml.safe_load(Path(serve_config).read_text()))
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        env.setdefault("RAY_SERVE_HAPROXY_STATS_PORT", str(free_port()))
        env.setdefault("RAY_SERVE_HAPROXY_METRICS_PORT", str(free_port()))
    return env


def _token_path(temp_dir: str) -> str | None:
    """The token file the cluster will use: the caller's (``$RAY_AUTH_TOKEN_PATH``), none
    (``$RAY_AUTH_TOKEN``: the value itself travels in the environment), else a new random
    token in ``temp_dir``, readable by this user only."""
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return os.environ["RAY_AUTH_TOKEN_PATH"]
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = Path(temp_dir) / TOKEN_FILE
    path.unlink(missing_ok=True)  # a new cluster, a new token
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return str(path)


def client_env(cluster: LocalCluster) -> dict[str, str]:
    """What a client of ``cluster`` needs in its environment: the GCS address (``ray.init()``,
    ``python -m training.…``), the dashboard (``ray job submit``; ``recsys`` deploy, train),
    and the auth mode and token where token auth is on."""
    env = {"RAY_ADDRESS": cluster.address, "RAY_API_SERVER_ADDRESS": cluster.dashboard_url,
           "RAY_DASHBOARD_ADDRESS": cluster.dashboard_url, "RAY_AUTH_MODE": cluster.auth_mode}  # fmt: skip
    if cluster.auth_mode == "token" and cluster.auth_token_path:
        env["RAY_AUTH_TOKEN_PATH"] = cluster.auth_token_path
    return env


def use_auth(cluster: LocalCluster) -> None:
    """Make this process a client of ``cluster`` as far as authentication goes (its auth mode
    and token in ``os.environ``; Ray's cached config and token re-read if Ray is loaded)."""
    env = client_env(cluster)
    os.environ.update({k: v for k, v in env.items() if k.startswith("RAY_AUTH_")})
    if "ray._raylet" in sys.modules:  # Ray reads the mode and the token once, then caches them
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def auth_headers(cluster: LocalCluster) -> dict[str, str]:
    """HTTP headers for the cluster's dashboard (none when token auth is off)."""
    if cluster.auth_mode != "token":
        return {}
    if cluster.auth_token_path:
        token = Path(cluster.auth_token_path).read_text().strip()
    else:
        token = os.environ.get("RAY_AUTH_TOKEN", "")
    return {"Authorization": f"Bearer {token}"}


def read_state(temp_dir: str | None = None) -> LocalCluster | None:
    path = Path(temp_dir or default_temp_dir()) / STATE_FILE
    try:
        return LocalCluster(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def is_running(cluster: LocalCluster) -> bool:
    host = cluster.address.rsplit(":", 1)[0]
    return bool(_group_pids(cluster.pgid)) and port_open(host, cluster.port)


def start(
    num_cpus: int | None = None,
    dashboard_port: int = 8265,
    port: int | None = None,
    temp_dir: str | None = None,
    object_store_memory: int | None = None,
    auth_mode: str | None = None,
    timeout_s: float = 180.0,
) -> tuple[LocalCluster, bool]:
    """Start a head node unless ours is already running; returns (cluster, started_now).

    ``auth_mode`` is Ray's ``RAY_AUTH_MODE`` (``token`` or ``disabled``); default: the
    environment's, else ``token`` (see the module docstring). Always explicit in the cluster's
    environment, because Ray otherwise turns token auth on whenever ``~/.ray/auth_token``
    exists, and drivers that do not set ``RAY_AUTH_MODE=token`` then cannot connect.
    """
    auth_mode = auth_mode or os.environ.get("RAY_AUTH_MODE") or "token"
    if auth_mode not in ("token", "disabled"):
        raise ValueError(f"auth mode must be 'token' or 'disabled', not {auth_mode!r}")
    temp_dir = str(Path(temp_dir or default_temp_dir()).resolve())
    existing = read_state(temp_dir)
    if existing is not None and is_running(existing):
        return existing, False
    if port_open("127.0.0.1", dashboard_port):
        raise OSError(f"dashboard port {dashboard_port} is in use (another Ray cluster?); pass "
                      "--dashboard-port PORT (make demo: DEMO_DASHBOARD_PORT=PORT)")  # fmt: skip
    if port is not None and port_open("127.0.0.1", port):
        raise OSError(f"GCS port {port} is in use; pass another --port or leave it out (a free "
                      "port is picked)")  # fmt: skip
    port = port or free_port()
    cmd = [
        ray_executable(), "start", "--head", "--disable-usage-stats",
        f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    if object_store_memory is not None:
        cmd.append(f"--object-store-memory={object_store_memory}")
    Path(temp_dir).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": auth_mode}
    token_path = _token_path(temp_dir) if auth_mode == "token" else None
    if token_path:
        env["RAY_AUTH_TOKEN_PATH"] = token_path
    # Job entrypoints (`ray job submit -- python -m training.…`) resolve `python` on the
    # cluster's PATH: put this interpreter's directory (the project venv) first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # Jobs run in a copy of their working dir; relative storage paths in configs/platform.yaml
    # must still mean this checkout's var/ (core.config.resolve_uri reads RECSYS_HOME), and
    # every driver and worker of this cluster inherits the head node's environment.
    env.setdefault("RECSYS_HOME", str(Path(__file__).resolve().parents[1]))
    # Serve's fast paths (configs/serve.yaml, the same in serve.gpu.yaml): the controller and the proxy read them from
    # this environment, the replicas from the app's runtime_env; a variable already set in the
    # caller's environment wins (to measure a lever off, or on, without editing the file).
    for key, value in serve_env().items():
        env.setdefault(key, value)
    env.pop("RAY_ADDRESS", None)  # `ray start --head` must not try to join another cluster
    with tempfile.TemporaryFile() as log:
        # A new session makes `ray start` a process-group leader; every daemon it forks stays in
        # that group, which is how `stop` finds them (and only them) later.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            raise TimeoutError(f"`ray start` did not finish in {timeout_s:.0f} s") from None
        log.seek(0)
        output = log.read().decode(errors="replace")
    if code != 0:
        _kill_group(proc.pid)
        tail = "\n".join(output.strip().splitlines()[-5:])
        raise RuntimeError(f"`ray start` failed (exit {code}):\n{tail}")
    current = Path(temp_dir) / "ray_current_cluster"  # written by this `ray start`
    address = current.read_text().strip() if current.exists() else f"127.0.0.1:{port}"
    cluster = LocalCluster(
        address=address,
        dashboard_url=f"http://127.0.0.1:{dashboard_port}",
        temp_dir=temp_dir,
        pgid=proc.pid,
        num_cpus=num_cpus,
        auth_mode=auth_mode,
        auth_token_path=token_path,
    )
    (Path(temp_dir) / STATE_FILE).write_text(json.dumps(asdict(cluster), indent=2))
    return cluster, True


def start_worker(head: LocalCluster, num_cpus: int, resources: dict[str, float] | None = None,
                 object_store_memory: int = 200 * 1024 * 1024, timeout_s: float = 180.0) -> int:  # fmt: skip
    """Join a worker node to ``head`` on this machine (``ray start --address``); returns its
    process group, which :func:`stop_worker` ends (a node lost, for a test or a game day).

    Same auth mode and token as the head; its own free ports, like the head's.
    """
    cmd = [
        ray_executable(), "start", f"--address={head.address}", "--disable-usage-stats",
        f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources or {})}",
        f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}", f"--object-store-memory={object_store_memory}",
    ]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": head.auth_mode}
    if head.auth_token_path:
        env["RAY_AUTH_TOKEN_PATH"] = head.auth_token_path
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)  # fmt: skip
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        raise TimeoutError(f"`ray start --address` did not finish in {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        _kill_group(proc.pid)
        tail = "\n".join(err.decode(errors="replace").strip().splitlines()[-5:])
        raise RuntimeError(f"`ray start --address` failed (exit {proc.returncode}):\n{tail}")
    return proc.pid


def stop_worker(pgid: int, wait_s: float = 10.0) -> int:
    """Kill a worker node :func:`start_worker` started, with SIGKILL (its raylet, agents and
    workers: the node is lost, not drained); returns how many of its processes are left."""
    for pid in _group_pids(pgid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait_s
    while _group_pids(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return len(_group_pids(pgid))


def _group_pids(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` and all their descendants (Ray workers start
    their own sessions, but stay children of the raylet)."""
    parents: dict[int, int] = {}
    members: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid, group = fields[0], int(fields[1]), int(fields[2])
        if state in ("Z", "X"):
            continue
        parents[int(entry)] = ppid
        if group == pgid:
            members.add(int(entry))
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in members and pid not in members:
                members.add(pid)
                changed = True
    members.discard(os.getpid())
    return sorted(members)


def _is_gcs(pid: int) -> bool:
    try:
        return b"gcs_server" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(pgid: int, seconds: float, keep: set[int] = frozenset()) -> list[int]:
    """Wait up to ``seconds`` for the group's processes other than ``keep`` to exit; returns
    those still alive (``keep`` included)."""
    deadline = time.monotonic() + seconds
    pids = _group_pids(pgid)
    while time.monotonic() < deadline and [p for p in pids if p not in keep]:
        time.sleep(0.1)
        pids = _group_pids(pgid)
    return pids


def _kill_group(pgid: int, grace_s: float = 10.0) -> int:
    """Stop a node's process group: SIGTERM to everything but the GCS, then the GCS, then
    SIGKILL to whatever is left; returns how many processes survived.

    The GCS goes last, as ``ray stop`` does it: a raylet told to stop while the GCS is going
    away waits out its own 10 s timeout reporting to it (measured: 10.2 s with everything
    signalled at once, 1.1 s in this order).
    """
    pids = _group_pids(pgid)
    gcs = {pid for pid in pids if _is_gcs(pid)}
    deadline = time.monotonic() + grace_s
    _signal([pid for pid in pids if pid not in gcs], signal.SIGTERM)
    pids = _wait_gone(pgid, grace_s, keep=gcs)
    _signal(pids, signal.SIGTERM)
    pids = _wait_gone(pgid, max(0.0, deadline - time.monotonic()))
    if pids:
        _signal(pids, signal.SIGKILL)
        pids = _wait_gone(pgid, 5.0)
    return len(pids)


def stop(temp_dir: str | None = None, grace_s: float = 10.0) -> LocalCluster | None:
    """Stop the cluster ``start`` launched with this temp dir; returns it, or None if none."""
    temp_dir = str(Path(temp_dir or default_temp_dir()).resolve())
    cluster = read_state(temp_dir)
    if cluster is None:
        return None
    left = _kill_group(cluster.pgid, grace_s)
    if left:
        raise RuntimeError(f"{left} Ray processes of {cluster.address} did not exit")
    (Path(temp_dir) / STATE_FILE).unlink(missing_ok=True)
    if cluster.auth_token_path == str(Path(temp_dir) / TOKEN_FILE):
        Path(cluster.auth_token_path).unlink(missing_ok=True)  # ours; a new start makes another
    # Like `ray stop`: forget the address, or a later bare `ray.init()` (a job run as
    # `python -m training.<job>`) would try to join the cluster that is gone.
    current = Path(temp_dir) / "ray_current_cluster"
    if current.exists() and current.read_text().strip() == cluster.address:
        current.unlink(missing_ok=True)
    return cluster


def stop_all() -> int:
    """``ray stop``: every Ray process of this user on the machine, whoever started it."""
    return subprocess.call([ray_executable(), "stop"])


def cluster_status(cluster: LocalCluster, timeout_s: float = 10.0) -> dict:
    """Nodes, CPUs, jobs and Serve applications, from the dashboard's HTTP API.

    Plain HTTP on purpose: no driver connection, and no confusion with a cluster this process
    may already be connected to.
    """
    import requests

    def get(path: str):
        reply = requests.get(f"{cluster.dashboard_url}{path}", headers=auth_headers(cluster),
                             timeout=timeout_s)  # fmt: skip
        reply.raise_for_status()
        return reply.json()

    nodes = get("/api/v0/nodes")["data"]["result"]["result"]
    jobs = get("/api/jobs/")
    try:
        serve = get("/api/serve/applications/").get("applications") or {}
    except (requests.RequestException, ValueError):
        serve = {}
    return {
        "address": cluster.address,
        "dashboard_url": cluster.dashboard_url,
        "nodes": [
            {
                "node_id": n["node_id"],
                "ip": n["node_ip"],
                "state": n["state"],
                "cpus": (n.get("resources_total") or {}).get("CPU", 0.0),
                "head": bool(n.get("is_head_node")),
            }
            for n in nodes
        ],
        "jobs": [
            {
                "id": j.get("submission_id") or j.get("job_id"),
                "status": j.get("status"),
                "entrypoint": j.get("entrypoint", ""),
            }
            for j in jobs
        ],  # fmt: skip
        "serve_apps": {name: app.get("status") for name, app in serve.items()},
    }
