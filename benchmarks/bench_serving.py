"""Serving benchmark: the full Serve graph over HTTP, the same pipeline in one process, and a
``@serve.batch`` sweep of the ranker. Writes ``benchmarks/results/serving.json``.

    python -m benchmarks.bench_serving [--items 100000] [--rates 10,25,50] [--seconds 15]

Setup: the ``small`` synthetic preset, acme's catalogue padded to ``--items`` items, two-tower
and ranker models at the sizes of ``configs/train/*.yaml`` (weights barely trained: speed does
not depend on them) with a ScaNN index, published to a temp registry; a fresh local Ray
(2 CPUs) with ``configs/serve.yaml`` as shipped (the CPU-only shape: both models in two
Ingress replicas; ``--config configs/serve.gpu.yaml``: the GPU shape, the model deployments,
without GPUs where there are none; ``--two-tower`` / ``--ranker`` / ``--ingress-replicas``
override one thing each). Quotas are raised so that about ``--candidates`` candidates reach
the ranker.

Also measured: CPU milliseconds per request of every Ray process (from /proc) while the
lowest rate runs; how many of the answered requests' decision records reached the decision
log's files (``decision_log``: every one should); the *framework floor* — a no-op app of the same shape (HTTP proxy → FastAPI
ingress → two sequential handle calls), so the Serve share of each figure is visible; and the
ranker's batched forward pass in process (what ``@serve.batch`` amortises) next to the
end-to-end batch sweep through the Ranker deployment's handle (where the config has one). The
per-replica capacity ``recsys capacity`` reads is written with the shape it was measured in
(``placement``, ``replicas``).

Targets on the 2-core dev machine: p99 <= 50 ms at 50 req/s without errors; Serve overhead
<= 2 ms per hop at p50; batching >= 3x ranker throughput over batch size 1.

Length: one benchmark script (set-up, in-process run, Serve run, floor, batch sweep)
whose parts share the artifacts it builds.
"""

from __future__ import annotations

import os

# Replicas run with one BLAS/OpenMP thread (Ray sets OMP_NUM_THREADS for workers); the
# in-process run mirrors them. Must precede the numpy import.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402


def _arch(name: str, keys: tuple[str, ...]) -> dict:
    cfg = yaml.safe_load(open(f"configs/train/{name}.yaml"))
    return {k: cfg[k] for k in keys if k in cfg}


DRIVER = "load generator (driver)"
COLLECTOR = "OTLP collector (stand-in)"
_COLLECTOR_PIDS: set[str] = set()


