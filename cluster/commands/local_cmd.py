"""`recsys up|status|down`: a real local Ray head node for development and tests."""

from __future__ import annotations

import argparse

from cluster.ui import CliError, console, one_line_error


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--temp-dir", help="Ray temp dir of the cluster (default: $RECSYS_RAY_TEMP_DIR or /tmp/ray)"
    )
    up = subparsers.add_parser("up", parents=[common], help="start a local Ray head node")
    up.add_argument("--num-cpus", type=int, help="CPUs to offer (default: all)")
    up.add_argument("--dashboard-port", type=int, default=8265)
    up.add_argument("--port", type=int, help="GCS port (default: a free port)")
    up.add_argument(
        "--auth",
        choices=["token", "disabled"],
        help="Ray token authentication (default: $RAY_AUTH_MODE, else token)",
    )
    up.set_defaults(func=run_up)

    env = subparsers.add_parser(
        "env", parents=[common],
        help="print the exports a shell needs to reach the cluster: eval \"$(recsys env)\"",
    )  # fmt: skip
    env.set_defaults(func=run_env)

    status = subparsers.add_parser("status", parents=[common], help="nodes, CPUs, jobs, Serve apps")
    status.set_defaults(func=run_status)

    down = subparsers.add_parser(
        "down", parents=[common], help="stop the cluster `recsys up` started"
    )
    down.add_argument(
        "--all", action="store_true", help="run `ray stop`: every Ray process on this machine"
    )
    down.set_defaults(func=run_down)


def run_up(args: argparse.Namespace) -> int:
    from cluster import local

    if args.num_cpus is not None and args.num_cpus < 1:
        raise CliError(f"--num-cpus must be at least 1, got {args.num_cpus}")
    try:
        cluster, started = local.start(
            num_cpus=args.num_cpus,
            dashboard_port=args.dashboard_port,
            port=args.port,
            temp_dir=args.temp_dir,
            auth_mode=args.auth,
        )
    except (OSError, RuntimeError) as exc:  # a port taken; `ray start` failing
        raise one_line_error(exc) from None
    out = console()
    out.print("Ray head node started." if started else "A Ray head node is already running.")
    out.print(f"GCS address:   {cluster.address}")
    out.print(f"dashboard:     {cluster.dashboard_url}")
    out.print(f"temp dir:      {cluster.temp_dir}")
    out.print(f"token auth:    {cluster.auth_mode}")
    out.print('Connect `ray job submit`, drivers and `recsys` with: eval "$(recsys env)"')
    for line in _exports(cluster):
        out.print(f"  {line}", soft_wrap=True)
    return 0


def _exports(cluster) -> list[str]:
    import shlex

    from cluster import local

    return [f"export {k}={shlex.quote(v)}" for k, v in local.client_env(cluster).items()]


def run_env(args: argparse.Namespace) -> int:
    from cluster import local

    cluster = local.read_state(args.temp_dir)
    if cluster is None or not local.is_running(cluster):
        raise CliError("no local Ray cluster started by `recsys up` is running (run `recsys up`)")
    print("\n".join(_exports(cluster)))
    return 0


def run_status(args: argparse.Namespace) -> int:
    from rich.table import Table

    from cluster import local

    cluster = local.read_state(args.temp_dir)
    if cluster is None or not local.is_running(cluster):
        raise CliError("no local Ray cluster started by `recsys up` is running (run `recsys up`)")
    info = local.cluster_status(cluster)
    out = console()
    out.print(f"cluster {info['address']}  dashboard {info['dashboard_url']}")
    nodes = Table(title="nodes")
    for col in ("node", "ip", "state", "CPUs", "head"):
        nodes.add_column(col)
    for n in info["nodes"]:
        nodes.add_row(
            n["node_id"][:12], n["ip"], n["state"], f"{n['cpus']:g}", "yes" if n["head"] else ""
        )
    out.print(nodes)
    total = sum(n["cpus"] for n in info["nodes"] if n["state"] == "ALIVE")
    running = [j for j in info["jobs"] if j["status"] in ("PENDING", "RUNNING")]
    out.print(f"CPUs: {total:g}   jobs: {len(running)} running of {len(info['jobs'])}")
    for j in running:
        out.print(f"  {j['id']} {j['status']} {j['entrypoint']}")
    apps = info["serve_apps"]
    out.print(f"Serve apps: {', '.join(f'{k} ({v})' for k, v in apps.items()) or 'none'}")
    return 0


def run_down(args: argparse.Namespace) -> int:
    from cluster import local

    if args.all:
        return local.stop_all()
    cluster = local.stop(args.temp_dir)
    if cluster is None:
        console().print("No cluster started by `recsys up` is recorded here; nothing to stop.")
    else:
        console().print(f"Stopped the Ray cluster at {cluster.address}.")
    return 0
