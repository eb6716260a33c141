"""``make demo``: from a fresh clone to a running platform answering requests.

    python -m cluster.demo [--preset tiny|small] [--num-cpus 2] [--tenants acme,globex]

Steps, each printed as it runs:

1. start (or reuse) a local Ray head node (``recsys up``);
2. generate synthetic tenant data into the platform config's storage (``recsys data synth``);
3. submit the offline pipeline per tenant through the Ray Jobs API — two-tower training,
   item embeddings + ScaNN index, ranker training, evaluation, automatic launch checks;
4. record the launch checklist's sign-offs and the approval (``training.review --sign-off …
   --approve``, actor ``make-demo``) and promote the candidates through the review gate;
5. deploy ``configs/serve.yaml`` to Ray Serve (``recsys deploy``);
6. send a few recommendation requests and events and print them, then the URLs to try.

Re-running reuses the cluster and the data; training runs again and publishes new versions.
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
console = Console(highlight=False)


def _step(n: int, title: str) -> None:
    console.rule(f"[bold cyan]{n}. {title}")


def _start_cluster(num_cpus: int, dashboard_port: int):
    from cluster import local

    cluster, started = local.start(num_cpus=num_cpus, dashboard_port=dashboard_port)
    verb = "started" if started else "already running"
    console.print(f"Ray head {verb}: GCS {cluster.address}, dashboard {cluster.dashboard_url}")
    return cluster


def _ensure_data(preset: str, data_root: str, seed: int) -> None:
    from datagen.synth import generate

    marker = Path(data_root) / "synth.json"
    if marker.exists() and json.loads(marker.read_text()).get("preset") == preset:
        console.print(f"reusing {preset} data in {data_root}")
        return
    from cluster.commands.data_cmd import print_summary

    started = time.monotonic()
    summary = generate(preset, data_root, seed=seed, progress=True)
    print_summary(summary, time.monotonic() - started)


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


def _approve_and_promote(registry_root: str, tenants: list[str]) -> None:
    from core.registry import Registry
    from training import review

    registry = Registry(registry_root)
    table = Table(title="promoted to production")
    for col in ("tenant", "kind", "version"):
        table.add_column(col)
    # The demo's reviewer signs off every human item of the launch checklist (the gate in
    # core.promotion checks them); a real launch has each signed by whoever did it.
    sign_offs = sorted({s for k in review.KINDS for s in registry.policy.checklist(k).sign_offs})
    for tenant in tenants:
        rc = review.main(
            ["--config", "configs/train/pipeline.yaml", "--tenant", tenant,
             *[a for s in sign_offs for a in ("--sign-off", s)],
             "--approve", "--actor", "make-demo", "--comment", "demo approval"]
        )  # fmt: skip
        if rc != 0:
            serving = {k: registry.resolve(k, tenant, "production") for k in ("two_tower", "ann_index", "ranker")}
            if not all(serving.values()):
                raise SystemExit(f"launch review failed for {tenant} and nothing is in production")
            # A re-run whose candidates are worse than what serves: the gate holds them back.
            console.print(f"[yellow]launch review refused {tenant}'s candidates; production keeps "
                          f"serving {', '.join(f'{k} {v}' for k, v in serving.items())}")  # fmt: skip
            continue
        # The index and the two-tower model it was built from move together; item embeddings
        # are promoted for lineage even though serving reads the index.
        for kind in ("two_tower", "item_embeddings", "ann_index", "ranker"):
            version = registry.resolve(kind, tenant, "candidate")
            if version is None:
                continue
            registry.promote(kind, tenant, version, actor="make-demo", reason="make demo")
            table.add_row(tenant, kind, version)
    console.print(table)


def _deploy(dashboard_url: str, http_port: int) -> int:
    from cluster.cli import main as recsys

    return recsys(
        ["deploy", "configs/serve.yaml", "--address", dashboard_url, "--http-port", str(http_port)]
    )


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

    os.environ.setdefault("RECSYS_HOME", str(REPO_ROOT))
    os.chdir(REPO_ROOT)
    from core.config import load_platform_config

    storage = load_platform_config().resolved_storage()
    tenants = [t for t in args.tenants.split(",") if t]
    started = time.monotonic()

    _step(1, "local Ray cluster")
    cluster = _start_cluster(args.num_cpus, args.dashboard_port)
    _step(2, f"synthetic data ({args.preset})")
    _ensure_data(args.preset, storage.data, args.seed)
    _step(3, "offline pipeline on Ray (Ray Jobs: train, index, evaluate, launch checks)")
    _train(cluster.dashboard_url, tenants, args.smoke_test)
    _step(4, "launch review approval and promotion")
    _approve_and_promote(storage.registry, tenants)
    _step(5, "deploy the serving graph (Ray Serve)")
    if _deploy(cluster.dashboard_url, args.http_port) != 0:
        return 1
    _step(6, "sample requests and events")
    from deployments.demo_requests import main as demo_requests

    base = f"http://127.0.0.1:{args.http_port}"
    rc = demo_requests(["--url", base])
    console.rule("[bold green]done")
    console.print(
        f"Platform up in {time.monotonic() - started:.0f} s. Try:\n"
        "  curl -s -H 'Authorization: Bearer acme-demo-key' -H 'content-type: application/json' "
        "-d '{\"user_id\": \"u0000001\", \"surface\": \"home\", \"k\": 5}' "
        f"{base}/v1/recommend\n"
        f"  {base}/docs            OpenAPI (interactive)\n"
        f"  {base}/v1/versions     versions in service\n"
        f"  {base}/metrics         Prometheus metrics\n"
        f"  {cluster.dashboard_url}             Ray dashboard (jobs, Serve, actors)\n"
        "  .venv/bin/recsys registry list --tenant acme\n"
        "Stop everything with: make demo-down"
    )
    return rc


if __name__ == "__main__":
    sys.exit(main())
