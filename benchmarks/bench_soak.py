"""Soak: a long run at a steady share of capacity, through a model promotion and a live config
change. Writes ``benchmarks/results/soak.json``.

    python -m benchmarks.bench_soak [--minutes 10] [--share 0.7] [--capacity RPS]

Set-up as ``benchmarks.bench_noisy_neighbour`` (the ``small`` preset, toy-sized models in a
temp registry, ``configs/serve.yaml`` as shipped on a fresh local Ray of 2 CPUs). Capacity is
``--capacity`` or probed first (open-loop steps of 5 s from 10 req/s up; capacity: the highest
achieved rate with no errors and p99 under ``--probe-p99-ms``); the soak runs recommend at
``--share`` of it and posts one event per ``--events-every`` recommends (unique ids, acme).

At 40% of the run a new two-tower, index and ranker are published and promoted (the replicas
hot-swap); at 60% the shipped config is deployed again with the Ingress's
``max_ongoing_requests`` raised (and, in a shape with a Ranker deployment, its ``user_config``'s
``batch_wait_timeout_s``): Serve reconfigures the replicas live, without restarting them. Reported, per 30 s window and in total: requests, failures
(any non-200, by status), p50/p99; every accepted event is then read back from the event log
and must be there exactly once; the RSS of every Serve replica at the start, after every
window and at the end, summed per deployment, and its growth after warm-up (from the end of
the first ``--warmup-share`` of the run to the end: "flat" means this stays within noise);
the load average beside each window. ``--plot PNG`` draws the RSS over time
(``docs/img/soak-rss.png``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

KEY = {"Authorization": "Bearer acme-demo-key"}


def replica_rss_mb() -> dict[str, float]:
    """Serve replica (``deployment#pid``) → resident memory in MB, from /proc."""
    out: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "ServeReplica:" not in cmd:
                continue
            name = cmd.split("ServeReplica:", 1)[1].split()[0].split(":")[-1]
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[f"{name}#{pid}"] = round(int(line.split()[1]) / 1024, 1)
        except (OSError, IndexError, ValueError):
            continue
    return out


def by_deployment(rss: dict[str, float]) -> dict[str, float]:
    """``deployment#pid → MB`` summed per deployment (a replica restarted or added by the
    autoscaler has a new pid)."""
    out: dict[str, float] = {}
    for name, mb in rss.items():
        key = name.split("#")[0]
        out[key] = round(out.get(key, 0.0) + mb, 1)
    return out


def rss_growth(windows: list[dict], warmup_share: float) -> dict[str, float]:
    """Per deployment (and ``total``), MB from the first window that ends after the warm-up to
    the last window."""
    series = [(w["at_s"] + w.get("seconds", 0.0), by_deployment(w["rss_mb"])) for w in windows]
    end_s = series[-1][0]
    start = next((s for t, s in series if t >= warmup_share * end_s), series[0][1])
    last = series[-1][1]
    out = {k: round(last.get(k, 0.0) - start.get(k, 0.0), 1) for k in sorted(set(start) | set(last))}
    out["total"] = round(sum(last.values()) - sum(start.values()), 1)
    return out


def plot_rss(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = result["windows"]
    t = [0.0] + [(w["at_s"] + w.get("seconds", 0.0)) / 60 for w in windows]
    series = [by_deployment(result["rss_mb_start"])] + [by_deployment(w["rss_mb"]) for w in windows]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in sorted({k for s in series for k in s}):
        ax.plot(t, [s.get(name, float("nan")) for s in series], marker=".", label=name)
    ax.plot(t, [sum(s.values()) for s in series], color="black", label="total")
    for what in ("promotion", "config_change"):
        if f"{what}_at_s" in result:
            ax.axvline(result[f"{what}_at_s"] / 60, color="grey", linestyle="--")
            ax.annotate(what.replace("_", " "), (result[f"{what}_at_s"] / 60, ax.get_ylim()[1]),
                        rotation=90, va="top", ha="right", fontsize=8)  # fmt: skip
    ax.set_xlabel("minutes into the soak")
    ax.set_ylabel("resident memory (MB)")
    ax.set_title(f"Serve replica RSS, soak at {result['rate_rps']} req/s ({result['at'][:16]} UTC)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _probe(url: str, p99_ms: float) -> tuple[float, list[dict]]:
    from benchmarks.loadgen import run as loadgen

    steps, best = [], 0.0
    for rate in (10, 15, 20, 25, 30, 40, 50, 60):
        s = loadgen(url, rate, 5, lambda i: {"user_id": f"u{i % 200:07d}", "surface": "home", "k": 10},
                    KEY)  # fmt: skip
        s["load_average"] = os.getloadavg()
        steps.append(s)
        print("probe", json.dumps(s), flush=True)
        if s["errors"] or s["p99_ms"] > p99_ms:
            break
        best = s["achieved_rps"]
    return best, steps


def _live_change(app: dict) -> None:
    """A change Serve applies to running replicas without restarting them."""
    for d in app["deployments"]:
        if d["name"] == "Ingress":
            d["max_ongoing_requests"] = d.get("max_ongoing_requests", 64) + 8
        if d["name"] == "Ranker":
            d["user_config"]["batch_wait_timeout_s"] = 0.004


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--share", type=float, default=0.7, help="share of capacity to run at")
    p.add_argument("--capacity", type=float, help="req/s; default: probed")
    p.add_argument("--probe-p99-ms", type=float, default=500.0)
    p.add_argument("--events-every", type=int, default=5)
    p.add_argument("--window-s", type=float, default=30.0)
    p.add_argument("--warmup-share", type=float, default=0.3,
                   help="share of the run after which RSS must stay flat")  # fmt: skip
    p.add_argument("--artifacts", metavar="DIR", help="build data and models here once; reuse")
    p.add_argument("--out", default="benchmarks/results/soak.json")
    p.add_argument("--plot", metavar="PNG", help="draw RSS over time here")
    a = p.parse_args()

    from cluster.local import free_port, serve_env

    for key, value in serve_env().items():
        os.environ.setdefault(key, value)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))

    import ray
    import requests
    from ray import serve

    from benchmarks.bench_serving import _deploy_shipped, cached_setup
    from benchmarks.loadgen import run as loadgen
    from core.catalogue import Catalogue
    from core.eventlog import EventLog
    from core.registry import Registry
    from tests.integration.serving_artifacts import publish_ranker, publish_two_tower

    root, config_path, storage = cached_setup(a.artifacts, "bench-soak-", items=0, candidates=200)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    _deploy_shipped(port, config_path, storage, None, None)
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v1/recommend"
    loadgen(url, 5, 4, lambda i: {"user_id": f"u{i:07d}", "surface": "home", "k": 10}, KEY)
    result: dict = {"at": datetime.now(UTC).isoformat(), "machine": {"cpus": os.cpu_count()},
                    "minutes": a.minutes, "share": a.share}  # fmt: skip
    capacity = a.capacity
    if capacity is None:
        capacity, result["probe"] = _probe(url, a.probe_p99_ms)
    rate = round(max(1.0, capacity * a.share), 1)
    result.update(capacity_rps=capacity, rate_rps=rate)
    print(f"capacity {capacity} req/s; soaking at {rate} req/s for {a.minutes} min", flush=True)

    catalogue = Catalogue.load(storage["data"], "acme")
    items = [str(i) for i in catalogue.item_ids[:200]]
    accepted: list[str] = []
    event_failures: dict[str, int] = {}
    lock = threading.Lock()
    session = threading.local()

    def body(i: int) -> dict:
        if i % a.events_every == 0:  # piggy-back an event on every Nth recommend
            threading.Thread(target=post_event, args=(i,), daemon=True).start()
        return {"user_id": f"u{i % 200:07d}", "surface": "home", "k": 10}

    def post_event(i: int) -> None:
        s = getattr(session, "s", None) or requests.Session()
        session.s = s
        event = {"event_id": uuid.uuid4().hex, "user_id": f"u{i % 200:07d}", "item_id": items[i % len(items)],
                 "event_type": "click", "surface": "home", "ts": datetime.now(UTC).isoformat()}  # fmt: skip
        try:
            r = s.post(f"{base}/v1/events", json={"events": [event]}, headers=KEY, timeout=30)
            key = str(r.status_code)
            ok = r.status_code == 200 and r.json()["accepted"] == [event["event_id"]]
        except requests.RequestException as exc:
            key, ok = type(exc).__name__, False
        with lock:
            if ok:
                accepted.append(event["event_id"])
            else:
                event_failures[key] = event_failures.get(key, 0) + 1

    registry = Registry(storage["registry"])
    windows: list[dict] = []
    total_s, offset = a.minutes * 60, 0
    result["rss_mb_start"] = replica_rss_mb()
    marks = {"promotion": 0.4 * total_s, "config_change": 0.6 * total_s}
    started = time.monotonic()
    while time.monotonic() - started < total_s:
        elapsed = time.monotonic() - started
        for what, at in list(marks.items()):
            if elapsed >= at:
                marks.pop(what)
                t0 = time.perf_counter()
                if what == "promotion":
                    tt, ix = publish_two_tower(registry, catalogue, seed=int(time.time()) % 1000)
                    rk = publish_ranker(registry, catalogue, seed=7, two_tower=tt)
                    result["promoted"] = {"two_tower": tt, "ann_index": ix, "ranker": rk}
                else:
                    _deploy_shipped(port, config_path, storage, None, None, edit=_live_change, wait=False)
                result[f"{what}_at_s"] = round(elapsed, 1)
                result[f"{what}_took_s"] = round(time.perf_counter() - t0, 2)
                print(what, "at", round(elapsed), "s", flush=True)
        seconds = min(a.window_s, total_s - elapsed)
        w = loadgen(url, rate, seconds, lambda i, o=offset: body(o + i), KEY, timeout_s=30.0)
        offset += w["requests"]
        w.update(at_s=round(elapsed, 1), seconds=round(seconds, 1), load_average=os.getloadavg(),
                 rss_mb=replica_rss_mb())  # fmt: skip
        windows.append(w)
        print("window", json.dumps({k: w[k] for k in ("at_s", "requests", "ok", "errors", "p50_ms",
                                                       "p99_ms", "load_average")}), flush=True)  # fmt: skip
    time.sleep(5)  # the last events' threads
    result["rss_mb_end"] = replica_rss_mb()
    versions = requests.get(f"{base}/v1/versions", headers=KEY, timeout=30).json()
    result["versions_at_end"] = versions.get("artifacts")
    stored = EventLog(storage["events"]).read("acme").column("event_id").to_pylist()
    counts: dict[str, int] = {}
    for event_id in stored:
        counts[event_id] = counts.get(event_id, 0) + 1
    with lock:
        result["events"] = {
            "accepted": len(accepted), "failures": event_failures,
            "missing": sum(1 for e in accepted if e not in counts),
            "stored_more_than_once": sum(1 for e in accepted if counts.get(e, 0) > 1),
            "stored_total": len(stored),  # with the preset's history
        }  # fmt: skip
    result["windows"] = windows
    errors: dict[str, int] = {}
    for w in windows:
        for k, v in w["errors"].items():
            errors[k] = errors.get(k, 0) + v
    result["summary"] = {
        "requests": sum(w["requests"] for w in windows), "failed": sum(errors.values()),
        "errors": errors, "p99_ms_worst_window": max(w["p99_ms"] for w in windows),
        "p50_ms_median_window": sorted(w["p50_ms"] for w in windows)[len(windows) // 2],
        "events_accepted": result["events"]["accepted"],
        "events_missing": result["events"]["missing"],
        "events_duplicated": result["events"]["stored_more_than_once"],
        "rss_mb_start_total": round(sum(result["rss_mb_start"].values()), 1),
        "rss_mb_end_total": round(sum(result["rss_mb_end"].values()), 1),
        "rss_mb_start_by_deployment": by_deployment(result["rss_mb_start"]),
        "rss_mb_end_by_deployment": by_deployment(result["rss_mb_end"]),
        "rss_growth_after_warmup_mb": rss_growth(windows, a.warmup_share),
    }  # fmt: skip
    if a.plot:
        plot_rss(result, a.plot)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2))
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
