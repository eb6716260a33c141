"""``make demo``: from a fresh clone to a running platform answering requests.

    python -m cluster.demo [--preset tiny|small] [--num-cpus 2] [--tenants acme,globex]

Steps, each printed as it runs:

1. start (or reuse) a local Ray head node (``recsys up``);
2. generate synthetic tenant data (``recsys data synth``) into the demo's own storage;
3. submit the offline pipeline per tenant through the Ray Jobs API — two-tower training,
   item embeddings + ScaNN index, ranker training, evaluation, automatic launch checks;
4. record the launch checklist's sign-offs and the approval (``training.review --sign-off …
   --approve``, actor ``make-demo``) and promote the candidates through the review gate, then
   print who owns every artifact kind (``recsys owners``: the registry's kinds from their
   manifests, experiments from the platform config, alert rules, dashboards and runbooks from
   their files; owners default from ``configs/owners.yaml``);
5. deploy ``configs/serve.yaml`` (the CPU-only shape: both models in two Ingress replicas) to
   Ray Serve (``recsys deploy``);
6. send a few recommendation requests and events and print them, then the URLs to try.

Re-running reuses the cluster and the data (generated again when a previous run's sample
requests posted events to it); training runs again and publishes new versions.

Invariant: the demo reads and writes only ``var/demo/<preset>/`` (``data/``, ``registry/``,
``decisions/``), never the storage of ``configs/platform.yaml`` (``var/data``...), so it works
whatever the checkout already holds and never touches the user's own data. It does so through
``var/demo/<preset>/platform.yaml``, the platform config with those storage roots: the training
jobs get it as ``RECSYS_CONFIG`` and the Serve app as ``args.platform_config``, so both train and
serve on the data the demo made. Shared with the user: the Ray cluster (``recsys up``'s temp
dir) and the training work dirs (``var/training/<tenant>/``, caches keyed by the data).
A user error (a port taken, a job config missing) is one line, no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_ROOT = REPO_ROOT / "var" / "demo"
console = Console(highlight=False)


def _step(n: int, title: str) -> None:
    console.rule(f"[bold cyan]{n}. {title}")


def demo_platform_config(base: str | Path, home: Path) -> Path:
    """Write ``home/platform.yaml``: the platform config ``base`` with every storage root under
    ``home`` (absolute paths, so jobs, replicas and this process agree); returns its path."""
    import yaml

    from core.config import load_platform_config

    raw = yaml.safe_load(Path(base).read_text())
    raw["storage"] = {
        "data": str(home / "data"),
        "events": str(home / "data" / "events"),
        "registry": str(home / "registry"),
        "decisions": str(home / "decisions"),
    }
    home.mkdir(parents=True, exist_ok=True)
    path = home / "platform.yaml"
    header = f"# Written by `make demo` from {base}: the same config, storage under {home}.\n"
    path.write_text(header + yaml.safe_dump(raw, sort_keys=False))
    load_platform_config(path)  # validated once, here, rather than in every job
    return path


def _start_cluster(num_cpus: int, dashboard_port: int, http_port: int):
    from cluster import local
    from cluster.commands.serve_cmd import check_http_port
    from cluster.ui import one_line_error

    try:
        cluster, started = local.start(num_cpus=num_cpus, dashboard_port=dashboard_port)
    except (OSError, RuntimeError) as exc:  # a port taken; `ray start` failing
        raise one_line_error(exc) from None
    local.use_auth(cluster)  # token auth (on by default): this process's jobs, deploy, review
    verb = "started" if started else "already running"
    console.print(f"Ray head {verb}: GCS {cluster.address}, dashboard {cluster.dashboard_url}")
    # Before the training jobs: a taken HTTP port would otherwise fail the deploy at the end.
    serve_up = (not started) and bool(_serve_details(cluster.dashboard_url).get("proxies"))
    check_http_port(http_port, serve_running=serve_up)
    return cluster


def _serve_details(dashboard_url: str) -> dict:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    return ServeSubmissionClient(dashboard_url).get_serve_details()


def _ensure_data(preset: str, data_root: str, seed: int) -> None:
    """Reuse ``data_root`` when it holds this preset and seed; otherwise (another preset, or
    a generation that was interrupted) delete it and generate again: it is the demo's own."""
    import shutil

    from datagen.synth import generate

    marker = Path(data_root) / "synth.json"
    if marker.exists():
        meta = json.loads(marker.read_text())
        if (meta.get("preset"), meta.get("seed")) == (preset, seed):
            posted = _events_after(data_root, meta.get("end"))
            if not posted:
                console.print(f"reusing {preset} data (seed {seed}) in {data_root}")
                return
            # The last run's sample requests posted events dated today: the quality gate
            # compares the log's last week with the weeks before, and the synthetic history
            # ends long before today, so training on it would fail the gate.
            console.print(f"{data_root} holds {posted} event(s) posted after it was generated "
                          "(a previous demo's requests); generating it again")  # fmt: skip
    if Path(data_root).exists():
        console.print(f"{data_root} holds other or incomplete data; generating it again")
        shutil.rmtree(data_root)
    from cluster.commands.data_cmd import print_summary

    started = time.monotonic()
    summary = generate(preset, data_root, seed=seed, progress=True)
    print_summary(summary, time.monotonic() - started)