def _cpu_by_process() -> dict[str, tuple[str, float]]:
    """pid -> (name, CPU seconds) of this benchmark's Ray processes (Linux /proc): this driver
    and its descendants (the local head's GCS, raylet, dashboard agent, Serve controller,
    proxy, HAProxy, replicas), never another user's cluster on the same machine."""
    out: dict[str, tuple[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[str, list[str]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stats[pid] = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
    ours, grew = {str(os.getpid())}, True
    while grew:  # descendants by parent pid
        new = {pid for pid, st in stats.items() if st[1] in ours} - ours
        ours |= new
        grew = bool(new)
    for pid in ours:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = stats[pid]
            name = cmd.split(":")[-1].split()[0] if "ServeReplica" in cmd else cmd.split()[0]
            if "ProxyActor" in cmd or "ServeController" in cmd:
                name = "ProxyActor" if "ProxyActor" in cmd else "ServeController"
            if pid == str(os.getpid()):
                name = DRIVER
            if pid in _COLLECTOR_PIDS:
                name = COLLECTOR
            out[pid] = (Path(name).name, (int(stat[11]) + int(stat[12])) / tick)
        except (OSError, ValueError, IndexError):
            continue
    return out


def _cpu_per_request(before: dict, after: dict, requests: int) -> dict[str, float]:
    per: dict[str, float] = {}
    for pid, (name, cpu) in after.items():
        if pid in before:
            per[name] = per.get(name, 0.0) + (cpu - before[pid][1]) * 1e3 / max(requests, 1)
    per = {k: round(v, 2) for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.05}
    # "total": the serving side only (the load generator runs in this driver, the client side;
    # the stand-in collector is the tracing backend's, not the platform's).
    return {**per, "total": round(sum(v for k, v in per.items() if k not in (DRIVER, COLLECTOR)), 2)}


def cached_setup(artifacts: str | None, prefix: str, items: int, candidates: int) -> tuple[Path, str, dict]:
    """``(root, platform config path, storage)``: :func:`_setup` in ``artifacts`` once (its
    ``setup.json`` records the result; later runs reuse it), or in a fresh temp dir."""
    root = Path(artifacts) if artifacts else Path(tempfile.mkdtemp(prefix=prefix))
    done = root / "setup.json"
    if done.exists():
        config_path, storage = json.loads(done.read_text())
    else:
        root.mkdir(parents=True, exist_ok=True)
        config_path, storage = _setup(root, items, candidates)
        done.write_text(json.dumps([config_path, storage]))
    return root, config_path, storage


def _setup(root: Path, items: int, candidates: int) -> tuple[str, dict]:
    from core.catalogue import Catalogue
    from core.registry import Registry
    from core.schema import ITEM_SCHEMA
    from datagen.synth import generate
    from tests.integration.serving_artifacts import publish_ranker, publish_two_tower

    generate("small", str(root / "data"), seed=0, progress=False)
    part = next((root / "data/catalogue/tenant_id=acme").glob("*.parquet"))
    table = pq.read_table(part)
    extra = items - table.num_rows
    if extra > 0:  # pad with synthetic items so retrieval and features see a big catalogue
        now = datetime.now(UTC)
        cats = table["category"].to_pylist()
        pad = pa.Table.from_pylist([
            {"tenant_id": "acme", "item_id": f"x{i:07d}", "title": None,
             "category": cats[i % len(cats)], "tags": [], "created_at": now,
             "available_from": None, "available_until": None, "maturity": "general"}
            for i in range(extra)], schema=ITEM_SCHEMA)  # fmt: skip
        pq.write_table(pa.concat_tables([table.cast(ITEM_SCHEMA), pad]), part)
    registry = Registry(str(root / "registry"))
    tower = _arch("two_tower", ("dim", "embed_dim", "hidden"))
    ranker = _arch("ranker", ("embed_dim", "n_experts", "expert_hidden", "tower_hidden"))
    for tenant in ("acme", "globex"):
        cat = Catalogue.load(str(root / "data"), tenant)
        tt, _ = publish_two_tower(registry, cat, arch=tower, scann=len(cat) >= 10_000)
        publish_ranker(registry, cat, arch=ranker, two_tower=tt)  # its retrieval_score tower
    config = yaml.safe_load(open("configs/platform.yaml"))
    acme = config["tenants"][0]["surfaces"]["home"]
    for s in acme["sources"]:
        s["quota"] = {"two_tower": candidates, "trending": 100}.get(s["name"], s["quota"])
    acme["ranker"]["max_candidates"] = candidates
    path = root / "platform.yaml"
    path.write_text(yaml.safe_dump(config))
    storage = {"data": str(root / "data"), "events": str(root / "data/events"),
               "registry": str(root / "registry"), "decisions": str(root / "decisions")}  # fmt: skip
    return str(path), storage


def _in_process(config_path: str, storage: dict, n: int, tracing_mode: str = "off",
                sampling: float = 1.0, collector: str | None = None) -> dict:  # fmt: skip
    """The pipeline in this process, ``n`` requests one after another. ``tracing_mode``:
    ``off``; ``on`` (every request's spans to the OTLP ``collector``, sampled at
    ``sampling``); ``compare``: off and on in alternating blocks of the same requests, each
    side's latency and CPU (this process, every thread: the span processor's export thread
    included) reported apart."""
    from serving import tracing

    pipeline = _local_pipeline(config_path, storage)
    provider = None
    if tracing_mode != "off":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = tracing.make_provider(
            [BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{collector}/v1/traces"))], sampling
        )
    modes = ["off", "on"] if tracing_mode == "compare" else [tracing_mode]
    block = 50 if tracing_mode == "compare" else n
    runs: dict[str, list] = {m: [] for m in modes}
    cpu: dict[str, float] = dict.fromkeys(modes, 0.0)

    async def go():
        for i in range(5):  # first calls warm caches
            await pipeline.recommend(_query(i))
        i = 5
        while i < n + 5:
            for mode in modes:
                if mode == "on":
                    tracing.configure(provider)
                else:
                    tracing.disable()
                c0 = time.process_time()
                for j in range(i, min(i + block, n + 5)):
                    t0 = time.perf_counter()
                    res = await pipeline.recommend(_query(j))
                    runs[mode].append(((time.perf_counter() - t0) * 1e3, len(res.decision.candidates),
                                       res.decision.trace_id))  # fmt: skip
                if provider is not None:
                    provider.force_flush()  # this block's spans exported, and charged to it
                cpu[mode] += time.process_time() - c0
            i += block

    asyncio.run(go())
    tracing.disable()
    if provider is not None:
        provider.shutdown()
    out = {m: _latency(r, cpu[m]) for m, r in runs.items()}
    return out[tracing_mode] if tracing_mode != "compare" else out


def _off_span_site_ns() -> float:
    """What one span site of the request path costs with tracing off (the best of 5 runs of
    a million): ``with tracing.span(...) as sp: if sp is not None: ...``."""
    import timeit

    from serving import tracing

    tracing.disable()

    def site():
        with tracing.span("stage", None) as sp:
            if sp is not None:
                sp.set_attributes({})

    return round(min(timeit.repeat(site, number=1_000_000, repeat=5)) * 1e3, 1)


def _query(i: int):
    from core.contracts import Query

    return Query(f"r{i}", "acme", f"u{i % 200:07d}", "home", 10, datetime.now(UTC))


def _latency(runs: list, cpu_s: float) -> dict:
    lat = [r[0] for r in runs]
    return {"requests": len(lat), "p50_ms": round(statistics.median(lat), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "mean_ms": round(statistics.mean(lat), 3),
            "cpu_ms_per_request": round(cpu_s * 1e3 / len(lat), 3),
            "traced": sum(r[2] is not None for r in runs),
            "mean_candidates": round(statistics.mean(r[1] for r in runs), 1)}  # fmt: skip


def _local_pipeline(config_path: str, storage: dict):
    from core.catalogue import Catalogue
    from core.config import load_platform_config
    from core.eventlog import EventLog
    from core.registry import Registry
    from deployments.loaders import settle_replica
    from retrieval.similarity import for_ranker
    from serving.assembly import build_local_pipeline
    from serving.loaders import load_ranker_model, load_two_tower, two_tower_key

    config = load_platform_config(config_path)
    registry = Registry(storage["registry"])
    artifacts = load_two_tower(registry, "acme", two_tower_key(registry, "acme", "production"))
    ranker_version = registry.resolve("ranker", "acme", "production")
    ranker = load_ranker_model(registry, "acme", ranker_version)
    catalogue = Catalogue.load(storage["data"], "acme")
    # As served: the ranker's retrieval_score from the two-tower it was trained with, sharing
    # the loaded model with the two-tower source (one query-tower pass per request).
    similarity = for_ranker(registry, "acme", ranker_version, catalogue,
                            loaded={artifacts.model_version: artifacts.model})  # fmt: skip
    pipeline = build_local_pipeline(
        config, "acme", catalogue=catalogue,
        events_table=EventLog(storage["events"]).read("acme"), two_tower=artifacts, ranker=ranker,
        versions={"ranker": ranker_version},
        ranker_similarity={ranker_version: similarity} if similarity is not None else None,
    )  # fmt: skip
    settle_replica()  # what every replica does once loaded (one torch thread, gc.freeze)
    return pipeline


def _ranker_compute_sweep(storage: dict, sizes: list[int], candidates: int) -> list[dict]:
    """The ranker's work per request in process (one thread, as in a replica): features for
    ``candidates`` items, then one forward pass over ``size`` requests stacked."""
    import torch

    from core.catalogue import Catalogue
    from core.contracts import Query
    from core.features import PopularityCounter
    from core.registry import Registry
    from ranking.scorer import RankerScorer
    from serving.loaders import load_ranker_model
    from serving.user_state import ServingUserState

    torch.set_num_threads(1)
    registry = Registry(storage["registry"])
    catalogue = Catalogue.load(storage["data"], "acme")
    model = load_ranker_model(registry, "acme", registry.resolve("ranker", "acme", "production"))
    scorer = RankerScorer(model, catalogue, PopularityCounter(), version="bench")
    cols = ([str(i) for i in catalogue.item_ids[:candidates]],
            np.linspace(1, 0, candidates, dtype=np.float32), ["two_tower"] * candidates)  # fmt: skip
    q = Query("b", "acme", "u0000001", "home", 10, datetime.now(UTC))
    state = ServingUserState(user_id="u0000001")
    out = []
    for size in sizes:
        reps = max(3, 64 // size)
        scorer.score_batch([scorer.features_for(q, state, *cols) for _ in range(size)])
        t0 = time.perf_counter()
        for _ in range(reps):
            scorer.score_batch([scorer.features_for(q, state, *cols) for _ in range(size)])
        per_request_ms = (time.perf_counter() - t0) * 1e3 / (reps * size)
        out.append({"batch_size": size, "ms_per_request": round(per_request_ms, 3),
                    "requests_per_s": round(1e3 / per_request_ms, 1)})  # fmt: skip
    return out


def _floor(port: int, rate: float, seconds: float) -> dict:
    """A no-op app of the graph's shape on the running Serve instance: what Serve itself costs."""
    from ray import serve

    from benchmarks.floor_app import Front, Leaf
    from benchmarks.loadgen import run as loadgen

    serve.run(Front.bind(Leaf.options(name="A").bind(), Leaf.options(name="B").bind()),
              name="floor", route_prefix="/floor")  # fmt: skip
    url = f"http://127.0.0.1:{port}/floor/v1/recommend"
    body = lambda i: {"user_id": f"u{i}", "surface": "home", "k": 10}  # noqa: E731
    loadgen(url, 5, 2, body)
    before = _cpu_by_process()
    stats = loadgen(url, rate, seconds, body)
    stats["cpu_ms_per_request"] = _cpu_per_request(before, _cpu_by_process(), stats["ok"])
    serve.delete("floor")
    return stats


def _batch_sweep(app: str, sizes: list[int], requests_per_size: int) -> list[dict]:
    """Saturate the Ranker through its handle with 500-candidate requests at each batch size.

    The handle is used from inside an event loop: with the router on the caller's loop
    (``RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0``, part of the fast paths) a blocking
    ``.result()`` from plain driver code has no loop to run on."""
    from datetime import UTC, datetime

    from ray import serve

    from core.contracts import Candidate, MergedCandidate, Query
    from ranking.scorer import candidate_columns
    from serving.user_state import ServingUserState

    cands = [MergedCandidate(f"i{i:07d}", (Candidate(f"i{i:07d}", "two_tower", "v", 0.5, i),))
             for i in range(500)]  # fmt: skip
    weights = {"click": 1.0, "like": 2.0, "hide": -4.0}
    q = Query("b", "acme", "u0001", "home", 10, datetime.now(UTC))
    state = ServingUserState(user_id="u0001")
    cols = candidate_columns(cands)  # what the ingress sends (deployments.stages)

    async def sweep() -> list[dict]:
        handle = serve.get_deployment_handle("Ranker", app)
        out = []
        for size in sizes:
            await handle.broadcast("reconfigure", {"max_batch_size": size,
                                                   "batch_wait_timeout_s": 0.005}).results_async()  # fmt: skip
            for _ in range(3):
                await handle.score_columns.remote(q, state, *cols, weights)
            t0 = time.perf_counter()
            await asyncio.gather(*(handle.score_columns.remote(q, state, *cols, weights)
                                   for _ in range(requests_per_size)))  # fmt: skip
            wall = time.perf_counter() - t0
            out.append({"max_batch_size": size, "requests": requests_per_size,
                        "requests_per_s": round(requests_per_size / wall, 1)})  # fmt: skip
            print(out[-1], flush=True)
        return out

    return asyncio.run(sweep())


class _Collector:
    """A stand-in OpenTelemetry collector in its own process (``tests.otlp_receiver``): it
    decodes every OTLP/HTTP export, as a collector on the node would, off this process."""

    def __init__(self):
        import subprocess
        import sys

        self._proc = subprocess.Popen([sys.executable, "-m", "tests.otlp_receiver"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        self.endpoint = self._proc.stdout.readline().strip()
        _COLLECTOR_PIDS.add(str(self._proc.pid))

    def close(self) -> int:
        """Stop it; the number of spans it received."""
        out, _ = self._proc.communicate("", timeout=60)
        return int(out.strip() or 0)


def _deploy_shipped(port: int, config_path: str, storage: dict, two_tower: str | None,
                    ranker: str | None, ingress_replicas: int | None = None,
                    tracing: float | None = None, serve_config: str = "configs/serve.yaml",
                    edit: Callable[[dict], None] | None = None, wait: bool = True) -> dict:  # fmt: skip
    """Deploy a shipped Serve config (``configs/serve.yaml``, the CPU-only shape, unless
    ``serve_config`` names another, e.g. ``configs/serve.gpu.yaml``) as shipped (placement,
    replicas, resources, batching, logging, runtime_env) through Serve's config path, as
    ``recsys deploy`` does; only the port, the storage and the platform config are the
    benchmark's, and GPU reservations are dropped where the cluster has no GPU. ``two_tower``
    / ``ranker``: override where the two-tower / the ranker run (``ingress`` / ``deployment``;
    a deployment the file does not list gets one replica of the decorator's size).
    ``tracing``: the shipped ``tracing_config`` enabled at this sampling ratio, exporting to
    ``$OTEL_EXPORTER_OTLP_ENDPOINT`` (put in the app's ``runtime_env``). ``edit``: called with
    the application's config last (a live change: ``benchmarks.bench_soak``); ``wait``: until
    the app runs. Returns the deployed application's config (its ``args``, its
    ``deployments``)."""
    import ray
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    from cluster.serve_files import without_gpus

    raw = yaml.safe_load(open(serve_config))
    if not ray.cluster_resources().get("GPU"):
        raw = without_gpus(raw)
    raw["http_options"]["port"] = port
    (app,) = raw["applications"]
    app["name"] = "bench"
    app["args"].update(platform_config=config_path, storage=storage, home=os.getcwd())
    placement = app["args"].setdefault("placement", {})
    if two_tower is not None:
        placement.setdefault("source_kinds", {})["two_tower"] = two_tower
    if ranker is not None:
        placement["ranker"] = ranker
    where = {"TwoTowerRetriever": placement.get("source_kinds", {}).get("two_tower", "deployment"),
             "Ranker": placement.get("ranker", "deployment")}  # fmt: skip
    for name, home in where.items():
        listed = any(d["name"] == name for d in app["deployments"])
        if home == "ingress":
            app["deployments"] = [d for d in app["deployments"] if d["name"] != name]
        elif not listed:
            app["deployments"].append({"name": name, "num_replicas": 1})
    if tracing is not None:
        raw["tracing_config"].update(enabled=True, sampling_ratio=tracing)
        app["runtime_env"]["env_vars"]["OTEL_EXPORTER_OTLP_ENDPOINT"] = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
    if ingress_replicas is not None:
        (ingress,) = [d for d in app["deployments"] if d["name"] == "Ingress"]
        ingress.pop("autoscaling_config", None)
        ingress["num_replicas"] = ingress_replicas
    if edit is not None:
        edit(app)
    client = serve_start(http_options=raw["http_options"], proxy_location=raw["proxy_location"])
    client.deploy_apps(ServeDeploySchema.model_validate(raw))
    if wait:
        client._wait_for_application_running("bench", timeout_s=900)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--candidates", type=int, default=500)
    p.add_argument("--rates", default="10,25,50")
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    p.add_argument("--slo-p99-ms", type=float, default=100.0,
                   help="p99 a rate must meet to count as per-replica capacity")  # fmt: skip
    p.add_argument("--config", default="configs/serve.yaml", metavar="SERVE_YAML",
                   help="the Serve config to deploy (configs/serve.gpu.yaml: the GPU shape, "
                        "without its GPUs where the machine has none)")  # fmt: skip
    p.add_argument("--two-tower", choices=("ingress", "deployment"),
                   help="override the config's placement of the two-tower source")
    p.add_argument("--ranker", choices=("ingress", "deployment"),
                   help="override the config's placement of the ranker")
    p.add_argument("--ingress-replicas", type=int, help="override the Ingress replica count")
    p.add_argument("--artifacts", metavar="DIR",
                   help="build the data and models here once and reuse them on later runs")
    p.add_argument("--serve-only", action="store_true",
                   help="only the Serve graph at --rates (no in-process run, floor or batch sweeps)")
    p.add_argument("--tracing", choices=("off", "on", "compare"), default="off",
                   help="on: every part with OpenTelemetry tracing on (served: configs/serve.yaml's "
                        "tracing_config enabled), spans exported over OTLP/HTTP to a stand-in "
                        "collector process; compare: in process only, tracing off and on in "
                        "alternating blocks of the same requests")  # fmt: skip
    p.add_argument("--trace-sampling", type=float, default=1.0,
                   help="share of requests traced when --tracing is on or compare")
    p.add_argument("--out", default="benchmarks/results/serving.json")
    a = p.parse_args()

    from cluster.local import free_port, serve_env
    from cluster.serve_files import replica_counts

    # Before Serve is imported anywhere (its settings are read on import): this driver, the
    # controller, the proxy and the replicas all inherit them from here. A variable already in
    # the environment wins, so a lever can be measured off (`RAY_SERVE_ENABLE_HA_PROXY=0 …`).
    for key, value in serve_env().items():
        os.environ.setdefault(key, value)
    result_env = {k: os.environ[k] for k in sorted(os.environ) if k.startswith("RAY_SERVE_")}
    # The controller imports `deployments.app:build_app` from this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))

    import ray
    from ray import serve

    from benchmarks.loadgen import run as loadgen

    root, config_path, storage = cached_setup(a.artifacts, "bench-serving-", a.items, a.candidates)
    result: dict = {"machine": {"cpus": os.cpu_count()}, "items": a.items,
                    "candidates": a.candidates, "at": datetime.now(UTC).isoformat(),
                    "load_average_at_start": os.getloadavg()}  # fmt: skip
    collector = None
    if a.tracing != "off":  # before ray.init: the proxy and controller inherit the endpoint
        collector = _Collector()
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.endpoint
        result["tracing"] = {"mode": a.tracing, "sampling_ratio": a.trace_sampling}
    if not a.serve_only or a.tracing == "compare":
        n = 400 if a.tracing == "compare" else 200
        result["in_process"] = _in_process(config_path, storage, n, a.tracing, a.trace_sampling,
                                           collector.endpoint if collector else None)  # fmt: skip
        print("in-process", result["in_process"], flush=True)
    if a.tracing == "compare":  # in process only: the served cost is two runs, off and on
        result["tracing"]["spans_received"] = collector.close()
        result["tracing"]["off_ns_per_span_site"] = _off_span_site_ns()
        result["load_average_at_end"] = os.getloadavg()
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return

    result["serve_env"] = result_env
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    app = _deploy_shipped(port, config_path, storage, a.two_tower, a.ranker, a.ingress_replicas,
                          tracing=a.trace_sampling if collector else None, serve_config=a.config)  # fmt: skip
    result["serve_config"] = a.config
    result["placement"] = placement = app["args"].get("placement", {})
    result["replicas"] = replica_counts(app)
    result["model_deployments"] = [
        name for name, home in (("TwoTowerRetriever", placement.get("source_kinds", {}).get("two_tower")),
                                ("Ranker", placement.get("ranker"))) if home != "ingress"]  # fmt: skip
    hops = 1 + len(result["model_deployments"])
    url = f"http://127.0.0.1:{port}/v1/recommend"
    headers = {"Authorization": "Bearer acme-demo-key"}

    def body(i):
        return {"user_id": f"u{i % 200:07d}", "surface": "home", "k": 10}

    since = time.time()
    warm = loadgen(url, 5, 4, body, headers)  # warm-up
    result["serve"] = []
    for rate in sorted(float(r) for r in a.rates.split(",")):
        before = _cpu_by_process()
        stats = loadgen(url, rate, a.seconds, body, headers)
        stats["cpu_ms_per_request"] = _cpu_per_request(before, _cpu_by_process(), stats["ok"])
        stats["load_average"] = os.getloadavg()
        result["serve"].append(stats)
        print("serve", stats, flush=True)
    result["decision_log"] = _records_logged(storage["decisions"], since,
                                             warm["ok"] + sum(s["ok"] for s in result["serve"]))
    print("decision log", result["decision_log"], flush=True)
    if not a.serve_only:
        _extras(result, a, port, storage, hops)
    _capacity(result, a.slo_p99_ms)
    if collector is not None:
        result["tracing"]["spans_received"] = collector.close()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    try:
        serve.shutdown()
    except RuntimeError as exc:
        # The batch sweep's handle lives on the event loop asyncio.run closed (the fast paths
        # run the router in the caller's loop); the app goes down with the cluster below.
        print(f"serve.shutdown: {exc}; the cluster's shutdown stops the app", flush=True)
    ray.shutdown()


def _extras(result: dict, a: argparse.Namespace, port: int, storage: dict, hops: int) -> None:
    """The framework floor, and the ranker's batching in process and end to end (through the
    Ranker deployment, where the config has one)."""
    low = result["serve"][0]
    result["serve_overhead_ms_per_hop_p50"] = round(
        (low["p50_ms"] - result["in_process"]["p50_ms"]) / hops, 2
    )
    result["framework_floor"] = _floor(port, low["target_rps"], a.seconds)
    print("floor", result["framework_floor"], flush=True)
    sizes = [int(s) for s in a.batch_sizes.split(",")]
    result["ranker_compute_sweep"] = _ranker_compute_sweep(storage, sizes, a.candidates)
    print("ranker compute", result["ranker_compute_sweep"], flush=True)
    comp = result["ranker_compute_sweep"]
    result["batching_speedup_compute"] = round(
        max(c["requests_per_s"] for c in comp) / comp[0]["requests_per_s"], 2
    )
    if "Ranker" in result["model_deployments"]:  # end to end through the Ranker deployment
        sweep = _batch_sweep("bench", sizes, 64)
        result["ranker_batch_sweep"] = sweep
        result["batching_speedup_vs_1"] = round(max(s["requests_per_s"] for s in sweep)
                                                / sweep[0]["requests_per_s"], 2)  # fmt: skip


def _records_logged(decisions: str, since: float, answered: int, wait_s: float = 5.0) -> dict:
    """How many of the ``answered`` requests since ``since`` (Unix s) have their decision record
    in the decision log's files: every answer should (a record shipped in a call Serve refuses
    is lost whole). Waits up to ``wait_s`` for the last shipments and writes to land."""
    deadline = time.time() + wait_s
    while True:
        logged = sum(f.read_bytes().count(b"\n") for f in Path(decisions).rglob("part-*.jsonl")
                     if f.stat().st_mtime >= since)  # fmt: skip
        if logged >= answered or time.time() >= deadline:
            return {"answered": answered, "logged": logged}
        time.sleep(0.5)


def _capacity(result: dict, slo_p99_ms: float) -> None:
    """Per-replica capacity for ``recsys capacity``, in the shape measured (``placement``,
    ``replicas``): the highest rate the graph served cleanly, shared by each deployment's
    replicas (two Ingress replicas that together serve 75 req/s: 37.5 each) — a bound from
    below, since every deployment had at least that much; the Ranker deployment's own figure
    is its best batched rate through its handle where the batch sweep ran. "Served cleanly":
    no errors, no backlog (achieved within 3% of offered), p99 within the latency objective
    (``--slo-p99-ms``)."""
    clean = [s["achieved_rps"] for s in result["serve"] if not s["errors"]
             and s["achieved_rps"] >= 0.97 * s["target_rps"] and s["p99_ms"] <= slo_p99_ms]  # fmt: skip
    graph = max(clean) if clean else 0.0
    result["capacity_slo_p99_ms"] = slo_p99_ms
    per_replica = {name: round(graph / n, 2) for name, n in result["replicas"].items()}
    if "Ranker" in result["model_deployments"]:
        sweep = result.get("ranker_batch_sweep")
        if sweep:
            per_replica["Ranker"] = max(s["requests_per_s"] for s in sweep)
        else:  # --serve-only: the Ranker's own limit was not measured
            del per_replica["Ranker"]
    result["capacity"] = {"per_replica_rps": per_replica}


if __name__ == "__main__":
    main()
