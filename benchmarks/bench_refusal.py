"""What one 429 costs the Ingress's own code: the admission middleware
(:class:`deployments.quotas.AdmissionMiddleware`) refusing a tenant over its rate quota,
in process, ``--n`` times (no Serve, no HTTP: Serve's and HAProxy's share is measured by
``benchmarks.bench_noisy_neighbour``'s CPU accounting).

    python -m benchmarks.bench_refusal [--n 20000] [--out benchmarks/results/refusal.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import yaml


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--out", default="benchmarks/results/refusal.json")
    a = p.parse_args()

    from core.config import load_platform_config
    from deployments.auth import BearerKeyAuthenticator
    from deployments.quotas import AdmissionControl, AdmissionMiddleware

    raw = yaml.safe_load(open("configs/platform.yaml"))
    raw["tenants"][0]["quotas"] = {"recommend": {"rate_per_s": 0.001, "burst": 1}}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(raw, f)
    config = load_platform_config(f.name)
    os.unlink(f.name)
    auth, admission = BearerKeyAuthenticator(config), AdmissionControl(config)

    async def app(scope, receive, send):  # the one admitted request (the burst)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = AdmissionMiddleware(app, gate=lambda: (auth, admission))
    key = b"Bearer acme-demo-key"  # configs/platform.yaml's demo key of acme
    scope = {"type": "http", "method": "POST", "path": "/v1/recommend",
             "headers": [(b"authorization", key), (b"content-type", b"application/json")]}  # fmt: skip
    statuses: dict[int, int] = {}

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1

    async def run() -> float:
        await middleware(scope, receive, send)
        started = time.perf_counter()
        for _ in range(a.n):
            await middleware(scope, receive, send)
        return time.perf_counter() - started

    seconds = asyncio.run(run())
    result = {"refusals": a.n, "us_per_refusal": round(seconds / a.n * 1e6, 1),
              "statuses": statuses, "load_average": os.getloadavg()}  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
