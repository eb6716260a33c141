"""Noisy neighbour: does one tenant's flood, answered 429 by its quota, leave another tenant's
latency intact? Writes ``benchmarks/results/noisy_neighbour.json``.

    python -m benchmarks.bench_noisy_neighbour [--quota 2] [--b-rate 5] [--seconds 20]

Tenant A (acme) gets a recommend quota of ``--quota`` req/s (burst one second's worth,
``--a-in-flight`` in flight) in the benchmark's copy of ``configs/platform.yaml``, split
evenly over the shipped Ingress replicas (quotas are per replica); tenant B
(globex) has none. The shipped ``configs/serve.yaml`` is deployed on a fresh local Ray
(2 CPUs), as ``benchmarks.bench_serving`` does. Phases, each ``--seconds`` long, open-loop
(``benchmarks.loadgen``; A's client in a process of its own):

1. ``b_solo``: B alone at ``--b-rate``;
2. ``a_at_quota``: B, and A at exactly its quota (what A may legitimately send);
3. ``a_flood``: B, and A at ``--flood`` × its quota (the excess must be answered 429);
4. ``b_solo_again``: B alone once more (the machine is shared: a drift shows here);
5. ``a_flood_again``: the flood once more, so that solo and flood alternate.

Reported: B's p50/p99 in each phase; B's p99 over both flood phases pooled against both solo
phases pooled (the issue's bar: within 20%), A's answers by status and its 429 share; and
where the CPU went in each phase, in cores (CPU seconds per second) for every Ray process of
this benchmark, B's client (this driver) and A's client (its own process): what A's excess
costs the replica, and what it costs this machine's load generators. The load average is
recorded beside each phase.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

A, B = ("acme", "acme-demo-key"), ("globex", "globex-demo-key")


def _with_quota(config_path: str, quota: float, in_flight: int) -> None:
    config = yaml.safe_load(open(config_path))
    for tenant in config["tenants"]:
        tenant.pop("quotas", None)  # B unlimited: only A's quota is under test
        if tenant["id"] == A[0]:
            tenant["quotas"] = {"recommend": {"rate_per_s": quota, "burst": max(1, round(quota)),
                                              "max_in_flight": in_flight}}  # fmt: skip
    Path(config_path).write_text(yaml.safe_dump(config))


def _phase(url: str, seconds: float, b_rate: float, a_rate: float | None) -> dict:
    """B measured in this process; A's load from a process of its own (``benchmarks.loadgen``),
    so A's client threads do not hold this process's GIL while B's latencies are taken."""
    import subprocess
    import sys

    from benchmarks.loadgen import run as loadgen

    def body(i):
        return {"user_id": f"u{i % 200:07d}", "surface": "home", "k": 10}

    import time

    from benchmarks.bench_serving import _cpu_by_process

    out: dict = {"load_average_before": os.getloadavg()}
    flood = None
    if a_rate:
        flood = subprocess.Popen([sys.executable, "-m", "benchmarks.loadgen", "--url", url,
                                  "--key", A[1], "--rps", str(a_rate), "--seconds", str(seconds)],
                                 stdout=subprocess.PIPE, text=True)  # fmt: skip
    cpu0, t0 = _cpu_by_process(), time.perf_counter()
    out["b"] = loadgen(url, b_rate, seconds, body, {"Authorization": f"Bearer {B[1]}"},
                       keep_latencies=True)  # fmt: skip
    cpu1, t1 = _cpu_by_process(), time.perf_counter()
    if flood is not None:
        stdout, _ = flood.communicate(timeout=seconds + 120)
        out["a"] = json.loads(stdout)
        out["a"]["share_429"] = round(out["a"]["errors"].get("429", 0) / max(out["a"]["requests"], 1), 3)
    cores: dict[str, float] = {}
    for pid, (name, cpu) in cpu1.items():
        if pid in cpu0:
            if flood is not None and pid == str(flood.pid):
                name = "A's client (loadgen process)"
            cores[name] = cores.get(name, 0.0) + (cpu - cpu0[pid][1]) / (t1 - t0)
    out["cores"] = {k: round(v, 3) for k, v in sorted(cores.items(), key=lambda kv: -kv[1]) if v >= 0.002}
    out["load_average_after"] = os.getloadavg()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quota", type=float, default=2.0,
                   help="A's recommend quota, req/s (default: leaves the replica headroom next to "
                        "B's 5 req/s; docs/performance.md)")  # fmt: skip
    p.add_argument("--a-in-flight", type=int, default=8, help="A's in-flight quota")
    p.add_argument("--flood", type=float, default=3.0, help="A's rate in the flood, × its quota")
    p.add_argument("--b-rate", type=float, default=5.0, help="B's rate, req/s")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--artifacts", metavar="DIR", help="build data and models here once; reuse")
    p.add_argument("--out", default="benchmarks/results/noisy_neighbour.json")
    a = p.parse_args()

    from cluster.local import free_port, serve_env
    from cluster.serve_files import SERVE_CPU, replica_counts

    for key, value in serve_env().items():  # before Serve is imported (bench_serving: why)
        os.environ.setdefault(key, value)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))

    import ray
    from ray import serve

    from benchmarks.bench_serving import _deploy_shipped, cached_setup
    from benchmarks.loadgen import run as loadgen

    root, config_path, storage = cached_setup(a.artifacts, "bench-noisy-", items=0, candidates=200)  # the small preset as is
    quota_config = str(root / "platform-noisy.yaml")
    Path(quota_config).write_text(Path(config_path).read_text())
    # Quotas are per Ingress replica (platform.yaml): each replica gets its share, so that A's
    # quota across the shipped graph is --quota.
    (app,) = yaml.safe_load(SERVE_CPU.read_text())["applications"]
    replicas = replica_counts(app)["Ingress"]
    _with_quota(quota_config, a.quota / replicas, max(1, a.a_in_flight // replicas))

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    _deploy_shipped(port, quota_config, storage, None, None)
    url = f"http://127.0.0.1:{port}/v1/recommend"
    for key in (A[1], B[1]):  # warm-up, both tenants' pipelines
        loadgen(url, 5, 3, lambda i: {"user_id": f"u{i:07d}", "surface": "home", "k": 10},
                {"Authorization": f"Bearer {key}"})  # fmt: skip
    result: dict = {"at": datetime.now(UTC).isoformat(), "machine": {"cpus": os.cpu_count()},
                    "tenant_a": A[0], "tenant_b": B[0], "a_quota_rps": a.quota,
                    "a_in_flight": a.a_in_flight, "ingress_replicas": replicas,
                    "b_rate": a.b_rate, "seconds": a.seconds,
                    "phases": {}}  # fmt: skip
    plan = [("b_solo", None), ("a_at_quota", a.quota), ("a_flood", a.quota * a.flood),
            ("b_solo_again", None), ("a_flood_again", a.quota * a.flood)]  # fmt: skip
    for name, a_rate in plan:
        result["phases"][name] = _phase(url, a.seconds, a.b_rate, a_rate)
        shown = {k: v for k, v in result["phases"][name].items()}
        shown["b"] = {k: v for k, v in shown["b"].items() if k != "latencies_ms"}
        print(name, json.dumps(shown), flush=True)
    phases = result["phases"]

    def pooled(names: list[str], q: float) -> float:
        lat = [x for n in names for x in phases[n]["b"]["latencies_ms"]]
        return round(float(np.percentile(lat, q)), 2)

    solo, flood = ["b_solo", "b_solo_again"], ["a_flood", "a_flood_again"]
    a_ingress = [phases[n]["cores"].get("Ingress", 0.0) for n in ("a_at_quota", *flood)]
    refused_per_s = [phases[n]["a"]["errors"].get("429", 0) / a.seconds for n in flood]
    result["summary"] = {
        "b_p99_solo_pooled_ms": pooled(solo, 99),
        "b_p99_flood_pooled_ms": pooled(flood, 99),
        "b_p99_flood_over_solo": round(pooled(flood, 99) / pooled(solo, 99), 3),
        "b_p50_solo_pooled_ms": pooled(solo, 50),
        "b_p50_flood_pooled_ms": pooled(flood, 50),
        "b_p99_by_phase_ms": {n: p["b"]["p99_ms"] for n, p in phases.items()},
        "b_p99_flood_over_a_at_quota": round(pooled(flood, 99) / phases["a_at_quota"]["b"]["p99_ms"], 3),
        "b_errors_in_flood": [phases[n]["b"]["errors"] for n in flood],
        "a_429_share_in_flood": [phases[n]["a"]["share_429"] for n in flood],
        "a_ok_rps_in_flood": [phases[n]["a"]["achieved_rps"] for n in flood],
        # Ingress CPU (cores) of the flood over A-at-quota, per refused request: what one 429
        # costs the replica, end to end (Serve's HTTP handling included).
        "ingress_cpu_ms_per_429": round(
            (sum(a_ingress[1:]) / 2 - a_ingress[0]) * 1e3 / max(sum(refused_per_s) / 2, 1e-9), 2),
        "a_client_cores_in_flood": [phases[n]["cores"].get("A's client (loadgen process)") for n in flood],
        "load_average_1min": [phases[n]["load_average_before"][0] for n in phases],
    }  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2))
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
