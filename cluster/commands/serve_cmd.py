"""`recsys deploy`, `recsys scale`, `recsys capacity`: the serving graph's operator commands.

``deploy`` and ``scale`` talk to the running cluster's Serve REST API (the same endpoint
``serve deploy`` uses, on the dashboard: ``--address``, else ``$RAY_DASHBOARD_ADDRESS``, else
an ``http://`` ``$RAY_ADDRESS``, else ``http://127.0.0.1:8265``): a PUT of the whole config, which Serve reconciles, so changing one
deployment's replica count leaves the other deployments' replicas running.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from cluster.ui import CliError, require_dashboard

DEFAULT_SERVE_CONFIG = "configs/serve.yaml"
DEFAULT_MEASURED = "benchmarks/results/serving.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    deploy = subparsers.add_parser("deploy", help="deploy the Serve graph to the running cluster")
    deploy.add_argument("file", nargs="?", default=DEFAULT_SERVE_CONFIG,
                        help="serve config YAML (default: the CPU-only shape; configs/serve.gpu.yaml on GPU nodes)")
    _address(deploy)
    deploy.add_argument("--http-port", type=int, help="override http_options.port")
    deploy.add_argument("--platform-config", metavar="PATH",
                        help="override every application's args.platform_config (storage roots)")  # fmt: skip
    deploy.add_argument("--no-wait", action="store_true", help="return once the config is accepted")
    deploy.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for RUNNING")
    deploy.set_defaults(func=run_deploy)

    scale = subparsers.add_parser("scale", help="set one deployment's replica count, live")
    scale.add_argument("name", help="deployment name: Ingress (configs/serve.yaml), Ranker (configs/serve.gpu.yaml)")
    scale.add_argument("replicas", type=int)
    scale.add_argument("--app", help="application name (default: the one holding NAME)")
    _address(scale)
    scale.set_defaults(func=run_scale)

    cap = subparsers.add_parser("capacity", help="replica counts for a target request rate")
    cap.add_argument("--target-rps", type=float, required=True)
    cap.add_argument("--measured", default=DEFAULT_MEASURED, help="benchmark result JSON")
    cap.add_argument("--config", default=DEFAULT_SERVE_CONFIG,
                     help="serve config to patch (figures must be measured in its shape)")
    cap.add_argument("--headroom", type=float, default=0.3, help="spare capacity (0.3 = 30%%)")
    cap.add_argument("--autoscale", action="store_true", help="patch autoscaling min/max instead")
    cap.add_argument("--write", metavar="PATH", help="write the patched serve config here")
    cap.set_defaults(func=run_capacity)

    k8s = subparsers.add_parser("k8s", help="Kubernetes (KubeRay) manifests from the configs")
    k8s_sub = k8s.add_subparsers(dest="k8s_command", required=True)
    render = k8s_sub.add_parser("render", help="a RayService manifest from a serve config, and the "
                                "nightly pipeline's RayJob and CronJob")
    render.add_argument("file", nargs="?", default=DEFAULT_SERVE_CONFIG, help="serve config YAML")
    render.add_argument("--image", required=True, help="the project image (see Dockerfile)")
    render.add_argument("--name", default="recsys")
    render.add_argument("--namespace")
    render.add_argument("--platform-config", default="configs/platform.yaml",
                        help="platform config path inside the image (storage URIs: s3://, gs://)")  # fmt: skip
    render.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for every Ray container (repeatable)")  # fmt: skip
    render.add_argument("--worker-cpus", type=int, default=4)
    render.add_argument("--min-workers", type=int, default=1)
    render.add_argument("--max-workers", type=int, default=4)
    render.add_argument("--gpu-workers", type=int, default=0)
    render.add_argument("--schedule", default="0 2 * * *",
                        help="cron schedule (UTC) of the nightly pipeline's CronJob (default: 02:00)")
    render.add_argument("--tenant", action="append", default=[], dest="tenants", metavar="TENANT",
                        help="tenants of the nightly pipeline (repeatable; default: every tenant)")
    render.add_argument("--auth-secret", default=None, metavar="NAME",
                        help="Secret whose `auth_token` key is Ray's token (default: recsys-ray-auth; "
                             "create it with kubectl, see docs/operations.md)")  # fmt: skip
    render.add_argument("--no-auth", action="store_true",
                        help="Ray token authentication off (RAY_AUTH_MODE=disabled): anyone who "
                             "reaches the dashboard port can run code on the cluster")  # fmt: skip
    render.add_argument("--no-nightly", action="store_true",
                        help="the RayService only, without the nightly RayJob and CronJob")
    render.set_defaults(func=run_k8s_render)


def _address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        help="Ray dashboard URL (Serve REST API; default: $RAY_DASHBOARD_ADDRESS, else an "
        "http:// $RAY_ADDRESS, else http://127.0.0.1:8265)",
    )


def _client(address: str | None):
    from cluster.commands.train_cmd import dashboard_address

    address = dashboard_address(address) or "http://127.0.0.1:8265"
    require_dashboard(address)
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    return ServeSubmissionClient(address)


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError:
        raise CliError(f"{path}: invalid YAML (`recsys config validate {path}` shows where)") from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a YAML mapping (a serve config)")
    return data


def prepare_config(
    config: dict[str, Any], home: str, http_port: int | None = None, platform_config: str | None = None
) -> dict:
    """Pin every application's ``args.home`` (relative paths then resolve the same on every
    node), and optionally the HTTP port and every application's ``args.platform_config``."""
    config = {**config, "applications": [dict(a) for a in config.get("applications") or []]}
    for app in config["applications"]:
        args = dict(app.get("args") or {})
        args.setdefault("home", home)
        if platform_config is not None:
            args["platform_config"] = platform_config
        app["args"] = args
    if http_port is not None:
        config["http_options"] = {**(config.get("http_options") or {}), "port": http_port}
    return config