def _events_after(data_root: str, end: str | None) -> int:
    """Events in ``data_root``'s event log at or after the synthetic period's ``end``."""
    from core.eventlog import EventLog

    if end is None:
        return 0
    log = EventLog(str(Path(data_root) / "events"))
    return sum(log.read(t, start=end, columns=["event_id"]).num_rows for t in log.tenants())


def _train(dashboard_url: str, tenants: list[str], smoke: bool) -> None:
    from cluster.commands.train_cmd import submit

    for tenant in tenants:
        argv = ["--config", "configs/train/pipeline.yaml", "--tenant", tenant, "--review-advisory"]
        if smoke:
            argv.append("--smoke-test")
        console.print(f"submitting training.pipeline for [bold]{tenant}[/] to {dashboard_url}")
        job_id, status = submit(dashboard_url, "training.pipeline", argv, wait=True)
        if status != "SUCCEEDED":
            raise SystemExit(f"job {job_id} for {tenant} ended {status}; see its logs above")
        console.print(f"job {job_id}: [green]{status}[/]")


def _approve_and_promote(registry_root: str, tenants: list[str], ray_address: str | None = None) -> None:
    from core.registry import Registry
    from training import review

    registry = Registry(registry_root)
    table = Table(title="promoted to production")
    for col in ("tenant", "kind", "version"):
        table.add_column(col)
    # The demo's reviewer signs off every human item of the launch checklist (the gate in
    # core.promotion checks them); a real launch has each signed by whoever did it.
    sign_offs = sorted({s for k in review.KINDS for s in registry.policy.checklist(k).sign_offs})
    import os

    if ray_address:  # the review replays the pipeline (Ray Data) on the demo's cluster
        os.environ.setdefault("RAY_ADDRESS", ray_address)
    for tenant in tenants:
        rc = review.main(
            ["--config", "configs/train/pipeline.yaml", "--tenant", tenant,
             *[a for s in sign_offs for a in ("--sign-off", s)],
             "--approve", "--actor", "make-demo", "--comment", "demo approval"]
        )  # fmt: skip
        for kind, version in promote_reviewed(registry, tenant, reviewed_ok=rc == 0):
            table.add_row(tenant, kind, version)
    console.print(table)


def promote_reviewed(registry, tenant: str, reviewed_ok: bool) -> list[tuple[str, str]]:
    """Promote ``tenant``'s candidates after the demo's launch review; (kind, version) promoted.

    Every candidate passed (``reviewed_ok``): all go up. Otherwise a first launch promotes what
    the review approved when that includes a two-tower and its index (e.g. the ranker served
    worse slates than the retriever alone: serving ranks in the fallback order until a ranker
    passes); a re-run keeps production as it is; a first launch with nothing approvable stops.
    """
    from training.review import KINDS

    serving = {k: registry.resolve(k, tenant, "production") for k in ("two_tower", "ann_index", "ranker")}
    candidates = {k: v for k in KINDS if (v := registry.resolve(k, tenant, "candidate"))}
    if not reviewed_ok:
        approved = {k: v for k, v in candidates.items() if not registry.promotion_problems(k, tenant, v)}
        if serving["two_tower"]:
            # A re-run whose candidates are worse than what serves: the gate holds them back.
            console.print(f"[yellow]launch review refused {tenant}'s candidates; production keeps "
                          f"serving {', '.join(f'{k} {v}' for k, v in serving.items() if v)}")  # fmt: skip
            return []
        if not {"two_tower", "ann_index"} <= set(approved):
            raise SystemExit(f"launch review failed for {tenant} and nothing is in production")
        console.print(f"[yellow]launch review refused {tenant}'s "
                      f"{', '.join(sorted(set(candidates) - set(approved)))}; promoted the rest")  # fmt: skip
        candidates = approved
    # The index and the two-tower model it was built from move together; item embeddings
    # are promoted for lineage even though serving reads the index.
    for kind, version in candidates.items():
        registry.promote(kind, tenant, version, actor="make-demo", reason="make demo")
    return list(candidates.items())


