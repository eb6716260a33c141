"""Open-loop HTTP load generator for loopback targets: bounded in count and in time.

Requests are *scheduled* at a fixed rate regardless of how fast answers come back (open loop),
so a slow server shows up as latency, not as a politely reduced rate (coordinated omission).
Latency is measured from the scheduled send time. Only loopback URLs are accepted.

    python -m benchmarks.loadgen --url http://127.0.0.1:8000/v1/recommend --rps 50 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import numpy as np
import requests

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def run(url: str, rps: float, seconds: float, body_fn: Callable[[int], dict],
        headers: dict | None = None, max_requests: int = 100_000, workers: int = 64,
        timeout_s: float = 10.0, keep_latencies: bool = False) -> dict:  # fmt: skip
    """Send ``min(rps * seconds, max_requests)`` POSTs at ``rps``; return latency stats (ms)
    (and, with ``keep_latencies``, every 200's latency under ``latencies_ms``)."""
    if urlparse(url).hostname not in LOOPBACK:
        raise ValueError(f"loadgen only targets loopback, not {url}")
    n = int(min(rps * seconds, max_requests))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    local = threading.local()

    def one(i: int, scheduled: float) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        try:
            r = session.post(url, json=body_fn(i), headers=headers, timeout=timeout_s)
            ok, key = r.status_code == 200, str(r.status_code)
        except requests.RequestException as exc:
            ok, key = False, type(exc).__name__
        ms = (time.perf_counter() - scheduled) * 1000.0
        with lock:
            if ok:
                latencies.append(ms)
            else:
                errors[key] = errors.get(key, 0) + 1

    start = time.perf_counter() + 0.05
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i in range(n):
            scheduled = start + i / rps
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i, scheduled)
    wall = time.perf_counter() - start
    lat = np.array(latencies) if latencies else np.array([np.nan])
    kept = {"latencies_ms": [round(x, 2) for x in latencies]} if keep_latencies else {}
    return {**kept,
        "target_rps": rps, "requests": n, "ok": len(latencies), "errors": errors,
        "achieved_rps": round(len(latencies) / wall, 2) if wall > 0 else 0.0,
        "p50_ms": round(float(np.nanpercentile(lat, 50)), 2),
        "p95_ms": round(float(np.nanpercentile(lat, 95)), 2),
        "p99_ms": round(float(np.nanpercentile(lat, 99)), 2),
        "max_ms": round(float(np.nanmax(lat)), 2),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000/v1/recommend")
    p.add_argument("--key", default="acme-demo-key")
    p.add_argument("--rps", type=float, default=20)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--users", type=int, default=200)
    a = p.parse_args()
    out = run(a.url, a.rps, a.seconds,
              lambda i: {"user_id": f"u{i % a.users:07d}", "surface": "home", "k": 10},
              {"Authorization": f"Bearer {a.key}"})  # fmt: skip
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