def wait_running(client, app_names: list[str], timeout_s: float) -> dict[str, str]:
    """Poll Serve until every named app is RUNNING; :class:`CliError` when one failed or the
    deadline passed (naming each app's status and the last line of a failure message)."""
    started = time.monotonic()
    statuses: dict[str, str] = {}
    while True:
        apps = client.get_serve_details().get("applications", {})
        statuses = {n: apps.get(n, {}).get("status", "NOT_STARTED") for n in app_names}
        if all(s == "RUNNING" for s in statuses.values()):
            return statuses
        failed = {n: apps[n].get("message", "") for n, s in statuses.items() if "FAIL" in s}
        waited = time.monotonic() - started
        if failed or waited > timeout_s:
            state = ", ".join(f"{n} {s}" for n, s in statuses.items())
            why = "; ".join(f"{n}: {(m.strip().splitlines() or ['?'])[-1]}" for n, m in failed.items())
            raise CliError(f"applications not running after {waited:.0f} s ({state})"
                           f"{': ' + why if why else ''}; `serve status` and the Ray dashboard's "
                           "Serve tab show the replicas' logs")  # fmt: skip
        time.sleep(1.0)


def check_http_port(port: int, serve_running: bool) -> None:
    """:class:`CliError` when another program holds ``port``; Serve would only report a proxy
    that never starts. A running Serve instance holds its own port: not an error."""
    from cluster.local import port_open

    if not serve_running and port_open("127.0.0.1", port):
        raise CliError(f"HTTP port {port} is in use by another program; pass --http-port PORT "
                       "(make demo: DEMO_HTTP_PORT=PORT) or stop what listens there")  # fmt: skip


def run_deploy(args: argparse.Namespace) -> int:
    from cluster.config_files import validate_serve_config

    validate_serve_config(args.file)  # Serve's own schema: fail here, not half-way through a rollout
    platform_config = None
    if args.platform_config:
        if not Path(args.platform_config).is_file():
            raise CliError(f"--platform-config {args.platform_config}: no such file")
        from core.config import load_platform_config

        load_platform_config(args.platform_config)  # its errors here, not in every replica
        platform_config = str(Path(args.platform_config).resolve())
    config = _read_yaml(args.file)
    config = prepare_config(config, str(Path.cwd().resolve()), args.http_port, platform_config)
    client = _client(args.address)
    port = int((config.get("http_options") or {}).get("port", 8000))
    check_http_port(port, serve_running=bool(client.get_serve_details().get("proxies")))
    client.deploy_applications(config)
    names = [a["name"] for a in config["applications"]]
    print(f"submitted {', '.join(names)} to the cluster")
    if not args.no_wait:
        wait_running(client, names, args.timeout)
        port = (config.get("http_options") or {}).get("port", 8000)
        print(f"running: http://127.0.0.1:{port}/v1/healthz  (docs: /docs)")
    return 0


def scaled_config(details: dict[str, Any], name: str, replicas: int, app: str | None) -> dict:
    """The deployed config with one deployment set to ``replicas`` fixed replicas."""
    if replicas < 0:
        raise ValueError("replicas must be >= 0")
    apps = details.get("applications") or {}
    configs = [a["deployed_app_config"] for a in apps.values() if a.get("deployed_app_config")]
    if not configs:
        raise ValueError("no application deployed from a config; run `recsys deploy` first")
    found = False
    for cfg in configs:
        if app is not None and cfg.get("name") != app:
            continue
        for dep in cfg.get("deployments") or []:
            if dep.get("name") == name:
                dep.pop("autoscaling_config", None)
                dep["num_replicas"] = replicas
                found = True
    if not found:
        known = sorted({d.get("name") for c in configs for d in c.get("deployments") or []})
        raise ValueError(f"no deployment named {name!r} in the deployed config; "
                         f"deployments: {', '.join(known) or 'none'}")  # fmt: skip
    out: dict[str, Any] = {"applications": configs}
    for key in ("proxy_location", "http_options"):
        if details.get(key):
            out[key] = details[key]
    return out