def _deploy(dashboard_url: str, http_port: int, platform_config: Path) -> int:
    from cluster.cli import main as recsys

    return recsys(["deploy", "configs/serve.yaml", "--address", dashboard_url,
                   "--http-port", str(http_port), "--platform-config", str(platform_config)])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run the whole platform locally")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--dashboard-port", type=int, default=8265)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--tenants", default="acme,globex")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke-test", action="store_true", help="train at toy size")
    args = parser.parse_args(argv)

    import os

    from cluster.cli import user_error_message

    try:
        return _run(args)
    except Exception as exc:  # one line for a user error, as `recsys` does
        message = user_error_message(exc)
        if message is None or os.environ.get("RECSYS_DEBUG"):
            raise
        Console(stderr=True, highlight=False).print(f"error: {message}", soft_wrap=True, markup=False)
        return 2


def _run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("RECSYS_HOME", str(REPO_ROOT))
    os.chdir(REPO_ROOT)
    home = DEMO_ROOT / args.preset
    base = os.environ.get("RECSYS_CONFIG") or str(REPO_ROOT / "configs" / "platform.yaml")
    platform_config = demo_platform_config(base, home)
    os.environ["RECSYS_CONFIG"] = str(platform_config)  # training jobs and the review read it
    tenants = [t for t in args.tenants.split(",") if t]
    started = time.monotonic()

    _step(1, "local Ray cluster")
    cluster = _start_cluster(args.num_cpus, args.dashboard_port, args.http_port)
    _step(2, f"synthetic data ({args.preset}) in {home.relative_to(REPO_ROOT)}")
    _ensure_data(args.preset, str(home / "data"), args.seed)
    _step(3, "offline pipeline on Ray (Ray Jobs: train, index, evaluate, launch checks)")
    _train(cluster.dashboard_url, tenants, args.smoke_test)
    _step(4, "launch review approval and promotion")
    _approve_and_promote(str(home / "registry"), tenants, getattr(cluster, "address", None))
    from cluster.commands.owners_cmd import main as owners

    owners(["--root", str(home / "registry")])  # a stale review is shown, not fatal here
    _step(5, "deploy the serving graph (Ray Serve)")
    if _deploy(cluster.dashboard_url, args.http_port, platform_config) != 0:
        return 1
    _step(6, "sample requests and events")
    from deployments.demo_requests import main as demo_requests

    base_url = f"http://127.0.0.1:{args.http_port}"
    rc = demo_requests(["--url", base_url])
    console.rule("[bold green]done")
    registry = (home / "registry").relative_to(REPO_ROOT)
    console.print(
        f"Platform up in {time.monotonic() - started:.0f} s. Try:\n"
        "  curl -s -H 'Authorization: Bearer acme-demo-key' -H 'content-type: application/json' "
        "-d '{\"user_id\": \"u0000001\", \"surface\": \"home\", \"k\": 5}' "
        f"{base_url}/v1/recommend\n"
        f"  {base_url}/docs            OpenAPI (interactive)\n"
        f"  {base_url}/v1/versions     versions in service\n"
        f"  {base_url}/metrics         Prometheus metrics\n"
        f"  {cluster.dashboard_url}             Ray dashboard (jobs, Serve, actors)"
        + (" — token auth: `.venv/bin/ray get-auth-token` after `eval \"$(.venv/bin/recsys env)\"`\n"
           if cluster.auth_mode == "token" else "\n")
        + f"  eval \"$(.venv/bin/recsys env)\"   the exports `ray job submit` and drivers need\n"
        f"  .venv/bin/recsys registry list --tenant acme --root {registry}\n"
        f"  .venv/bin/recsys owners --root {registry}     owners of every artifact kind\n"
        f"The demo's data, registry and decisions are in {home.relative_to(REPO_ROOT)}/.\n"
        "Stop everything with: make demo-down"
    )
    return rc


if __name__ == "__main__":
    sys.exit(main())