def run_scale(args: argparse.Namespace) -> int:
    client = _client(args.address)
    config = scaled_config(client.get_serve_details(), args.name, args.replicas, args.app)
    client.deploy_applications(config)
    print(f"{args.name}: num_replicas={args.replicas} submitted; `serve status` shows progress")
    return 0


def run_capacity(args: argparse.Namespace) -> int:
    from cluster.capacity import apply_plan, load_measurements, patch_of, plan_capacity

    if args.target_rps <= 0 or args.headroom < 0:
        raise CliError("--target-rps must be positive and --headroom non-negative")
    config = _read_yaml(args.config)
    if not Path(args.measured).is_file():
        raise CliError(f"{args.measured}: no such file; measure with `python -m benchmarks.bench_serving` "
                       "(or `make bench`), or pass --measured FILE")  # fmt: skip
    measured = load_measurements(args.measured)
    meta = json.loads(Path(args.measured).read_text())
    try:
        plan = plan_capacity(config, measured, args.target_rps, args.headroom,
                             measured_placement=meta.get("placement"))  # fmt: skip
    except ValueError as exc:
        raise CliError(f"{args.measured} does not fit {args.config}: {exc}") from None
    print(f"measured: {args.measured} (at {meta.get('at', '?')}, {meta.get('machine', {}).get('cpus', '?')} CPUs, "
          f"p99 objective {meta.get('capacity_slo_p99_ms', '?')} ms)")  # fmt: skip
    print(f"target {args.target_rps:g} req/s, headroom {args.headroom:.0%}")
    print(f"{'deployment':<20}{'req/s/replica':>15}{'replicas':>10}{'CPUs':>8}")
    for d in plan.deployments:
        print(f"{d.name:<20}{d.per_replica_rps:>15.1f}{d.replicas:>10}{d.cpus:>8.2f}")
    print(f"total CPUs {plan.total_cpus:.2f}, GPUs {plan.total_gpus:g}")
    if plan.unmeasured:
        print(f"not measured (left as is): {', '.join(plan.unmeasured)}")
    print("--- serve.yaml patch ---")
    print(yaml.safe_dump(patch_of(plan, config, autoscale=args.autoscale), sort_keys=False))
    if args.write:
        patched = apply_plan(config, plan, autoscale=args.autoscale)
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(yaml.safe_dump(patched, sort_keys=False))
        print(f"wrote {args.write}")
    return 0


def run_k8s_render(args: argparse.Namespace) -> int:
    from cluster.kuberay import AUTH_SECRET, dump, dump_all, render_nightly, render_rayservice

    config = _read_yaml(args.file)
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--env {item!r}: expected KEY=VALUE")
        if key.startswith("RAY_AUTH_"):
            raise CliError(f"--env {key}: Ray's authentication is set by --auth-secret / --no-auth")
        env[key] = value
    if args.no_auth and args.auth_secret:
        raise CliError("--no-auth and --auth-secret: choose one")
    auth_secret = None if args.no_auth else (args.auth_secret or AUTH_SECRET)
    manifest = render_rayservice(
        config, image=args.image, name=args.name, namespace=args.namespace,
        platform_config=args.platform_config, storage_env=env, worker_cpus=args.worker_cpus,
        min_workers=args.min_workers, max_workers=args.max_workers, gpu_workers=args.gpu_workers,
        auth_secret=auth_secret,
    )  # fmt: skip
    if args.no_nightly:
        sys.stdout.write(dump(manifest))
        return 0
    fields = args.schedule.split()
    if len(fields) != 5:
        raise CliError(f"--schedule {args.schedule!r}: expected a cron expression of 5 fields, e.g. '0 2 * * *'")
    from core.config import load_platform_config

    # --platform-config is the path inside the image; check the tenants against it where this
    # checkout has that file too.
    if Path(args.platform_config).is_file():
        known = [t.id for t in load_platform_config(args.platform_config).tenants]
        unknown = [t for t in args.tenants if t not in known]
        if unknown:
            raise CliError(f"--tenant: unknown tenant {unknown[0]!r}; {args.platform_config} has: {', '.join(known)}")
    elif not args.tenants:
        raise CliError(f"--platform-config {args.platform_config} is not here to list the tenants: "
                       "name the nightly pipeline's tenants with --tenant (or --no-nightly)")
    else:
        known = args.tenants
    nightly = render_nightly(
        image=args.image, tenants=args.tenants or known, namespace=args.namespace,
        schedule=args.schedule, platform_config=args.platform_config, storage_env=env,
        worker_cpus=args.worker_cpus, auth_secret=auth_secret,
    )  # fmt: skip
    sys.stdout.write(dump_all([manifest, *nightly]))
    return 0
